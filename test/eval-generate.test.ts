/**
 * generate_until: the greedy continuation computed by hand (argmax of a plain forward, token by token), decoded
 * and cut before the first stop string; exact match after trimming.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cutAtStop, exactMatch, generateUntil } from '../src/eval/generate-until.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { backendCases } from './backends.js';
import { tinyModelDir } from './helpers.js';

describe('generate_until', () => {
  it('equals a hand-rolled greedy loop, cut at the first stop string', async () => {
    const lm = await loadPretrained(tinyModelDir, { backend: backendCases[0]!.create() });
    const context = 'The experts of';
    const ids = lm.tokenizer.encode(context);
    for (let i = 0; i < 12; i++) {
      const logits = lm.model.backend.toFloat32(lm.model.forward(Int32Array.from(ids), { logits: 'last' }));
      const next = logits.indexOf(Math.max(...logits));
      if (lm.model.config.eosTokenIds.includes(next)) break;
      ids.push(next);
    }
    const greedy = lm.tokenizer.decode(ids.slice(lm.tokenizer.encode(context).length));
    assert.ok(greedy.length > 4, 'the tiny model writes something');
    const stop = greedy.slice(2, 4); // a stop string that occurs in the greedy text
    const [free, stopped] = await generateUntil(lm, [
      { context, until: [], maxTokens: 12 },
      { context, until: ['\u0000never', stop], maxTokens: 12 },
    ]);
    assert.equal(free, greedy);
    assert.equal(stopped, greedy.slice(0, greedy.indexOf(stop)));
    await assert.rejects(generateUntil(lm, [{ context, until: [], maxTokens: 0 }]), /request 0: max tokens 0 must be a positive integer/);
  });

  it('cutting and exact match', () => {
    assert.equal(cutAtStop('Paris.\n\nQuestion: x', ['\n\n', 'Question:']), 'Paris.');
    assert.equal(cutAtStop('abc', ['']), 'abc');
    assert.equal(exactMatch('  Paris \n', ['Lyon', 'Paris']), true);
    assert.equal(exactMatch('Paris, France', ['Paris']), false);
  });
});
