/** Tests leave no temporary folders: tempDir's folders go when a test file's process exits, and npm test's runner removes the rest. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { it } from 'node:test';
import { repoRoot, tempDir } from './helpers.js';

const helpersUrl = pathToFileURL(join(repoRoot, 'dist', 'test', 'helpers.js')).href;

/** `node args` with its own TMPDIR, as a top-level run (without the test runner's NODE_TEST_CONTEXT). */
function nodeWithTmp(tmp: string, args: string[]) {
  const { NODE_TEST_CONTEXT: _ignored, ...env } = process.env;
  return spawnSync(process.execPath, args, { cwd: repoRoot, encoding: 'utf8', env: { ...env, TMPDIR: tmp, TMP: tmp, TEMP: tmp } });
}

it('tempDir folders are removed when the process exits, also after an uncaught error', () => {
  for (const ending of ['', "throw new Error('a failing test file');"]) {
    const tmp = tempDir('olmoe-tmp-home-');
    const script = `import { writeFileSync } from 'node:fs'; const { tempDir } = await import(${JSON.stringify(helpersUrl)});
      for (let i = 0; i < 3; i++) writeFileSync(tempDir() + '/file', 'data'); ${ending}`;
    nodeWithTmp(tmp, ['--input-type=module', '-e', script]);
    assert.deepEqual(readdirSync(tmp), [], ending ? 'after an uncaught error' : 'after a normal exit');
  }
});

it('scripts/run-tests.mjs runs the given tests with a private TMPDIR and removes what they leave, reporting it', () => {
  const tmp = tempDir('olmoe-tmp-home-');
  const tests = tempDir('olmoe-leaky-tests-');
  mkdirSync(join(tests, 'sub'));
  const leaky = join(tests, 'sub', 'leaky.test.mjs');
  writeFileSync(leaky, "import { mkdtempSync } from 'node:fs'; import { tmpdir } from 'node:os'; import { test } from 'node:test';\n" +
    "test('leaks a folder', () => { mkdtempSync(tmpdir() + '/leaked-'); });\n");
  const run = nodeWithTmp(tmp, [join(repoRoot, 'scripts', 'run-tests.mjs'), leaky]);
  assert.equal(run.status, 0, run.stdout + run.stderr);
  assert.match(run.stdout, /# pass 1/);
  assert.match(run.stdout, /tests left 1 temporary folder\(s\), now removed: leaked-/);
  assert.deepEqual(readdirSync(tmp), [], 'nothing left in the TMPDIR npm test was started with');
  // A failing test fails the run.
  writeFileSync(leaky, "import { test } from 'node:test'; test('fails', () => { throw new Error('no'); });\n");
  assert.equal(nodeWithTmp(tmp, [join(repoRoot, 'scripts', 'run-tests.mjs'), leaky]).status, 1);
});
