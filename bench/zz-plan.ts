import { planStep } from '../server/src/cost-model';
const rates = [[529,48,33,2],[3941,51,32,1],[1644,79,30,2],[812,44,22,2],[3781,66,33,1],[600,37,31,2],[626,35,35,2],[589,36,39,2]];
const ws = rates.map(([c, u, d, b], i) => ({ id: i + 1, computeRate: c, upRate: u * 1e6, downRate: d * 1e6, behind: 1 }));
const run = { batch: 128, gradientBytes: 613920, updateBytes: 613920, weightsBytes: 187e6, exampleBytes: 785, pipelined: false, overlappedApply: false };
const coord = { upRate: 119e6, downRate: 119e6, foldRate: Infinity, sgdRate: Infinity, encodeRate: Infinity };
for (let r = 0; r < 8; r++) { const t = performance.now(); for (let i = 0; i < 20; i++) planStep(ws, run, coord); console.log(((performance.now() - t) / 20).toFixed(2), 'ms per plan'); }
import { Session } from 'node:inspector/promises';
const s = new Session(); s.connect();
await s.post('Profiler.enable'); await s.post('Profiler.start');
for (let i = 0; i < 400; i++) planStep(ws, run, coord);
const { profile } = await s.post('Profiler.stop');
const self = new Map<string, number>();
const dt = profile.timeDeltas!; const samples = profile.samples!;
const byId = new Map(profile.nodes.map((n: any) => [n.id, n]));
samples.forEach((id: number, i: number) => { const n: any = byId.get(id); const k = `${n.callFrame.functionName}:${n.callFrame.lineNumber}`; self.set(k, (self.get(k) ?? 0) + dt[i]); });
console.log([...self].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([k, v]) => `${(v / 1000).toFixed(1)}ms ${k}`).join('\n'));
