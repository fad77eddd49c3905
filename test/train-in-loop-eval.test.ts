// In-loop evaluation: a short run with `eval_tasks` writes task records at exactly the configured steps, every
// normalization with its standard error; each value equals `olmoe eval`'s on the checkpoint saved at that step
// (the saved float32 checkpoint loaded by the inference path, scored by the same harness) to 1e-6; a killed and
// resumed run logs each step's tasks once; plot-train draws them; bad config fields are errors naming the key.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { runTask } from '../src/eval/run.js';
import { readSuite, runSuite } from '../src/eval/suite.js';
import { readTask } from '../src/eval/task.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { byteLevelTokenizerJson } from '../src/tokenizer/byte-level.js';
import { parseTrainConfig, readTrainConfig, type TrainConfig } from '../src/train/config.js';
import { TokenShardBuilder, tokenizerFingerprint } from '../src/train/data/shard.js';
import { ABLATIONS, runAblation } from '../src/train/ablations.js';
import { taskRecords } from '../src/train/in-loop-eval.js';
import { finalBest } from '../src/train/plot-tasks.js';
import { readTrainingRun, type TaskLogRecord } from '../src/train/metrics-log.js';
import { train } from '../src/train/trainer.js';
import { cliPath, tempDir } from './helpers.js';

const TEXT = 'The capital of France is Paris. The capital of Italy is Rome. The capital of Japan is Tokyo. ';

const DOCS = [
  { question: 'The capital of France is', choices: ['Paris', 'Rome', 'Tokyo'], answer: 0 },
  { question: 'The capital of Italy is', choices: ['Paris', 'Rome', 'Tokyo'], answer: 1 },
  { question: 'The capital of Japan is', choices: ['Paris', 'Rome', 'Tokyo'], answer: 2 },
  { question: 'Which city is in France?', choices: ['Rome', 'Paris'], answer: 1 },
  { question: 'Which city is in Japan?', choices: ['Tokyo', 'Rome'], answer: 0 },
];

/** tokenizer, one shard, a task (all four normalizations) and a suite of two tasks. */
function fixture(): { dir: string; task: string; suite: string } {
  const dir = tempDir('olmoe-inloop-');
  const { json, eosId, size } = byteLevelTokenizerJson();
  const text = JSON.stringify(json);
  writeFileSync(join(dir, 'tokenizer.json'), text);
  const builder = new TokenShardBuilder({ vocabSize: size, eosId, domains: ['prose'], tokenizer: tokenizerFingerprint(text) });
  for (let i = 0; i < 6; i++) builder.add([...Buffer.from(TEXT.repeat(3))], 0);
  builder.write(join(dir, 'train.shard'));
  const lines = (rows: object[]) => rows.map((row) => JSON.stringify(row)).join('\n') + '\n';
  writeFileSync(join(dir, 'capitals.jsonl'), lines(DOCS));
  writeFileSync(join(dir, 'capitals.json'), JSON.stringify({ name: 'capitals', documents: 'capitals.jsonl', normalizations: ['per_char', 'none', 'per_token', 'pmi'] }));
  writeFileSync(join(dir, 'first.json'), JSON.stringify({ name: 'first', documents: 'capitals.jsonl', limit: 3, formulations: ['cf'] }));
  writeFileSync(join(dir, 'second.json'), JSON.stringify({ name: 'second', documents: 'capitals.jsonl', formulations: ['cf'], normalizations: ['none'] }));
  writeFileSync(join(dir, 'suite.json'), JSON.stringify({ name: 'mini-suite', tasks: ['first.json', 'second.json'] }));
  return { dir, task: join(dir, 'capitals.json'), suite: join(dir, 'suite.json') };
}

function rawConfig(dir: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    out: join(dir, 'run'), seed: 5, tokenizer: join(dir, 'tokenizer.json'),
    model: { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_experts: 4, num_experts_per_tok: 2, intermediate_size: 8, max_position_embeddings: 128 },
    data: { train: [join(dir, 'train.shard')], sequence_length: 16, batch_size: 2 },
    optimizer: { lr: 1e-2, warmup_steps: 1 },
    steps: 6, checkpoint_every: 2, eval_every: 0,
    eval_tasks: [join(dir, 'capitals.json'), join(dir, 'suite.json')], eval_tasks_every: 2,
    ...extra,
  };
}

