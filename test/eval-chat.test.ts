/**
 * Evaluation in chat format (for instruction-tuned models): the conversation each instance becomes is compared
 * with hand-written OLMoE chat text; partial scoring is refused; the preference-pair format is a two-choice task
 * with gold "chosen"; SQuAD-style answer normalisation on hand-picked cases; `olmoe eval --chat` scores each choice
 * as the log-likelihood of the answer after the rendered conversation.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { FormatError } from '../src/core/errors.js';
import { normalizeAnswer, normalizedMatch } from '../src/eval/generate-until.js';
import { loglikelihood } from '../src/eval/loglikelihood.js';
import { encodePair } from '../src/eval/multiple-choice.js';
import { runTask } from '../src/eval/run.js';
import { chatGenerationInstances, chatInstances, promptHash, readTask, taskInstances } from '../src/eval/task.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { renderOlmoeChat, type ChatMessage } from '../src/tokenizer/chat-template.js';
import { cliPath, tempDir, tinyModelDir } from './helpers.js';

const dir = tempDir('olmoe-eval-chat-');
after(() => rmSync(dir, { recursive: true, force: true }));

function writeTask(name: string, spec: Record<string, unknown>, documents: unknown[], fewshot?: unknown[]): string {
  const lines = (rows: unknown[]) => rows.map((row) => JSON.stringify(row)).join('\n') + '\n';
  writeFileSync(join(dir, `${name}.jsonl`), lines(documents));
  if (fewshot) writeFileSync(join(dir, `${name}-shots.jsonl`), lines(fewshot));
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify({ name, documents: `${name}.jsonl`, ...(fewshot ? { fewshot: `${name}-shots.jsonl` } : {}), ...spec }));
  return path;
}

const DOCS = [{ id: 'fr', question: 'What is the capital of France?', choices: ['Paris', 'Rome'], answer: 0 }];
const SHOTS = [{ question: 'What is the capital of Peru?', choices: ['Quito', 'Lima'], answer: 1 }];
const render = (messages: readonly ChatMessage[]) => renderOlmoeChat(messages, { bosToken: null, eosToken: '<|endoftext|>', padToken: null }, true);

describe('chat-format instances', () => {
  it('asks each few-shot example as a user turn answered by the assistant, then the question', async () => {
    const task = await readTask(writeTask('capitals', { shots: 1, preamble: 'Answer briefly.\n\n', formulations: ['cf', 'mcf', 'gen'] }, DOCS, SHOTS));
    const [cloze] = chatInstances(task, 'cf', render);
    assert.equal(
      cloze!.context,
      '<|endoftext|><|user|>\nAnswer briefly.\n\nQuestion: What is the capital of Peru?\nAnswer:\n<|assistant|>\nLima<|endoftext|>\n' +
        '<|user|>\nQuestion: What is the capital of France?\nAnswer:\n<|assistant|>\n',
    );
    assert.deepEqual(cloze!.choices, ['Paris', 'Rome']);
    assert.equal(cloze!.gold, 0);
    const [letters] = chatInstances(task, 'mcf', render);
    assert.equal(
      letters!.context,
      '<|endoftext|><|user|>\nAnswer briefly.\n\nQuestion: What is the capital of Peru?\n A. Quito\n B. Lima\nAnswer:\n<|assistant|>\nB<|endoftext|>\n' +
        '<|user|>\nQuestion: What is the capital of France?\n A. Paris\n B. Rome\nAnswer:\n<|assistant|>\n',
    );
    assert.deepEqual(letters!.choices, ['A', 'B']);
    const [generative] = chatGenerationInstances(task, render);
    assert.equal(generative!.context, cloze!.context);
    assert.equal(generative!.gold, 'Paris');
  });

  it('refuses partial scoring, which has no question to ask; runTask scores such a task as plain text and says so', async () => {
    const rows = [{ sentence: 'The cup is on the _ shelf.', option1: 'top', option2: 'bottom', answer: '1' }];
    const task = await readTask(writeTask('wino', { format: 'winogrande', formulations: ['cf'] }, rows));
    assert.throws(() => chatInstances(task, 'cf', render), (error: unknown) => error instanceof FormatError && /chat format needs a question/.test(error.message));
    const lm = await loadPretrained(tinyModelDir, { backend: new ReferenceBackend() });
    const result = await runTask(lm, task, { prefixToken: lm.tokenizer.tokenId(lm.tokenizer.eosToken)!, chat: render });
    assert.equal(result.chat, false);
    assert.equal(result.formulations[0]!.promptHash, promptHash(taskInstances(task, 'cf')));
  });

  it('reads preference pairs as a two-choice task whose gold is the chosen answer', async () => {
    const rows = [{ id: 'p1', prompt: 'What is the ISO 639-1 code for English?', chosen: 'It is "en".', rejected: 'Tell me more.' }];
    const task = await readTask(writeTask('pairs', { format: 'preference', formulations: ['cf'] }, rows));
    const [instance] = chatInstances(task, 'cf', render);
    assert.equal(instance!.context, '<|endoftext|><|user|>\nWhat is the ISO 639-1 code for English?\n<|assistant|>\n');
    assert.deepEqual(instance!.choices, ['It is "en".', 'Tell me more.']);
    assert.equal(instance!.gold, 0);
    await assert.rejects(readTask(writeTask('pairs-bad', { format: 'preference' }, [{ prompt: 'Q?', chosen: 'A.' }])), /row 1: "rejected" is missing/);
    // chosen is always first: the lettered form would always answer A, so cloze is the default and mcf is refused
    assert.deepEqual((await readTask(writeTask('pairs-default', { format: 'preference' }, rows))).formulations, ['cf']);
    await assert.rejects(readTask(writeTask('pairs-mcf', { format: 'preference', formulations: ['cf', 'mcf'] }, rows)), /would always answer A/);
  });
});

describe('answer normalisation', () => {
  it('ignores case, punctuation, articles and spacing, nothing else', () => {
    assert.equal(normalizeAnswer('  The  Port Vila. '), 'port vila');
    assert.ok(normalizedMatch('Port Vila.', ['Port Vila']));
    assert.ok(normalizedMatch('the hague', ['The Hague']));
    assert.ok(normalizedMatch('"gd"', ['gd']));
    assert.ok(!normalizedMatch('It is "gd".', ['gd']));
    assert.ok(!normalizedMatch('Port Louis', ['Port Vila']));
    assert.ok(!normalizedMatch('theme', ['me']), 'an article is a whole word');
  });
});

describe('olmoe eval --chat', () => {
  it('scores each answer after the conversation in the model\'s chat template', async () => {
    const task = writeTask('cli-chat', { shots: 1, formulations: ['cf'], normalizations: ['none'] }, DOCS, SHOTS);
    const output = join(dir, 'chat.json');
    const samples = join(dir, 'samples');
    const result = spawnSync(process.execPath, [cliPath, 'eval', tinyModelDir, '--tasks', task, '--chat', '--output', output, '--log-samples', samples, '-q', '--backend', 'reference'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /\| cli-chat \(chat\) \| 1 \| 1 \| cf \| none\* \|/);
    const report = JSON.parse(readFileSync(output, 'utf8')) as { results: { chat: boolean }[] };
    assert.equal(report.results[0]!.chat, true);
    const [scored] = readFileSync(join(samples, 'cli-chat-cf.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { logprobs: number[] });

    const lm = await loadPretrained(tinyModelDir, { backend: new ReferenceBackend() });
    const context = lm.tokenizer.renderChat([
      { role: 'user', content: 'Question: What is the capital of Peru?\nAnswer:' },
      { role: 'assistant', content: 'Lima' },
      { role: 'user', content: 'Question: What is the capital of France?\nAnswer:' },
    ]);
    const prefixToken = lm.tokenizer.tokenId(lm.tokenizer.eosToken)!;
    const requests = ['Paris', 'Rome'].map((answer) => {
      const pair = encodePair(lm.tokenizer, context, answer, prefixToken);
      return { context: pair.context, continuation: pair.continuation };
    });
    const direct = await loglikelihood(lm.model, requests);
    direct.forEach((d, k) => assert.ok(Math.abs(d.logprob - scored!.logprobs[k]!) < 1e-4, `choice ${k}: ${d.logprob} vs ${scored!.logprobs[k]}`));
  });
});
