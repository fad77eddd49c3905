/**
 * `olmoe serve` against the official `openai` client and raw HTTP: the OpenAI contract (chat and completions,
 * streamed and not), equality with `olmoe generate`, routing, concurrency, the queue, disconnects and bad input.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { generateText } from '../src/generate/generate.js';
import { loadPretrained, type Pretrained } from '../src/model/pretrained.js';
import type { RoutingEvent } from '../src/model/olmoe.js';
import { startServer, type OlmoeServer } from '../src/server/index.js';
import { cliPath, tempDir, tinyModelDir } from './helpers.js';

const MODEL = 'tiny';
const JSON_TYPE = { 'Content-Type': 'application/json' };

async function serve(opts: Parameters<typeof startServer>[1] = {}): Promise<OlmoeServer> {
  const server = await startServer(tinyModelDir, { port: 0, modelId: MODEL, backend: 'reference', ...opts });
  await server.ready;
  return server;
}

function client(server: OlmoeServer, apiKey = 'unused'): OpenAI {
  return new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0 });
}

function cliGenerate(args: string[]): { ids: number[]; text: string } {
  const run = spawnSync(process.execPath, [cliPath, 'generate', tinyModelDir, ...args, '--json', '-q', '--backend', 'reference'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout) as { ids: number[]; text: string };
}

async function post(server: OlmoeServer, path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any; headers: Headers }> {
  const response = await fetch(server.url + path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : undefined, headers: response.headers };
}

/** Read an SSE response to the end: the parsed `data:` payloads before [DONE], and whether [DONE] came. */
async function readEvents(response: Response): Promise<{ events: any[]; done: boolean }> {
  const text = await response.text();
  const events: any[] = [];
  let done = false;
  for (const block of text.split('\n\n')) {
    if (!block.startsWith('data: ')) continue;
    const data = block.slice(6);
    if (data === '[DONE]') done = true;
    else events.push(JSON.parse(data));
  }
  return { events, done };
}

const chatBody = (content: string, extra: Record<string, unknown> = {}) => ({ model: MODEL, messages: [{ role: 'user', content }], ...extra });