const backend = new ReferenceBackend();

async function run(config: TrainConfig, extra: { stopAfterStep?: number; resume?: boolean } = {}): Promise<TaskLogRecord[]> {
  const seen: TaskLogRecord[] = [];
  await train({ config, backend, onTasks: (records) => seen.push(...records), ...extra });
  return seen;
}

const key = (r: TaskLogRecord) => `${r.step} ${r.task} ${r.formulation} ${r.normalization}`;

describe('in-loop evaluation', () => {
  it('writes every normalization with stderr at the configured steps; values equal olmoe eval on that step\'s checkpoint', async () => {
    const f = fixture();
    const config = parseTrainConfig(rawConfig(f.dir));
    const reported = await run(config);
    const logged = readTrainingRun(join(config.out, 'metrics.jsonl')).tasks;
    assert.equal(logged.length, reported.length);
    assert.deepEqual([...new Set(logged.map((r) => r.step))], [2, 4, 6]);
    const atStep = (step: number) => logged.filter((r) => r.step === step);
    // capitals: cf × 4 normalizations + mcf × none; suite: first (cf × 3 defaults), second (cf none), the macro average
    assert.deepEqual(atStep(2).map((r) => `${r.task} ${r.formulation} ${r.normalization}${r.primary ? '*' : ''}`), [
      'capitals cf per_char*', 'capitals cf none', 'capitals cf per_token', 'capitals cf pmi', 'capitals mcf none*',
      'first cf per_char*', 'first cf none', 'first cf per_token', 'second cf none*', 'mini-suite cf primary*',
    ]);
    for (const r of logged) {
      assert.ok(r.accuracy >= 0 && r.accuracy <= 1 && Number.isFinite(r.stderr) && r.stderr >= 0, key(r));
      assert.equal(r.n, r.task === 'first' ? 3 : r.task === 'mini-suite' ? 8 : 5, key(r));
    }
    assert.equal(atStep(2).find((r) => r.task === 'capitals' && r.formulation === 'mcf')!.chance, (3 * (1 / 3) + 2 * (1 / 2)) / 5);

    // the same tasks, run as `olmoe eval` runs them, on each checkpoint the run saved at an evaluated step
    const task = await readTask(f.task);
    const suite = await readSuite(f.suite);
    for (const step of [2, 4, 6]) {
      const lm = await loadPretrained(join(config.out, 'checkpoints', `step-${String(step).padStart(6, '0')}`), { backend });
      const prefixToken = lm.tokenizer.tokenId(lm.tokenizer.eosToken)!;
      const suiteResult = await runSuite(lm, suite, { prefixToken });
      const expected = [...taskRecords(await runTask(lm, task, { prefixToken }), step, 0), ...suiteResult.tasks.flatMap((t) => taskRecords(t, step, 0, 'mini-suite'))];
      const got = new Map(atStep(step).map((r) => [key(r), r]));
      for (const e of expected) {
        const g = got.get(key(e));
        assert.ok(g, `missing ${key(e)}`);
        for (const field of ['accuracy', 'stderr', 'chance', 'bitsPerByte'] as const) assert.ok(Math.abs(g![field] - e[field]) <= 1e-6, `${key(e)} ${field}: ${g![field]} vs ${e[field]}`);
      }
      const average = got.get(`${step} mini-suite cf primary`)!;
      assert.ok(Math.abs(average.accuracy - suiteResult.best.accuracy.value) <= 1e-6);
    }
    // the weights moved between evaluations: the gold answers' bits per byte differ
    const bpb = (step: number) => atStep(step).find((r) => r.task === 'capitals' && r.normalization === 'per_char')!.bitsPerByte;
    assert.notEqual(bpb(2), bpb(6));
  });

  it('a killed and resumed run logs each evaluated step once; plot-train draws the accuracy figure', async () => {
    const f = fixture();
    const config = parseTrainConfig(rawConfig(f.dir, { eval_tasks: [join(f.dir, 'capitals.json')], eval_tasks_limit: 3 }));
    await run(config, { stopAfterStep: 5 }); // after the tasks of step 4 and its checkpoint, before step 6
    await run(config, { resume: true });
    const tasks = readTrainingRun(join(config.out, 'metrics.jsonl')).tasks;
    assert.deepEqual(tasks.filter((r) => r.normalization === 'per_char').map((r) => r.step), [2, 4, 6]);
    assert.ok(tasks.every((r) => r.n === 3), 'eval_tasks_limit caps the instances');
    const out = join(f.dir, 'plots');
    const plot = spawnSync(process.execPath, [cliPath, 'plot-train', join(config.out, 'metrics.jsonl'), '--out', out], { encoding: 'utf8' });
    assert.equal(plot.status, 0, plot.stderr);
    const svg = readFileSync(join(out, 'tasks.svg'), 'utf8');
    assert.match(svg, /In-loop task accuracy/);
    assert.match(svg, /capitals/);
    assert.match(svg, /cf per_char/);
    assert.deepEqual([...readFileSync(join(out, 'tasks.png')).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
    assert.match(readFileSync(join(out, 'summary.md'), 'utf8'), /\| capitals \| \d+\.\d ± \d+\.\d \((cf|mcf), step 6\) \|/);
  });

  it('olmoe ablate reports each variant\'s final task accuracy beside validation CE', async () => {
    const f = fixture();
    const ablation = ABLATIONS.find((a) => a.name === 'load-balancing')!;
    const data = { tokenizer: join(f.dir, 'tokenizer.json'), train: [join(f.dir, 'train.shard')], valid: [join(f.dir, 'train.shard')], steps: 4, sequenceLength: 16, batchSize: 2, seed: 1, evalTasks: [f.task], evalTasksEvery: 2, evalTasksLimit: 4 };
    const out = join(f.dir, 'report');
    const report = await runAblation(ablation, data, out, { backend, runs: join(f.dir, 'runs') });
    assert.match(report, /\| final valid CE \| .* \| capitals acc\. % \|/);
    for (const variant of ablation.variants) {
      const slug = variant.label.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
      const best = finalBest(readTrainingRun(join(out, `${slug}.jsonl`)), 'capitals')!;
      assert.equal(best.step, 4);
      const row = report.split('\n').find((line) => line.startsWith(`| ${variant.label} |`))!;
      assert.ok(row.endsWith(` ${(100 * best.accuracy).toFixed(1)} ± ${(100 * best.stderr).toFixed(1)} |`), row);
    }
    assert.ok(existsSync(join(out, 'tasks.svg')));
  });

  it('refuses bad in-loop settings by key, and a bad task file before the run starts', async () => {
    const f = fixture();
    const parse = (extra: Record<string, unknown>) => () => parseTrainConfig(rawConfig(f.dir, extra), 'train.json');
    assert.throws(parse({ eval_tasks_every: undefined }), /train\.json: eval_tasks_every: is missing/);
    assert.throws(parse({ eval_tasks_every: 0 }), /eval_tasks_every: must be a positive integer/);
    assert.throws(parse({ eval_tasks_every: 7 }), /eval_tasks_every: 7 is more than steps \(6\)/);
    assert.throws(parse({ eval_tasks: [] }), /eval_tasks: is empty/);
    assert.throws(parse({ eval_tasks: undefined }), /eval_tasks_every: is set but eval_tasks is not/);
    assert.throws(parse({ eval_tasks_limit: 0 }), /eval_tasks_limit: must be a positive integer/);
    const file = join(f.dir, 'train.json');
    writeFileSync(file, JSON.stringify(rawConfig(f.dir, { eval_tasks: ['capitals.json', 'missing.json'] })));
    assert.throws(() => readTrainConfig(file), /train\.json: eval_tasks\[1\]: task file .*missing\.json does not exist/);
    writeFileSync(join(f.dir, 'broken.json'), JSON.stringify({ name: 'broken', documents: 'capitals.jsonl', normalizations: ['per_word'] }));
    const broken = parseTrainConfig(rawConfig(f.dir, { eval_tasks: [join(f.dir, 'broken.json')] }));
    await assert.rejects(run(broken), /broken\.json: "normalizations" must be a non-empty list/);
    assert.equal(existsSync(broken.out), false, 'nothing was written');
  });
});
