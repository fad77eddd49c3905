/**
 * lm-evaluation-harness against `olmoe serve`: the requests its `local-completions` model sends, written here from
 * its source (lm_eval/models/openai_completions.py `_create_payload` and `parse_logprobs`; lm_eval/utils.py
 * `check_remote_tokenizer_support` and `RemoteTokenizer`), answered with OpenAI's legacy `logprobs` object. The
 * log-probabilities are checked against a direct computation: one teacher-forced forward over the whole sequence on
 * the reference backend, then a float64 log-softmax and a full sort written out in this file.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { loglikelihood, loglikelihoodRolling } from '../src/eval/loglikelihood.js';
import { encodePair } from '../src/eval/multiple-choice.js';
import { generateText } from '../src/generate/generate.js';
import { PromptScorer, promptLogprobs } from '../src/eval/prompt-logprobs.js';
import { GenerationBatch, type TokenEvent } from '../src/generate/generate.js';
import { topIndices } from '../src/generate/logprobs.js';
import { loadPretrained, type Pretrained } from '../src/model/pretrained.js';
import { startServer, type OlmoeServer } from '../src/server/index.js';
import { tinyModelDir } from './helpers.js';

const MODEL = 'tiny';
const TOLERANCE = 1e-5;
const LONG_TEXT = 'The experts of a sparse mixture-of-experts model each take a share of the tokens; a router picks eight of sixty-four for every token, and the load balancing loss keeps the shares even over a batch. '.repeat(2);

interface LogprobsJson {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}
interface CompletionChoice {
  index: number;
  text: string;
  logprobs: LogprobsJson | null;
  finish_reason: string;
  routing?: { id: number }[];
}
interface Completion {
  choices: CompletionChoice[];
  usage: { prompt_tokens: number; completion_tokens: number };
}

async function post(server: OlmoeServer, path: string, body: unknown, signal?: AbortSignal): Promise<{ status: number; json: any }> {
  const response = await fetch(server.url + path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal });
  return { status: response.status, json: await response.json() };
}

async function complete(server: OlmoeServer, body: Record<string, unknown>): Promise<Completion> {
  const reply = await post(server, '/v1/completions', { model: MODEL, ...body });
  assert.equal(reply.status, 200, JSON.stringify(reply.json));
  return reply.json as Completion;
}

/** lm-eval's loglikelihood request (openai_completions.py, `_create_payload` with generate=False), batch of token lists. */
const scoringPayload = (prompt: number[][]) => ({ model: MODEL, prompt, temperature: 0, max_tokens: 1, logprobs: 1, seed: 1234, echo: true });

/** lm-eval's `parse_logprobs`: Σ token_logprobs[ctxlen:-1], greedy when each equals the largest of its top_logprobs. */
function parseLogprobs(out: Completion, ctxlens: number[]): [number, boolean][] {
  const choices = [...out.choices].sort((a, b) => a.index - b.index);
  return choices.map((choice, i) => {
    const scored = choice.logprobs!.token_logprobs.slice(ctxlens[i]!, -1) as number[];
    const tops = choice.logprobs!.top_logprobs.slice(ctxlens[i]!, -1) as Record<string, number>[];
    return [scored.reduce((sum, lp) => sum + lp, 0), scored.every((lp, j) => lp === Math.max(...Object.values(tops[j]!)))];
  });
}

/** The direct computation: logits of every position in one forward pass, log-softmax and ranking in float64. */
function directRows(pretrained: Pretrained, ids: readonly number[]): { logprobs: Float64Array; order: number[] }[] {
  const { model } = pretrained;
  const logits = model.backend.toFloat32(model.forward(Int32Array.from(ids), { logits: 'all' }));
  const vocab = model.config.vocabSize;
  return ids.map((_, t) => {
    const row = logits.subarray(t * vocab, (t + 1) * vocab);
    let max = -Infinity;
    for (const value of row) max = Math.max(max, value);
    let sum = 0;
    for (const value of row) sum += Math.exp(value - max);
    const logprobs = Float64Array.from(row, (value) => value - max - Math.log(sum));
    const order = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]! || a - b);
    return { logprobs, order };
  });
}

