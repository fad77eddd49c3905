/**
 * Tokenizer tests: exact ids against the Rust tokenizers (golden file + spec §4.1/§7 vectors), chat templates
 * (spec §4.3), clean_up_tokenization_spaces, the streaming detokenizer, and tokenizer folder loading/errors.
 * Tests that need the real OLMo tokenizer from ../shared skip visibly when it is absent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { FormatError, InputError, OlmoeError } from '../src/core/errors.js';
import { byteLevelTokenizerJson } from '../src/tokenizer/byte-level.js';
import type { ChatMessage } from '../src/tokenizer/chat-template.js';
import { OlmoeTokenizer } from '../src/tokenizer/tokenizer.js';
import { INSTRUCT_TOKENS, TEMPLATE_0125, TEMPLATE_0924 } from './chat-templates.js';
import { realGoldenPath, realTokenizerDir, realTokenizerSkip, tempDir, tinyModelDir } from './helpers.js';

type Json = Record<string, unknown>;
interface GoldenCase {
  text: string;
  ids: number[];
  decoded: string;
}

const realSkip = realTokenizerSkip();
const goldenPath = realGoldenPath;
const goldenCases: GoldenCase[] = existsSync(goldenPath) ? (JSON.parse(readFileSync(goldenPath, 'utf8')) as { cases: GoldenCase[] }).cases : [];

let realJsonCache: Json | undefined;
function realJson(): Json {
  realJsonCache ??= JSON.parse(readFileSync(join(realTokenizerDir, 'tokenizer.json'), 'utf8')) as Json;
  return realJsonCache;
}
let realTokCache: OlmoeTokenizer | undefined;
/** The real OLMo tokenizer as the Rust tokenizers use it: no cleanup, no BOS/EOS added. */
function realTok(): OlmoeTokenizer {
  realTokCache ??= new OlmoeTokenizer(realJson(), { clean_up_tokenization_spaces: false });
  return realTokCache;
}

const tinyJson = () => JSON.parse(readFileSync(join(tinyModelDir, 'tokenizer.json'), 'utf8')) as Json;
const byteTok = (config: Json = {}) => new OlmoeTokenizer(byteLevelTokenizerJson().json as Json, config);

/** Push ids one by one through a stream decoder; returns the deltas (the last one is flush()). */
function streamDeltas(tok: OlmoeTokenizer, ids: readonly number[]): string[] {
  const stream = tok.streamDecoder();
  const deltas = ids.map((id) => stream.push(id));
  deltas.push(stream.flush());
  return deltas;
}

function assertThrowsOlmoe<E extends OlmoeError>(fn: () => unknown, cls: new (...args: never[]) => E, pattern: RegExp): E {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught !== undefined, `expected a ${cls.name}, nothing was thrown`);
  assert.ok(caught instanceof cls, `expected a ${cls.name}, got ${(caught as Error)?.name}: ${(caught as Error)?.message}`);
  assert.match((caught as Error).message, pattern);
  return caught as E;
}

// ---------------------------------------------------------------------------------------------------------
// 1. Golden ids from the Rust tokenizers
// ---------------------------------------------------------------------------------------------------------

test(`golden ids: encode and decode match the Rust tokenizers on all ${goldenCases.length || 'the'} cases of ${basename(goldenPath)}`, { skip: realSkip }, (t) => {
  // 620 cases from ../shared, or the repository's subset (every 6th) on a fresh clone.
  assert.ok(goldenCases.length >= (goldenPath.endsWith('subset.json') ? 100 : 600), `${goldenPath} holds only ${goldenCases.length} cases`);
  const tok = realTok();
  let checked = 0;
  for (const [i, c] of goldenCases.entries()) {
    assert.deepEqual(tok.encode(c.text), c.ids, `case ${i}: encode(${JSON.stringify(c.text)})`);
    assert.equal(tok.decode(c.ids), c.decoded, `case ${i}: decode(${JSON.stringify(c.ids)})`);
    checked++;
  }
  t.diagnostic(`${checked} golden cases checked (encode + decode)`);
  assert.equal(checked, goldenCases.length);
});