describe('olmoe serve: OpenAI contract', () => {
  let server: OlmoeServer;
  let openai: OpenAI;
  let pretrained: Pretrained;
  before(async () => {
    server = await serve();
    openai = client(server);
    pretrained = await loadPretrained(tinyModelDir, { backend: new ReferenceBackend() });
  });
  after(() => server.close());

  it('lists the model, with what a client needs to read routing', async () => {
    const models = await openai.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [MODEL]);
    const meta = (models.data[0] as unknown as { meta: Record<string, number> }).meta;
    assert.deepEqual([meta.layers, meta.experts, meta.top_k, meta.context_length], [3, 16, 4, 256]);
    assert.equal((await openai.models.retrieve(MODEL)).id, MODEL);
  });

  it('completions with a fixed seed equal `olmoe generate` (streamed and not)', async () => {
    const prompt = 'The experts of a sparse model';
    const expected = cliGenerate([prompt, '--temperature', '0.9', '--top-p', '0.95', '--seed', '7', '-n', '12', '--ignore-eos']);
    const settings = { model: MODEL, prompt, temperature: 0.9, top_p: 0.95, seed: 7, max_tokens: 12, ignore_eos: true } as const;
    const whole = await openai.completions.create(settings as OpenAI.CompletionCreateParamsNonStreaming);
    assert.equal(whole.object, 'text_completion');
    assert.equal(whole.choices[0]!.text, expected.text);
    assert.equal(whole.choices[0]!.finish_reason, 'length');
    assert.deepEqual(whole.usage, { prompt_tokens: pretrained.tokenizer.encode(prompt).length, completion_tokens: 12, total_tokens: pretrained.tokenizer.encode(prompt).length + 12 });
    const stream = await openai.completions.create({ ...settings, stream: true } as OpenAI.CompletionCreateParamsStreaming);
    let streamed = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      streamed += chunk.choices[0]?.text ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(streamed, expected.text);
    assert.equal(finish, 'length');
  });

  it('chat completions with a fixed seed equal `olmoe generate --chat` (streamed and not), with usage', async () => {
    const message = 'Which expert takes numbers?';
    const expected = cliGenerate([message, '--chat', '--temperature', '1.1', '--seed', '3', '-n', '10', '--ignore-eos']);
    const settings = { ...chatBody(message), temperature: 1.1, seed: 3, max_tokens: 10, ignore_eos: true };
    const whole = await openai.chat.completions.create(settings as OpenAI.ChatCompletionCreateParamsNonStreaming);
    assert.equal(whole.object, 'chat.completion');
    assert.equal(whole.choices[0]!.message.role, 'assistant');
    assert.equal(whole.choices[0]!.message.content, expected.text);
    const promptTokens = pretrained.tokenizer.encodeChat([{ role: 'user', content: message }]).length;
    assert.equal(whole.usage!.prompt_tokens, promptTokens);
    assert.equal(whole.usage!.completion_tokens, 10);
    const stream = await openai.chat.completions.create({ ...settings, stream: true, stream_options: { include_usage: true } } as OpenAI.ChatCompletionCreateParamsStreaming);
    let streamed = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    let role: string | undefined;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      role ??= chunk.choices[0]?.delta.role;
      streamed += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(role, 'assistant');
    assert.equal(streamed, expected.text);
    assert.equal(usage?.completion_tokens, 10);
    assert.equal(usage?.prompt_tokens, promptTokens);
  });

  it('stop strings end the text before them, finish_reason "stop"', async () => {
    const full = await openai.completions.create({ model: MODEL, prompt: 'Hello', max_tokens: 20, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    const text = full.choices[0]!.text;
    const stop = text.slice(6, 9);
    assert.ok(stop.length === 3 && !text.slice(0, 6).includes(stop), `pick a stop string that first occurs at 6 in ${JSON.stringify(text)}`);
    const cut = await openai.completions.create({ model: MODEL, prompt: 'Hello', max_tokens: 20, temperature: 0, stop: [stop], ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    assert.equal(cut.choices[0]!.text, text.slice(0, 6));
    assert.equal(cut.choices[0]!.finish_reason, 'stop');
  });

  it('routing: true returns each generated token\'s experts, equal to a full forward pass over prompt + answer', async () => {
    const prompt = 'Routing in a mixture of experts';
    const reply = (await post(server, '/v1/completions', { model: MODEL, prompt, max_tokens: 8, temperature: 0, ignore_eos: true, routing: true })).json;
    const routing = reply.choices[0].routing as { id: number; text: string; experts: number[][]; weights: number[][] }[];
    const promptIds = pretrained.tokenizer.encode(prompt);
    const answer = routing.map((token) => token.id);
    assert.equal(routing.length, 8);
    assert.equal(pretrained.tokenizer.decode(answer), reply.choices[0].text);
    const events: RoutingEvent[] = [];
    pretrained.model.forward(Int32Array.from([...promptIds, ...answer]), { observer: (e) => events.push({ ...e, expertIds: e.expertIds.slice(), weights: e.weights.slice() }) });
    routing.forEach((token, i) => {
      const t = promptIds.length + i;
      assert.equal(token.text, pretrained.tokenizer.decode([token.id]));
      assert.equal(token.experts.length, 3);
      events.forEach((event) => {
        const k = event.topK;
        assert.deepEqual(token.experts[event.layer], Array.from(event.expertIds.subarray(t * k, t * k + k)), `token ${i}, layer ${event.layer}`);
        token.weights[event.layer]!.forEach((w, j) => assert.ok(Math.abs(w - event.weights[t * k + j]!) < 1e-3));
      });
    });
    // streamed: every chunk that carries text carries the routing of its token
    const response = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: JSON_TYPE, body: JSON.stringify({ model: MODEL, prompt, max_tokens: 8, temperature: 0, ignore_eos: true, routing: true, stream: true }) });
    const { events: chunks } = await readEvents(response);
    const streamedRouting = chunks.flatMap((c) => c.choices[0]?.routing ?? []);
    assert.deepEqual(streamedRouting, routing);
  });

  it('POST /tokenize gives the ids a chat or a text prompt would have, and refuses a request with neither', async () => {
    const messages = [{ role: 'user', content: 'Which expert takes numbers?' }];
    const chat = await post(server, '/tokenize', { model: MODEL, messages });
    assert.equal(chat.status, 200);
    assert.deepEqual(chat.json.tokens, pretrained.tokenizer.encodeChat(messages as never));
    assert.equal(chat.json.count, chat.json.tokens.length);
    assert.equal(chat.json.context_length, 256);
    const completion = await post(server, '/v1/chat/completions', { ...chatBody(messages[0]!.content), max_tokens: 1 });
    assert.equal(completion.json.usage.prompt_tokens, chat.json.count);
    assert.deepEqual((await post(server, '/tokenize', { prompt: 'The experts' })).json.tokens, pretrained.tokenizer.encode('The experts'));
    const neither = await post(server, '/tokenize', { model: MODEL });
    assert.equal(neither.status, 400);
    assert.match(neither.json.error.message, /give either messages or prompt/);
  });

  it('/health answers while a generation runs', async () => {
    // Streamed, so the first chunk proves the generation is running (a fixed delay raced the request under load).
    const response = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: JSON_TYPE, body: JSON.stringify({ model: MODEL, prompt: 'x', max_tokens: 200, temperature: 0, ignore_eos: true, stream: true }) });
    const reader = response.body!.getReader();
    assert.ok(!(await reader.read()).done, 'the first chunk arrives');
    const health = (await (await fetch(`${server.url}/health`)).json()) as { status: string; running: number };
    assert.equal(health.status, 'ok');
    assert.equal(health.running, 1);
    let rest = '';
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += new TextDecoder().decode(chunk.value);
    assert.match(rest, /"finish_reason":"length"/);
  });
});

