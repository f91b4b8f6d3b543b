// What this adapter reaches in WebGPU, measured with kernels of our own, so that every layer's
// figure can be given as a share of it:
//   matmulPeak   a register-tiled fp32 matmul (C = A·B, square, sizes multiple of the tile), several
//                tile shapes, best GFLOP/s of each (2·n³ / time); one result checked against the CPU;
//   bandwidth    upload (queue.writeBuffer), readback (copy to a MAP_READ buffer + mapAsync) and the
//                device's own copy (copyBufferToBuffer, bytes read + written), in GB/s.
// Raw WebGPU on the device tfjs created: no tfjs kernel is involved. No Node-only imports.

export interface TileShape { tm: number; tn: number; tk: number; rm: number; rn: number }

/** 16×16 threads with 4×4 or 8×8 outputs each, and 8×8 threads with 8×8 each. */
export const TILE_SHAPES: TileShape[] = [
  { tm: 64, tn: 64, tk: 16, rm: 4, rn: 4 },
  { tm: 128, tn: 128, tk: 8, rm: 8, rn: 8 },
  { tm: 64, tn: 64, tk: 8, rm: 8, rn: 8 },
  { tm: 128, tn: 64, tk: 16, rm: 8, rn: 4 },
];

export function matmulShader(t: TileShape): string {
  const wx = t.tn / t.rn, wy = t.tm / t.rm, nt = wx * wy;
  return `
struct Dims { m : u32, n : u32, k : u32 }
@group(0) @binding(0) var<storage, read> a : array<f32>;
@group(0) @binding(1) var<storage, read> b : array<f32>;
@group(0) @binding(2) var<storage, read_write> c : array<f32>;
@group(0) @binding(3) var<uniform> d : Dims;
var<workgroup> as_ : array<f32, ${t.tk * t.tm}>;
var<workgroup> bs : array<f32, ${t.tk * t.tn}>;
@compute @workgroup_size(${wx}, ${wy})
fn main(@builtin(local_invocation_id) lid : vec3<u32>, @builtin(workgroup_id) wid : vec3<u32>) {
  let tid = lid.y * ${wx}u + lid.x;
  let row0 = wid.y * ${t.tm}u;
  let col0 = wid.x * ${t.tn}u;
  var acc : array<f32, ${t.rm * t.rn}>;
  for (var k0 = 0u; k0 < d.k; k0 = k0 + ${t.tk}u) {
    for (var i = tid; i < ${t.tm * t.tk}u; i = i + ${nt}u) {
      let m = i / ${t.tk}u; let k = i % ${t.tk}u;
      as_[k * ${t.tm}u + m] = a[(row0 + m) * d.k + k0 + k];
    }
    for (var i = tid; i < ${t.tk * t.tn}u; i = i + ${nt}u) {
      let k = i / ${t.tn}u; let n = i % ${t.tn}u;
      bs[k * ${t.tn}u + n] = b[(k0 + k) * d.n + col0 + n];
    }
    workgroupBarrier();
    for (var k = 0u; k < ${t.tk}u; k = k + 1u) {
      var ra : array<f32, ${t.rm}>;
      var rb : array<f32, ${t.rn}>;
      // Rows ly, ly + ${wy}, …: neighbouring threads read neighbouring words.
      for (var i = 0u; i < ${t.rm}u; i = i + 1u) { ra[i] = as_[k * ${t.tm}u + lid.y + i * ${wy}u]; }
      for (var j = 0u; j < ${t.rn}u; j = j + 1u) { rb[j] = bs[k * ${t.tn}u + lid.x + j * ${wx}u]; }
      for (var i = 0u; i < ${t.rm}u; i = i + 1u) {
        for (var j = 0u; j < ${t.rn}u; j = j + 1u) { acc[i * ${t.rn}u + j] = fma(ra[i], rb[j], acc[i * ${t.rn}u + j]); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < ${t.rm}u; i = i + 1u) {
    for (var j = 0u; j < ${t.rn}u; j = j + 1u) {
      c[(row0 + lid.y + i * ${wy}u) * d.n + col0 + lid.x + j * ${wx}u] = acc[i * ${t.rn}u + j];
    }
  }
}`;
}

export interface PeakResult {
  size: number;
  best: { tile: string; gflops: number; ms: number } | null;
  tiles: { tile: string; gflops: number | null; ms: number | null; skipped?: string }[];
  /** max |GPU − CPU| over a few entries of C, relative to the largest (a wrong kernel is no peak). */
  checkError: number | null;
}

const label = (t: TileShape) => `${t.tm}×${t.tn}×${t.tk}, ${t.rm}×${t.rn}/thread`;

function storage(device: GPUDevice, data: Float32Array<ArrayBuffer> | number): GPUBuffer {
  const size = typeof data === 'number' ? data : data.byteLength;
  const buf = device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  if (typeof data !== 'number') device.queue.writeBuffer(buf, 0, data);
  return buf;
}

async function readBuffer(device: GPUDevice, src: GPUBuffer, bytes: number): Promise<Float32Array> {
  const staging = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(src, 0, staging, 0, bytes);
  device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  return out;
}