// ---------------------------------------------------------------------------------------------------------
// 2. Spec §4.1 / §7 vectors
// ---------------------------------------------------------------------------------------------------------

const SPEC_VECTORS: [string, number[]][] = [
  ['Bitcoin is', [12871, 9669, 310]],
  ['Hi  Hello', [12764, 50276, 12092]],
  ['Hi   Hello', [12764, 50275, 12092]],
  ['A sample test', [34, 3410, 1071]],
  ['This is a test', [1552, 310, 247, 1071]],
  ['生活的真谛是', [20025, 46549, 5225, 48561, 33656, 238, 12105]],
  ['', []],
  [' ', [209]],
  ['  ', [50276]],
  [' Hello', [24387]],
  ['|||IP_ADDRESS|||', [0]],
  ['a     b', [66, 50273, 67]],
  ['def f():\n    return 1', [1545, 269, 14850, 187, 50274, 2309, 337]],
  ['Simply put, the theory of relativity states that ', [4749, 2881, 1691, 13, 253, 3762, 273, 39241, 3054, 326, 209]],
  ['<|user|>', [29, 93, 4537, 49651]],
  ['<|assistant|>', [29, 93, 515, 5567, 49651]],
  ['Hey, are you conscious? Can you talk to me?', [8262, 13, 403, 368, 9680, 32, 2615, 368, 2312, 281, 479, 32]],
];

test(`spec §4.1/§7 vectors: ${SPEC_VECTORS.length} texts encode to the reference ids and decode back`, { skip: realSkip }, () => {
  const tok = realTok();
  for (const [text, ids] of SPEC_VECTORS) {
    assert.deepEqual(tok.encode(text), ids, `encode(${JSON.stringify(text)})`);
    assert.equal(tok.decode(ids), text, `decode(${JSON.stringify(ids)})`);
  }
});

test('real tokenizer: special tokens, vocabulary size, NFC normalization, skipSpecialTokens', { skip: realSkip }, () => {
  const tok = realTok();
  assert.equal(tok.vocabSize, 50280);
  assert.equal(tok.tokenId('<|endoftext|>'), 50279);
  assert.equal(tok.tokenId('<|padding|>'), 1);
  assert.equal(tok.tokenId('|||IP_ADDRESS|||'), 0);
  assert.equal(tok.tokenId('<|user|>'), undefined, '<|user|> is not a token (spec §4.1)');
  assert.equal(tok.idToToken(50279), '<|endoftext|>');
  // <|endoftext|> in the text is matched as the added token; the base model adds no BOS/EOS by itself.
  assert.deepEqual(tok.encode('A sample test<|endoftext|>'), [34, 3410, 1071, 50279]);
  assert.deepEqual(tok.encode('A sample test', { addSpecialTokens: true }), [34, 3410, 1071]);
  // NFC: a decomposed é (e + U+0301) encodes like the composed one.
  assert.deepEqual(tok.encode('cafe\u0301'), tok.encode('caf\u00e9'));
  // Specials are kept by default and dropped with skipSpecialTokens.
  const ids = [50279, 34, 3410, 1071, 50279, 1];
  assert.equal(tok.decode(ids), '<|endoftext|>A sample test<|endoftext|><|padding|>');
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'A sample test');
});

// ---------------------------------------------------------------------------------------------------------
// 3. Chat templates (spec §4.3)
// ---------------------------------------------------------------------------------------------------------

const CHAT: ChatMessage[] = [
  { role: 'system', content: 'S' },
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Hello!' },
  { role: 'user', content: 'Q2' },
];
const CHAT_RENDERED = '<|endoftext|><|system|>\nS\n<|user|>\nHi\n<|assistant|>\nHello!<|endoftext|>\n<|user|>\nQ2\n<|assistant|>\n';
const WHAT_IS_2_PLUS_2_IDS = [50279, 29, 93, 4537, 49651, 187, 1276, 310, 374, 12, 19, 32, 187, 29, 93, 515, 5567, 49651, 187];

