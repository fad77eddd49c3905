#!/usr/bin/env node
// `npm test`'s runner: node --test over dist/test/ (or the paths given) with TMPDIR pointed at a fresh folder that
// is removed afterwards, so no run leaves temporary folders behind, whatever a test or a killed child forgot.
// Folders left in it are listed first: each is a test that does not clean up after itself (test/helpers.ts tempDir does).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const paths = process.argv.slice(2);
const scratch = mkdtempSync(join(tmpdir(), 'olmoe-npm-test-'));
let status = 1;
try {
  const env = { ...process.env, TMPDIR: scratch, TMP: scratch, TEMP: scratch };
  const run = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...(paths.length > 0 ? paths : ['dist/test/'])], { stdio: 'inherit', env });
  status = run.status ?? 1;
  const left = readdirSync(scratch);
  if (left.length > 0) console.log(`# note: tests left ${left.length} temporary folder(s), now removed: ${left.slice(0, 10).join(', ')}${left.length > 10 ? ', …' : ''}`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
process.exit(status);
