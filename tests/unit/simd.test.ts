// The WebAssembly kernels: the shipped bytes are what wabt makes of the .wat source, and the
// module stays small enough for a page's main thread to compile it synchronously.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { KERNELS_WASM } from '@tabtrain/shared/kernels.wasm';
import { compileKernels, generatedSource, GENERATED_PATH, WAT_PATH } from '../../server/src/build-kernels';

const shipped = Uint8Array.from(atob(KERNELS_WASM), (c) => c.charCodeAt(0));

describe('kernel source and bytes', () => {
  it('kernels.wasm.ts is exactly what `npm run build:kernels` writes from kernels.wat', async () => {
    const built = await compileKernels();
    expect(Buffer.from(shipped).equals(Buffer.from(built))).toBe(true);
    expect(readFileSync(GENERATED_PATH, 'utf8')).toBe(generatedSource(built));
  });

  it('a changed source gives other bytes (the comparison above can fail)', async () => {
    const wat = readFileSync(WAT_PATH, 'utf8');
    const changed = await compileKernels(wat.replace('(i32.const 64)', '(i32.const 48)'));
    expect(Buffer.from(shipped).equals(Buffer.from(changed))).toBe(false);
  });

  it('validates with SIMD, and is under the 4 KiB Chromium compiles synchronously on a page', () => {
    expect(WebAssembly.validate(shipped)).toBe(true);
    expect(shipped.length).toBeLessThan(4096);
  });
});