test('chat: the 0924-Instruct, 0125 Tülu and fallback formats render the spec §4.3 string', () => {
  const json = byteLevelTokenizerJson().json as Json;
  const variants: [string, Json][] = [
    ['0924-Instruct template', { ...INSTRUCT_TOKENS, chat_template: TEMPLATE_0924 }],
    ['0125 Tülu template', { ...INSTRUCT_TOKENS, chat_template: TEMPLATE_0125 }],
    ['fallback (no chat_template)', { ...INSTRUCT_TOKENS }],
    ['template list with "default"', { ...INSTRUCT_TOKENS, chat_template: [{ name: 'tool_use', template: 'WRONG' }, { name: 'default', template: TEMPLATE_0924 }] }],
    ['AddedToken objects for bos/eos', { bos_token: { content: '<|endoftext|>', special: true }, eos_token: { content: '<|endoftext|>' }, chat_template: TEMPLATE_0125 }],
  ];
  for (const [name, config] of variants) {
    const tok = new OlmoeTokenizer(json, config);
    assert.equal(tok.renderChat(CHAT), CHAT_RENDERED, name);
    assert.equal(tok.renderChat(CHAT, { addGenerationPrompt: true }), CHAT_RENDERED, `${name}, explicit generation prompt`);
    // Without the generation prompt the last user turn is the end of the string.
    assert.equal(tok.renderChat(CHAT, { addGenerationPrompt: false }), CHAT_RENDERED.slice(0, -'<|assistant|>\n'.length), `${name}, no generation prompt`);
  }
});

test('chat: a conversation ending with an assistant turn (0125 Tülu template and fallback agree)', () => {
  const json = byteLevelTokenizerJson().json as Json;
  const messages: ChatMessage[] = [
    { role: 'user', content: 'Hi' },
    { role: 'assistant', content: 'Hello!' },
  ];
  for (const config of [{ ...INSTRUCT_TOKENS, chat_template: TEMPLATE_0125 }, { ...INSTRUCT_TOKENS }]) {
    const tok = new OlmoeTokenizer(json, config);
    // The last assistant turn ends right after eos: no trailing newline.
    assert.equal(tok.renderChat(messages, { addGenerationPrompt: false }), '<|endoftext|><|user|>\nHi\n<|assistant|>\nHello!<|endoftext|>');
    assert.equal(tok.renderChat(messages), '<|endoftext|><|user|>\nHi\n<|assistant|>\nHello!<|endoftext|><|assistant|>\n');
  }
  // Fallback without bos_token (OLMoE base: bos null, eos <|endoftext|>): the prompt starts with eos, as SFT's --add_bos did.
  const base = new OlmoeTokenizer(json, { bos_token: null, eos_token: '<|endoftext|>' });
  assert.equal(base.renderChat([{ role: 'user', content: 'Hi' }]), '<|endoftext|><|user|>\nHi\n<|assistant|>\n');
  // With neither token the format is still well formed.
  assert.equal(new OlmoeTokenizer(json, {}).renderChat(messages, { addGenerationPrompt: false }), '<|user|>\nHi\n<|assistant|>\nHello!');
});

test('chat: encodeChat with the real tokenizer gives the spec §4.3 ids (template and fallback), no extra BOS', { skip: realSkip }, () => {
  const messages: ChatMessage[] = [{ role: 'user', content: 'What is 2+2?' }];
  for (const config of [{ ...INSTRUCT_TOKENS }, { ...INSTRUCT_TOKENS, chat_template: TEMPLATE_0924 }, { ...INSTRUCT_TOKENS, chat_template: TEMPLATE_0125 }]) {
    const tok = new OlmoeTokenizer(realJson(), { ...config, add_bos_token: true });
    assert.equal(tok.renderChat(messages), '<|endoftext|><|user|>\nWhat is 2+2?\n<|assistant|>\n');
    assert.deepEqual(tok.encodeChat(messages), WHAT_IS_2_PLUS_2_IDS, `chat_template: ${'chat_template' in config ? 'yes' : 'fallback'}`);
  }
});

