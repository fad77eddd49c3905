/**
 * Multiple-choice scoring on hand-built cases whose answers are worked out here: each normalization picks the
 * choice its definition says, accuracy and its standard error, bits per byte of the gold answer, chance; the
 * harness's (context, continuation) encoding with the real OLMo tokenizer; bad instances named.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InputError } from '../src/core/errors.js';
import { accuracy, chanceAccuracy, encodePair, goldBitsPerByte, meanWithStderr, predicted, scoreChoices, type ChoiceScores } from '../src/eval/multiple-choice.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { OlmoeTokenizer } from '../src/tokenizer/tokenizer.js';
import { backendCases } from './backends.js';
import { realTokenizerDir, tinyModelDir } from './helpers.js';

/** Four choices built so that each normalization prefers a different one. */
const CASE: ChoiceScores = {
  id: 'q1', gold: 2,
  logprobs: [-2, -3, -6, -5],
  tokens: [1, 3, 4, 2], // per token: -2, -1, -1.5, -2.5 → choice 1
  chars: [2, 5, 15, 4], // per char: -1, -0.6, -0.4, -1.25 → choice 2
  bytes: [2, 5, 15, 4],
  unconditioned: [-1, -1, -1, -9], // pmi: -1, -2, -5, +4 → choice 3
  isGreedy: [false, false, false, false],
  truncated: 0,
};

describe('multiple-choice scoring', () => {
  it('each normalization picks the choice its definition gives', () => {
    assert.equal(predicted(CASE, 'none'), 0);
    assert.equal(predicted(CASE, 'per_token'), 1);
    assert.equal(predicted(CASE, 'per_char'), 2);
    assert.equal(predicted(CASE, 'pmi'), 3);
    assert.equal(predicted({ ...CASE, logprobs: [-1, -1, -2, -3] }, 'none'), 0, 'ties go to the first choice');
    assert.throws(() => predicted({ ...CASE, unconditioned: undefined }, 'pmi'), InputError);
  });

  it('accuracy with its standard error, bits per byte of the gold answer, chance', () => {
    const right = { ...CASE }; // per_char picks 2 = gold
    const wrong = { ...CASE, id: 'q2', gold: 0 };
    const scores = [right, right, wrong, right];
    const acc = accuracy(scores, 'per_char');
    assert.equal(acc.value, 0.75);
    assert.equal(acc.n, 4);
    assert.ok(Math.abs(acc.stderr - 0.25) < 1e-12, 'sd √(0.75/3) = 0.5, over √4'); // values 1,1,0,1
    assert.equal(accuracy(scores, 'none').value, 0.25);
    const bpb = goldBitsPerByte([right, wrong]);
    assert.ok(Math.abs(bpb.value - (6 / Math.LN2 / 15 + 2 / Math.LN2 / 2) / 2) < 1e-12);
    assert.equal(chanceAccuracy([CASE, { ...CASE, logprobs: [-1, -2] }]), (0.25 + 0.5) / 2);
    assert.ok(Number.isNaN(meanWithStderr([1]).stderr), 'one instance has no standard error');
  });

  it('the harness\'s pair encoding: the context\'s trailing space moves to the continuation', () => {
    const tokenizer = OlmoeTokenizer.fromFolder(realTokenizerDir);
    const pair = encodePair(tokenizer, 'Question: What is the capital of France?\nAnswer: ', 'Paris', 50279);
    assert.deepEqual(pair.context, tokenizer.encode('Question: What is the capital of France?\nAnswer:'));
    assert.deepEqual(pair.continuation, tokenizer.encode(' Paris'));
    assert.equal(pair.text, ' Paris');
    assert.deepEqual(encodePair(tokenizer, '', 'Hello', 50279), { context: [50279], continuation: tokenizer.encode('Hello'), text: 'Hello' });
  });

  it('scores come from the model; pmi terms from the unconditioned prompt; bad instances are named', async () => {
    const lm = await loadPretrained(tinyModelDir, { backend: backendCases[0]!.create() });
    const instance = { id: 'x', context: 'Question: is it?\nAnswer:', choices: [' yes', ' no'], gold: 1, unconditionedContext: 'Answer:' };
    const [scores] = await scoreChoices(lm, [instance], { prefixToken: 556, withUnconditioned: true });
    const direct = (context: string, choice: string) => {
      const ids = [...lm.tokenizer.encode(context), ...lm.tokenizer.encode(context + choice).slice(lm.tokenizer.encode(context).length)];
      const logits = lm.model.backend.toFloat32(lm.model.forward(Int32Array.from(ids.slice(0, -1))));
      const vocab = lm.model.config.vocabSize;
      let sum = 0;
      for (let t = lm.tokenizer.encode(context).length; t < ids.length; t++) {
        const row = Array.from(logits.subarray((t - 1) * vocab, t * vocab));
        const max = Math.max(...row);
        sum += row[ids[t]!]! - max - Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
      }
      return sum;
    };
    scores!.logprobs.forEach((logprob, k) => assert.ok(Math.abs(logprob - direct(instance.context, instance.choices[k]!)) < 1e-5));
    scores!.unconditioned!.forEach((logprob, k) => assert.ok(Math.abs(logprob - direct('Answer:', instance.choices[k]!)) < 1e-5));
    await assert.rejects(scoreChoices(lm, [{ ...instance, gold: 2 }], { prefixToken: 556 }), /instance x: gold answer 2 is not one of its 2 choices/);
    await assert.rejects(scoreChoices(lm, [{ ...instance, choices: [] }], { prefixToken: 556 }), /instance x: no choices/);
    await assert.rejects(scoreChoices(lm, [{ ...instance, unconditionedContext: undefined }], { prefixToken: 556, withUnconditioned: true }), /instance x: pmi needs an unconditioned context/);
  });
});
