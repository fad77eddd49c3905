/**
 * Adaptation data: the loss mask trains every assistant turn (with its end-of-turn token) and no system/user
 * token, checked against masks written by hand for the real OLMo tokenizer under OLMoE-0924-Instruct's template,
 * the 0125 Tülu template, the no-template fallback and the tiny fixture's tokenizer; the first ids of the real
 * rendering are the spec's (§4.3, from the Rust tokenizers). Bad records and non-prefix-stable templates are
 * errors naming file and line; max_length, packing and padding keep every token where it belongs.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FormatError, InputError, OlmoeError } from '../src/core/errors.js';
import { OlmoeTokenizer } from '../src/tokenizer/tokenizer.js';
import { fitToLength, makeBatch, packRows, padRows } from '../src/train/adapt/batching.js';
import { encodeSftRecord, encodeTurns, trainedCount, type EncodedSequence } from '../src/train/adapt/encode.js';
import { readRecords } from '../src/train/adapt/jsonl.js';
import { encodeKto, encodePreferences, klPartners } from '../src/train/adapt/preference.js';
import { parseKtoRecords, parsePreferenceRecord, parseSftRecord, type Turn } from '../src/train/adapt/records.js';
import { maskedPieces, showMask } from '../src/train/adapt/show-mask.js';
import { describeSftStats, loadSftData } from '../src/train/adapt/sft-data.js';
import { INSTRUCT_TOKENS, TEMPLATE_0125, TEMPLATE_0924 } from './chat-templates.js';
import { realTokenizerDir, realTokenizerSkip, tempDir, tinyModelDir } from './helpers.js';

type Json = Record<string, unknown>;

/** Spec §4.3: "<|endoftext|><|user|>\nWhat is 2+2?\n<|assistant|>\n" by the Rust tokenizers. */
const WHAT_IS_2_PLUS_2_IDS = [50279, 29, 93, 4537, 49651, 187, 1276, 310, 374, 12, 19, 32, 187, 29, 93, 515, 5567, 49651, 187];
const EOS = 50279;

const realSkip = realTokenizerSkip();
let realJsonCache: Json | undefined;
const realTokenizer = (config: Json) => new OlmoeTokenizer((realJsonCache ??= JSON.parse(readFileSync(join(realTokenizerDir, 'tokenizer.json'), 'utf8')) as Json), config);
const source = { file: 'chat.jsonl', line: 1 };
const turn = (role: Turn['role'], content: string): Turn => ({ role, content, train: role === 'assistant' });

const TWO_TURNS: Turn[] = [turn('system', 'You are terse.'), turn('user', 'What is 2+2?'), turn('assistant', '4'), turn('user', 'And 3+3?'), turn('assistant', 'The answer is 6.')];

function assertPieces(tokenizer: OlmoeTokenizer, sequence: EncodedSequence, expected: [string, boolean][], what: string): void {
  assert.deepEqual(maskedPieces(tokenizer, sequence), expected, what);
  assert.equal(sequence.tokens.length, sequence.lossMask.length);
  assert.equal(sequence.lossMask[0], 0, `${what}: the first token is never a target`);
}

