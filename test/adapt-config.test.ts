/**
 * Adaptation configs: the paper's defaults fill what is left out, an unknown key or a bad value is an error naming
 * the key and the file, cross-key rules hold, and relative paths resolve against the config file.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError } from '../src/core/errors.js';
import { parseDpoConfig, parseKtoConfig, parseSftConfig, readAdaptConfig } from '../src/train/adapt/config.js';
import { tempDir } from './helpers.js';

const minimal = { model: 'allenai/OLMoE-1B-7B-0924', out: 'runs/sft', data: { train: ['data/adapt/sft-train.jsonl'] } };
const rejects = (fn: () => unknown, pattern: RegExp) => assert.throws(fn, (e: Error) => e instanceof ConfigError && pattern.test(e.message), String(pattern));

describe('adaptation configs', () => {
  it('defaults: the paper\'s SFT (constant LR after warmup, per-token loss, no load balancing), DPO β 0.1, KTO with RMSProp', () => {
    const sft = parseSftConfig(minimal);
    assert.deepEqual([sft.optimizer.kind, sft.optimizer.lr, sft.optimizer.schedule, sft.loss_reduction, sft.load_balancing, sft.packing], ['adamw', 2e-5, 'constant', 'token', 0, true]);
    assert.deepEqual([sft.data.max_length, sft.data.overflow, sft.lora], [2048, 'drop', undefined]);
    const dpo = parseDpoConfig(minimal);
    assert.deepEqual([dpo.loss, dpo.beta, dpo.label_smoothing, dpo.optimizer.lr], ['dpo', 0.1, 0, 5e-7]);
    const kto = parseKtoConfig({ ...minimal, lora: {} });
    assert.deepEqual([kto.optimizer.kind, kto.desirable_weight, kto.undesirable_weight], ['rmsprop', 1, 1]);
    assert.deepEqual(kto.lora, { r: 16, alpha: 32, dropout: 0.05, attention: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], experts: 'none', router: false, use_rslora: false });
  });

  it('names the key of an unknown or bad value, with the file', () => {
    rejects(() => parseSftConfig({ ...minimal, lerning_rate: 1 }, 'sft.json'), /^sft\.json: \(root\): unknown key\(s\) "lerning_rate"/);
    rejects(() => parseSftConfig({ ...minimal, data: { ...minimal.data, overflow: 'wrap' } }, 'sft.json'), /^sft\.json: data\.overflow:/);
    rejects(() => parseSftConfig({ ...minimal, data: { train: [] } }), /data\.train: name at least one JSONL file/);
    rejects(() => parseDpoConfig({ ...minimal, loss: 'ipo' }), /^dpo config: loss:/);
    rejects(() => parseDpoConfig({ ...minimal, beta: 0 }), /beta/);
    rejects(() => parseKtoConfig({ ...minimal, lora: { experts: 'some' } }), /lora\.experts/);
    rejects(() => parseSftConfig({ ...minimal, lora: { attention: ['qkv_proj'] } }), /lora\.attention\.0/);
  });

  it('cross-key rules: gamma only for simpo, warmup within the steps, a LoRA that adapts something', () => {
    rejects(() => parseDpoConfig({ ...minimal, gamma: 0.5 }), /gamma: is SimPO's target margin; loss is "dpo"/);
    assert.equal(parseDpoConfig({ ...minimal, loss: 'simpo', beta: 2, gamma: 0.5 }).gamma, 0.5);
    rejects(() => parseSftConfig({ ...minimal, steps: 10, optimizer: { warmup_steps: 10 } }), /optimizer\.warmup_steps: 10 must be less than steps \(10\)/);
    rejects(() => parseSftConfig({ ...minimal, lora: { attention: [] } }), /lora: adapts no module/);
  });

  it('an optimizer key the chosen optimizer would ignore is an error, not silently dropped', () => {
    rejects(() => parseKtoConfig({ ...minimal, optimizer: { betas: [0.9, 0.95] } }, 'kto.json'), /^kto\.json: optimizer\.betas: is not a setting of rmsprop/);
    rejects(() => parseSftConfig({ ...minimal, optimizer: { alpha: 0.9 } }), /optimizer\.alpha: is not a setting of adamw/);
    rejects(() => parseKtoConfig({ ...minimal, optimizer: { kind: 'adamw', alpha: 0.9 } }), /optimizer\.alpha/);
    assert.equal(parseKtoConfig({ ...minimal, optimizer: { alpha: 0.9 } }).optimizer.alpha, 0.9);
    assert.deepEqual(parseKtoConfig({ ...minimal, optimizer: { kind: 'adamw', betas: [0.9, 0.95] } }).optimizer.betas, [0.9, 0.95]);
  });

  it('resolves relative paths against the config file; a hub id stays as written', () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'base'));
    writeFileSync(join(dir, 'dpo.json'), JSON.stringify({ ...minimal, model: 'base', reference_cache: 'cache', data: { train: ['pref.jsonl'] } }));
    const config = readAdaptConfig('dpo', join(dir, 'dpo.json'));
    assert.deepEqual([config.model, config.out, config.data.train[0], config.reference_cache], [join(dir, 'base'), join(dir, 'runs/sft'), join(dir, 'pref.jsonl'), join(dir, 'cache')]);
    writeFileSync(join(dir, 'sft.json'), JSON.stringify(minimal));
    assert.equal(readAdaptConfig('sft', join(dir, 'sft.json')).model, 'allenai/OLMoE-1B-7B-0924');
  });
});