describe('olmoe serve for lm-evaluation-harness: echo + logprobs', () => {
  let server: OlmoeServer;
  let pretrained: Pretrained;
  let text: (id: number) => string;
  before(async () => {
    server = await startServer(tinyModelDir, { port: 0, modelId: MODEL, backend: 'reference' });
    await server.ready;
    pretrained = await loadPretrained(tinyModelDir, { backend: new ReferenceBackend() });
    text = (id) => pretrained.tokenizer.decode([id]);
  });
  after(() => server.close());

  it("lm-eval's scoring request: token_logprobs equal a teacher-forced forward, and its parse_logprobs gives the harness's (logprob, is_greedy)", async () => {
    const encode = (s: string) => pretrained.tokenizer.encode(s);
    const pairs = [
      [encode(LONG_TEXT), encode(' The router')], // > 64 tokens: the server scores it in several chunks
      [encode('Question: which expert takes numbers?\nAnswer:'), encode(' the fourth')],
      [encode('Hello'), encode(' world')],
    ] as const;
    const out = await complete(server, scoringPayload(pairs.map(([context, continuation]) => [...context, ...continuation])));
    assert.deepEqual(out.choices.map((c) => c.index), [0, 1, 2]);
    const parsed = parseLogprobs(out, pairs.map(([context]) => context.length));
    const harness = await loglikelihood(pretrained.model, pairs.map(([context, continuation]) => ({ context, continuation })));
    for (const [i, [context, continuation]] of pairs.entries()) {
      const ids = [...context, ...continuation];
      const rows = directRows(pretrained, ids);
      const lp = out.choices[i]!.logprobs!;
      assert.equal(lp.tokens.length, ids.length + 1, 'the prompt tokens, then the one generated token');
      assert.deepEqual(lp.tokens.slice(0, ids.length), ids.map(text));
      assert.equal(lp.token_logprobs[0], null);
      assert.equal(lp.top_logprobs[0], null);
      for (let t = 1; t < ids.length; t++) assert.ok(Math.abs(lp.token_logprobs[t]! - rows[t - 1]!.logprobs[ids[t]!]!) < TOLERANCE, `choice ${i} token ${t}`);
      const last = rows[ids.length - 1]!;
      assert.equal(lp.tokens[ids.length], text(last.order[0]!), 'temperature 0 generates the argmax');
      assert.ok(Math.abs(lp.token_logprobs[ids.length]! - last.logprobs[last.order[0]!]!) < TOLERANCE);
      const expected = continuation.reduce((sum, id, j) => sum + rows[context.length - 1 + j]!.logprobs[id]!, 0);
      const greedy = continuation.every((id, j) => rows[context.length - 1 + j]!.order[0] === id);
      assert.ok(Math.abs(parsed[i]![0] - expected) < TOLERANCE, `choice ${i}: ${parsed[i]![0]} vs ${expected}`);
      assert.equal(parsed[i]![1], greedy);
      assert.ok(Math.abs(parsed[i]![0] - harness[i]!.logprob) < TOLERANCE, 'the same as olmoe eval scores it');
      assert.equal(parsed[i]![1], harness[i]!.isGreedy);
    }
  });

  it('top_logprobs: the N most likely plus the token itself, sorted, equal to a full sort; text_offset follows the tokens', async () => {
    const prompt = 'Sparse models route tokens to experts.';
    const ids = pretrained.tokenizer.encode(prompt);
    const out = await complete(server, { prompt, max_tokens: 0, echo: true, logprobs: 5 });
    const choice = out.choices[0]!;
    const lp = choice.logprobs!;
    assert.equal(choice.text, prompt, 'max_tokens 0 with echo returns exactly the prompt');
    assert.deepEqual(lp.tokens, ids.map(text));
    assert.equal(out.usage.completion_tokens, 0);
    const rows = directRows(pretrained, ids);
    for (let t = 1; t < ids.length; t++) {
      const top = Object.entries(lp.top_logprobs[t]!);
      const { logprobs, order } = rows[t - 1]!;
      const wanted = order.slice(0, 5);
      if (!wanted.includes(ids[t]!)) wanted.push(ids[t]!);
      wanted.sort((a, b) => logprobs[b]! - logprobs[a]!);
      // A map has one entry per text: ids that decode alike (byte tokens → U+FFFD) keep the most likely.
      const expected = new Map<string, number>();
      for (const id of wanted) if (!expected.has(text(id))) expected.set(text(id), logprobs[id]!);
      assert.deepEqual(top.map(([token]) => token), [...expected.keys()], `position ${t}`);
      top.forEach(([token, value]) => assert.ok(Math.abs(value - expected.get(token)!) < TOLERANCE));
      for (let k = 1; k < top.length; k++) assert.ok(top[k - 1]![1] >= top[k]![1], 'most likely first');
      assert.ok(lp.tokens[t]! in lp.top_logprobs[t]!, 'the token itself is listed');
      if (order[0] === ids[t]) assert.equal(top[0]![0], lp.tokens[t], 'an argmax token leads its map');
    }
    assert.equal(lp.text_offset[0], 0);
    for (let t = 1; t < ids.length; t++) assert.equal(lp.text_offset[t], lp.text_offset[t - 1]! + [...lp.tokens[t - 1]!].length);
    for (let t = 0; t < ids.length; t++) assert.equal(choice.text.slice(lp.text_offset[t], lp.text_offset[t] + lp.tokens[t]!.length), lp.tokens[t], 'an ASCII prompt: offsets index the text');
  });

  it('max_tokens 1 with echo appends exactly one generated token to the prompt', async () => {
    const prompt = 'Which expert takes numbers?';
    const ids = pretrained.tokenizer.encode(prompt);
    const out = await complete(server, { prompt, max_tokens: 1, echo: true, logprobs: 0, temperature: 0 });
    const { logprobs, text: reply, finish_reason } = out.choices[0]!;
    assert.equal(logprobs!.tokens.length, ids.length + 1);
    const argmax = directRows(pretrained, ids)[ids.length - 1]!.order[0]!;
    assert.equal(logprobs!.tokens.at(-1), text(argmax));
    assert.ok(reply.startsWith(prompt));
    assert.equal(finish_reason, argmax === 556 ? 'stop' : 'length'); // 556: the fixture's eos
    assert.equal(Object.keys(logprobs!.top_logprobs[1]!).length, 1, 'logprobs 0: only the token itself');
  });

  it('an eos generated after the prompt still ends the logprobs (lm-eval drops the last entry as the generated one)', async () => {
    const ids = [280, 10]; // found by search: the fixture's greedy next token after these is its eos, 556
    const rows = directRows(pretrained, ids);
    assert.equal(rows[1]!.order[0], 556, 'the premise of this test');
    const out = await complete(server, scoringPayload([ids]));
    const { logprobs, text: reply, finish_reason } = out.choices[0]!;
    assert.deepEqual(logprobs!.tokens, [text(280), text(10), '<|endoftext|>']);
    assert.ok(Math.abs(logprobs!.token_logprobs[2]! - rows[1]!.logprobs[556]!) < TOLERANCE);
    assert.equal(reply, pretrained.tokenizer.decode(ids), 'the eos adds no text');
    assert.equal(finish_reason, 'stop');
    const [[sum]] = parseLogprobs(out, [1]) as [[number, boolean]];
    assert.ok(Math.abs(sum - rows[0]!.logprobs[10]!) < TOLERANCE);
  });

  it('a token-id batch answers in order, each choice as when sent alone', async () => {
    const prompts = ['one expert', 'two experts take the numbers', 'three'].map((p) => pretrained.tokenizer.encode(p));
    const batch = await complete(server, scoringPayload(prompts));
    assert.deepEqual(batch.choices.map((c) => c.index), [0, 1, 2]);
    assert.equal(batch.usage.prompt_tokens, prompts.reduce((sum, p) => sum + p.length, 0));
    for (const [i, ids] of prompts.entries()) {
      const alone = await complete(server, scoringPayload([ids]));
      assert.deepEqual(batch.choices[i], { ...alone.choices[0], index: i });
    }
    const texts = await complete(server, { prompt: ['one expert', 'three'], max_tokens: 0, echo: true });
    assert.deepEqual(texts.choices.map((c) => [c.index, c.text, c.logprobs]), [[0, 'one expert', null], [1, 'three', null]]);
  });

  it("lm-eval's generation request: a batch of token lists with stop strings and a seed, answered in order", async () => {
    const prompts = ['The router', 'Experts'].map((p) => pretrained.tokenizer.encode(p));
    const body = { prompt: prompts, max_tokens: 6, temperature: 0, stop: ['\n\n', 'Question:', '<|endoftext|>'], seed: 1234 };
    const batch = await complete(server, body);
    for (const [i, ids] of prompts.entries()) {
      const alone = await complete(server, { ...body, prompt: ids });
      assert.equal(batch.choices[i]!.index, i);
      assert.equal(batch.choices[i]!.text, alone.choices[0]!.text);
    }
  });

  it('without echo: the generated tokens only, their logprobs from the raw logits (not the tempered ones), streamed the same', async () => {
    const prompt = 'The experts of a sparse model';
    const ids = pretrained.tokenizer.encode(prompt);
    const body = { prompt, max_tokens: 5, temperature: 1.7, top_k: 5, seed: 11, ignore_eos: true, logprobs: 2, routing: true };
    const out = await complete(server, body);
    const choice = out.choices[0]!;
    const generated = choice.routing!.map((r) => r.id);
    assert.equal(choice.logprobs!.tokens.length, 5);
    const rows = directRows(pretrained, [...ids, ...generated]);
    generated.forEach((id, j) => {
      const row = rows[ids.length - 1 + j]!.logprobs;
      assert.ok(Math.abs(choice.logprobs!.token_logprobs[j]! - row[id]!) < TOLERANCE, `token ${j}: log-softmax of the raw logits`);
    });
    assert.equal(choice.logprobs!.text_offset[0], 0);
    const again = await complete(server, body);
    assert.deepEqual(again.choices[0], choice, 'the same seed gives the same tokens and logprobs');
    const streamed = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: MODEL, ...body, routing: false, stream: true }) });
    const chunks = (await streamed.text()).split('\n\n').filter((b) => b.startsWith('data: {')).map((b) => JSON.parse(b.slice(6)) as { choices: CompletionChoice[] });
    const streamedLogprobs = chunks.flatMap((c) => c.choices[0]!.logprobs?.token_logprobs ?? []);
    assert.deepEqual(streamedLogprobs, choice.logprobs!.token_logprobs);
    assert.deepEqual(chunks.flatMap((c) => c.choices[0]!.logprobs?.text_offset ?? []), choice.logprobs!.text_offset);
  });

  it("lm-eval's tokenizer probes: /tokenizer_info has eos_token, /tokenize answers vLLM's shape, /detokenize inverts it", async () => {
    const info = (await (await fetch(`${server.url}/tokenizer_info`)).json()) as Record<string, unknown>;
    assert.ok('eos_token' in info, 'what check_remote_tokenizer_support requires');
    assert.equal(info.eos_token, '<|endoftext|>');
    assert.equal(info.bos_token, null);
    assert.equal(typeof info.tokenizer_class, 'string');
    const probe = await post(server, '/tokenize', { prompt: 'test', add_special_tokens: false });
    assert.equal(probe.status, 200);
    assert.deepEqual(probe.json, { count: 2, max_model_len: 256, tokens: [116, 461], context_length: 256 });
    const eos = await post(server, '/tokenize', { prompt: '<|endoftext|>', add_special_tokens: false });
    assert.deepEqual(eos.json.tokens, [556], "RemoteTokenizer.eos_token_id: the first id of the eos token's text");
    const strs = await post(server, '/tokenize', { prompt: 'test', return_token_strs: true });
    assert.deepEqual(strs.json.token_strs, [116, 461].map((id) => pretrained.tokenizer.idToToken(id)));
    const ids = pretrained.tokenizer.encode(LONG_TEXT);
    assert.deepEqual((await post(server, '/detokenize', { tokens: ids })).json, { prompt: LONG_TEXT });
  });

  it('a client that goes away while its batch is scored frees its slot', async () => {
    const long = pretrained.tokenizer.encode(LONG_TEXT.repeat(2)).slice(0, 250);
    const controller = new AbortController();
    const pending = post(server, '/v1/completions', { ...scoringPayload(Array.from({ length: 40 }, () => long)), logprobs: 20 }, controller.signal).catch(() => undefined);
    for (let i = 0; i < 100 && (await health(server)).running === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal((await health(server)).running, 1);
    controller.abort();
    await pending;
    let running = 1;
    for (let i = 0; i < 100 && running > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      running = (await health(server)).running;
    }
    assert.equal(running, 0, 'the job stopped within 2 s (40 prompts of 250 tokens take longer)');
    assert.equal((await complete(server, scoringPayload([[1, 2, 3]]))).choices.length, 1);
  });
});