test('chat: a template that does not parse or render is an OlmoeError naming chat_template', () => {
  const json = byteLevelTokenizerJson().json as Json;
  for (const template of ["{% for message in messages %}{{ message['content'] }}", '{{ unclosed ', '{% if %}{% endif %}']) {
    const tok = new OlmoeTokenizer(json, { ...INSTRUCT_TOKENS, chat_template: template });
    const error = assertThrowsOlmoe(() => tok.renderChat(CHAT), OlmoeError, /chat_template/);
    assert.equal(error.code, 'format');
    assertThrowsOlmoe(() => tok.encodeChat(CHAT), OlmoeError, /chat_template/);
  }
  // Parses, but fails while rendering (calls an undefined function).
  const failing = new OlmoeTokenizer(json, { chat_template: "{{ raise_exception('no system role') }}" });
  assertThrowsOlmoe(() => failing.renderChat(CHAT), OlmoeError, /chat_template/);
});

test('chat: an unknown role, a non-string content or no messages is an InputError', () => {
  for (const config of [{ ...INSTRUCT_TOKENS }, { ...INSTRUCT_TOKENS, chat_template: TEMPLATE_0924 }]) {
    const tok = new OlmoeTokenizer(byteLevelTokenizerJson().json as Json, config);
    const badRole = [{ role: 'user', content: 'hi' }, { role: 'tool', content: 'x' }] as unknown as ChatMessage[];
    assertThrowsOlmoe(() => tok.renderChat(badRole), InputError, /message 1: unknown role "tool"/);
    assertThrowsOlmoe(() => tok.encodeChat(badRole), InputError, /unknown role/);
    assertThrowsOlmoe(() => tok.renderChat([{ role: 'user', content: 42 }] as unknown as ChatMessage[]), InputError, /content must be a string/);
    assertThrowsOlmoe(() => tok.renderChat([]), InputError, /at least one message/);
  }
});

// ---------------------------------------------------------------------------------------------------------
// 4. clean_up_tokenization_spaces
// ---------------------------------------------------------------------------------------------------------

function checkCleanup(json: Json, withFalse: OlmoeTokenizer): void {
  const text = 'Hello , world !';
  const absent = new OlmoeTokenizer(json);
  const ids = absent.encode(text);
  const cleaning = new OlmoeTokenizer(json, { clean_up_tokenization_spaces: true });
  assert.equal(cleaning.cleanUpTokenizationSpaces, true);
  assert.equal(cleaning.decode(ids), 'Hello, world!');
  // transformers' clean_up_tokenization: " n't" → "n't", " 's" → "'s", " ' " → "'" …
  assert.equal(cleaning.decode(cleaning.encode("I do n't know , it 's fine ?")), "I don't know, it's fine?");
  assert.equal(withFalse.cleanUpTokenizationSpaces, false);
  assert.equal(withFalse.decode(ids), text);
  assert.equal(absent.cleanUpTokenizationSpaces, false, 'absent means false (transformers ≥ 4.45, Rust tokenizers)');
  assert.equal(absent.decode(ids), text);
}

test('clean_up_tokenization_spaces on the real tokenizer: true cleans " ," and " !", false/absent keeps the text', { skip: realSkip }, () => {
  assert.deepEqual(realTok().encode('Hello , world !'), new OlmoeTokenizer(realJson(), { clean_up_tokenization_spaces: true }).encode('Hello , world !'), 'cleanup does not change encode');
  checkCleanup(realJson(), realTok());
});

test('clean_up_tokenization_spaces on the byte-level toy tokenizer', () => {
  const json = byteLevelTokenizerJson().json as Json;
  checkCleanup(json, new OlmoeTokenizer(json, { clean_up_tokenization_spaces: false }));
});

// ---------------------------------------------------------------------------------------------------------
// 5. Streaming detokenizer
// ---------------------------------------------------------------------------------------------------------

