import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

// Files that run in this process only, on one thread (unit tests, and the in-process runs of
// tests/helpers/in-process.ts: a coordinator and its workers on the in-memory wire). Two of them
// run side by side, one per core of a 2-core machine; they start no worker process, browser or
// network namespace, and assert no rate or wall-clock bound that a neighbour on the other core could
// break (dashboard-limits' socket buffers and powersgd-run's 400 messages/s did, paired: whole-machine).
const ONE_THREAD = [
  'tests/unit/**/*.test.ts',
  'tests/integration/byzantine.test.ts',
  'tests/integration/compression.test.ts',
  'tests/integration/equivalence.test.ts',
  'tests/integration/load.test.ts',
  'tests/integration/log-runs.test.ts',
  'tests/integration/pipeline.test.ts',
  'tests/integration/powersgd-fp16.test.ts',
  'tests/integration/powersgd-trust.test.ts',
  'tests/integration/run-progress.test.ts',
  'tests/integration/trust.test.ts',
];

const shared = {
  testTimeout: 300_000,
  hookTimeout: 120_000,
  // Every serve the tests start keeps its TLS certificate here, not in the user's ~/.tabtrain.
  env: { TABTRAIN_STATE_DIR: join(tmpdir(), 'tabtrain-test-state') },
};

export default defineConfig({
  test: {
    reporters: ['verbose', './tests/helpers/slowest-files.ts'],
    // Builds client/dist for the browser tests when it is missing or stale.
    globalSetup: ['tests/helpers/build-client.ts'],
    projects: [
      {
        test: { ...shared, name: 'one-thread', include: ONE_THREAD, fileParallelism: true, maxWorkers: 2, sequence: { groupOrder: 0 } },
      },
      {
        // The rest start real coordinators, worker processes, browsers and namespaces that use
        // both cores, or time what they see: one file at a time, after the first group.
        test: { ...shared, name: 'whole-machine', include: ['tests/**/*.test.ts'], exclude: ONE_THREAD, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
