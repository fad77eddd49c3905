#!/usr/bin/env node
// lm-evaluation-harness through `olmoe serve` against `olmoe eval` in-process: the same loglikelihood requests
// (16 questions × 4 choices, synthetic text), scored by lm-eval's own LocalCompletionsAPI over HTTP (batch_size 1
// and 8, the server's tokenizer) and by the library harness with prefix sharing off and on, alternating in one run;
// prints requests/s per way and the largest difference between lm-eval's and olmoe eval's log-likelihoods.
// Needs a Python that can import lm_eval (LM_EVAL_PYTHON, default python3; set PYTHONPATH as needed).
//   node bench/lmeval-serve.mjs MODEL [--reps 3]
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const api = await import(join(here, '..', 'dist', 'src', 'index.js'));
const { startServer } = await import(join(here, '..', 'dist', 'src', 'server', 'index.js'));
const args = process.argv.slice(2);
const reps = args.includes('--reps') ? Number(args.splice(args.indexOf('--reps'), 2)[1]) : 3;
const model = args[0];
if (!model) {
  console.error('usage: node bench/lmeval-serve.mjs MODEL [--reps 3]   (LM_EVAL_PYTHON: a python3 that can import lm_eval)');
  process.exit(1);
}

const DRIVER = `
import json, sys, time
from lm_eval.api.instance import Instance
from lm_eval.models.openai_completions import LocalCompletionsAPI
base, pairs, max_length = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
out = {}
for batch in (1, 8):
    lm = LocalCompletionsAPI(model="bench", base_url=base + "/v1/completions", max_length=max_length, batch_size=batch, tokenizer_backend="remote")
    reqs = [Instance("loglikelihood", {}, (c, x), i) for i, (c, x) in enumerate(pairs)]
    start = time.perf_counter()
    scores = lm.loglikelihood(reqs, disable_tqdm=True)
    out[f"batch{batch}"] = [time.perf_counter() - start, [s[0] for s in scores]]
print("RESULT " + json.dumps(out))
`;

const words = 'the of experts router token model sparse layer weight each share batch load balance loss train data text word number'.split(' ');
let seed = 7;
const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
const sentence = (n) => Array.from({ length: n }, () => words[Math.floor(random() * words.length)]).join(' ');
const pairs = [];
for (let q = 0; q < 16; q++) {
  const context = `Question: ${sentence(40)}\nAnswer:`;
  for (let c = 0; c < 4; c++) pairs.push([context, ` ${sentence(3)}`]);
}

const server = await startServer(model, { port: 0, modelId: 'bench' });
const info = await server.ready;
const lm = await api.loadPretrained(model, { backend: api.createBackend(undefined, {}) });
const requests = pairs.map(([context, continuation]) => api.encodePair(lm.tokenizer, context, continuation, 0));
const python = process.env.LM_EVAL_PYTHON ?? 'python3';
const lmEval = () =>
  new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const child = spawn(python, ['-c', DRIVER, server.url, JSON.stringify(pairs), String(info.maxPositionEmbeddings)]);
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out.split('RESULT ')[1])) : reject(new Error(`lm-eval failed (${python}):\n${err.slice(-2000)}`))));
  });

const seconds = { 'lm-eval via serve, batch_size 1': [], 'lm-eval via serve, batch_size 8': [], 'olmoe eval, no prefix sharing': [], 'olmoe eval, prefix sharing': [] };
let maxDiff = 0;
try {
  for (let rep = 0; rep < reps; rep++) {
    const viaServe = await lmEval();
    seconds['lm-eval via serve, batch_size 1'].push(viaServe.batch1[0]);
    seconds['lm-eval via serve, batch_size 8'].push(viaServe.batch8[0]);
    for (const [name, prefixSharing] of [['olmoe eval, no prefix sharing', false], ['olmoe eval, prefix sharing', true]]) {
      const start = performance.now();
      const scored = await api.loglikelihood(lm.model, requests, { prefixSharing });
      seconds[name].push((performance.now() - start) / 1000);
      scored.forEach((r, i) => (maxDiff = Math.max(maxDiff, Math.abs(r.logprob - viaServe.batch1[1][i]), Math.abs(r.logprob - viaServe.batch8[1][i]))));
    }
  }
} finally {
  await server.close();
}
const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
const base = median(seconds['lm-eval via serve, batch_size 1']);
console.log(`${model}: ${pairs.length} loglikelihood requests, ${(requests.reduce((s, r) => s + r.context.length + r.continuation.length, 0) / requests.length).toFixed(1)} tokens each, backend ${lm.model.backend.name}, medians of ${reps}`);
for (const [name, list] of Object.entries(seconds)) {
  console.log(`  ${name.padEnd(32)} ${(pairs.length / median(list)).toFixed(1).padStart(6)} requests/s  ×${(base / median(list)).toFixed(2)}`);
}
console.log(`  largest |lm-eval − olmoe eval| log-likelihood: ${maxDiff.toExponential(1)}`);
