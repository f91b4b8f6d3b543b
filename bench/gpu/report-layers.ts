// The markdown of layer-bench's JSON (bench/gpu/layer-bench.ts) for the kit's report: the adapter's
// own ceilings, every layer's kernels beside the matmul peak, and a step's split beside its bounds.
import { describeLayer, type LayerGeometry } from './layers';

interface LayerRow { layer: LayerGeometry; ms: Record<string, number | null | undefined> }
interface SplitRow {
  model: string; batch: number; rank: number; params: number; factorFloats: number; gflopPerStep: number;
  computeMs: number; computeBoundMs: number | null; gradientReadbackMs: number; gradientReadbackBoundMs: number;
  factorReadbackMs: number; factorReadbackBoundMs: number; updateOnDeviceMs: number; updateBoundMs: number;
  refreshMs: number; uploadMs: number; refreshBoundMs: number;
}
export interface LayerBenchJson {
  batch: number;
  peak: { size: number; best: { tile: string; gflops: number } | null; tiles: { tile: string; gflops: number | null; skipped?: string }[]; checkError: number | null };
  bandwidth: { megabytes: number; uploadGBs: number; readbackGBs: number; deviceCopyGBs: number } | null;
  layers: LayerRow[];
  split: SplitRow[];
}

const KERNELS = ['fwd', 'dX naive', 'dX mm', 'dX', 'dW tfjs', 'dW split-k', 'dW'];
const f = (x: number, d: number) => x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
/** ms to 3 significant digits at most. */
const ms = (x: number) => f(x, x >= 100 ? 0 : x >= 10 ? 1 : x >= 1 ? 2 : 3);

/** Lines of markdown: ceilings, the per-layer table with its A/B sums, the step's split. */
export function layerSection(j: LayerBenchJson): string[] {
  const out: string[] = [];
  const peak = j.peak.best?.gflops ?? null;
  if (j.peak.best) {
    out.push(`**This adapter's own matmul rate** (our tiled WGSL kernel, fp32, ${j.peak.size}², best of ${j.peak.tiles.length} tile shapes): **${f(peak!, 1)} GFLOP/s** with ${j.peak.best.tile} ` +
      `(${j.peak.tiles.map((t) => `${t.tile}: ${t.gflops === null ? `skipped, ${t.skipped}` : f(t.gflops, 1)}`).join('; ')}; checked against the CPU, relative error ${j.peak.checkError?.toExponential(1)}).`);
  }
  if (j.bandwidth) {
    const b = j.bandwidth;
    out.push(`**Bandwidths** (one ${f(b.megabytes, 0)} MB buffer, median): upload (writeBuffer) ${f(b.uploadGBs, 2)} GB/s, readback (copy + mapAsync) ${f(b.readbackGBs, 2)} GB/s, on-device copy ${f(b.deviceCopyGBs, 2)} GB/s (read + written).`);
  }
  if (j.layers.length) {
    const kernels = KERNELS.filter((k) => j.layers.some((l) => typeof l.ms[k] === 'number'));
    out.push('', `Every conv and dense layer at batch ${j.batch}, each kernel alone (median; queue drained before and after): ms, GFLOP/s = 2·MACs / time${peak ? ', and % of the matmul rate above' : ''}. ` +
      `"bound" = the layer's 2·MACs at that rate. The input gradient of the first layer is never computed in training. The worker's defaults: on a GPU (Vulkan) dX mm and dW split-k, on llvmpipe dX naive and dW tfjs; run.sh's A/B rows say which wins end to end.`, '');
    out.push(`| layer | shape | GFLOP | bound ms | ${kernels.join(' | ')} |`, `|---|---|--:|--:|${kernels.map(() => '--:').join('|')}|`);
    for (const r of j.layers) {
      const gflop = (2 * r.layer.macs) / 1e9;
      const cell = (k: string) => {
        const t = r.ms[k];
        if (typeof t !== 'number') return '—';
        const rate = gflop / (t / 1000);
        return `${ms(t)} (${f(rate, rate >= 100 ? 0 : 1)}${peak ? `, ${f((100 * rate) / peak, 0)}%` : ''})`;
      };
      out.push(`| ${r.layer.name} | ${describeLayer(r.layer)} | ${f(gflop, gflop >= 10 ? 1 : 3)} | ${peak ? ms((gflop / peak) * 1000) : '—'} | ${kernels.map(cell).join(' | ')} |`);
    }
    for (const [a, b, what] of [['dX mm', 'dX naive', 'input gradient, matmul-based vs naive'], ['dW split-k', 'dW tfjs', 'filter gradient, split-K vs tfjs']]) {
      const both = j.layers.filter((l) => typeof l.ms[a] === 'number' && typeof l.ms[b] === 'number');
      if (!both.length) continue;
      const sa = both.reduce((s, l) => s + l.ms[a]!, 0), sb = both.reduce((s, l) => s + l.ms[b]!, 0);
      const wins = both.filter((l) => l.ms[a]! < l.ms[b]!).length;
      out.push(`- ${what}: summed over ${both.length} layers ${ms(sa)} vs ${ms(sb)} ms (×${f(sb / sa, 2)}); faster on ${wins} of ${both.length}.`);
    }
  }
  if (j.split.length) {
    out.push('', `A step's parts on this GPU (median of the runs; "bound" = the part at the ceilings above: compute = the step's matmul work at the matmul rate, transfers at the measured bandwidths, the update = the weights read and written once at the on-device copy rate):`, '');
    out.push('| model | part | ms | bound ms | × bound |', '|---|---|--:|--:|--:|');
    for (const s of j.split) {
      const rows: [string, number, number | null][] = [
        [`compute: forward + backward, batch ${s.batch} (${f(s.gflopPerStep, 1)} GFLOP of conv/dense)`, s.computeMs, s.computeBoundMs],
        [`readback of the fp32 gradient (${f((4 * s.params) / 1e6, 1)} MB)`, s.gradientReadbackMs, s.gradientReadbackBoundMs],
        [`readback of the PowerSGD factors, rank ${s.rank} (${f((4 * s.factorFloats) / 1e6, 2)} MB)`, s.factorReadbackMs, s.factorReadbackBoundMs],
        ['update on the device (P̂Qᵀ per matrix, device-update.ts)', s.updateOnDeviceMs, s.updateBoundMs],
        ['refresh: exact weights uploaded, drift measured (refreshOnDevice)', s.refreshMs, s.refreshBoundMs],
        ['upload of the weights alone (webgpu-io)', s.uploadMs, s.refreshBoundMs],
      ];
      for (const [part, t, bound] of rows) out.push(`| ${s.model} | ${part} | ${ms(t)} | ${bound === null ? '—' : ms(bound)} | ${bound ? `×${f(t / bound, 1)}` : '—'} |`);
    }
  }
  return out;
}
