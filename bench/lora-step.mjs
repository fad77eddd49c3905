#!/usr/bin/env node
// A LoRA training step against a full fine-tuning step on the same model and batch (issue 15): forward, backward and
// AdamW of what trains, alternating full / LoRA in one process, median tokens/s of each and the ratio. The LoRA run
// freezes the base (tape constants: no weight gradients for it) and trains A and B only.
//   node bench/lora-step.mjs [MODEL=models/olmoe-mini] [--targets q_proj,k_proj,v_proj,o_proj] [--r 16] [--rounds 5]
//     [--dropout 0.05] [--batch 4] [--seq 256] [--threads N]
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus } from 'node:os';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const lib = await import(join(root, 'dist', 'src', 'index.js'));
const { Tape } = await import(join(root, 'dist', 'src', 'autograd', 'tape.js'));
const { AdamW } = await import(join(root, 'dist', 'src', 'train', 'optim.js'));
const { readConfigFile, createBackend, TrainModel, loadParams, attachLora, createRng } = { ...lib, ...(await import(join(root, 'dist', 'src', 'model', 'config.js'))), ...(await import(join(root, 'dist', 'src', 'core', 'rng.js'))) };

const args = process.argv.slice(2);
const flag = (name, fallback) => (args.includes(name) ? args.splice(args.indexOf(name), 2)[1] : fallback);
const targets = flag('--targets', 'q_proj,k_proj,v_proj,o_proj').split(',');
const r = Number(flag('--r', '16'));
const dropout = Number(flag('--dropout', '0.05'));
const rounds = Number(flag('--rounds', '5'));
const batchRows = Number(flag('--batch', '4'));
const seq = Number(flag('--seq', '256'));
const threads = flag('--threads', undefined);
const modelDir = resolve(args[0] ?? join(root, 'models', 'olmoe-mini'));

const backend = createBackend('native', threads ? { threads: Number(threads) } : {});
const config = readConfigFile(join(modelDir, 'config.json'));
const arch = { config, routing: 'token_choice', capacityFactor: 1 };
const rng = createRng(1);
const tokens = Int32Array.from({ length: batchRows * (seq + 1) }, () => Math.floor(rng() * config.vocabSize));
const batch = { tokens, sequences: batchRows };
const weights = { loadBalancing: 0.01, routerZ: 0.001 };

function run(kind) {
  const model = new TrainModel(arch, backend);
  loadParams(model, modelDir);
  let params = model.params;
  let lora;
  if (kind === 'lora') {
    lora = attachLora(model, { r, alpha: 2 * r, dropout, targetModules: targets, useRslora: false }, createRng(2));
    params = lora.params;
  }
  const optimizer = new AdamW(backend, params);
  const step = () => {
    model.zeroGrads();
    const tape = new Tape(backend);
    tape.backward(model.forward(tape, batch, weights).loss);
    tape.release();
    optimizer.step(1e-4);
  };
  return { step, lora };
}

const runs = { full: run('full'), lora: run('lora') };
const l = runs.lora.lora;
console.log(`model ${modelDir}: LoRA r=${r} on ${targets.join(',')}: ${l.modules.length} modules, trainable ${l.trainableCount} of ${l.totalCount} (${((100 * l.trainableCount) / l.totalCount).toFixed(2)}%)`);
for (const kind of ['full', 'lora']) runs[kind].step(); // warm-up
const seconds = { full: [], lora: [] };
for (let round = 0; round < rounds; round++) {
  for (const kind of ['full', 'lora']) {
    const start = performance.now();
    runs[kind].step();
    seconds[kind].push((performance.now() - start) / 1000);
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const perStep = batchRows * seq;
const rate = (kind) => perStep / median(seconds[kind]);
console.log(`${batchRows}×${seq} tokens per step, ${rounds} alternating rounds, ${backend.name} backend, ${cpus()[0]?.model ?? 'cpu'}`);
console.log(`full fine-tuning: ${rate('full').toFixed(0)} tokens/s (median ${median(seconds.full).toFixed(3)} s/step)`);
console.log(`LoRA:             ${rate('lora').toFixed(0)} tokens/s (median ${median(seconds.lora).toFixed(3)} s/step)`);
console.log(`LoRA / full: ${(rate('lora') / rate('full')).toFixed(2)}×`);
