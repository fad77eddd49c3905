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
/** The real OLMo tokenizer, kept in the repository so a fresh clone tests it. */
export const realTokenizerDir = join(repoRoot, 'test', 'fixtures', 'olmo-tokenizer');
const sharedGolden = join(sharedDir, 'fixtures', 'olmo-tokenizer', 'golden-ids.json');
/** Golden ids from the Rust tokenizers: all 620 cases from ../shared when present, else the repository's 104. */
export const realGoldenPath = existsSync(sharedGolden) ? sharedGolden : join(realTokenizerDir, 'golden-ids-subset.json');

/** Skip reason when the real OLMo tokenizer is absent, printed so the skip is visible. */
export function realTokenizerSkip(): string | false {
  if (existsSync(join(realTokenizerDir, 'tokenizer.json'))) return false;
  const reason = `real OLMo tokenizer not found at ${realTokenizerDir}`;
  console.log(`# SKIP: ${reason}`);
  return reason;
}

export function tempDir(prefix = 'olmoe-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}
