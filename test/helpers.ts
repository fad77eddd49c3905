/** Paths and small utilities shared by the tests (compiled to dist/test/). */
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: tests run from dist/test/, two levels below it. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const tinyModelDir = join(repoRoot, 'test', 'fixtures', 'tiny-olmoe', 'model');
export const tinyExpectedPath = join(repoRoot, 'test', 'fixtures', 'tiny-olmoe', 'expected.json');
export const cliPath = join(repoRoot, 'dist', 'src', 'cli', 'main.js');

/** `../shared` next to the repository (CI has it; a user's fresh clone does not). */
export const sharedDir = resolve(repoRoot, '..', 'shared');
export const realTokenizerDir = join(sharedDir, 'fixtures', 'olmo-tokenizer');

/** Skip reason when the real OLMo tokenizer from ../shared is absent, printed so the skip is visible. */
export function realTokenizerSkip(): string | false {
  if (existsSync(join(realTokenizerDir, 'tokenizer.json'))) return false;
  const reason = `real OLMo tokenizer not found at ${realTokenizerDir} (../shared is absent on a fresh clone)`;
  console.log(`# SKIP: ${reason}`);
  return reason;
}

export function tempDir(prefix = 'olmoe-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}