describe('olmoe serve: concurrency', () => {
  it('8 concurrent streaming clients each get their own correct text', async () => {
    const server = await serve({ parallel: 4, queue: 8 });
    try {
      const pretrained = await loadPretrained(tinyModelDir, { backend: new ReferenceBackend() });
      const prompts = Array.from({ length: 8 }, (_, i) => `Client number ${i} asks about expert ${i * 7}`);
      const expected = await Promise.all(
        prompts.map(async (p) => (await generateText(pretrained, pretrained.tokenizer.encodeChat([{ role: 'user', content: p }]), { greedy: true, maxNewTokens: 24, ignoreEos: true })).text),
      );
      const openai = client(server);
      const texts = await Promise.all(
        prompts.map(async (p) => {
          const stream = await openai.chat.completions.create({ ...chatBody(p), temperature: 0, max_tokens: 24, ignore_eos: true, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming);
          let text = '';
          for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
          return text;
        }),
      );
      assert.deepEqual(texts, expected);
      assert.equal(new Set(expected).size, 8, 'the prompts give distinct answers, so crossed streams would show');
    } finally {
      await server.close();
    }
  });

  it('a full queue answers 429 with Retry-After; a dropped client frees its slot within a second', async () => {
    const server = await serve({ parallel: 1, queue: 1 });
    try {
      const long = { model: MODEL, prompt: 'x', max_tokens: 250, temperature: 0, ignore_eos: true, stream: true };
      const first = new AbortController();
      const second = new AbortController();
      const running = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: JSON_TYPE, body: JSON.stringify(long), signal: first.signal });
      const reader = running.body!.getReader();
      await reader.read(); // generating
      const waiting = fetch(`${server.url}/v1/completions`, { method: 'POST', headers: JSON_TYPE, body: JSON.stringify(long), signal: second.signal }).catch(() => undefined);
      await until(async () => (await health(server)).waiting === 1);
      const refused = await post(server, '/v1/completions', { ...long, stream: false });
      assert.equal(refused.status, 429);
      assert.equal(refused.json.error.type, 'rate_limit_error');
      assert.ok(Number(refused.headers.get('retry-after')) > 0);
      // drop both clients: the waiting one leaves the queue, the running one stops between two tokens
      second.abort();
      first.abort();
      const dropped = Date.now();
      await until(async () => {
        const h = await health(server);
        return h.running === 0 && h.waiting === 0;
      });
      assert.ok(Date.now() - dropped < 1000, `slot freed after ${Date.now() - dropped} ms`);
      await waiting;
      const after = await post(server, '/v1/completions', { model: MODEL, prompt: 'y', max_tokens: 3, temperature: 0 });
      assert.equal(after.status, 200);
    } finally {
      await server.close();
    }
  });
});

