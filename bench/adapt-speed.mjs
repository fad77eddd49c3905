#!/usr/bin/env node
// Speed of the adaptation commands' steps on a model (default models/olmoe-mini): tokens/s of SFT and DPO optimizer
// steps (full fine-tuning; with --lora, the config's default LoRA block on the same data), measured alternately in
// one run (SFT step, DPO step, ...) so a busy machine slows both alike; and the share of a DPO step's time that the
// reference pass takes without the cache (the reference model scored on the step's pairs, as a trainer without
// precomputed log-probs does every step) and with it (the step's values read from the cache file). Medians over
// --steps steps after one warm-up step. Build first (npx tsc -p .).
//   node bench/adapt-speed.mjs [--model models/olmoe-mini] [--steps 5] [--batch 16] [--threads N] [--lora]
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const olmoe = await import(join(root, 'dist', 'src', 'index.js'));
const args = process.argv.slice(2);
const flag = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const modelPath = join(root, flag('--model', 'models/olmoe-mini'));
const steps = Number(flag('--steps', '5'));
const batch = Number(flag('--batch', '16'));
const lora = args.includes('--lora');
const threads = flag('--threads', undefined);
const backend = olmoe.createBackend(undefined, threads ? { threads: Number(threads) } : {});
const scratch = mkdtempSync(join(tmpdir(), 'olmoe-adapt-bench-'));

const common = (kind, train) => ({
  model: modelPath, out: join(scratch, kind), steps: 100, ...(kind === 'dpo' && { reference_cache: join(scratch, 'cache') }),
  data: { train: [join(root, 'data', 'adapt', train)], max_length: 256, overflow: 'truncate', batch_size: batch },
  ...(lora && { lora: {} }),
});
const sftConfig = olmoe.parseSftConfig(common('sft', 'sft-train.jsonl'));
const dpoConfig = olmoe.parseDpoConfig(common('dpo', 'preference-train.jsonl'));
const tokenizer = olmoe.OlmoeTokenizer.fromFolder(modelPath);
const context = (config) => ({ config, modelPath, tokenizer, backend, say: () => {} });

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const seconds = (from) => (performance.now() - from) / 1000;

function trainer(config) {
  const model = new olmoe.TrainModel(olmoe.readArchitecture(modelPath), backend);
  olmoe.loadParams(model, modelPath);
  let params = model.params;
  if (config.lora) {
    const attached = olmoe.attachLora(model, olmoe.loraSettings(config.lora, modelPath), olmoe.createRng(0));
    params = attached.params;
  }
  const optimizer = new olmoe.AdamW(backend, params, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
  return { model, params, optimizer };
}

let trainers;
try {
  trainers = { sft: trainer(sftConfig), dpo: trainer(dpoConfig) };
} catch (error) {
  console.log(`cannot train${lora ? ' with LoRA' : ''} in this build: ${error.message}`);
  process.exit(0);
}
// The reference pass over all pairs, uncached then cached (prepareDpo runs it).
let started = performance.now();
const dpo = await olmoe.prepareDpo(context(dpoConfig));
const referenceAll = seconds(started);
started = performance.now();
await olmoe.prepareDpo(context(dpoConfig));
const referenceAllCached = seconds(started);
const sft = await olmoe.prepareSft(context(sftConfig));
// The same pairs, in the same order, as the DPO method trains on (for the per-step reference pass).
const records = await olmoe.readRecords(dpoConfig.data.train[0], olmoe.parsePreferenceRecord);
const { pairs } = olmoe.encodePreferences(tokenizer, records, { maxLength: 256, policy: 'truncate' });

/** One optimizer step of `method` on examples [k·B, (k+1)·B); seconds and tokens in the forwards. */
function step(method, t, k) {
  const indices = Array.from({ length: batch }, (_, i) => (k * batch + i) % method.examples);
  const begin = performance.now();
  for (const p of t.params) backend.fill(p.grad, 0);
  const outcomes = method.step([indices], (b) => {
    const tape = new olmoe.Tape(backend);
    const result = t.model.forward(tape, b, { loadBalancing: 0, routerZ: 0 });
    tape.backward(result.loss);
    tape.release();
    return result;
  });
  const { scale } = olmoe.clipGradNorm(backend, t.params, 1);
  t.optimizer.step(1e-6, scale);
  return { seconds: seconds(begin), tokens: outcomes.reduce((n, o) => n + o.tokens, 0), indices };
}

const results = { sft: [], dpo: [], refUncached: [], refCached: [] };
const dpoModel = await olmoe.loadModel(modelPath, { backend });
for (let k = 0; k <= steps; k++) {
  const s = step(sft, trainers.sft, k);
  const d = step(dpo, trainers.dpo, k);
  // The reference pass of this step's pairs: scored anew (a fresh cache folder) and read from the warm cache.
  const stepSequences = d.indices.flatMap((i) => [pairs[i].chosen, pairs[i].rejected]);
  const fresh = mkdtempSync(join(scratch, 'fresh-'));
  let begin = performance.now();
  await olmoe.referenceLogprobs(dpoModel, stepSequences, { dir: fresh, modelFingerprint: '00000000' });
  const uncached = seconds(begin);
  begin = performance.now();
  await olmoe.referenceLogprobs(dpoModel, stepSequences, { dir: fresh, modelFingerprint: '00000000' });
  const cached = seconds(begin);
  if (k === 0) continue; // warm-up
  results.sft.push(s.tokens / s.seconds);
  results.dpo.push(d.tokens / d.seconds);
  results.refUncached.push(uncached / (uncached + d.seconds));
  results.refCached.push(cached / (cached + d.seconds));
}
rmSync(scratch, { recursive: true, force: true });
const cpu = cpus()[0]?.model ?? 'unknown CPU';
console.log(`model ${modelPath}, ${lora ? 'LoRA (default block)' : 'full fine-tuning'}, backend ${backend.name}, ${cpus().length} cores (${cpu}), batch ${batch} examples, median of ${steps} steps`);
console.log(`SFT: ${median(results.sft).toFixed(0)} tokens/s (packed rows of 256)`);
console.log(`DPO: ${median(results.dpo).toFixed(0)} tokens/s (chosen + rejected rows, padded to the longest); DPO/SFT tokens/s ratio ${(median(results.dpo) / median(results.sft)).toFixed(2)}`);
console.log(`reference pass over all ${dpo.examples} pairs: ${referenceAll.toFixed(1)} s computed, ${referenceAllCached.toFixed(2)} s from the cache`);
console.log(`share of a DPO step's time in the reference pass: ${(100 * median(results.refUncached)).toFixed(0)} % without the cache, ${(100 * median(results.refCached)).toFixed(1)} % with it`);
