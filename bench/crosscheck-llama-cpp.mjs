#!/usr/bin/env node
// Cross-check GGUF files between olmoe and llama.cpp (node-llama-cpp 3.21.1, CPU): both load the same file and
// give next-token probabilities at every position of the same ids; prints the largest difference and argmax
// agreement per file. Quantized files written by `olmoe quantize` must load in llama.cpp and agree with olmoe.
//   (in a scratch folder) npm i -E node-llama-cpp@3.21.1
//   NLC=/scratch/node_modules/node-llama-cpp/dist/index.js node bench/crosscheck-llama-cpp.mjs A.gguf B.gguf ...
import { createBackend, loadModel } from '../dist/src/index.js';

const nlcPath = process.env.NLC;
if (!nlcPath) throw new Error('set NLC to node-llama-cpp/dist/index.js of a folder where node-llama-cpp@3.21.1 is installed');
const { getLlama } = await import(nlcPath);
const ids = (process.env.IDS ?? '5,80,17,200,33,9,120,77,3,150,61,42').split(',').map(Number);
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });

async function llamaProbabilities(path) {
  const model = await llama.loadModel({ modelPath: path });
  const context = await model.createContext({
    contextSize: Math.max(64, ids.length + 8), batchSize: Math.max(32, ids.length), threads: { ideal: 2, min: 2 },
    flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32',
  });
  const results = await context.getSequence().controlledEvaluate(ids.map((id) => [id, { generateNext: { probabilities: true } }]));
  const rows = results.map((r) => r.next.probabilities);
  await context.dispose();
  await model.dispose();
  return rows;
}

function softmax(logits) {
  const max = Math.max(...logits);
  const exps = logits.map((v) => Math.exp(v - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / total);
}

for (const path of process.argv.slice(2)) {
  const ours = await loadModel(path, { backend: createBackend() });
  const vocab = ours.config.vocabSize;
  const logits = ours.backend.toFloat32(ours.forward(Int32Array.from(ids)));
  const theirs = await llamaProbabilities(path);
  let maxDiff = 0;
  let agree = 0;
  ids.forEach((_, t) => {
    const p = softmax(Array.from(logits.subarray(t * vocab, (t + 1) * vocab)));
    const q = theirs[t];
    p.forEach((value, token) => (maxDiff = Math.max(maxDiff, Math.abs(value - (q.get(token) ?? 0)))));
    const ourTop = p.indexOf(Math.max(...p));
    if (ourTop === [...q.keys()][0]) agree++;
  });
  console.log(`${path}: max |p_olmoe − p_llama.cpp| = ${maxDiff.toExponential(2)}, argmax agree ${agree}/${ids.length}`);
}
await llama.dispose();
