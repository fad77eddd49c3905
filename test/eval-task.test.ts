/**
 * Tasks as data: the cloze and lettered prompts match hand-written ones byte for byte (few-shot examples,
 * preamble, separators, continuations); the instance limit samples the same documents for the same seed; bad
 * task and document files are errors naming file, line and field; `olmoe eval` runs a task end to end, with the
 * same numbers with and without prefix sharing and from its result cache.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FormatError } from '../src/core/errors.js';
import { readTask, taskInstances } from '../src/eval/task.js';
import { macroAverage, readSuite, runSuite } from '../src/eval/suite.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { backendCases } from './backends.js';
import { cliPath, tempDir, tinyModelDir } from './helpers.js';

const dir = tempDir('olmoe-eval-task-');
after(() => rmSync(dir, { recursive: true, force: true }));

function writeTask(name: string, spec: Record<string, unknown>, documents: unknown[] | string, fewshot?: unknown[]): string {
  const lines = (rows: unknown[]) => rows.map((row) => JSON.stringify(row)).join('\n') + '\n';
  writeFileSync(join(dir, `${name}.jsonl`), typeof documents === 'string' ? documents : lines(documents));
  if (fewshot) writeFileSync(join(dir, `${name}-shots.jsonl`), lines(fewshot));
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify({ name, documents: `${name}.jsonl`, ...(fewshot ? { fewshot: `${name}-shots.jsonl` } : {}), ...spec }));
  return path;
}

const DOCS = [
  { id: 'fr', question: 'What is the capital of France?', choices: ['Paris', 'Rome', 'Lyon'], answer: 0 },
  { id: 'it', question: 'What is the capital of Italy?', choices: ['Paris', 'Rome', 'Milan'], answer: 1 },
];
const SHOTS = [
  { question: 'What is the capital of Japan?', choices: ['Tokyo', 'Seoul'], answer: 0 },
  { question: 'What is the capital of Peru?', choices: ['Quito', 'Lima'], answer: 1 },
];

describe('task prompts', () => {
  it('cloze: few-shot examples with their gold answers, a blank line between, " {choice}" continuations', async () => {
    const task = await readTask(writeTask('cloze', { shots: 2, preamble: 'Capitals.\n\n' }, DOCS, SHOTS));
    const [first] = taskInstances(task, 'cf');
    assert.equal(first!.context,
      'Capitals.\n\n' +
      'Question: What is the capital of Japan?\nAnswer: Tokyo\n\n' +
      'Question: What is the capital of Peru?\nAnswer: Lima\n\n' +
      'Question: What is the capital of France?\nAnswer:');
    assert.deepEqual(first!.choices, [' Paris', ' Rome', ' Lyon']);
    assert.equal(first!.gold, 0);
    assert.equal(first!.unconditionedContext, 'Answer:');
  });

  it('multiple-choice: lettered choices, " A" answers', async () => {
    const task = await readTask(writeTask('mc', { shots: 1 }, DOCS, SHOTS));
    const [, second] = taskInstances(task, 'mcf');
    assert.equal(second!.context,
      'Question: What is the capital of Japan?\n A. Tokyo\n B. Seoul\nAnswer: A\n\n' +
      'Question: What is the capital of Italy?\n A. Paris\n B. Rome\n C. Milan\nAnswer:');
    assert.deepEqual(second!.choices, [' A', ' B', ' C']);
    assert.equal(second!.gold, 1);
    assert.equal(second!.id, 'it');
  });

  it('the instance limit samples as OLMES does: Python\'s Random(seed).sample, in sample order', async () => {
    const many = Array.from({ length: 50 }, (_, i) => ({ id: `d${i}`, question: `q${i}`, choices: ['a', 'b'], answer: i % 2 }));
    const path = writeTask('many', { limit: 10, seed: 5 }, many);
    const ids = (task: Awaited<ReturnType<typeof readTask>>) => task.documents.map((d) => d.id);
    const a = ids(await readTask(path));
    assert.equal(a.length, 10);
    assert.deepEqual(ids(await readTask(path)), a);
    // CPython 3.11: random.Random(5).sample(range(50), 10)
    assert.deepEqual(a, [39, 16, 47, 22, 44, 41, 33, 1, 29, 15].map((i) => `d${i}`));
    assert.notDeepEqual(ids(await readTask(writeTask('many2', { limit: 10, seed: 6 }, many))), a);
    assert.equal((await readTask(path, { limit: 100 })).documents.length, 50);
  });
});

describe('bad task files', () => {
  const cases: [string, Record<string, unknown>, unknown[] | string, RegExp][] = [
    ['noquestion', {}, [{ choices: ['a', 'b'], answer: 0 }], /noquestion\.jsonl: row 1: "question" is missing/],
    ['outofrange', {}, [DOCS[0], { ...DOCS[1], answer: 3 }], /outofrange\.jsonl: row 2: "answer" gives answer 3, not one of the 3 choices/],
    ['nochoices', {}, [{ question: 'q', choices: [], answer: 0 }], /nochoices\.jsonl: row 1: "choices" must be a list of 2 to 26 strings, got \[\]/],
    ['duplicate', {}, [DOCS[0], DOCS[0]], /duplicate\.jsonl: row 2: id "fr" appears twice/],
    ['notjson', {}, `${JSON.stringify(DOCS[0])}\n{oops\n`, /notjson\.jsonl: row 2 is not JSON/],
    ['empty', {}, '\n', /empty\.jsonl: has no documents/],
    ['unknownkey', { shot: 2 }, DOCS, /unknownkey\.json: unknown key "shot"/],
    ['badformulation', { formulations: ['cloze'] }, DOCS, /"formulations" must be a non-empty list of cf \/ mcf/],
    ['tooManyShots', { shots: 5 }, DOCS, /5 shots asked for, the few-shot file has 0 examples/],
  ];
  for (const [name, spec, documents, pattern] of cases) {
    it(name, () => assert.rejects(readTask(writeTask(name, spec, documents)), (e: Error) => e instanceof FormatError && pattern.test(e.message)));
  }
});

describe('olmoe eval', () => {
  it('runs a task, writes results and samples; sharing and the cache change nothing', () => {
    const task = writeTask('cli', { shots: 2, normalizations: ['per_char', 'none', 'per_token', 'pmi'] }, DOCS, SHOTS);
    const run = (...extra: string[]) => {
      const output = join(dir, `results-${extra.length}.json`);
      const result = spawnSync(process.execPath, [cliPath, 'eval', tinyModelDir, '--tasks', task, '--output', output, '-q', ...extra], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(result.status, 0, result.stderr);
      return { stdout: result.stdout, report: JSON.parse(readFileSync(output, 'utf8')) as { fingerprint: string; results: { formulations: { accuracy: object; promptHash: string }[]; shots: number; instances: number }[] } };
    };
    const shared = run('--log-samples', join(dir, 'samples'), '--cache', join(dir, 'cache'));
    assert.match(shared.stdout, /\| cli \| 2 \| 2 \| cf \| per_char\* \|/);
    assert.match(shared.stdout, /\| cli \| 2 \| 2 \| mcf \| none\* \|/);
    const [result] = shared.report.results;
    assert.equal(result!.shots, 2);
    assert.equal(result!.instances, 2);
    assert.match(shared.report.fingerprint, /^[0-9a-f]{16}$/);
    const samples = readFileSync(join(dir, 'samples', 'cli-cf.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { logprobs: number[]; unconditioned: number[] });
    assert.equal(samples.length, 2);
    assert.equal(samples[0]!.logprobs.length, 3);
    assert.equal(samples[0]!.unconditioned.length, 3);
    const unshared = run('--no-prefix-sharing');
    const cached = run('--cache', join(dir, 'cache'), '--json');
    assert.deepEqual(unshared.report.results.map((r) => r.formulations.map((f) => f.promptHash)), shared.report.results.map((r) => r.formulations.map((f) => f.promptHash)));
    assert.deepEqual(cached.report.results, shared.report.results);
    // Same accuracies with every request scored from an empty cache (the log-likelihoods differ by rounding only).
    unshared.report.results[0]!.formulations.forEach((f, i) => assert.deepEqual(f.accuracy, shared.report.results[0]!.formulations[i]!.accuracy));
  });
});

describe('suites (macro averages, as OLMES reports MMLU)', () => {
  it('the macro average is the unweighted mean, its standard error that of independent estimates', () => {
    const average = macroAverage([{ value: 0.5, stderr: 0.03, n: 100 }, { value: 0.8, stderr: 0.04, n: 10 }]);
    assert.ok(Math.abs(average.value - 0.65) < 1e-12, 'not the pooled 0.527');
    assert.ok(Math.abs(average.stderr - 0.025) < 1e-12, '√(0.03² + 0.04²) / 2');
    assert.equal(average.n, 110);
  });

  it('a suite runs its tasks and averages each formulation\'s primary accuracy; the best is the better average', async () => {
    writeTask('suite-a', { normalizations: ['none'] }, DOCS);
    writeTask('suite-b', { normalizations: ['per_char', 'none'] }, [...DOCS, { id: 'de', question: 'What is the capital of Germany?', choices: ['Berlin', 'Rome', 'Bonn'], answer: 0 }]);
    const suitePath = join(dir, 'suite.json');
    writeFileSync(suitePath, JSON.stringify({ name: 'capitals', tasks: ['suite-a.json', 'suite-b.json'] }));
    const suite = await readSuite(suitePath);
    assert.deepEqual(suite.tasks.map((t) => t.name), ['suite-a', 'suite-b']);
    const lm = await loadPretrained(tinyModelDir, { backend: backendCases[0]!.create() });
    const result = await runSuite(lm, suite, { prefixToken: 556 });
    for (const { formulation, accuracy } of result.average) {
      const primaries = result.tasks.map((t) => {
        const f = t.formulations.find((x) => x.formulation === formulation)!;
        return f.accuracy[f.primary]!.value;
      });
      assert.ok(Math.abs(accuracy.value - (primaries[0]! + primaries[1]!) / 2) < 1e-12);
    }
    assert.equal(result.best.accuracy.value, Math.max(...result.average.map((a) => a.accuracy.value)));
    writeFileSync(suitePath, JSON.stringify({ name: 'x', tasks: ['suite-a.json', 'suite-a.json'] }));
    await assert.rejects(readSuite(suitePath), /task "suite-a" appears twice/);
    writeFileSync(suitePath, JSON.stringify({ name: 'x', tasks: [], average: 'macro' }));
    await assert.rejects(readSuite(suitePath), /unknown key "average" in a suite/);
  });
});
