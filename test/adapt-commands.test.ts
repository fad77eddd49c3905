/**
 * `olmoe sft|dpo|kto` end to end on the tiny fixture: DPO at step 0 (policy = reference) has loss ln 2 and zero
 * margins through the real command path; the DPO and KTO losses' gradients w.r.t. every parameter pass a float64
 * finite-difference check through the weighted cross-entropy; the SFT batch the model sees targets exactly the
 * assistant turns; a run killed at step 2 and resumed ends bitwise equal to a straight run (SFT, DPO, KTO); the
 * reference cache is reused only for the same model bytes and data; bad input is a clear error or a counted warning.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, openSync, readFileSync, readSync, closeSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { IGNORE_TARGET } from '../src/core/training.js';
import { createRng } from '../src/core/rng.js';
import { Tape } from '../src/autograd/tape.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { floats } from '../src/backends/reference/tensor.js';
import { readSafetensorsHeader } from '../src/io/safetensors.js';
import { parseConfig } from '../src/model/config.js';
import { modelFingerprint } from '../src/model/fingerprint.js';
import { OlmoeTokenizer } from '../src/tokenizer/tokenizer.js';
import { TrainModel, type StepResult, type TrainBatch } from '../src/train/model.js';
import { readPeftAdapter } from '../src/train/adapt/peft.js';
import { loraSettings, parseDpoConfig, parseKtoConfig, parseSftConfig, type AdaptKind } from '../src/train/adapt/config.js';
import type { EncodedSequence } from '../src/train/adapt/encode.js';
import { dpoRowWeights, forwardRows, ktoRowWeights, prepareDpo, prepareKto } from '../src/train/adapt/preference-method.js';
import { adapt, type AdaptConfig, type AdaptContext, type AdaptLogRecord } from '../src/train/adapt/run.js';
import { prepareSft } from '../src/train/adapt/sft-method.js';
import { cliPath, tempDir, tinyModelDir } from './helpers.js';
import { centralDifference } from './finite-difference.js';

const LN2 = Math.log(2);
const PREPARE = { sft: prepareSft, dpo: prepareDpo, kto: prepareKto };
const PARSE = { sft: parseSftConfig, dpo: parseDpoConfig, kto: parseKtoConfig };

const chat = (user: string, assistant: string) => ({ messages: [{ role: 'user', content: user }, { role: 'assistant', content: assistant }] });
const SFT_LINES = [
  chat('Capital of France?', 'Paris.'),
  { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Two plus two?' }, { role: 'assistant', content: 'Four.' }, { role: 'user', content: 'And three?' }, { role: 'assistant', content: 'Five.' }] },
  chat('Colour of the sky?', 'Blue.'),
  chat('Opposite of hot?', 'Cold.'),
  chat('A cat says?', 'Meow.'),
  chat('Legs of a spider?', 'Eight.'),
];
const PREFERENCE_LINES = [
  { prompt: 'Capital of France?', chosen: 'Paris.', rejected: 'Rome.' },
  { prompt: 'Colour of the sky?', chosen: 'Blue.', rejected: 'Why do you ask?' },
  { prompt: 'Opposite of hot?', chosen: 'Cold.', rejected: 'Co' },
  { prompt: 'A cat says?', chosen: 'Meow.', rejected: 'Woof.' },
  { prompt: 'Legs of a spider?', chosen: 'Eight.', rejected: 'Six.' },
  { prompt: 'Two plus two?', chosen: 'Four.', rejected: 'Five.' },
];
const KTO_LINES = [
  { prompt: 'Capital of France?', completion: 'Paris.', label: true },
  { prompt: 'Colour of the sky?', completion: 'Green.', label: false },
  ...PREFERENCE_LINES.slice(2), // paired lines: split into a desirable and an undesirable example
];

function jsonl(dir: string, name: string, lines: readonly unknown[]): string {
  const file = join(dir, name);
  writeFileSync(file, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return file;
}

function configFor(kind: AdaptKind, dir: string, extra: Record<string, unknown> = {}): AdaptConfig {
  const data = { sft: SFT_LINES, dpo: PREFERENCE_LINES, kto: KTO_LINES }[kind];
  const optimizer = kind === 'kto' ? { lr: 1e-4 } : { lr: 1e-3, warmup_steps: 1 };
  return PARSE[kind]({
    model: tinyModelDir, out: join(dir, 'out'), steps: 4, checkpoint_every: 2, seed: 3, optimizer,
    data: { train: [jsonl(dir, `${kind}.jsonl`, data)], max_length: 64, batch_size: 4, micro_batches: 2 },
    ...extra,
  } as never);
}

async function run(kind: AdaptKind, config: AdaptConfig, opts: { resume?: boolean; stopAfterStep?: number } = {}) {
  const records: AdaptLogRecord[] = [];
  const lines: string[] = [];
  const summary = await adapt({ kind, config, backend: new ReferenceBackend(), ...opts, onStep: (r) => records.push(r), say: (l) => lines.push(l) }, PREPARE[kind]);
  return { records, lines, summary };
}

describe('DPO at step 0: the policy is the reference', () => {
  it('loss ln 2, zero rewards and margins, through the command path (reference from the inference path, policy from training)', async () => {
    const dir = tempDir();
    const config = configFor('dpo', dir, { steps: 1, optimizer: { lr: 1e-3 }, data: { train: [jsonl(dir, 'p.jsonl', PREFERENCE_LINES)], max_length: 64, batch_size: 6 } });
    const { records, lines } = await run('dpo', config);
    const first = records[0]!;
    assert.ok(Math.abs(first.loss - LN2) < 1e-4, `loss ${first.loss} vs ln 2`);
    for (const key of ['rewards/chosen', 'rewards/rejected', 'rewards/margins']) assert.ok(Math.abs(first[key] as number) < 1e-4, `${key} ${first[key]}`);
    assert.ok(lines.some((l) => /reference log-probs of 12 sequences: 12 computed, 0 from the cache/.test(l)), lines.join('\n'));
  });
});

describe('the reference cache', () => {
  const summaryLine = async (config: AdaptConfig, modelPath: string) => {
    const context: AdaptContext = { config, modelPath, tokenizer: OlmoeTokenizer.fromFolder(modelPath), backend: new ReferenceBackend(), say: () => {} };
    return (await prepareDpo(context)).summary.find((l) => l.startsWith('reference log-probs'))!;
  };

  it('is reused for the same model and data, rebuilt when a weight byte or a data line changes', async () => {
    const dir = tempDir();
    const cache = join(dir, 'cache');
    const config = configFor('dpo', dir, { reference_cache: cache });
    assert.match(await summaryLine(config, tinyModelDir), /12 computed, 0 from the cache/);
    assert.match(await summaryLine(config, tinyModelDir), /0 computed, 12 from the cache/);
    // Other data: one rejected answer changed.
    const changed = configFor('dpo', dir, { reference_cache: cache, data: { train: [jsonl(dir, 'other.jsonl', [...PREFERENCE_LINES.slice(0, 5), { ...PREFERENCE_LINES[5], rejected: 'Three.' }])], max_length: 64, batch_size: 4 } });
    assert.match(await summaryLine(changed, tinyModelDir), /12 computed, 0 from the cache/);
    // Other weights: one byte inside a tensor, away from the bytes the quick fingerprint samples.
    const model = join(dir, 'model');
    cpSync(tinyModelDir, model, { recursive: true });
    const entry = [...readSafetensorsHeader(join(model, 'model.safetensors')).tensors.values()].find((e) => e.byteLength > 1024)!;
    const fd = openSync(join(model, 'model.safetensors'), 'r+');
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, entry.offset + 200);
    byte[0] = byte[0]! ^ 1;
    writeSync(fd, byte, 0, 1, entry.offset + 200);
    closeSync(fd);
    assert.equal(modelFingerprint(model), modelFingerprint(tinyModelDir), 'the sampled fingerprint misses this change');
    assert.match(await summaryLine(config, model), /12 computed, 0 from the cache/);
  });
});

describe('SFT: the batch the model sees', () => {
  it('targets every assistant turn (with its end-of-turn token) and no system or user token, packed or padded', async () => {
    for (const packing of [true, false]) {
      const dir = tempDir();
      const config = configFor('sft', dir, { packing, data: { train: [jsonl(dir, 'sft.jsonl', SFT_LINES)], max_length: 160, batch_size: 4 } });
      const tokenizer = OlmoeTokenizer.fromFolder(tinyModelDir);
      const method = await prepareSft({ config, modelPath: tinyModelDir, tokenizer, backend: new ReferenceBackend(), say: () => {} });
      const seen: TrainBatch[] = [];
      method.step([[0, 1]], (batch) => (seen.push(batch), { crossEntropy: 0 } as StepResult));
      const batch = seen[0]!;
      const trained = Array.from(batch.targets!).filter((t) => t !== IGNORE_TARGET);
      const text = tokenizer.decode(trained);
      assert.equal(text, 'Paris.<|endoftext|>Four.<|endoftext|>Five.<|endoftext|>', `packing ${packing}`);
      // Per-token reduction: every trained token weighs 1 / (trained tokens of the step).
      const weights = Array.from(batch.tokenWeights!(new Float64Array(batch.targets!.length))).filter((w) => w > 0);
      assert.equal(weights.length, trained.length);
      for (const w of weights) assert.ok(Math.abs(w - 1 / trained.length) < 1e-15);
    }
  });
});

describe('finite differences in float64: the DPO and KTO losses through the weighted cross-entropy', () => {
  const backend = new ReferenceBackend({ precision: 'f64' });
  const rng = createRng(11);
  const config = parseConfig({
    model_type: 'olmoe', vocab_size: 13, hidden_size: 8, intermediate_size: 4, num_hidden_layers: 2, num_attention_heads: 2,
    num_key_value_heads: 2, num_experts: 4, num_experts_per_tok: 2, max_position_embeddings: 16, rms_norm_eps: 1e-5,
  });
  const sequence = (tokens: number[], trainedFrom: number): EncodedSequence => ({ tokens: Int32Array.from(tokens), lossMask: Uint8Array.from(tokens, (_, i) => (i >= trainedFrom ? 1 : 0)) });
  // Rows: 2 of "chosen"/examples then 2 of "rejected"/KL sequences, different lengths (padding exercised).
  const members = [sequence([1, 4, 2, 7, 9], 3), sequence([1, 5, 3, 3, 8, 2], 3), sequence([1, 4, 2, 6], 3), sequence([1, 5, 3, 11, 12, 10, 2], 3)];
  const reference = [{ logprob: -5.1, tokens: 2 }, { logprob: -6.3, tokens: 2 }, { logprob: -8.2, tokens: 3 }, { logprob: -7.4, tokens: 4 }];

  function check(name: string, rowWeights: (logps: Float64Array) => { weights: Float64Array; value: number }): void {
    const model = new TrainModel({ config, routing: 'token_choice', capacityFactor: 1 }, backend);
    model.initialize((values) => values.forEach((_, i) => (values[i] = (rng() * 2 - 1) * 0.6)));
    const weights = { loadBalancing: 0, routerZ: 0 };
    let value = NaN;
    const lossOf = (executor: Tape | ReferenceBackend) => {
      forwardRows(members, 0, (batch) => model.forward(executor, batch, weights), (logps) => {
        const out = rowWeights(logps);
        value = out.value;
        return out.weights;
      });
      return value;
    };
    model.zeroGrads();
    const tape = new Tape(backend);
    let result: StepResult | null = null;
    forwardRows(members, 0, (batch) => (result = model.forward(tape, batch, weights)), (logps) => rowWeights(logps).weights);
    tape.backward(result!.loss);
    let diff = 0;
    let sum = 0;
    for (const p of model.params) {
      const values = floats(p.value);
      const grad = floats(p.grad);
      for (const j of [0, Math.floor(values.length / 3), Math.floor((2 * values.length) / 3), values.length - 1]) {
        const numeric = centralDifference(values, j, () => lossOf(backend));
        diff += (grad[j]! - numeric) ** 2;
        sum += (Math.abs(grad[j]!) + Math.abs(numeric)) ** 2;
      }
    }
    assert.ok(sum > 0, `${name}: all gradients are zero`);
    assert.ok(Math.sqrt(diff / sum) < 1e-6, `${name}: relative error ${Math.sqrt(diff / sum)}`);
  }

  for (const type of ['dpo', 'dpo_norm', 'simpo'] as const) {
    it(`${type}: gradient of the loss w.r.t. parameters (embedding, attention, experts, router, head)`, () => {
      const options = { type, beta: 0.7, labelSmoothing: type === 'dpo' ? 0.1 : 0, ...(type === 'simpo' && { gamma: 0.3 }) };
      check(type, (logps) => {
        const { weights, loss } = dpoRowWeights(logps, reference, options);
        return { weights, value: loss.loss };
      });
    });
  }

  it('kto: gradient with the reference point detached (the KL rows weigh nothing)', () => {
    check('kto', (logps) => {
      const { weights, loss } = ktoRowWeights(logps, reference, [true, false], { beta: 0.9, desirableWeight: 1.3, undesirableWeight: 0.8 });
      return { weights, value: loss.loss };
    });
  });
});

describe('resume after a kill is exact (full fine-tuning)', () => {
  for (const kind of ['sft', 'dpo', 'kto'] as const) {
    it(`${kind}: 4 steps straight equal 2 steps, a kill, and a resume, bitwise`, async () => {
      const straight = configFor(kind, tempDir());
      const straightRun = await run(kind, straight);
      const killedDir = tempDir();
      const killed = configFor(kind, killedDir);
      await run(kind, killed, { stopAfterStep: 3 }); // step 3 is logged, never checkpointed: the resume redoes it
      const resumed = await run(kind, killed, { resume: true });
      assert.ok(resumed.lines.some((l) => /resuming .* at step 2/.test(l)), resumed.lines.join('\n'));
      const weights = (c: AdaptConfig) => readFileSync(join(c.out, 'model.safetensors'));
      assert.ok(weights(straight).equals(weights(killed)), `${kind}: final weights differ`);
      assert.ok(!weights(straight).equals(readFileSync(join(tinyModelDir, 'model.safetensors'))), 'training changed the weights');
      const losses = (c: AdaptConfig) => readFileSync(join(c.out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss);
      assert.deepEqual(losses(killed), losses(straight));
      assert.equal(straightRun.records.length, 4);
    });
  }
});

describe('KTO metrics of a kind a micro-batch lacks', () => {
  it('are left out of the step (not counted as 0) when no example of that kind is in it', async () => {
    const dir = tempDir();
    // 7 desirable examples and 1 undesirable: one epoch is 2 steps of 4, and only one of them holds the undesirable one.
    const lines = [0, 1, 2, 3, 4, 5, 6].map((i) => ({ prompt: `Question ${i}?`, completion: `Answer ${i}.`, label: true }));
    lines.push({ prompt: 'Question 7?', completion: 'No idea.', label: false });
    const config = configFor('kto', dir, { steps: 2, data: { train: [jsonl(dir, 'mostly-good.jsonl', lines)], max_length: 64, batch_size: 4, micro_batches: 2 } });
    const { records } = await run('kto', config);
    assert.equal(records.length, 2);
    for (const r of records) assert.ok(Number.isFinite(r['rewards/chosen'] as number), `rewards/chosen of step ${r.step}`);
    const without = records.filter((r) => r['rewards/rejected'] === undefined);
    assert.equal(without.length, 1, `steps without rewards/rejected: ${records.map((r) => r['rewards/rejected']).join(', ')}`);
    assert.equal(without[0]!['logps/rejected'], undefined);
    const withIt = records.find((r) => r['rewards/rejected'] !== undefined)!;
    assert.ok(Number.isFinite(withIt['logps/rejected'] as number) && (withIt['logps/rejected'] as number) < -1, `logps/rejected ${withIt['logps/rejected']}: one example's mean log-prob, not diluted toward 0`);
  });
});

describe('a run that diverges', () => {
  for (const kind of ['dpo', 'kto'] as const) {
    it(`${kind}: non-finite policy log-probs stop the run as diverged, naming the step`, async () => {
      const config = configFor(kind, tempDir(), { optimizer: { lr: 1e30 } });
      await assert.rejects(run(kind, config), (e: Error) => {
        assert.equal(e.name, 'DivergedError', e.message);
        assert.match(e.message, /log-probability of sequence \d+ of a micro-batch is (NaN|-?Infinity) at step 2; the last good checkpoint is/);
        return true;
      });
    });
  }
});

describe('configs refuse what would be ignored or fail late', () => {
  it('warmup as long as the run that epochs decide is an error naming the key', async () => {
    const config = configFor('sft', tempDir(), { steps: undefined, epochs: 1, optimizer: { lr: 1e-3, warmup_steps: 5 } });
    await assert.rejects(run('sft', config), /optimizer\.warmup_steps: 5 must be less than the \d+ steps that epochs \(1\)/);
  });

  it('expert LoRA with dropout, and KTO with a held-out file, are errors naming the key', () => {
    const dir = tempDir();
    assert.throws(() => configFor('sft', dir, { lora: { experts: 'all', dropout: 0.05 } }), /lora\.dropout.*cannot drop per-token inputs/);
    assert.doesNotThrow(() => configFor('sft', dir, { lora: { experts: 'all', dropout: 0 } }));
    assert.throws(() => configFor('kto', dir, { data: { train: [jsonl(dir, 'k.jsonl', KTO_LINES)], valid: [jsonl(dir, 'k.jsonl', KTO_LINES)] } }), /data\.valid.*no held-out evaluation/);
  });
});

describe('the out folder is checked before the reference pass', () => {
  it('a second run into a used folder, and a resume of an empty one, stop before any reference log-prob is computed', async () => {
    const config = configFor('dpo', tempDir(), { steps: 1, checkpoint_every: 1, optimizer: { lr: 1e-3 } });
    await run('dpo', config);
    for (const [resume, message] of [[false, /already holds a run/], [true, /no checkpoint to resume from/]] as const) {
      const target = resume ? configFor('dpo', tempDir(), { steps: 1, optimizer: { lr: 1e-3 } }) : config;
      const lines: string[] = [];
      await assert.rejects(adapt({ kind: 'dpo', config: target, backend: new ReferenceBackend(), resume, say: (l) => lines.push(l) }, PREPARE.dpo), message);
      assert.ok(!lines.some((l) => /reference log-probs/.test(l)), lines.join('\n'));
    }
  });
});

describe('resume after a kill is exact (LoRA, with dropout)', () => {
  const lora = { r: 4, alpha: 8, dropout: 0.2, attention: ['q_proj', 'v_proj'], router: true };
  for (const kind of ['sft', 'dpo', 'kto'] as const) {
    it(`${kind}: 4 steps straight equal 2 steps, a kill, and a resume, bitwise on the adapter`, async () => {
      const straight = configFor(kind, tempDir(), { lora });
      await run(kind, straight);
      const killed = configFor(kind, tempDir(), { lora });
      await run(kind, killed, { stopAfterStep: 3 });
      const resumed = await run(kind, killed, { resume: true });
      assert.ok(resumed.lines.some((l) => /resuming .* at step 2/.test(l)), resumed.lines.join('\n'));
      const adapter = (c: AdaptConfig) => readFileSync(join(c.out, 'adapter_model.safetensors'));
      assert.ok(adapter(straight).equals(adapter(killed)), `${kind}: final adapters differ`);
      const losses = (c: AdaptConfig) => readFileSync(join(c.out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss);
      assert.deepEqual(losses(killed), losses(straight));
      // The adapter trained (B moved off zero) and the base was not written: out holds the adapter alone.
      const b = readPeftAdapter(straight.out, parseConfig(JSON.parse(readFileSync(join(tinyModelDir, 'config.json'), 'utf8'))));
      assert.ok([...b.modules.values()].some((m) => m.b.some((x) => x !== 0)), 'B trained');
      assert.ok(!existsSync(join(straight.out, 'model.safetensors')));
    });
  }
});

describe('bad input through the command', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8' });
  const commandWith = (kind: AdaptKind, lines: readonly unknown[], extra: Record<string, unknown> = {}) => {
    const dir = tempDir();
    const file = jsonl(dir, 'data.jsonl', lines);
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ model: tinyModelDir, out: 'out', steps: 1, data: { train: [file], max_length: 64, batch_size: 2 }, ...extra }));
    return { result: cli([kind, config, '--backend', 'reference']), file };
  };

  it('a malformed JSONL line, a conversation with no assistant turn, an unknown role: errors naming file and line', () => {
    const ok = SFT_LINES[0]!;
    const malformed = commandWith('sft', [ok, ok, '{"messages": [']);
    assert.notEqual(malformed.result.status, 0);
    assert.ok(malformed.result.stderr.includes(`${malformed.file}: line 3: not valid JSON`), malformed.result.stderr);
    const noAssistant = commandWith('sft', [ok, { messages: [{ role: 'user', content: 'Hi' }] }]);
    assert.ok(noAssistant.result.stderr.includes(`${noAssistant.file}: line 2: messages: has no assistant turn`), noAssistant.result.stderr);
    const role = commandWith('dpo', [{ prompt: [{ role: 'tool', content: 'x' }], chosen: 'a', rejected: 'b' }]);
    assert.ok(role.result.stderr.includes(`${role.file}: line 1: prompt[0].role: unknown role "tool"`), role.result.stderr);
    for (const r of [malformed, noAssistant, role]) assert.doesNotMatch(r.result.stderr, /\n\s+at /, 'no stack trace');
  });

  it('chosen identical to rejected: warned with its line, counted, left out; the run goes on', () => {
    const { result, file } = commandWith('dpo', [...PREFERENCE_LINES.slice(0, 2), { prompt: 'Same?', chosen: 'Yes.', rejected: 'Yes.' }]);
    assert.equal(result.status, 0, result.stderr);
    assert.ok(result.stderr.includes(`warning: ${file}: line 3: chosen is identical to rejected; the pair is left out`), result.stderr);
    assert.match(result.stderr, /3 pairs read, 2 kept; 1 with chosen identical to rejected left out/);
  });

  it('a chat template that cannot be rendered: the record and the template\'s message', () => {
    const dir = tempDir();
    const model = join(dir, 'model');
    cpSync(tinyModelDir, model, { recursive: true });
    const tokenizerConfig = JSON.parse(readFileSync(join(model, 'tokenizer_config.json'), 'utf8'));
    writeFileSync(join(model, 'tokenizer_config.json'), JSON.stringify({ ...tokenizerConfig, chat_template: "{{ raise_exception('System role not supported') }}" }));
    const { result, file } = commandWith('sft', SFT_LINES, { model });
    assert.notEqual(result.status, 0);
    assert.ok(result.stderr.includes(`${file}: line 1: cannot be rendered with the chat template`) && result.stderr.includes('System role not supported'), result.stderr);
  });

  it('--show-mask prints a sample with the trained spans marked and trains nothing', () => {
    const dir = tempDir();
    const file = jsonl(dir, 'data.jsonl', [SFT_LINES[1]]);
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ model: tinyModelDir, out: 'out', data: { train: [file] } }));
    const result = cli(['sft', config, '--show-mask']);
    assert.equal(result.status, 0, result.stderr);
    assert.ok(result.stdout.includes('⟦Four.<|endoftext|>⟧') && result.stdout.includes('⟦Five.<|endoftext|>⟧'), result.stdout);
    assert.ok(!result.stdout.includes('⟦Two plus two'), result.stdout);
  });
});

describe('the lora block as PEFT settings', () => {
  it('attention projections by name, experts and the router only when asked', () => {
    const lora = (block: Record<string, unknown>) => parseSftConfig({ model: 'm', out: 'o', data: { train: ['t'] }, lora: block }).lora!;
    assert.deepEqual(loraSettings(lora({}), 'base').targetModules, ['q_proj', 'k_proj', 'v_proj', 'o_proj']);
    const all = loraSettings(lora({ r: 4, alpha: 8, dropout: 0, attention: ['q_proj'], experts: 'all', router: true, use_rslora: true }), null);
    assert.deepEqual(all, { r: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'gate_proj', 'up_proj', 'down_proj', 'mlp.gate'], useRslora: true, baseModelNameOrPath: null });
  });
});