const STREAM_TEXTS = [
  '生活的真谛是',
  'Hello 世界 🎉 café naïve — “quotes” ß ж 中文 😀👍🏽 👨‍👩‍👧',
  'Bitcoin is a digital currency that is created and held electronically. No one controls it. Bitcoins aren’t printed',
  'def f():\n    return 1\n\n\tx  =  "ü"  ',
  'émoji at the end 🎉',
  '🎉',
  'e\u0301 a\u0300',
];

test('stream decoder: 谛 (ids 33656, 238) comes out whole, never as U+FFFD', { skip: realSkip }, () => {
  const tok = realTok();
  const stream = tok.streamDecoder();
  const ids = [20025, 46549, 5225, 48561, 33656, 238, 12105];
  const deltas = ids.map((id) => stream.push(id));
  assert.equal(deltas[4], '', 'the delta after 33656 (first bytes of 谛) is empty');
  assert.ok(deltas[5]!.includes('谛'), `the delta after 238 contains 谛, got ${JSON.stringify(deltas[5])}`);
  assert.equal(deltas.join('') + stream.flush(), '生活的真谛是');
  for (const d of deltas) assert.ok(!d.includes('\uFFFD'));
});

test(`stream decoder: deltas concatenate to decode(ids) for ${goldenCases.length || 'the'} golden + ${STREAM_TEXTS.length} extra texts, no stray U+FFFD`, { skip: realSkip }, (t) => {
  const tok = realTok();
  const texts = [...goldenCases.map((c) => c.text), ...STREAM_TEXTS];
  let held = 0;
  for (const text of texts) {
    const ids = tok.encode(text);
    const full = tok.decode(ids);
    const deltas = streamDeltas(tok, ids);
    assert.equal(deltas.join(''), full, `stream of ${JSON.stringify(text)}`);
    if (!full.includes('\uFFFD')) {
      for (const [i, d] of deltas.entries()) assert.ok(!d.includes('\uFFFD'), `delta ${i} of ${JSON.stringify(text)} holds U+FFFD: ${JSON.stringify(deltas)}`);
    }
    held += deltas.slice(0, -1).filter((d) => d === '').length;
  }
  t.diagnostic(`${texts.length} texts streamed, ${held} pushes held back a partial character`);
  assert.ok(held > 0, 'some golden texts split a character across tokens');
});

test('stream decoder: skipSpecialTokens and unknown ids', { skip: realSkip }, () => {
  const tok = realTok();
  const ids = [50279, ...tok.encode('Hi 谛'), 50279, 50300];
  assert.equal(streamDeltas(tok, ids).join(''), '<|endoftext|>Hi 谛<|endoftext|>');
  const stream = tok.streamDecoder({ skipSpecialTokens: true });
  const text = ids.map((id) => stream.push(id)).join('') + stream.flush();
  assert.equal(text, 'Hi 谛');
});

test('stream decoder on the byte-level toy tokenizer: one id per UTF-8 byte never yields U+FFFD', () => {
  const tok = byteTok();
  for (const text of ['héllo 世界 🎉', '🎉🎉', 'ж', '👨‍👩‍👧 end']) {
    const bytes = [...Buffer.from(text, 'utf8')];
    const deltas = streamDeltas(tok, bytes);
    for (const d of deltas) assert.ok(!d.includes('\uFFFD'), `delta holds U+FFFD: ${JSON.stringify(deltas)}`);
    assert.equal(deltas.join(''), text);
    assert.equal(deltas.at(-1), '', 'nothing is left for flush() after complete characters');
    // Every character of the text arrives whole with its last byte.
    assert.equal(deltas.filter((d) => d !== '').length, [...text].length);
  }
});

test('stream decoder: flush() emits a trailing incomplete character; an empty stream flushes to ""', () => {
  const tok = byteTok();
  const stream = tok.streamDecoder();
  const bytes = [...Buffer.from('a世', 'utf8')];
  assert.equal(stream.push(bytes[0]!), 'a');
  assert.equal(stream.push(bytes[1]!), '');
  assert.equal(stream.push(bytes[2]!), '');
  const rest = stream.flush();
  assert.ok(rest.length > 0 && rest.includes('\uFFFD'), `flush gives the held bytes, got ${JSON.stringify(rest)}`);
  assert.equal(tok.streamDecoder().flush(), '');
});