async function health(server: OlmoeServer): Promise<{ running: number }> {
  return (await (await fetch(`${server.url}/health`)).json()) as { running: number };
}

describe('olmoe serve for lm-evaluation-harness: bad requests get a 400 naming the field', () => {
  let server: OlmoeServer;
  before(async () => {
    server = await startServer(tinyModelDir, { port: 0, modelId: MODEL, backend: 'reference', maxPromptTokens: 1000 });
    await server.ready;
  });
  after(() => server.close());

  const ids = (n: number) => Array.from({ length: n }, (_, i) => i % 500);
  const cases: [string, string, Record<string, unknown>, RegExp, string][] = [
    ['a token id out of range in a batch', '/v1/completions', scoringPayload([[1, 2], [3, 600]]), /prompt\[1\]\[1\]: token id 600 is out of range \(the vocabulary has 600 ids\)/, 'prompt[1][1]'],
    ['a negative token id', '/v1/completions', scoringPayload([[1, -2]]), /prompt\[0\]\[1\]: expected a token id .*got -2/, 'prompt[0][1]'],
    ['a fractional token id in a single list', '/v1/completions', { model: MODEL, prompt: [1, 2.5] }, /prompt\[1\]: expected a token id .*got 2.5/, 'prompt[1]'],
    ['logprobs above the cap', '/v1/completions', { ...scoringPayload([[1, 2]]), logprobs: 21 }, /logprobs: must be an integer from 0 to 20/, 'logprobs'],
    ['negative logprobs', '/v1/completions', { ...scoringPayload([[1, 2]]), logprobs: -1 }, /logprobs: must be an integer from 0 to 20/, 'logprobs'],
    ['logprobs: true (the chat API\'s form)', '/v1/completions', { ...scoringPayload([[1, 2]]), logprobs: true }, /logprobs: must be an integer/, 'logprobs'],
    ['strings then token lists', '/v1/completions', { model: MODEL, prompt: ['a', [1]] }, /prompt\[1\]: expected a string like prompt\[0\].*got an array/, 'prompt[1]'],
    ['token lists then a string', '/v1/completions', { model: MODEL, prompt: [[1], 'a'] }, /prompt\[1\]: expected a list of token ids like prompt\[0\], got string/, 'prompt[1]'],
    ['ids then a list', '/v1/completions', { model: MODEL, prompt: [1, [2]] }, /prompt\[1\]: expected a token id .*got an array/, 'prompt[1]'],
    ['an empty token list', '/v1/completions', scoringPayload([[1], []]), /prompt\[1\]: the prompt is empty/, 'prompt[1]'],
    ['no prompts', '/v1/completions', { model: MODEL, prompt: [] }, /prompt: give at least one prompt/, 'prompt'],
    ['a prompt of another type', '/v1/completions', { model: MODEL, prompt: { text: 'x' } }, /prompt: must be a string, a list of strings/, 'prompt'],
    ['too many prompts', '/v1/completions', scoringPayload(Array.from({ length: 257 }, () => [1])), /at most 256 prompts/, 'prompt'],
    ['a batch over the prompt-token limit', '/v1/completions', scoringPayload(Array.from({ length: 6 }, () => ids(200))), /prompt: the prompts hold 1200 tokens in all; one request may hold at most 1000/, 'prompt'],
    ['one prompt of a batch over the context', '/v1/completions', scoringPayload([[1], ids(300)]), /prompt\[1\]: the prompt has 300 tokens, which does not fit .*context of 256/, 'prompt[1]'],
    ['a prompt that fills the context with max_tokens 1', '/v1/completions', scoringPayload([ids(256)]), /prompt\[0\]: .*256 tokens, which leaves no room/, 'prompt[0]'],
    ['echo with stream', '/v1/completions', { ...scoringPayload([[1, 2]]), stream: true }, /echo: not supported with stream/, 'echo'],
    ['a streamed batch', '/v1/completions', { model: MODEL, prompt: ['a', 'b'], stream: true }, /prompt: a streamed completion answers one prompt; this request has 2/, 'prompt'],
    ['more than 16 stop strings', '/v1/completions', { model: MODEL, prompt: 'a', stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }, /at most 16 stop strings/, 'stop'],
    ['logprobs on chat', '/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'x' }], logprobs: true }, /not supported on chat completions/, 'logprobs'],
    ['/detokenize with an id out of range', '/detokenize', { tokens: [1, 600] }, /tokens\[1\]: token id 600 is out of range/, 'tokens[1]'],
    ['/detokenize with a non-integer', '/detokenize', { tokens: [1, 'x'] }, /tokens\[1\]/, 'tokens[1]'],
    ['/tokenize with an unknown field', '/tokenize', { prompt: 'x', add_bos: true }, /unknown field "add_bos"/, 'add_bos'],
  ];
  for (const [what, path, body, message, param] of cases) {
    it(what, async () => {
      const reply = await post(server, path, body);
      assert.equal(reply.status, 400, JSON.stringify(reply.json));
      assert.match(reply.json.error.message, message);
      assert.equal(reply.json.error.param, param);
      assert.equal(reply.json.error.type, 'invalid_request_error');
      assert.equal((await post(server, '/v1/completions', scoringPayload([[1, 2]]))).status, 200, 'and the server keeps serving');
    });
  }

  it('a prompt that fills the context is scored with max_tokens 0', async () => {
    const reply = await post(server, '/v1/completions', { ...scoringPayload([ids(256)]), max_tokens: 0 });
    assert.equal(reply.status, 200, JSON.stringify(reply.json));
    assert.equal(reply.json.choices[0].logprobs.tokens.length, 256);
  });
});

describe('prompt log-probabilities in the library', () => {
  let pretrained: Pretrained;
  before(async () => {
    pretrained = await loadPretrained(tinyModelDir, { backend: new ReferenceBackend() });
  });

  it('promptLogprobs in chunks of 7 equals one forward pass, top-N equals a full sort', () => {
    const ids = pretrained.tokenizer.encode(LONG_TEXT).slice(0, 40);
    const scored = promptLogprobs(pretrained.model, ids, { chunk: 7, topLogprobs: 3 });
    const rows = directRows(pretrained, ids);
    assert.equal(scored.length, ids.length - 1);
    scored.forEach((entry, t) => {
      assert.equal(entry.id, ids[t + 1]);
      assert.ok(Math.abs(entry.logprob - rows[t]!.logprobs[ids[t + 1]!]!) < TOLERANCE);
      assert.deepEqual(entry.top.map((e) => e.id), rows[t]!.order.slice(0, 3));
    });
  });

  it('generation from a prefilled prompt equals generation from scratch; the eos that ends it keeps its logprobs', async () => {
    const ids = pretrained.tokenizer.encode('The experts of a sparse model');
    const scorer = new PromptScorer(pretrained.model, ids, { capacity: ids.length + 4, chunk: 5 });
    while (!scorer.done) scorer.step();
    const options = { temperature: 0.8, seed: 5, maxNewTokens: 4, ignoreEos: true, logprobs: 1 };
    const runAll = (batch: GenerationBatch) => {
      const events: TokenEvent[] = [];
      while (batch.size > 0) for (const { event } of batch.step()) if (event) events.push(event);
      return events;
    };
    const fromScratch = new GenerationBatch(pretrained);
    fromScratch.add(ids, options);
    const prefilled = new GenerationBatch(pretrained);
    prefilled.add(ids, options, { cache: scorer.cache, logits: scorer.lastLogits! });
    const [a, b] = [runAll(fromScratch), runAll(prefilled)];
    assert.deepEqual(b.map((e) => e.id), a.map((e) => e.id));
    b.forEach((e, j) => assert.ok(Math.abs(e.logprob!.logprob - a[j]!.logprob!.logprob) < TOLERANCE));
    const argmax = directRows(pretrained, ids).at(-1)!;
    const ending = new GenerationBatch(pretrained);
    const run = ending.add(ids, { greedy: true, maxNewTokens: 3, eosTokenIds: [argmax.order[0]!], logprobs: 2 });
    assert.deepEqual(runAll(ending), []);
    assert.equal(run.finishReason, 'eos');
    assert.equal(run.eosLogprob!.id, argmax.order[0]);
    assert.ok(Math.abs(run.eosLogprob!.logprob - argmax.logprobs[argmax.order[0]!]!) < TOLERANCE);
    assert.deepEqual(run.eosLogprob!.top.map((e) => e.id), argmax.order.slice(0, 2));
  });

  it('topIndices: largest first, the lower index first among equals', () => {
    const row = Float32Array.from([1, 3, 3, 2, -1, 3]);
    assert.deepEqual(topIndices(row, 4), [1, 2, 5, 3]);
    assert.deepEqual(topIndices(row, 0), []);
    assert.deepEqual(topIndices(row, 10), [1, 2, 5, 3, 0, 4]);
  });
});

/**
 * lm-evaluation-harness itself as the client, when a Python that can import it is at hand (LM_EVAL_PYTHON, default
 * python3; e.g. lm_eval 0.4.13 unpacked on PYTHONPATH with requests, aiohttp, tenacity, tqdm, numpy): its
 * LocalCompletionsAPI detects the server's tokenizer, then scores loglikelihood, loglikelihood_rolling and
 * generate_until over HTTP. Its numbers must equal olmoe's own harness (src/eval) on the same model.
 */
const LM_EVAL_DRIVER = `
import json, sys
from lm_eval.api.instance import Instance
from lm_eval.models.openai_completions import LocalCompletionsAPI
base, pairs, texts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
lm = LocalCompletionsAPI(model="tiny", base_url=base + "/v1/completions", max_length=256, batch_size=3, tokenizer_backend="auto")
out = {"backend": lm.tokenizer_backend}
out["loglikelihood"] = lm.loglikelihood([Instance("loglikelihood", {}, (c, x), i) for i, (c, x) in enumerate(pairs)], disable_tqdm=True)
out["rolling"] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)], disable_tqdm=True)
out["generate"] = lm.generate_until([Instance("generate_until", {}, (c, {"until": ["\\n\\n"], "max_gen_toks": 8}), i) for i, (c, _) in enumerate(pairs)], disable_tqdm=True)
print("RESULT " + json.dumps(out))
`;

function lmEvalSkip(): string | false {
  const python = process.env.LM_EVAL_PYTHON ?? 'python3';
  const probe = spawnSync(python, ['-c', 'import lm_eval.models.openai_completions'], { encoding: 'utf8' });
  if (probe.status === 0) return false;
  const reason = `lm-evaluation-harness not importable by ${python} (set LM_EVAL_PYTHON / PYTHONPATH to run lm-eval's own client)`;
  console.log(`# SKIP: ${reason}`);
  return reason;
}

describe("lm-evaluation-harness's own client (optional)", { skip: lmEvalSkip() }, () => {
  it('LocalCompletionsAPI over olmoe serve scores exactly as olmoe eval does', async () => {
    const server = await startServer(tinyModelDir, { port: 0, modelId: MODEL, backend: 'reference' });
    try {
      await server.ready;
      const pairs = [['Question: which expert takes numbers?\nAnswer:', ' the fourth'], ['The router picks', ' eight experts'], ['Hello', ' world'], ['Sparse models ', 'route tokens']];
      const texts = [LONG_TEXT];
      const python = process.env.LM_EVAL_PYTHON ?? 'python3';
      // asynchronous: the server answers on this thread's event loop while lm-eval runs
      const child = spawn(python, ['-c', LM_EVAL_DRIVER, server.url, JSON.stringify(pairs), JSON.stringify(texts)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.stderr.on('data', (chunk) => (stderr += chunk));
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      assert.equal(code, 0, stderr.slice(-2000));
      const result = JSON.parse(stdout.split('RESULT ')[1]!) as { backend: string; loglikelihood: [number, boolean][]; rolling: number[]; generate: string[] };
      assert.equal(result.backend, 'remote', 'lm-eval detected the server-side tokenizer');
      const lm = await loadPretrained(tinyModelDir, { backend: new ReferenceBackend() });
      const eos = lm.tokenizer.tokenId(lm.tokenizer.eosToken)!;
      const ours = await loglikelihood(lm.model, pairs.map(([context, continuation]) => encodePair(lm.tokenizer, context!, continuation!, eos)));
      ours.forEach((r, i) => {
        assert.ok(Math.abs(r.logprob - result.loglikelihood[i]![0]) < TOLERANCE, `pair ${i}: ${r.logprob} vs ${result.loglikelihood[i]![0]}`);
        assert.equal(result.loglikelihood[i]![1], r.isGreedy);
      });
      const rolling = await loglikelihoodRolling(lm.model, texts.map((t) => lm.tokenizer.encode(t)), eos, { maxLength: 255 }); // lm-eval's max_length - 1
      assert.ok(Math.abs(rolling[0]!.logprob - result.rolling[0]!) < TOLERANCE);
      for (const [i, [context]] of pairs.entries()) {
        const greedy = await generateText(lm, lm.tokenizer.encode(context!), { greedy: true, maxNewTokens: 8, stopStrings: ['\n\n'] });
        assert.equal(result.generate[i], greedy.text);
      }
    } finally {
      await server.close();
    }
  });
});
