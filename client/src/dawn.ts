// Placeholder until the Dawn (npm webgpu) backend lands: says what is missing instead of crashing.
export async function setupDawn(): Promise<{ backend: string; adapter: Record<string, unknown> | null }> {
  throw new Error('the webgpu backend in Node is not available in this build; use --backend wasm');
}