// ---------------------------------------------------------------------------------------------------------
// 6. Folders, errors, unknown ids, add_bos_token
// ---------------------------------------------------------------------------------------------------------

test('fromFolder on the tiny fixture: eos <|endoftext|> = 556, no BOS added, round trip', () => {
  const tok = OlmoeTokenizer.fromFolder(tinyModelDir);
  assert.equal(tok.eosToken, '<|endoftext|>');
  assert.equal(tok.tokenId('<|endoftext|>'), 556);
  assert.equal(tok.tokenId(tok.eosToken), 556);
  assert.equal(tok.padToken, '<|padding|>');
  assert.equal(tok.tokenId('<|padding|>'), 557);
  assert.equal(tok.bosToken, null);
  assert.equal(tok.tokenId(null), undefined);
  assert.equal(tok.tokenId('no such token'), undefined);
  assert.equal(tok.addBosToken, false);
  assert.equal(tok.vocabSize, 558);
  const text = 'Hello world, héllo 世界 🎉';
  const ids = tok.encode(text);
  assert.ok(ids.length > 0 && ids.every((id) => Number.isInteger(id) && id >= 0 && id < 556));
  assert.equal(tok.decode(ids), text);
  assert.deepEqual(tok.encode('x<|endoftext|>'), [...tok.encode('x'), 556]);
});

test('fromFolder errors: no tokenizer.json, not JSON, no model, bad tokenizer_config.json → FormatError naming the file', () => {
  const empty = tempDir();
  const missing = join(empty, 'tokenizer.json');
  const error = assertThrowsOlmoe(() => OlmoeTokenizer.fromFolder(empty), FormatError, /tokenizer\.json/);
  assert.equal(error.file, missing);
  assert.ok(error.message.includes(missing), error.message);

  const notJson = tempDir();
  writeFileSync(join(notJson, 'tokenizer.json'), '{"model": {"type": "BPE", ');
  assert.equal(assertThrowsOlmoe(() => OlmoeTokenizer.fromFolder(notJson), FormatError, /JSON/).file, join(notJson, 'tokenizer.json'));

  const arrayJson = tempDir();
  writeFileSync(join(arrayJson, 'tokenizer.json'), '[1, 2]');
  assertThrowsOlmoe(() => OlmoeTokenizer.fromFolder(arrayJson), FormatError, /tokenizer\.json/);

  const noModel = tempDir();
  const { model: _model, ...withoutModel } = byteLevelTokenizerJson().json as Json;
  writeFileSync(join(noModel, 'tokenizer.json'), JSON.stringify(withoutModel));
  const noModelError = assertThrowsOlmoe(() => OlmoeTokenizer.fromFolder(noModel), FormatError, /model/);
  assert.equal(noModelError.file, join(noModel, 'tokenizer.json'));
  assertThrowsOlmoe(() => new OlmoeTokenizer(withoutModel), FormatError, /model/);
  assertThrowsOlmoe(() => new OlmoeTokenizer({ model: { type: 42 } }), FormatError, /model/);

  const badConfig = tempDir();
  writeFileSync(join(badConfig, 'tokenizer.json'), JSON.stringify(byteLevelTokenizerJson().json));
  writeFileSync(join(badConfig, 'tokenizer_config.json'), 'not json');
  assert.equal(assertThrowsOlmoe(() => OlmoeTokenizer.fromFolder(badConfig), FormatError, /tokenizer_config\.json/).file, join(badConfig, 'tokenizer_config.json'));
});