describe('olmoe serve: bad input gets a 4xx naming the problem, and the server keeps serving', () => {
  let server: OlmoeServer;
  before(async () => {
    server = await serve({ maxBodyBytes: 64 * 1024 });
  });
  after(() => server.close());

  const cases: [string, string, unknown, number, RegExp, string | null][] = [
    ['malformed JSON', '/v1/chat/completions', '{"model": "tiny", "messages": [', 400, /not valid JSON/, null],
    ['a body that is not an object', '/v1/chat/completions', '[1, 2]', 400, /must be a JSON object/, null],
    ['messages of the wrong type', '/v1/chat/completions', { model: MODEL, messages: 'hi' }, 400, /^messages: /, 'messages'],
    ['content of the wrong type', '/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 5 }] }, 400, /messages\[0\]\.content/, 'messages[0].content'],
    ['an unknown role', '/v1/chat/completions', { model: MODEL, messages: [{ role: 'wizard', content: 'x' }] }, 400, /role/, 'messages[0].role'],
    ['no messages', '/v1/chat/completions', { model: MODEL, messages: [] }, 400, /at least one message/, 'messages'],
    ['an unknown field', '/v1/chat/completions', { ...chatBody('x'), temprature: 1 }, 400, /unknown field "temprature"/, 'temprature'],
    ['max_tokens as a string', '/v1/chat/completions', { ...chatBody('x'), max_tokens: '5' }, 400, /max_tokens.*got string/, 'max_tokens'],
    ['an unknown model', '/v1/chat/completions', { ...chatBody('x'), model: 'gpt-4' }, 404, /"gpt-4" does not exist here.*"tiny"/, 'model'],
    ['a negative temperature', '/v1/chat/completions', { ...chatBody('x'), temperature: -1 }, 400, /temperature: must be between 0 and 2/, 'temperature'],
    ['top_p of 0', '/v1/chat/completions', { ...chatBody('x'), top_p: 0 }, 400, /top_p: must be in \(0, 1\]/, 'top_p'],
    ['n = 2', '/v1/chat/completions', { ...chatBody('x'), n: 2 }, 400, /only n = 1/, 'n'],
    ['a non-zero presence penalty', '/v1/chat/completions', { ...chatBody('x'), presence_penalty: 0.5 }, 400, /presence_penalty is not supported/, 'presence_penalty'],
    ['an empty stop string', '/v1/chat/completions', { ...chatBody('x'), stop: '' }, 400, /stop strings must not be empty/, 'stop'],
    ['a prompt over the context', '/v1/completions', { model: MODEL, prompt: Array.from({ length: 300 }, () => 5) }, 400, /300 tokens.*context of 256/, 'prompt'],
    ['a token id out of range', '/v1/completions', { model: MODEL, prompt: [1, 2, 99999] }, 400, /token id 99999 is out of range/, 'prompt[2]'],
    ['a prompt list of mixed kinds', '/v1/completions', { model: MODEL, prompt: ['a', 5] }, 400, /prompt\[1\]: expected a string like prompt\[0\]/, 'prompt[1]'],
    ['no route', '/v1/embeddings', {}, 404, /no route \/v1\/embeddings/, null],
  ];
  for (const [what, path, body, status, message, param] of cases) {
    it(what, async () => {
      const reply = await post(server, path, body);
      assert.equal(reply.status, status, JSON.stringify(reply.json));
      assert.match(reply.json.error.message, message);
      assert.equal(reply.json.error.param, param);
      assert.equal(reply.json.error.type, status === 404 || status === 400 ? 'invalid_request_error' : reply.json.error.type);
      assert.equal((await post(server, '/v1/completions', { model: MODEL, prompt: 'ok', max_tokens: 2 })).status, 200);
    });
  }

  it('a body over the limit gets 413, streamed or declared', async () => {
    const huge = JSON.stringify(chatBody('x'.repeat(200 * 1024)));
    assert.equal((await post(server, '/v1/chat/completions', huge)).status, 413);
    const chunked = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: JSON_TYPE,
      body: new Blob([huge]).stream(),
      duplex: 'half',
    } as RequestInit);
    assert.equal(chunked.status, 413);
    assert.equal((await post(server, '/v1/completions', { model: MODEL, prompt: 'ok', max_tokens: 2 })).status, 200);
  });

  it('a wrong method gets 405', async () => {
    const response = await fetch(`${server.url}/v1/chat/completions`);
    assert.equal(response.status, 405);
    assert.match(((await response.json()) as { error: { message: string } }).error.message, /GET is not allowed.*POST/);
  });

  it('the official client surfaces the error message', async () => {
    await assert.rejects(client(server).chat.completions.create({ ...chatBody('x'), model: 'nope' } as OpenAI.ChatCompletionCreateParamsNonStreaming), (error: unknown) => {
      assert.ok(error instanceof OpenAI.NotFoundError);
      assert.match(error.message, /does not exist here/);
      return true;
    });
  });
});

describe('olmoe serve: API key and startup', () => {
  it('with an API key, /v1 needs the bearer token; /health does not', async () => {
    const server = await serve({ apiKey: 'sesame' });
    try {
      await assert.rejects(client(server, 'wrong').models.list(), (error: unknown) => error instanceof OpenAI.AuthenticationError);
      const missing = await fetch(`${server.url}/v1/models`);
      assert.equal(missing.status, 401);
      assert.match(((await missing.json()) as { error: { message: string } }).error.message, /missing API key/);
      assert.deepEqual((await client(server, 'sesame').models.list()).data.map((m) => m.id), [MODEL]);
      assert.equal((await fetch(`${server.url}/health`)).status, 200);
    } finally {
      await server.close();
    }
  });

  it('binds 127.0.0.1 by default and serves the web UI without a build step', async () => {
    const server = await serve();
    try {
      assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const page = await fetch(`${server.url}/`);
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-type')!, /text\/html/);
      assert.match(await page.text(), /<script type="module" src="app.js">/);
      assert.equal((await fetch(`${server.url}/app.js`)).status, 200);
    } finally {
      await server.close();
    }
  });

  it('a model that cannot be loaded fails startup with the loader\'s message', async () => {
    const empty = tempDir();
    try {
      await assert.rejects(startServer(empty, { port: 0 }).then((s) => s.ready.finally(() => s.close())), /config\.json|tokenizer/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

async function health(server: OlmoeServer): Promise<{ running: number; waiting: number }> {
  return (await (await fetch(`${server.url}/health`)).json()) as { running: number; waiting: number };
}

async function until(condition: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
