/** Paths and small utilities shared by the tests (compiled to dist/test/). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
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

/** Folders made by tempDir in this process; node --test runs each test file in its own process. */
const madeTempDirs: string[] = [];
process.on('exit', removeTempDirs);

/** A fresh folder in the OS temp dir, removed when this test file's process exits (pass, fail or throw). */
export function tempDir(prefix = 'olmoe-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  madeTempDirs.push(dir);
  return dir;
}

/** Remove every folder tempDir made so far (also run at exit); a test may call it to free space early. */
export function removeTempDirs(): void {
  for (const dir of madeTempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/**
 * Runs a compiled test file again in a child process with `env` added (a top-level run of its own: the runner's
 * NODE_TEST_CONTEXT is dropped, else the nested runner reports to its parent and exits 0) and asserts that it ran
 * tests and all passed, naming the failures.
 */
export function assertChildRunPasses(fileUrl: string, env: Record<string, string>, label: string): void {
  const { NODE_TEST_CONTEXT: _, ...inherited } = process.env;
  const child = spawnSync(process.execPath, ['--test', fileURLToPath(fileUrl)], { encoding: 'utf8', env: { ...inherited, ...env }, timeout: 300_000 });
  const failures = child.stdout.split('\n').filter((line) => /not ok|error:/.test(line)).join('\n');
  assert.equal(child.status, 0, `${label}:\n${failures}${child.stderr}`);
  assert.match(child.stdout, /# pass [1-9]\d*\n# fail 0\n/, `${label}: the child ran tests and all passed`);
}
