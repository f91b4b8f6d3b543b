import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

// The suite starts real coordinators, workers and browsers: on a 2-core machine files run one
// at a time so that they don't starve each other.
export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 120_000,
    reporters: ['verbose', './tests/helpers/slowest-files.ts'],
    // Every serve the tests start keeps its TLS certificate here, not in the user's ~/.tabtrain.
    env: { TABTRAIN_STATE_DIR: join(tmpdir(), 'tabtrain-test-state') },
    // Builds client/dist for the browser tests when it is missing or stale.
    globalSetup: ['tests/helpers/build-client.ts'],
  },
});
