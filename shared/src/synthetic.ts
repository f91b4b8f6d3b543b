// The scale-out benchmark's synthetic worker machine as a Node program (the benchmark runs it;
// `node --import tsx shared/src/synthetic.ts ...`):
//   synthetic.ts measure MODEL MODE RANK   prints the WorkerCosts of that configuration as JSON
//   synthetic.ts machine JSON              one SyntheticMachine session, MachineEntryOptions as JSON
// It loads ws only when run that way, and never runs in a page. The machine itself is
// synthetic-machine.ts, its measured CPU work worker-costs.ts, the synthetic net synthetic-net.ts.
import { CLOSE, CLOSE_NAMES, MAX_FRAME_BYTES, closeReason, getModel } from '@tabtrain/shared';
import { checkCompression } from '@tabtrain/shared/compress';
import { SyntheticMachine } from '@tabtrain/shared/synthetic-machine';
import { measureWorkerCosts, type WorkerCosts } from '@tabtrain/shared/worker-costs';

export interface MachineEntryOptions {
  url: string;
  msPerExample: number;
  /** null: the worker's CPU work is skipped rather than slept (costs nothing). */
  costs: WorkerCosts | null;
  /** --compress auto: every mode's costs (SyntheticMachine picks the welcomed mode's). */
  costsByMode?: WorkerCosts[];
  token?: string;
  /** powersgd: threads the machine's exact copy applies each update with (default MACHINE_APPLY_THREADS). */
  applyThreads?: number;
}

interface NodeProcess {
  argv: string[];
  env: Record<string, string | undefined>;
  send?: unknown;
  exit(code: number): never;
  on(event: string, f: () => void): void;
}

async function nodeMain(proc: NodeProcess): Promise<void> {
  const [cmd, ...rest] = proc.argv.slice(2);
  if (cmd === 'measure') {
    const [model, mode, rank] = rest;
    const costs = measureWorkerCosts(getModel(model), checkCompression({ mode, rank: Number(rank) }));
    console.log(JSON.stringify(costs));
    proc.exit(0);
  }
  if (cmd !== 'machine') throw new Error(`usage: synthetic.ts measure MODEL MODE RANK | synthetic.ts machine JSON`);
  const o = JSON.parse(rest[0]) as MachineEntryOptions;
  // A worker the benchmark started exits with it (the IPC channel closes even on SIGKILL), and
  // leaves Ctrl-C to it. It presents the local key it inherits (TABTRAIN_LOCAL_KEY), as the
  // coordinator's own local workers do: the benchmark's workers are established from the first step.
  if (proc.send) proc.on('disconnect', () => proc.exit(0));
  proc.on('SIGINT', () => {});
  const WS = 'ws';
  const { default: WebSocket } = (await import(/* @vite-ignore */ WS)) as { default: typeof import('ws').default };
  const id = `synthetic-${Math.random().toString(16).slice(2, 10)}`;
  const ws = new WebSocket(o.url, { maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false });
  const send = (frame: Uint8Array) => new Promise<void>((res, rej) => ws.send(frame, (err?: Error) => (err ? rej(err) : res())));
  const machine = new SyntheticMachine(id, send, { msPerExample: o.msPerExample, costs: o.costs, costsByMode: o.costsByMode, applyThreads: o.applyThreads, local: proc.env.TABTRAIN_LOCAL_KEY }, o.token);
  ws.on('open', () => ws.send(machine.hello()));
  ws.on('message', (data: Uint8Array) => {
    machine.receive(data).catch((e) => {
      console.error(`[${id}] error: ${(e as Error).message}`);
      ws.close(CLOSE.unexpected, closeReason((e as Error).message));
    });
  });
  ws.on('error', (e: Error) => console.error(`[${id}] socket error: ${e.message}`));
  ws.on('close', (code: number, reason: Uint8Array) => {
    if (code === CLOSE.finished) proc.exit(0);
    console.error(`[${id}] closed: ${CLOSE_NAMES[code] ?? code} (${code}) ${new TextDecoder().decode(reason)}`);
    proc.exit(1);
  });
}

const nodeProcess = (globalThis as { process?: NodeProcess }).process;
if (nodeProcess?.argv?.[1]?.endsWith('synthetic.ts') && typeof (globalThis as { window?: unknown }).window === 'undefined') {
  nodeMain(nodeProcess).catch((e) => { console.error(`synthetic.ts: ${(e as Error).stack ?? e}`); nodeProcess.exit(1); });
}