describe('loss masks: every assistant turn and its end-of-turn token, nothing else (hand-written)', () => {
  it('OLMoE-0924-Instruct template, real tokenizer: the turn the template writes, "\\n" after eos included (as open-instruct)', { skip: realSkip }, () => {
    const tokenizer = realTokenizer({ ...INSTRUCT_TOKENS, chat_template: TEMPLATE_0924 });
    const sequence = encodeTurns(tokenizer, TWO_TURNS, source);
    assertPieces(tokenizer, sequence, [
      ['<|endoftext|><|system|>\nYou are terse.\n<|user|>\nWhat is 2+2?\n<|assistant|>\n', false],
      ['4<|endoftext|>\n', true],
      ['<|user|>\nAnd 3+3?\n<|assistant|>\n', false],
      ['The answer is 6.<|endoftext|>\n', true],
    ], '0924');
    // The eos ending each reply is trained; "<|user|>" (29, 93, 4537, 49651) never is.
    const eosPositions = [...sequence.tokens.keys()].filter((t) => sequence.tokens[t] === EOS);
    assert.deepEqual(eosPositions.map((t) => sequence.lossMask[t]), [0, 1, 1], 'bos untrained, both end-of-turn eos trained');
    // Without the system turn, the prompt's ids are the spec's, untrained, and the reply follows.
    const plain = encodeTurns(tokenizer, TWO_TURNS.slice(1, 3), source);
    assert.deepEqual(Array.from(plain.tokens.slice(0, 19)), WHAT_IS_2_PLUS_2_IDS);
    assert.deepEqual(Array.from(plain.lossMask), [...Array(19).fill(0), 1, 1, 1], '"4", eos, "\\n" trained');
    assert.deepEqual(Array.from(plain.tokens.slice(19)), [tokenizer.encode('4')[0], EOS, 187]);
  });

  for (const [name, config] of [['0125 Tülu template', { ...INSTRUCT_TOKENS, chat_template: TEMPLATE_0125 }], ['no chat_template (OLMoE fallback)', { ...INSTRUCT_TOKENS }]] as const) {
    it(`${name}, real tokenizer: the separator "\\n" belongs to the next turn`, { skip: realSkip }, () => {
      const tokenizer = realTokenizer(config);
      assertPieces(tokenizer, encodeTurns(tokenizer, TWO_TURNS, source), [
        ['<|endoftext|><|system|>\nYou are terse.\n<|user|>\nWhat is 2+2?\n<|assistant|>\n', false],
        ['4<|endoftext|>', true],
        ['\n<|user|>\nAnd 3+3?\n<|assistant|>\n', false],
        ['The answer is 6.<|endoftext|>', true],
      ], name);
      const plain = encodeTurns(tokenizer, TWO_TURNS.slice(1, 3), source);
      assert.deepEqual(Array.from(plain.lossMask), [...Array(19).fill(0), 1, 1]);
    });
  }

  it('the tiny fixture\'s tokenizer (no bos, no template): the prompt opens with eos', () => {
    const tokenizer = OlmoeTokenizer.fromFolder(tinyModelDir);
    const turns = [turn('user', 'Hi'), turn('assistant', 'Hello!'), turn('user', 'Bye'), turn('assistant', 'Bye.')];
    assertPieces(tokenizer, encodeTurns(tokenizer, turns, source), [
      ['<|endoftext|><|user|>\nHi\n<|assistant|>\n', false],
      ['Hello!<|endoftext|>', true],
      ['\n<|user|>\nBye\n<|assistant|>\n', false],
      ['Bye.<|endoftext|>', true],
    ], 'tiny');
  });

  it('prompt/completion: assistant turns of the prompt (history) are not trained, the completion is', { skip: realSkip }, () => {
    const tokenizer = realTokenizer({ ...INSTRUCT_TOKENS, chat_template: TEMPLATE_0924 });
    const record = parseSftRecord({ prompt: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' }, { role: 'user', content: 'Name?' }], completion: 'Olmo.' }, source);
    assertPieces(tokenizer, encodeSftRecord(tokenizer, record), [
      ['<|endoftext|><|user|>\nHi\n<|assistant|>\nHello.<|endoftext|>\n<|user|>\nName?\n<|assistant|>\n', false],
      ['Olmo.<|endoftext|>\n', true],
    ], 'prompt/completion');
  });

  it('plain text: eos, the text, eos; everything after the first token trained', () => {
    const tokenizer = OlmoeTokenizer.fromFolder(tinyModelDir);
    const sequence = encodeSftRecord(tokenizer, parseSftRecord({ text: 'A cat.' }, source));
    assertPieces(tokenizer, sequence, [['<|endoftext|>', false], ['A cat.<|endoftext|>', true]], 'text');
    assert.equal(trainedCount(sequence), sequence.tokens.length - 1);
  });

  it('--show-mask marks the trained spans', () => {
    const tokenizer = OlmoeTokenizer.fromFolder(tinyModelDir);
    const sequence = encodeTurns(tokenizer, [turn('user', 'Hi'), turn('assistant', 'Yo')], source);
    const lines = showMask(tokenizer, sequence).split('\n');
    assert.deepEqual(lines.slice(0, 4), ['<|endoftext|><|user|>', 'Hi', '<|assistant|>', '⟦Yo<|endoftext|>⟧']);
    assert.match(lines[4]!, new RegExp(`^-- ${sequence.tokens.length} tokens, ${trainedCount(sequence)} trained`));
    assert.match(showMask(tokenizer, sequence, { color: true }), /\x1b\[42m\x1b\[30mYo<\|endoftext\|>\x1b\[0m/);
  });
});

describe('templates that cannot give a mask are errors naming the record', () => {
  const tiny = () => JSON.parse(readFileSync(join(tinyModelDir, 'tokenizer.json'), 'utf8')) as Json;
  const turns = [turn('user', 'Hi'), turn('assistant', 'Yo'), turn('user', 'Q'), turn('assistant', 'A')];
  it('a template that renders messages in reverse is not prefix-stable', () => {
    const tokenizer = new OlmoeTokenizer(tiny(), { ...INSTRUCT_TOKENS, chat_template: '{% for m in messages | reverse %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}' });
    assert.throws(() => encodeTurns(tokenizer, turns, { file: 'data.jsonl', line: 7 }), (e: Error) => e instanceof FormatError && /^data\.jsonl: line 7: the chat template is not prefix-stable/.test(e.message));
  });
  it('a template that writes the last turn differently is not prefix-stable', () => {
    const tokenizer = new OlmoeTokenizer(tiny(), { chat_template: '{% for m in messages %}{{ m.content }}{% if loop.last %}<end>{% else %}|{% endif %}{% endfor %}' });
    assert.throws(() => encodeTurns(tokenizer, turns, source), /not prefix-stable.*differ at character 2/);
  });
  it('a template that raises is reported with the record', () => {
    const tokenizer = new OlmoeTokenizer(tiny(), { chat_template: "{{ raise_exception('Conversation roles must alternate') }}" });
    assert.throws(() => encodeTurns(tokenizer, turns, { file: 'data.jsonl', line: 3 }), /^FormatError: data\.jsonl: line 3: cannot be rendered with the chat template: .*roles must alternate/);
  });
});

describe('records: each bad line is named by file, line and field', () => {
  async function sftError(lines: string[]): Promise<string> {
    const file = join(tempDir(), 'sft.jsonl');
    writeFileSync(file, `${lines.join('\n')}\n`);
    const error = await readRecords(file, parseSftRecord).then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof OlmoeError, `expected an OlmoeError for ${lines.join(' / ')}, got ${String(error)}`);
    return (error as Error).message.replace(file, 'sft.jsonl');
  }
  const ok = JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Yo' }] });
  it('malformed JSON, unknown role, missing content, no assistant turn, assistant first, mixed formats', async () => {
    assert.match(await sftError([ok, '{"messages": [', ok]), /^sft\.jsonl: line 2: not valid JSON/);
    assert.match(await sftError([ok, ok, JSON.stringify({ messages: [{ role: 'user', content: 'a' }, { role: 'tool', content: 'b' }] })]), /^sft\.jsonl: line 3: messages\[1\]\.role: unknown role "tool"/);
    assert.match(await sftError([JSON.stringify({ messages: [{ role: 'user' }] })]), /line 1: messages\[0\]\.content: must be a string/);
    assert.match(await sftError([JSON.stringify({ messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'u' }] })]), /line 1: messages: has no assistant turn/);
    assert.match(await sftError([JSON.stringify({ messages: [{ role: 'assistant', content: 'a' }, { role: 'user', content: 'u' }] })]), /messages\[0\]\.role: is "assistant": a conversation starts with a system or user message/);
    assert.match(await sftError([JSON.stringify({ text: 'x', prompt: 'p', completion: 'c' })]), /line 1: mixes the keys of the formats/);
    assert.match(await sftError([JSON.stringify({ prompt: 'p' })]), /line 1: completion: is missing/);
    assert.match(await sftError([JSON.stringify({ answer: 'p' })]), /line 1: has none of the formats \{"messages"\} or \{"prompt", "completion"\} or \{"text"\}/);
    assert.match(await sftError(['[1, 2]']), /line 1: is \[1,2\], not a JSON object/);
    assert.match(await sftError(['']), /no records/);
  });

  it('preference: implicit prompt, a prompt ending with an assistant turn, chosen identical to rejected (warned and counted)', () => {
    const implicit = parsePreferenceRecord({
      chosen: [{ role: 'user', content: 'Q' }, { role: 'assistant', content: 'good' }],
      rejected: [{ role: 'user', content: 'Q' }, { role: 'assistant', content: 'bad' }],
    }, source);
    assert.deepEqual(implicit.prompt, [{ role: 'user', content: 'Q', train: false }]);
    assert.deepEqual(implicit.chosen, [{ role: 'assistant', content: 'good', train: true }]);
    assert.throws(() => parsePreferenceRecord({ prompt: [{ role: 'user', content: 'Q' }, { role: 'assistant', content: 'A' }], chosen: 'x', rejected: 'y' }, source), /line 1: prompt: ends with an assistant message/);
    assert.throws(() => parsePreferenceRecord({ prompt: 'Q', chosen: 'x' }, source), /line 1: rejected: is missing/);
    assert.throws(() => parsePreferenceRecord({ prompt: 'Q', chosen: [{ role: 'user', content: 'x' }], rejected: 'y' }, source), /chosen\[0\]\.role: is "user": a completion starts with the assistant's reply/);
    const tokenizer = OlmoeTokenizer.fromFolder(tinyModelDir);
    const records = [parsePreferenceRecord({ prompt: 'Q', chosen: 'same', rejected: 'same' }, { file: 'p.jsonl', line: 4 }), parsePreferenceRecord({ prompt: 'Q', chosen: 'yes', rejected: 'no' }, source)];
    const { pairs, stats, warnings } = encodePreferences(tokenizer, records, { maxLength: 64, policy: 'drop' });
    assert.equal(pairs.length, 1);
    assert.equal(stats.identical, 1);
    assert.deepEqual(warnings, ['p.jsonl: line 4: chosen is identical to rejected; the pair is left out']);
    // Chosen and rejected share the prompt's ids exactly and differ in the trained completion only.
    const { chosen, rejected } = pairs[0]!;
    const promptLength = chosen.lossMask.indexOf(1);
    assert.deepEqual(chosen.tokens.slice(0, promptLength), rejected.tokens.slice(0, promptLength));
    assert.deepEqual(maskedPieces(tokenizer, rejected), [['<|endoftext|><|user|>\nQ\n<|assistant|>\n', false], ['no<|endoftext|>', true]]);
  });

  it('KTO: labels are booleans; a paired line is split into a desirable and an undesirable example', () => {
    assert.throws(() => parseKtoRecords({ prompt: 'Q', completion: 'A', label: 'yes' }, source), /line 1: label: must be true \(desirable\) or false \(undesirable\), not "yes"/);
    assert.throws(() => parseKtoRecords({ prompt: 'Q', completion: 'A' }, source), /line 1: label: is missing/);
    const split = parseKtoRecords({ prompt: 'Q', chosen: 'good', rejected: 'bad' }, source);
    assert.deepEqual(split.map((r) => [r.completion[0]!.content, r.label]), [['good', true], ['bad', false]]);
  });
});

describe('KTO mismatched pairs for the KL estimate', () => {
  const record = (prompt: string, completion: string, label: boolean) => parseKtoRecords({ prompt, completion, label }, source)[0]!;
  it('every example is paired with another prompt\'s completion, deterministically', () => {
    // A split paired file: each prompt twice, adjacent — a plain rotation would pair a prompt with itself.
    const records = ['a', 'b', 'c', 'd'].flatMap((p) => parseKtoRecords({ prompt: p, chosen: `${p}+`, rejected: `${p}-` }, source));
    for (const seed of [0, 1, 2, 3]) {
      const partners = klPartners(records, seed);
      partners.forEach((partner, i) => assert.notEqual(records[partner]!.prompt[0]!.content, records[i]!.prompt[0]!.content, `seed ${seed}: example ${i}`));
      assert.deepEqual(klPartners(records, seed), partners, 'same seed, same pairs');
    }
    assert.throws(() => klPartners([record('same', 'x', true), record('same', 'y', false)], 0), /at least two different prompts/);
  });

  it('the KL sequence is the example\'s prompt with the partner\'s completion', () => {
    const tokenizer = OlmoeTokenizer.fromFolder(tinyModelDir);
    const records = [record('P1', 'c1', true), record('P2', 'c2', false), record('P3', 'c3', true)];
    const { examples, stats } = encodeKto(tokenizer, records, { maxLength: 64, policy: 'drop', seed: 5 });
    const partners = klPartners(records, 5);
    examples.forEach((example, i) => {
      const [prompt, completion] = maskedPieces(tokenizer, example.kl);
      assert.equal(prompt![0], `<|endoftext|><|user|>\nP${i + 1}\n<|assistant|>\n`);
      assert.equal(completion![0], `c${partners[i]! + 1}<|endoftext|>`);
    });
    assert.deepEqual([stats.desirable, stats.undesirable], [2, 1]);
  });
});

describe('max_length, packing and padding', () => {
  const seq = (length: number, trainedFrom: number): EncodedSequence => ({
    tokens: Int32Array.from({ length }, (_, i) => 100 + i),
    lossMask: Uint8Array.from({ length }, (_, i) => (i >= trainedFrom ? 1 : 0)),
  });
  it('drop and truncate are counted; a truncation that leaves no trained token drops the sequence', () => {
    const sequences = [seq(5, 2), seq(9, 3), seq(12, 10), seq(8, 1)];
    const dropped = fitToLength(sequences, 8, 'drop');
    assert.deepEqual(dropped.stats, { fitted: 2, truncated: 0, dropped: 2, droppedNoTarget: 0 });
    assert.deepEqual(dropped.kept.map((k) => k.index), [0, 3]);
    const cut = fitToLength(sequences, 8, 'truncate');
    assert.deepEqual(cut.stats, { fitted: 2, truncated: 1, dropped: 0, droppedNoTarget: 1 });
    assert.deepEqual(cut.kept.map((k) => [k.index, k.sequence.tokens.length]), [[0, 5], [1, 8], [3, 8]]);
    assert.deepEqual(Array.from(cut.kept[1]!.sequence.lossMask), [0, 0, 0, 1, 1, 1, 1, 1]);
    assert.throws(() => fitToLength(sequences, 1, 'drop'), InputError);
  });

  it('packing puts every sequence in one row, whole, in the order it came; padding and masks are where they belong', () => {
    const sequences = [seq(5, 2), seq(3, 1), seq(6, 4), seq(2, 1), seq(7, 3)];
    const lengths = sequences.map((s) => s.tokens.length);
    const rows = packRows(lengths, 8);
    // First fit: [0 (5) + 1 (3)], [2 (6) + 3 (2)], [4 (7)].
    assert.deepEqual(rows, [[0, 1], [2, 3], [4]]);
    const batch = makeBatch(rows, sequences, { width: 8, padId: 1 });
    assert.deepEqual(Array.from(batch.documentIds.slice(0, 8)), [0, 0, 0, 0, 0, 1, 1, 1]);
    assert.deepEqual(Array.from(batch.lossMask.slice(0, 8)), [0, 0, 1, 1, 1, 0, 1, 1], "each sequence's first token is untrained");
    assert.deepEqual(Array.from(batch.tokens.slice(16, 24)), [100, 101, 102, 103, 104, 105, 106, 1], 'padding id after the last sequence');
    assert.equal(batch.documentIds[23], -1);
    assert.equal(batch.lossMask[23], 0);
    assert.equal(batch.lossMask.reduce((a, b) => a + b, 0), sequences.reduce((sum, s) => sum + trainedCount(s), 0), 'every trained token once');
    const padded = makeBatch(padRows(2), sequences, { width: 'longest', padId: 1 });
    assert.equal(padded.width, 5);
    assert.deepEqual(Array.from(padded.tokens.slice(5)), [100, 101, 102, 1, 1]);
    assert.throws(() => packRows([9], 8), /apply max_length first/);
  });
});

describe('SFT data end to end', () => {
  it('reads files in order, encodes, applies max_length and reports the counts', async () => {
    const tokenizer = OlmoeTokenizer.fromFolder(tinyModelDir);
    const dir = tempDir();
    const conversation = { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Yo' }, { role: 'user', content: 'Q' }, { role: 'assistant', content: 'A' }] };
    writeFileSync(join(dir, 'a.jsonl'), [JSON.stringify(conversation), JSON.stringify({ prompt: 'P', completion: 'C' })].join('\n'));
    writeFileSync(join(dir, 'b.jsonl'), `${JSON.stringify({ text: 'word '.repeat(200) })}\n`);
    const data = await loadSftData([join(dir, 'a.jsonl'), join(dir, 'b.jsonl')], tokenizer, { maxLength: 64, policy: 'drop' });
    assert.deepEqual([data.stats.records, data.stats.multiTurn, data.stats.fitted, data.stats.dropped], [3, 1, 2, 1]);
    assert.deepEqual(data.sequences.map((s) => s.index), [0, 1]);
    assert.deepEqual(data.records.map((r) => r.source.line), [1, 2, 1]);
    assert.equal(data.stats.trainedTokens, data.sequences.reduce((n, s) => n + trainedCount(s.sequence), 0));
    assert.match(describeSftStats(data.stats, 64), /^3 records \(1 multi-turn\): 2 kept, 0 truncated and 1 dropped at max_length 64; \d+ tokens, \d+ trained$/);
  });
});
