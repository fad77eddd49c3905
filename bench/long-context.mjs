#!/usr/bin/env node
// Long-context decode: tokens/s of greedy single-token decode steps after contexts of 64, 512 and 2048 positions, for
// each KV cache type (f16, q8_0, f32), and each context's speed as a ratio of the same type's speed at the shortest
// context (issue 16: decode at 2,048 positions within 85 % of its speed at 64). One cache per type is prefilled once
// to the longest context; a run at context C empties it back to C positions and decodes --tokens steps (what those
// steps overwrite past C is other keys and values of the same size: the speed does not depend on them). Runs
// alternate over types and contexts, --rounds times; medians are printed, of wall-clock time and of this process's CPU
// time per token (on a machine shared with other work, the CPU time is the steadier of the two).
// A model whose max_position_embeddings is below the longest context (OLMoE-mini: 256) runs with the limit raised
// (RoPE has no learned positions, so the arithmetic per step is the real one; its logits there mean nothing) — said
// in the output.
//   node bench/long-context.mjs MODEL [--contexts 64,512,2048] [--types f16,q8_0,f32] [--tokens 32] [--rounds 3] [--threads N] [--json]
import { execSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { argmax, createBackend, createRng, loadModel, OlmoeModel } = await import(join(here, '..', 'dist', 'src', 'index.js'));

const args = process.argv.slice(2);
const flag = (name, fallback) => (args.includes(name) ? args.splice(args.indexOf(name), 2)[1] : fallback);
const contexts = flag('--contexts', '64,512,2048').split(',').map(Number);
const types = flag('--types', 'f16,q8_0,f32').split(',');
const tokens = Number(flag('--tokens', '32'));
const rounds = Number(flag('--rounds', '3'));
const threads = flag('--threads', undefined);
const json = args.includes('--json') ? (args.splice(args.indexOf('--json'), 1), true) : false;
const spec = args[0];
if (!spec || contexts.some((c) => !(c > 0)) || !(tokens > 0) || !(rounds > 0)) {
  console.error('usage: node bench/long-context.mjs MODEL [--contexts 64,512,2048] [--types f16,q8_0,f32] [--tokens 32] [--rounds 3] [--threads N] [--json]');
  process.exit(1);
}

const say = (text) => process.stderr.write(text);
const backend = createBackend('native', threads ? { threads: Number(threads) } : {});
const loaded = await loadModel(spec, { backend });
const longest = Math.max(...contexts) + tokens;
const raised = longest > loaded.config.maxPositionEmbeddings;
const model = raised ? new OlmoeModel({ ...loaded.config, maxPositionEmbeddings: longest }, loaded.weights, backend) : loaded;
if (raised) say(`max_position_embeddings ${loaded.config.maxPositionEmbeddings} < ${longest}: raised to ${longest} for this measurement (speed only)\n`);

const rng = createRng(7);
const promptIds = Int32Array.from({ length: Math.max(...contexts) }, () => Math.floor(rng() * Math.min(model.config.vocabSize, 50000)));
const caches = new Map();
for (const type of types) {
  model.kvCacheType = type; // throws, naming it, on an unknown type
  const cache = model.createCache(longest);
  const started = performance.now();
  for (let at = 0; at < promptIds.length; at += 512) model.forward(promptIds.subarray(at, at + 512), { cache, logits: 'last' });
  say(`${type}: prefilled ${promptIds.length} positions in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  caches.set(type, cache);
}

/**
 * Seconds per decoded token after `context` positions of the type's cache: wall-clock, and this process's CPU time
 * (user + system, all threads), which other processes on a shared machine disturb less.
 */
function decodeRun(type, context) {
  const cache = caches.get(type);
  cache.length = context;
  let next = Int32Array.of(promptIds[context - 1]);
  const [started, cpuStarted] = [performance.now(), process.cpuUsage()];
  for (let i = 0; i < tokens; i++) next = Int32Array.of(argmax(backend.toFloat32(model.forward(next, { cache, logits: 'last' }))));
  const cpu = process.cpuUsage(cpuStarted);
  return { wall: (performance.now() - started) / 1000 / tokens, cpu: (cpu.user + cpu.system) / 1e6 / tokens };
}

const samples = new Map(types.flatMap((type) => contexts.map((c) => [`${type}@${c}`, []])));
decodeRun(types[0], contexts[0]); // warm-up
for (let round = 0; round < rounds; round++) {
  for (const type of types) for (const context of contexts) samples.get(`${type}@${context}`).push(decodeRun(type, context));
  say(`round ${round + 1}/${rounds} done\n`);
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const cpu = (() => {
  try {
    return execSync('lscpu', { encoding: 'utf8' }).match(/Model name:\s*(.+)/)?.[1]?.trim() ?? 'unknown';
  } catch {
    return 'unknown';
  }
})();
const rows = types.flatMap((type) => {
  const speeds = (key) => ({ wall: 1 / median(samples.get(key).map((s) => s.wall)), cpu: 1 / median(samples.get(key).map((s) => s.cpu)) });
  const base = speeds(`${type}@${contexts[0]}`);
  model.kvCacheType = type;
  return contexts.map((context) => {
    const speed = speeds(`${type}@${context}`);
    return {
      type, context, decodeTokensPerSecond: +speed.wall.toFixed(2), ratioToShortest: +(speed.wall / base.wall).toFixed(3),
      cpuTokensPerSecond: +speed.cpu.toFixed(2), cpuRatioToShortest: +(speed.cpu / base.cpu).toFixed(3),
      cacheMiB: +((model.kvBytesPerPosition * (context + tokens)) / 2 ** 20).toFixed(1),
    };
  });
});
const result = { model: spec, cpu, threads: backend.threads, simd: backend.simd, tokens, rounds, maxPositionsRaised: raised, rows };
if (json) console.log(JSON.stringify(result, null, 2));
else {
  console.log(`${spec} — ${cpu}, ${backend.threads} threads, ${backend.simd}; ${tokens} decode steps per run, median of ${rounds} alternating runs${raised ? '; max_position_embeddings raised (speed only)' : ''}`);
  console.log(`cache  context  decode tok/s  ratio to ${contexts[0]}  tok per CPU-s  CPU ratio  cache MiB`);
  const cell = (value, digits, width) => value.toFixed(digits).padStart(width);
  for (const r of rows) {
    console.log(`${r.type.padEnd(6)} ${String(r.context).padStart(7)}  ${cell(r.decodeTokensPerSecond, 2, 12)}  ${cell(r.ratioToShortest, 3, 11)}  ${cell(r.cpuTokensPerSecond, 2, 13)}  ${cell(r.cpuRatioToShortest, 3, 9)}  ${cell(r.cacheMiB, 1, 9)}`);
  }
}
