// A run written by an earlier trainer (test/fixtures/train-run-v1, made before the one-model change by its
// make.mjs) resumes here: its step-5 checkpoint loads (weights, AdamW state, data position, RNG) and steps 6–10
// give the losses that trainer computed for them.
import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { parseTrainConfig, resumeFingerprint } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { repoRoot, tempDir } from './helpers.js';

const fixture = join(repoRoot, 'test', 'fixtures', 'train-run-v1');

it('resumes a checkpoint written before the one-model change and continues with the same losses', async () => {
  const work = tempDir('olmoe-compat-');
  cpSync(fixture, work, { recursive: true });
  const config = parseTrainConfig({
    out: join(work, 'run'), seed: 3, tokenizer: join(work, 'tokenizer.json'),
    model: { hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, num_experts: 4, num_experts_per_tok: 2, intermediate_size: 8 },
    data: { train: [join(work, 'train.shard')], valid: [], sequence_length: 16, batch_size: 2 },
    optimizer: { lr: 3e-3, warmup_steps: 2 }, steps: 10, checkpoint_every: 5, eval_every: 0,
  });
  // The run moved to a temp folder: its fingerprint covers the shard paths, so it is recomputed for the new ones.
  const statePath = join(work, 'run', 'checkpoints', 'step-000005', 'trainer_state.json');
  const state = JSON.parse(readFileSync(statePath, 'utf8')) as Record<string, unknown>;
  writeFileSync(statePath, JSON.stringify({ ...state, configHash: resumeFingerprint(config) }));
  const losses: number[] = [];
  await train({ config, backend: new ReferenceBackend(), resume: true, onStep: (r) => losses.push(r.loss) });
  const expected = (JSON.parse(readFileSync(join(fixture, 'expected.json'), 'utf8')) as { losses: number[] }).losses.slice(5);
  assert.equal(losses.length, expected.length);
  losses.forEach((loss, i) => assert.ok(Math.abs(loss - expected[i]!) < 1e-5 * expected[i]!, `step ${i + 6}: ${loss} vs ${expected[i]}`));
});
