#!/usr/bin/env node
// Evaluation benchmark: a fixed synthetic 5-shot multiple-choice task (cloze with pmi + lettered, 4 choices), scored
// by the harness with prefix sharing on and off in the same run, alternating; prints requests/s, tokens fed per
// second and the sharing speed-up (same model, same requests, same results up to rounding).
//   node bench/eval.mjs MODEL [--questions 40] [--reps 3] [--threads N] [--json]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const api = await import(join(here, '..', 'dist', 'src', 'index.js'));
const args = process.argv.slice(2);
const flag = (name, fallback) => (args.includes(name) ? args.splice(args.indexOf(name), 2)[1] : fallback);
const questions = Number(flag('--questions', '40'));
const reps = Number(flag('--reps', '3'));
const threads = flag('--threads', undefined);
const json = args.includes('--json') ? (args.splice(args.indexOf('--json'), 1), true) : false;
const model = args[0];
if (!model) {
  console.error('usage: node bench/eval.mjs MODEL [--questions 40] [--reps 3] [--threads N] [--json]');
  process.exit(1);
}

const lm = await api.loadPretrained(model, { backend: api.createBackend(undefined, threads ? { threads: Number(threads) } : {}) });
const words = ['river', 'stone', 'market', 'engine', 'garden', 'letter', 'winter', 'signal', 'harbor', 'planet', 'violin', 'copper'];
const pick = (i) => words[i % words.length];
const doc = (i) => ({ id: String(i), question: `Which word is written after ${pick(i)} and ${pick(i * 7 + 3)} in the list of ${pick(i * 5 + 1)} things?`, choices: [0, 1, 2, 3].map((k) => `the ${pick(i + k * 5)} of the ${pick(i * 3 + k)}`), answer: i % 4 });
// The task goes through the public reader, as a user's task file would: documents and shots as JSONL.
const dir = mkdtempSync(join(tmpdir(), 'olmoe-bench-eval-'));
const lines = (rows) => rows.map((row) => JSON.stringify(row)).join('\n') + '\n';
writeFileSync(join(dir, 'documents.jsonl'), lines(Array.from({ length: questions }, (_, i) => doc(i + 100))));
writeFileSync(join(dir, 'shots.jsonl'), lines(Array.from({ length: 5 }, (_, i) => doc(i))));
writeFileSync(join(dir, 'task.json'), JSON.stringify({ name: 'bench', documents: 'documents.jsonl', fewshot: 'shots.jsonl', shots: 5, formulations: ['cf', 'mcf'], normalizations: ['per_char', 'none', 'pmi'] }));
const task = await api.readTask(join(dir, 'task.json'));
rmSync(dir, { recursive: true, force: true });
const prefixToken = lm.tokenizer.tokenId(lm.tokenizer.eosToken) ?? lm.model.config.eosTokenIds[0];
// Cloze requests come twice (conditioned and pmi's unconditioned), lettered ones once.
const requests = task.formulations.reduce((n, f) => n + api.taskInstances(task, f).reduce((m, inst) => m + inst.choices.length * (f === 'cf' ? 2 : 1), 0), 0);

const timings = { on: [], off: [] };
let results;
for (let rep = 0; rep < reps; rep++) {
  for (const sharing of rep % 2 === 0 ? ['on', 'off'] : ['off', 'on']) {
    const started = performance.now();
    const result = await api.runTask(lm, task, { prefixToken, prefixSharing: sharing === 'on' });
    timings[sharing].push((performance.now() - started) / 1000);
    results ??= result;
  }
}
const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
const [on, off] = [median(timings.on), median(timings.off)];
const report = {
  model, cpu: cpus()[0]?.model, backend: lm.model.backend.name, questions, requests, reps,
  sharing: { seconds: on, requestsPerSecond: requests / on }, noSharing: { seconds: off, requestsPerSecond: requests / off },
  speedup: off / on,
};
if (json) console.log(JSON.stringify(report));
else {
  console.log(`${model} on ${report.cpu} (${report.backend}), ${questions} questions × 4 choices, CF (with pmi) + MCF, 5 shots: ${requests} loglikelihood requests`);
  console.log(`  prefix sharing on : ${on.toFixed(2)} s  ${(requests / on).toFixed(1)} requests/s`);
  console.log(`  prefix sharing off: ${off.toFixed(2)} s  ${(requests / off).toFixed(1)} requests/s`);
  console.log(`  speed-up from sharing: ${report.speedup.toFixed(2)}× (median of ${reps} alternating runs)`);
}