/** The best fp32 matmul rate of our tiled kernels at n×n×n: `reps` dispatches per timing, best of `tries`. */
export async function matmulPeak(device: GPUDevice, n: number, reps = 5, tries = 3): Promise<PeakResult> {
  const a = Float32Array.from({ length: n * n }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  const b = Float32Array.from({ length: n * n }, (_, i) => ((i * 104729) % 1000) / 1000 - 0.5);
  const [ba, bb, bc] = [storage(device, a), storage(device, b), storage(device, n * n * 4)];
  const dims = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(dims, 0, new Uint32Array([n, n, n, 0]));
  const result: PeakResult = { size: n, best: null, tiles: [], checkError: null };
  const lim = device.limits;
  for (const t of TILE_SHAPES) {
    const threads = (t.tm / t.rm) * (t.tn / t.rn);
    const shared = 4 * t.tk * (t.tm + t.tn);
    const why = n % t.tm || n % t.tn || n % t.tk ? `size ${n} is not a multiple of the tile`
      : threads > lim.maxComputeInvocationsPerWorkgroup ? `${threads} threads > the adapter's ${lim.maxComputeInvocationsPerWorkgroup}`
      : shared > lim.maxComputeWorkgroupStorageSize ? `${shared} B workgroup memory > the adapter's ${lim.maxComputeWorkgroupStorageSize}` : '';
    if (why) { result.tiles.push({ tile: label(t), gflops: null, ms: null, skipped: why }); continue; }
    const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module: device.createShaderModule({ code: matmulShader(t) }), entryPoint: 'main' } });
    const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [ba, bb, bc, dims].map((buffer, binding) => ({ binding, resource: { buffer } })) });
    const run = async (count: number) => {
      const enc = device.createCommandEncoder();
      for (let r = 0; r < count; r++) {
        const pass = enc.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(n / t.tn, n / t.tm);
        pass.end();
      }
      const t0 = performance.now();
      device.queue.submit([enc.finish()]);
      await device.queue.onSubmittedWorkDone();
      return (performance.now() - t0) / count;
    };
    await run(1); // compile, first touch
    let ms = Infinity;
    for (let i = 0; i < tries; i++) ms = Math.min(ms, await run(reps));
    const gflops = (2 * n ** 3) / ms / 1e6;
    result.tiles.push({ tile: label(t), gflops: +gflops.toFixed(1), ms: +ms.toFixed(3) });
    // The last kernel's C, checked at a few entries against a double-precision dot product.
    const c = await readBuffer(device, bc, n * n * 4);
    let err = 0, big = 0;
    for (const [i, j] of [[0, 0], [n - 1, n - 1], [n >> 1, 3], [7, n >> 2]]) {
      let s = 0;
      for (let k = 0; k < n; k++) s += a[i * n + k] * b[k * n + j];
      err = Math.max(err, Math.abs(c[i * n + j] - s));
      big = Math.max(big, Math.abs(s));
    }
    const rel = err / Math.max(big, 1e-6);
    result.checkError = Math.max(result.checkError ?? 0, rel);
    if (rel > 1e-3) throw new Error(`matmul tile ${label(t)} computed a wrong product (relative error ${rel}); its rate would be no peak`);
    if (!result.best || gflops > result.best.gflops) result.best = { tile: label(t), gflops: +gflops.toFixed(1), ms: +ms.toFixed(3) };
  }
  for (const x of [ba, bb, bc, dims]) x.destroy();
  return result;
}

export interface Bandwidth { megabytes: number; uploadGBs: number; readbackGBs: number; deviceCopyGBs: number }

/** GB/s of the three ways bytes move in a step, measured with one buffer of `megabytes`, median of `reps`. */
export async function bandwidth(device: GPUDevice, megabytes: number, reps = 5): Promise<Bandwidth> {
  const bytes = Math.floor((megabytes * 1e6) / 4) * 4;
  const host = new Float32Array(bytes / 4).fill(1.5);
  const src = storage(device, bytes), dst = storage(device, bytes);
  const staging = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  const up: number[] = [], down: number[] = [], copy: number[] = [];
  for (let r = 0; r <= reps; r++) {
    let t0 = performance.now();
    device.queue.writeBuffer(src, 0, host);
    await device.queue.onSubmittedWorkDone();
    const tUp = performance.now() - t0;
    t0 = performance.now();
    let enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(src, 0, dst, 0, bytes);
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    const tCopy = performance.now() - t0;
    t0 = performance.now();
    enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(dst, 0, staging, 0, bytes);
    device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const view = new Float32Array(staging.getMappedRange());
    const ok = view[view.length - 1] === 1.5;
    staging.unmap();
    const tDown = performance.now() - t0;
    if (!ok) throw new Error('bandwidth probe: the bytes read back are not the bytes uploaded');
    if (r > 0) { up.push(tUp); copy.push(tCopy); down.push(tDown); } // the first run allocates
  }
  for (const x of [src, dst, staging]) x.destroy();
  const gbs = (ms: number, factor = 1) => +((factor * bytes) / ms / 1e6).toFixed(2);
  return { megabytes: +(bytes / 1e6).toFixed(1), uploadGBs: gbs(med(up)), readbackGBs: gbs(med(down)), deviceCopyGBs: gbs(med(copy), 2) };
}
