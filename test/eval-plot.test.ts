// `olmoe eval-plot`: results files of `olmoe eval` become one figure comparing models — each task's OLMES number
// (best formulation, primary normalization) with its standard error, suites with their macro average; a file that
// is not a results file is an error naming the field; real `olmoe eval` output on the tiny fixture plots end to end.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { plotEvalComparison, readEvalReport } from '../src/eval/plot.js';
import { cliPath, tempDir, tinyModelDir } from './helpers.js';

const estimate = (value: number, stderr: number, n = 100) => ({ value, stderr, n });

/** A results file as olmoe eval writes it: one task and a suite of two. */
function results(cloze: number): object {
  const task = (name: string, cf: number, mcf: number) => ({
    task: name, version: 1, instances: 100, shots: 0,
    formulations: [
      { formulation: 'cf', accuracy: { per_char: estimate(cf, 0.04), none: estimate(0.9, 0.03) }, primary: 'per_char', bitsPerByte: estimate(1, 0), chance: 0.25, promptHash: 'x', truncated: 0 },
      { formulation: 'mcf', accuracy: { none: estimate(mcf, 0.05) }, primary: 'none', bitsPerByte: estimate(1, 0), chance: 0.25, promptHash: 'y', truncated: 0 },
    ],
    best: cf >= mcf ? { formulation: 'cf', accuracy: estimate(cf, 0.04) } : { formulation: 'mcf', accuracy: estimate(mcf, 0.05) },
  });
  return {
    model: 'm', fingerprint: 'f', backend: 'reference',
    results: [task('capitals', cloze, 0.3)],
    suites: [{ suite: 'quiz', tasks: [task('quiz-a', 0.4, 0.5), task('quiz-b', 0.6, 0.2)], average: [], best: { formulation: 'cf', accuracy: estimate(0.5, 0.03, 200) } }],
  };
}

describe('olmoe eval-plot', () => {
  it('reads each task\'s best formulation, suites with their average, and draws every model', async () => {
    const dir = tempDir('olmoe-eval-plot-');
    writeFileSync(join(dir, 'step-100.json'), JSON.stringify(results(0.35)));
    writeFileSync(join(dir, 'step-200.json'), JSON.stringify(results(0.55)));
    const early = readEvalReport(join(dir, 'step-100.json'));
    assert.equal(early.label, 'step-100');
    assert.deepEqual(early.points.map((p) => [p.task, p.formulation, p.accuracy, p.stderr, p.chance]), [
      ['capitals', 'cf', 0.35, 0.04, 0.25],
      ['quiz-a', 'mcf', 0.5, 0.05, 0.25], // the lettered formulation wins here
      ['quiz-b', 'cf', 0.6, 0.04, 0.25],
      ['quiz (average)', 'cf', 0.5, 0.03, 0.25],
    ]);
    const late = readEvalReport(join(dir, 'step-200.json'), 'after 200 steps');
    const files = await plotEvalComparison([early, late], join(dir, 'fig.svg'));
    assert.deepEqual(files, [join(dir, 'fig.svg'), join(dir, 'fig.png')]);
    const svg = readFileSync(files[0]!, 'utf8');
    for (const text of ['step-100', 'after 200 steps', 'capitals', 'quiz (average)']) assert.ok(svg.includes(text), text);
    assert.deepEqual([...readFileSync(files[1]!).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
    await assert.rejects(plotEvalComparison([early, readEvalReport(join(dir, 'step-200.json'), 'step-100')], join(dir, 'x.svg')), /labels must differ/);
  });

  it('names what is wrong in a file that is not a results file', () => {
    const dir = tempDir('olmoe-eval-plot-');
    const write = (name: string, json: unknown) => {
      writeFileSync(join(dir, name), JSON.stringify(json));
      return join(dir, name);
    };
    assert.throws(() => readEvalReport(write('a.json', { model: 'm' })), /a\.json: holds no task results/);
    assert.throws(() => readEvalReport(write('b.json', { results: [{ task: 't', best: { formulation: 'cf', accuracy: 0.5 } }] })), /b\.json: results\[0\]\.best\.accuracy: expected an estimate/);
    assert.throws(() => readEvalReport(write('c.json', { results: [{ best: {} }] })), /c\.json: results\[0\]\.task: expected a string/);
    assert.throws(() => readEvalReport(write('d.json', { suites: [{ suite: 's', tasks: 'x' }] })), /d\.json: suites\[0\]\.tasks: expected a list of objects/);
    assert.throws(() => readEvalReport(write('e.json', [1])), /e\.json: is not a JSON object/);
  });

  it('CLI: olmoe eval → results files → olmoe eval-plot', () => {
    const dir = tempDir('olmoe-eval-plot-');
    const docs = [
      { question: 'The capital of France is', choices: ['Paris', 'Rome'], answer: 0 },
      { question: 'The capital of Italy is', choices: ['Paris', 'Rome'], answer: 1 },
      { question: 'Snow is', choices: ['white', 'green', 'red'], answer: 0 },
    ];
    writeFileSync(join(dir, 'docs.jsonl'), docs.map((d) => JSON.stringify(d)).join('\n') + '\n');
    writeFileSync(join(dir, 'task.json'), JSON.stringify({ name: 'tiny-task', documents: 'docs.jsonl' }));
    const run = (args: string[]) => spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', env: { ...process.env, OLMOE_BACKEND: 'reference' } });
    for (const [name, limit] of [['all', '3'], ['two', '2']] as const) {
      const evaluated = run(['eval', tinyModelDir, '--tasks', join(dir, 'task.json'), '--limit', limit, '--output', join(dir, `${name}.json`), '-q']);
      assert.equal(evaluated.status, 0, evaluated.stderr);
    }
    const plotted = run(['eval-plot', join(dir, 'all.json'), join(dir, 'two.json'), '--label', 'three items', 'two items', '--out', join(dir, 'compare.svg')]);
    assert.equal(plotted.status, 0, plotted.stderr);
    const svg = readFileSync(join(dir, 'compare.svg'), 'utf8');
    assert.ok(svg.includes('three items') && svg.includes('two items') && svg.includes('tiny-task'));
    const report = JSON.parse(readFileSync(join(dir, 'all.json'), 'utf8')) as { results: { best: { accuracy: { value: number } } }[] };
    assert.equal(readEvalReport(join(dir, 'all.json')).points[0]!.accuracy, report.results[0]!.best.accuracy.value);
    const mismatch = run(['eval-plot', join(dir, 'all.json'), '--label', 'a', 'b', '--out', join(dir, 'x.svg')]);
    assert.equal(mismatch.status, 1);
    assert.match(mismatch.stderr, /--label: 2 labels for 1 results files/);
  });
});