test('fromFolder reads tokenizer_config.json and special_tokens_map.json from a temp folder', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tinyJson()));
  writeFileSync(join(dir, 'special_tokens_map.json'), JSON.stringify({ bos_token: { content: '<|endoftext|>', special: true }, pad_token: '<|padding|>' }));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ add_bos_token: true, eos_token: '<|endoftext|>', chat_template: TEMPLATE_0125 }));
  const tok = OlmoeTokenizer.fromFolder(dir);
  assert.equal(tok.bosToken, '<|endoftext|>');
  assert.equal(tok.padToken, '<|padding|>');
  assert.equal(tok.chatTemplate, TEMPLATE_0125);
  assert.equal(tok.encode('hi')[0], 556);
  const chat = tok.encodeChat([{ role: 'user', content: 'hi' }]);
  assert.equal(chat[0], 556);
  assert.notEqual(chat[1], 556, 'encodeChat does not add a second BOS to a template that emits bos_token');
  assert.equal(tok.decode(chat), '<|endoftext|><|user|>\nhi\n<|assistant|>\n');
  // A nested folder path is named too.
  const nested = join(dir, 'sub');
  mkdirSync(nested);
  assertThrowsOlmoe(() => OlmoeTokenizer.fromFolder(nested), FormatError, /sub[\\/]tokenizer\.json/);
});

test('unknown ids (embedding padding rows beyond the vocabulary) decode to "" without throwing', () => {
  const tiny = OlmoeTokenizer.fromFolder(tinyModelDir);
  const ids = tiny.encode('Hello world');
  assert.equal(tiny.decode([558]), '');
  assert.equal(tiny.decode([600, 1023, 1_000_000]), '');
  assert.equal(tiny.decode([...ids, 560, 1023]), 'Hello world');
  assert.equal(tiny.decode([559, ...ids]), 'Hello world');
  assert.equal(tiny.idToToken(558), undefined);
  assert.equal(tiny.decode([]), '');
  const toy = byteTok();
  assert.equal(toy.decode([104, 105, 300, 257]), 'hi<|padding|>');
  assert.equal(toy.decode([104, 105, 300, 257], { skipSpecialTokens: true }), 'hi');
});

test('unknown ids on the real tokenizer: ids 50280..50303 (vocab_size 50304 padding) decode to ""', { skip: realSkip }, () => {
  const tok = realTok();
  const pad = Array.from({ length: 24 }, (_, i) => 50280 + i);
  assert.equal(tok.decode(pad), '');
  assert.equal(tok.decode([12871, 9669, 50303, 310]), 'Bitcoin is');
});

test('add_bos_token / add_eos_token: encode adds them, addSpecialTokens:false does not', () => {
  const json = tinyJson();
  const plain = new OlmoeTokenizer(json, {});
  const body = plain.encode('hello there');
  assert.ok(body.length > 0 && !body.includes(556));

  const withBos = new OlmoeTokenizer(json, { add_bos_token: true, bos_token: '<|endoftext|>' });
  assert.deepEqual(withBos.encode('hello there'), [556, ...body]);
  assert.deepEqual(withBos.encode('hello there', { addSpecialTokens: false }), body);
  assert.deepEqual(withBos.encode('hello there', { addSpecialTokens: true }), [556, ...body]);
  assert.deepEqual(withBos.encode(''), [556]);

  const withBoth = new OlmoeTokenizer(json, { add_bos_token: true, bos_token: '<|padding|>', add_eos_token: true, eos_token: { content: '<|endoftext|>' } });
  assert.deepEqual(withBoth.encode('hello there'), [557, ...body, 556]);
  assert.deepEqual(withBoth.encode('hello there', { addSpecialTokens: false }), body);

  // add_bos_token without a bos_token (OLMoE base: bos_token null) adds nothing; bos_token without the flag neither.
  assert.deepEqual(new OlmoeTokenizer(json, { add_bos_token: true, bos_token: null }).encode('hello there'), body);
  assert.deepEqual(new OlmoeTokenizer(json, { add_bos_token: false, bos_token: '<|endoftext|>' }).encode('hello there'), body);
  assert.deepEqual(new OlmoeTokenizer(json, { add_bos_token: 'yes', bos_token: '<|endoftext|>' }).encode('hello there'), body);
});
