/**
 * The bundled OLMoE-mini-Instruct against its base on the held-out SFT conversations (data/adapt/sft-valid.jsonl,
 * never trained on): asked in the chat template, greedy, 40 tokens at most, the instruct model ends its turn with the
 * end-of-text token on most of them (measured: 34 of 34; 28 of 34 for the first one, from the 600-step base) and the base on none (0 of 34): what SFT taught.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { generateText } from '../src/generate/generate.js';
import { loadPretrained } from '../src/model/pretrained.js';
import type { ChatMessage } from '../src/tokenizer/chat-template.js';
import { backendCases } from './backends.js';
import { repoRoot } from './helpers.js';

const prompts = readFileSync(join(repoRoot, 'data', 'adapt', 'sft-valid.jsonl'), 'utf8').trim().split('\n').map((line) => {
  const messages = (JSON.parse(line) as { messages: ChatMessage[] }).messages;
  return messages.slice(0, messages.findIndex((m) => m.role === 'assistant'));
});

async function endedTurns(model: string): Promise<number> {
  const lm = await loadPretrained(join(repoRoot, 'models', model), { backend: backendCases[0]!.create() });
  let ended = 0;
  for (const messages of prompts) {
    const result = await generateText(lm, lm.tokenizer.encodeChat(messages), { greedy: true, maxNewTokens: 40 });
    if (result.finishReason === 'eos') ended++;
  }
  return ended;
}

describe('OLMoE-mini-Instruct (bundled)', () => {
  it('ends its reply like a chat model on held-out prompts; its base does not', async () => {
    assert.equal(prompts.length, 34);
    const instruct = await endedTurns('olmoe-mini-instruct');
    const base = await endedTurns('olmoe-mini');
    assert.ok(instruct >= 24, `instruct ended ${instruct} of 34 turns`);
    assert.ok(base <= 3, `base ended ${base} of 34 turns`);
  });
});
