#!/usr/bin/env node
// npm install hook: build the native backend with node-gyp. For users a failure never fails the install: the
// reference backend works everywhere, so we print one warning saying how to get the fast path and exit 0.
// This repository's own CI must build it, or 75 native tests would only be skipped: with OLMOE_REQUIRE_NATIVE=1, or
// CI=true in a checkout (not when olmoe is installed as a dependency inside node_modules), a failure exits 1.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = join(root, 'native');
const log = join(nativeDir, 'build.log');

function nodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp;
  const npmRoot = spawnSync('npm', ['root', '-g'], { encoding: 'utf8' }).stdout?.trim();
  const bundled = npmRoot && join(npmRoot, 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  return bundled && existsSync(bundled) ? bundled : undefined;
}

const ciCheckout = /^(1|true)$/i.test(process.env.CI ?? '') && !root.split(/[\\/]/).includes('node_modules');
const required = process.env.OLMOE_REQUIRE_NATIVE === '1' || ciCheckout;

function warn(reason) {
  if (required) {
    console.error(`olmoe: the native backend was not built (${reason}; details in native/build.log).`);
    console.error(`olmoe: ${ciCheckout ? 'CI=true in a checkout' : 'OLMOE_REQUIRE_NATIVE=1'} requires it: failing. Install a C++17 compiler, make and python3.`);
    process.exit(1);
  }
  console.warn(`olmoe: the native backend was not built (${reason}); the reference backend (pure TypeScript, slow) will be used.`);
  console.warn('olmoe: to build it, install a C++17 compiler, make and python3, then run `npm rebuild olmoe` (details in native/build.log).');
}

if (process.env.OLMOE_SKIP_NATIVE === '1') {
  if (required) warn('OLMOE_SKIP_NATIVE=1');
  console.warn('olmoe: OLMOE_SKIP_NATIVE=1: not building the native backend');
  process.exit(0);
}
const gyp = nodeGyp();
if (!gyp) {
  warn('node-gyp not found');
  process.exit(0);
}
mkdirSync(nativeDir, { recursive: true });
const args = [gyp, 'rebuild'];
// Headers of the running Node when they are installed next to it (Debian's nodejs, official tarballs): node-gyp then
// needs no download from nodejs.org, which machines without general network access cannot reach.
const localHeaders = resolve(dirname(process.execPath), '..');
const nodedir = process.env.npm_config_nodedir || (existsSync(join(localHeaders, 'include', 'node', 'node_api.h')) ? localHeaders : undefined);
if (nodedir) args.push(`--nodedir=${nodedir}`);
const started = Date.now();
const result = spawnSync(process.execPath, args, { cwd: nativeDir, encoding: 'utf8', env: process.env });
writeFileSync(log, `${result.stdout ?? ''}\n${result.stderr ?? ''}\n${result.error ?? ''}`);
if (result.status !== 0) warn(result.error ? result.error.message : `node-gyp exited with ${result.status}`);
else console.log(`olmoe: native backend built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
