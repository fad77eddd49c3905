/**
 * The `mmlu` preset reads cais/mmlu from the hub (here a local hub in the test serving small Parquet files in its
 * schema): 57 subject tasks, each with its subject line, the first 5 dev rows as shots and the test rows as
 * instances; `olmoe eval MODEL --tasks mmlu` runs it end to end and reports the macro average.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { MMLU_REVISION, MMLU_SUBJECTS, presetSuite } from '../src/eval/presets.js';
import { taskInstances } from '../src/eval/task.js';
import { cliPath, tempDir, tinyModelDir } from './helpers.js';
import { localHub } from './hub-helpers.js';

/** Rows in cais/mmlu's schema: question, subject, choices[4], answer. */
function mmluParquet(subject: string, split: string, rows: number): Uint8Array {
  const questions = Array.from({ length: rows }, (_, i) => `${split} question ${i} on ${subject}?`);
  return new Uint8Array(parquetWriteBuffer({ columnData: [
    { name: 'question', data: questions, type: 'STRING' },
    { name: 'subject', data: questions.map(() => subject), type: 'STRING' },
    { name: 'choices', data: questions.map((_, i) => [`w${i}`, `x${i}`, `y${i}`, `z${i}`]) },
    { name: 'answer', data: questions.map((_, i) => i % 4), type: 'INT32' },
  ] }));
}

describe('the mmlu preset', () => {
  const dir = tempDir('olmoe-eval-preset-');
  const commit = MMLU_REVISION;
  const hubServer = localHub((path) => {
    const match = new RegExp(`^/datasets/cais/mmlu/resolve/${commit}/([a-z_]+)/(test|dev)-00000-of-00001\\.parquet$`).exec(path);
    if (!match || !(MMLU_SUBJECTS as readonly string[]).includes(match[1]!)) return undefined;
    return { body: mmluParquet(match[1]!, match[2]!, match[2] === 'dev' ? 5 : 2), commit, etag: `"${match[1]}-${match[2]}"` };
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('57 subjects, each with its subject line, 5 dev shots and the test rows', async () => {
    const suite = (await presetSuite('mmlu', { hub: { endpoint: hubServer.endpoint, cacheDir: join(dir, 'cache') } }))!;
    assert.equal(suite.tasks.length, 57);
    const algebra = suite.tasks[0]!;
    assert.equal(algebra.name, 'mmlu_abstract_algebra');
    assert.equal(algebra.documents.length, 2);
    const [first] = taskInstances(algebra, 'mcf');
    const shots = Array.from({ length: 5 }, (_, i) => `Question: dev question ${i} on abstract_algebra?\n A. w${i}\n B. x${i}\n C. y${i}\n D. z${i}\nAnswer: ${'ABCD'[i % 4]}\n\n`).join('');
    assert.equal(first!.context, `The following are multiple choice questions (with answers) about abstract algebra.\n\n${shots}Question: test question 0 on abstract_algebra?\n A. w0\n B. x0\n C. y0\n D. z0\nAnswer:`);
    assert.deepEqual(suite.tasks[56]!.normalizations, ['per_char', 'none', 'per_token']);
    assert.equal(await presetSuite('nope'), undefined);
  });

  it('olmoe eval --tasks mmlu reports the 57-subject macro average', async () => {
    // Asynchronously: the hub answering the CLI runs in this process.
    const result = await promisify(execFile)(process.execPath, [cliPath, 'eval', tinyModelDir, '--tasks', 'mmlu', '--shots', '1', '--json', '-q', '--backend', 'reference'], {
      encoding: 'utf8', timeout: 300_000, maxBuffer: 1 << 26, env: { ...process.env, HF_ENDPOINT: hubServer.endpoint, HF_HUB_CACHE: join(dir, 'cli-cache') },
    });
    const report = JSON.parse(result.stdout) as { suites: { suite: string; tasks: unknown[]; average: { formulation: string; accuracy: { value: number; n: number } }[] }[] };
    const [mmlu] = report.suites;
    assert.equal(mmlu!.suite, 'mmlu');
    assert.equal(mmlu!.tasks.length, 57);
    assert.deepEqual(mmlu!.average.map((a) => a.formulation), ['cf', 'mcf']);
    assert.equal(mmlu!.average[0]!.accuracy.n, 114);
    const bad = spawnSync(process.execPath, [cliPath, 'eval', tinyModelDir, '--tasks', 'mmlu-typo', '-q'], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /--tasks mmlu-typo: no such task file, and not a preset \(olmoe eval --list-tasks shows them\)/);
  });
});
