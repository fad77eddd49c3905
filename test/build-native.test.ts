/**
 * The install hook (scripts/build-native.mjs) on a machine where the native build fails: a user's install still
 * succeeds with a warning, but this repository's CI fails instead of silently skipping the native tests.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { repoRoot, tempDir } from './helpers.js';

const scratch = tempDir('olmoe-build-native-');
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A package root whose native/binding.gyp does not parse, so node-gyp fails within a second. */
function brokenPackage(root: string): string {
  mkdirSync(join(root, 'native'), { recursive: true });
  cpSync(join(repoRoot, 'scripts', 'build-native.mjs'), join(root, 'scripts', 'build-native.mjs'));
  writeFileSync(join(root, 'native', 'binding.gyp'), '{ this is not gyp');
  return join(root, 'scripts', 'build-native.mjs');
}

function install(script: string, env: Record<string, string>) {
  const clean = { ...process.env, CI: '', OLMOE_REQUIRE_NATIVE: '', OLMOE_SKIP_NATIVE: '' };
  return spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...clean, ...env } });
}

it('a failed native build: a user install exits 0 with a warning; CI in a checkout, or OLMOE_REQUIRE_NATIVE=1, exits 1', () => {
  const checkout = brokenPackage(join(scratch, 'checkout'));
  const user = install(checkout, {});
  assert.equal(user.status, 0, user.stderr);
  assert.match(user.stderr, /native backend was not built .*reference backend/);
  const ciEnvs: Record<string, string>[] = [{ CI: 'true' }, { CI: '1' }, { OLMOE_REQUIRE_NATIVE: '1' }, { CI: 'true', OLMOE_SKIP_NATIVE: '1' }];
  for (const env of ciEnvs) {
    const ci = install(checkout, env);
    assert.equal(ci.status, 1, `${JSON.stringify(env)}: ${ci.stderr}`);
    assert.match(ci.stderr, /native backend was not built.*\n.*requires it: failing/);
  }
  // A project that depends on olmoe and runs its own CI (CI=true) still installs without a compiler.
  const dependency = install(brokenPackage(join(scratch, 'app', 'node_modules', 'olmoe')), { CI: 'true' });
  assert.equal(dependency.status, 0, dependency.stderr);
});
