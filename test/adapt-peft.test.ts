// PEFT compatibility, checked against PEFT itself when Python has peft, torch and transformers (OLMOE_PEFT_PYTHON names
// such a python; default python3): an adapter olmoe trained loads in PEFT on the tiny fixture and gives olmoe's
// logits of base + adapter, and an adapter PEFT made and saved loads in olmoe with PEFT's logits. Without them the
// test is skipped, saying so (the names and config keys are then checked against PEFT's source only, in
// adapt-lora.test.ts). Experts are not in it: transformers 5 fuses OLMoE's experts into gate_up_proj/down_proj
// parameters (PEFT reaches those with target_parameters, another layout); per-expert names are transformers 4's.
// Checked with peft 0.21.0, torch 2.13.0+cpu, transformers 5.17.0 installed from local wheels into a venv:
//   python3 -m venv V && V/bin/pip install --no-index --find-links WHEELS torch==2.13.0+cpu peft==0.21.0 transformers==5.17.0
//   OLMOE_PEFT_PYTHON=V/bin/python node --test dist/test/adapt-peft.test.js
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { createRng } from '../src/core/rng.js';
import { readConfigFile } from '../src/model/config.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { attachLora } from '../src/train/adapt/lora-train.js';
import { adapterPatch, readPeftAdapter } from '../src/train/adapt/peft.js';
import { loadParams } from '../src/train/checkpoint.js';
import { TrainModel } from '../src/train/model.js';
import { repoRoot, tempDir, tinyModelDir } from './helpers.js';

const python = process.env.OLMOE_PEFT_PYTHON ?? 'python3';
const script = join(repoRoot, 'test', 'peft', 'peft_logits.py');
const probe = spawnSync(python, ['-c', 'import peft, torch, transformers; print(peft.__version__, torch.__version__, transformers.__version__)'], { encoding: 'utf8' });
const versions = probe.status === 0 ? probe.stdout.trim() : undefined;
const skip = versions ? false : `PEFT compatibility NOT checked: ${python} cannot import peft, torch and transformers (set OLMOE_PEFT_PYTHON to a python that can)`;
if (skip) process.stderr.write(`adapt-peft: ${skip}\n`);
else process.stderr.write(`adapt-peft: peft, torch, transformers ${versions}\n`);

const IDS = [3, 17, 250, 9, 41, 100, 7, 12];
const backend = new ReferenceBackend();

function runPython(args: string[]): { logits: number[][]; modules?: string[] } {
  const result = spawnSync(python, [script, ...args], { encoding: 'utf8', timeout: 300_000, maxBuffer: 1 << 28 });
  assert.equal(result.status, 0, result.stderr);
  return JSON.parse(result.stdout.trim().split('\n').at(-1)!);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

describe('PEFT compatibility (against PEFT itself)', { skip }, () => {
  it('an adapter olmoe trained loads in PEFT and gives olmoe\'s logits of base + adapter', async () => {
    const model = new TrainModel({ config: readConfigFile(join(tinyModelDir, 'config.json')), routing: 'token_choice', capacityFactor: 1 }, backend);
    loadParams(model, tinyModelDir);
    const lora = attachLora(model, { r: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate'], useRslora: false }, createRng(3));
    const rng = createRng(4);
    for (const p of lora.params) if (p.name.includes('lora_B')) backend.write(p.value, Float32Array.from({ length: p.shape[0]! * p.shape[1]! }, () => 0.2 * (rng() - 0.5)));
    const dir = tempDir('olmoe-peft-');
    lora.save(dir);
    const ours = backend.toFloat32(model.forward(backend, { tokens: Int32Array.from([...IDS, 0]), sequences: 1 }, { loadBalancing: 0, routerZ: 0 }).logits);
    const peft = runPython([tinyModelDir, dir, JSON.stringify(IDS)]);
    assert.deepEqual(peft.modules, [...lora.modules].sort().map((m) => `base_model.model.${m}`));
    const base = backend.toFloat32((await loadPretrained(tinyModelDir, { backend })).model.forward(Int32Array.from(IDS)));
    assert.ok(maxAbsDiff(ours, base) > 1e-2, 'the adapter changes the logits (else nothing is compared)');
    const error = maxAbsDiff(peft.logits.flat(), ours);
    process.stderr.write(`adapt-peft: olmoe-trained adapter in PEFT: max |Δlogit| ${error.toExponential(2)}\n`);
    assert.ok(error < 1e-4, `PEFT vs olmoe: max |Δlogit| ${error}`);
  });

  it('an adapter PEFT saved loads in olmoe (--adapter\'s path) with PEFT\'s logits', async () => {
    const dir = tempDir('olmoe-peft-saved-');
    const peft = runPython([tinyModelDir, '--save-random', dir, JSON.stringify(IDS), 'q_proj,v_proj,o_proj']);
    const adapted = await loadPretrained(tinyModelDir, { backend, patch: (c) => adapterPatch(readPeftAdapter(dir, c)) });
    const error = maxAbsDiff(peft.logits.flat(), backend.toFloat32(adapted.model.forward(Int32Array.from(IDS))));
    process.stderr.write(`adapt-peft: PEFT-saved adapter in olmoe: max |Δlogit| ${error.toExponential(2)}\n`);
    assert.ok(error < 1e-4, `PEFT vs olmoe: max |Δlogit| ${error}`);
  });
});
