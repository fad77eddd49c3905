/**
 * The `mmlu` preset reads cais/mmlu from the hub (here a local hub in the test serving small Parquet files in its
 * schema): 57 subject tasks, each with its subject line, the first 5 dev rows as shots and the test rows as
 * instances; `olmoe eval MODEL --tasks mmlu` runs it end to end and reports the macro average.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { MMLU_REVISION, MMLU_SUBJECTS, presetSuite } from '../src/eval/presets.js';
import { taskInstances } from '../src/eval/task.js';
import { cliPath, tempDir, tinyModelDir } from './helpers.js';

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
  let endpoint = '';
  const server = http.createServer((req, res) => {
    const match = new RegExp(`^/datasets/cais/mmlu/resolve/${commit}/([a-z_]+)/(test|dev)-00000-of-00001\\.parquet$`).exec(req.url ?? '');
    if (!match || !(MMLU_SUBJECTS as readonly string[]).includes(match[1]!)) return void res.writeHead(404, { 'X-Error-Code': 'EntryNotFound' }).end();
    const body = mmluParquet(match[1]!, match[2]!, match[2] === 'dev' ? 5 : 2);
    res.writeHead(200, { 'X-Repo-Commit': commit, ETag: `"${match[1]}-${match[2]}"`, 'Content-Length': body.length });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  before(async () => {
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((ok) => server.close(ok));
    rmSync(dir, { recursive: true, force: true });
  });

  it('57 subjects, each with its subject line, 5 dev shots and the test rows', async () => {
    const suite = (await presetSuite('mmlu', { hub: { endpoint, cacheDir: join(dir, 'cache') } }))!;
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
      encoding: 'utf8', timeout: 300_000, maxBuffer: 1 << 26, env: { ...process.env, HF_ENDPOINT: endpoint, HF_HUB_CACHE: join(dir, 'cli-cache') },
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
