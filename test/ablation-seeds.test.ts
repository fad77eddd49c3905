// olmoe ablate --seeds: every variant runs under seeds seed … seed + n − 1, each seed a different init and data
// order, the same seed the same run (bit for bit); the report folder gets every seed's metrics, summary.json with
// the per-seed finals it read from them, and the seeds figure.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { byteLevelTokenizerJson } from '../src/tokenizer/byte-level.js';
import { TokenShardBuilder, tokenizerFingerprint } from '../src/train/data/shard.js';
import { ABLATIONS, ablationConfig, ablationRunPaths, ablationSeeds, runAblation, slug, type AblationData } from '../src/train/ablations.js';
import { readTrainingRun } from '../src/train/metrics-log.js';
import { buildRun } from '../src/train/trainer.js';
import { cliPath, tempDir } from './helpers.js';

const backend = new ReferenceBackend();
const ablation = ABLATIONS.find((a) => a.name === 'moe-vs-dense')!;

function fixture(): { dir: string; data: AblationData } {
  const dir = tempDir('olmoe-ablate-seeds-');
  const { json, eosId, size } = byteLevelTokenizerJson();
  const text = JSON.stringify(json);
  writeFileSync(join(dir, 'tokenizer.json'), text);
  const builder = new TokenShardBuilder({ vocabSize: size, eosId, domains: ['prose'], tokenizer: tokenizerFingerprint(text) });
  for (let i = 0; i < 8; i++) builder.add([...Buffer.from(`Document ${i}: ${'the quick brown fox jumps over the lazy dog '.slice(i)}${i * 37} ends here. `)], 0);
  builder.write(join(dir, 'train.shard'));
  const shard = join(dir, 'train.shard');
  return { dir, data: { tokenizer: join(dir, 'tokenizer.json'), train: [shard], valid: [shard], steps: 4, sequenceLength: 16, batchSize: 2, seed: 3, seeds: 2, evalEvery: 2 } };
}

const losses = (file: string) => readTrainingRun(file).train.map((r) => r.loss);

describe('olmoe ablate --seeds', () => {
  it('names a reference and paper orderings that are variants of each ablation', () => {
    for (const a of ABLATIONS) {
      const labels = a.variants.map((v) => v.label);
      assert.ok(a.reference === undefined || labels.includes(a.reference), `${a.name}: reference ${a.reference}`);
      assert.ok(a.expected.length > 0, a.name);
      for (const e of a.expected) assert.ok(labels.includes(e.lower) && labels.includes(e.higher) && e.lower !== e.higher, `${a.name}: ${e.lower} / ${e.higher}`);
    }
  });

  it('gives every run its own seed: a different init and data order per seed, the same for the same seed', () => {
    const { dir, data } = fixture();
    assert.deepEqual(ablationSeeds({ seed: 3, seeds: 3 }), [3, 4, 5]);
    assert.deepEqual(ablationSeeds({ seed: 7 }), [7]);
    const variant = ablation.variants[0]!;
    const built = (seed: number) => buildRun(ablationConfig(variant, data, join(dir, `r${seed}`), seed), backend);
    const [a, b, again] = [built(3), built(4), built(3)];
    assert.equal(ablationConfig(variant, data, dir, 4).seed, 4);
    const embedding = (run: ReturnType<typeof built>) => run.model.read(run.model.params[0]!);
    assert.notDeepEqual(embedding(a), embedding(b));
    assert.deepEqual(embedding(a), embedding(again));
    const first = (run: ReturnType<typeof built>) => run.loader.nextBatch().tokens;
    assert.notDeepEqual(first(a), first(b));
    assert.deepEqual(first(built(3)), first(built(3)));
  });

  it('trains each variant under each seed, reports per-seed finals, and reruns a seed identically', async () => {
    const { dir, data } = fixture();
    const out = join(dir, 'report');
    const report = await runAblation(ablation, data, out, { backend, runs: join(dir, 'runs') });
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
    for (const [v, variant] of ablation.variants.entries()) {
      const files = [3, 4].map((seed) => join(out, ablationRunPaths('', variant, seed, 2).metrics));
      assert.deepEqual(files.map((f) => f.endsWith(`${slug(variant.label)}.seed-3.jsonl`) || f.endsWith(`${slug(variant.label)}.seed-4.jsonl`)), [true, true]);
      assert.notEqual(losses(files[0]!)[0], losses(files[1]!)[0], 'seeds 3 and 4 start from different losses');
      const finals = files.map((f) => readTrainingRun(f).valid.filter((r) => r.domain === 'all').at(-1)!);
      assert.deepEqual(finals.map((r) => r.step), [4, 4]);
      assert.deepEqual(summary.variants[v].seeds, [3, 4]);
      assert.deepEqual(summary.variants[v].finalValidCe, finals.map((r) => r.ce));
      assert.ok(Math.abs(summary.variants[v].finalValid.mean - (finals[0]!.ce + finals[1]!.ce) / 2) < 1e-12);
      assert.ok(existsSync(join(dir, 'runs', slug(variant.label), 'seed-4', 'usage.json')));
    }
    assert.equal(summary.tokensToReach[0].reference, 'dense (F=256)');
    assert.deepEqual(summary.setup.seeds, [3, 4]);
    assert.deepEqual(summary.setup.configs.map((c: { seed: number; model: { num_experts: number } }) => [c.seed, c.model.num_experts]), [[3, 8], [3, 1]]);
    assert.match(report, /\| MoE 8 experts top-2 \(F=128\) \| 8 × F 128, top-2 \| \d+\.\d{3} ± \d+\.\d{3} \| \d+\.\d{3} · \d+\.\d{3} \|/);
    assert.match(readFileSync(join(out, 'seeds.svg'), 'utf8'), /<svg/);

    // Seed 4 alone, in a fresh folder and the one-seed layout: the same losses to the bit.
    const single = join(dir, 'single');
    await runAblation(ablation, { ...data, seed: 4, seeds: 1 }, single, { backend, runs: join(dir, 'runs-single') });
    for (const variant of ablation.variants) {
      assert.deepEqual(losses(join(single, `${slug(variant.label)}.jsonl`)), losses(join(out, `${slug(variant.label)}.seed-4.jsonl`)));
    }
  });

  it('refuses a seed count below one and a validation interval that misses the last step, by flag', () => {
    const olmoe = (...args: string[]) => spawnSync(process.execPath, [cliPath, 'ablate', 'moe-vs-dense', '--tokenizer', 'x', '--train', 'x', '--valid', 'x', ...args], { encoding: 'utf8' });
    const zero = olmoe('--seeds', '0');
    assert.notEqual(zero.status, 0);
    assert.match(zero.stderr, /--seeds/);
    const between = olmoe('--steps', '800', '--eval-every', '30');
    assert.notEqual(between.status, 0);
    assert.match(between.stderr, /--eval-every 30 does not divide --steps 800/);
  });
});
