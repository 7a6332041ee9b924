import { defineConfig } from 'vitest/config';

// Unit tests of the pure modules (no browser, no JupyterLab): test/*.test.ts
export default defineConfig({
  test: { include: ['test/**/*.test.ts'], environment: 'node', pool: 'threads', poolOptions: { threads: { maxThreads: 2 } } }
});
