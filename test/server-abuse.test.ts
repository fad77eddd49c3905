/**
 * `olmoe serve` under abuse: oversized and slow requests, many idle connections, cross-origin and wrong-Host
 * requests, a wrong Content-Type, malformed paths. Each gets its specified answer (a 4xx/503 naming the problem,
 * or a closed connection within its timeout) while a normal client's request still completes.
 */
import assert from 'node:assert/strict';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startServer, type OlmoeServer } from '../src/server/index.js';
import { tempDir, tinyModelDir } from './helpers.js';

const MODEL = 'tiny';

async function serve(opts: Parameters<typeof startServer>[1] = {}, model = tinyModelDir): Promise<OlmoeServer> {
  const server = await startServer(model, { port: 0, modelId: MODEL, backend: 'reference', ...opts });
  await server.ready;
  return server;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: any;
}

/** One request through node:http, which (unlike fetch) lets a test set Host and Origin. */
function send(server: OlmoeServer, method: string, path: string, opts: { headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const { hostname, port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, method, path, headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode!, headers: res.headers, json: text && res.headers['content-type']?.includes('json') ? JSON.parse(text) : undefined });
      });
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

const JSON_TYPE = { 'Content-Type': 'application/json' };
const normalBody = JSON.stringify({ model: MODEL, prompt: 'The experts', max_tokens: 3, temperature: 0, ignore_eos: true });

/** The well-behaved client: a small completion that must succeed whatever else is going on. */
async function normalRequest(server: OlmoeServer): Promise<void> {
  const reply = await send(server, 'POST', '/v1/completions', { headers: JSON_TYPE, body: normalBody });
  assert.equal(reply.status, 200, JSON.stringify(reply.json));
  assert.equal(reply.json.usage.completion_tokens, 3);
}

/** A raw TCP connection to the server, sending `first` as soon as it is connected. */
function open(server: OlmoeServer, first?: string): Promise<Socket> {
  const { hostname, port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => {
      if (first) socket.write(first);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Everything the server writes to `socket` until it closes it, and after how many ms (rejects after `limitMs`). */
function readUntilClosed(socket: Socket, limitMs: number): Promise<{ text: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`the server kept the connection open for ${limitMs} ms`)), limitMs);
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
    socket.on('error', () => {}); // a reset also ends it
    socket.once('close', () => {
      clearTimeout(timer);
      resolve({ text, ms: Date.now() - started });
    });
  });
}

describe('olmoe serve under abuse: Host, Origin, Content-Type and paths', () => {
  let server: OlmoeServer;
  let port: string;
  before(async () => {
    server = await serve({ allowedHosts: ['olmoe.internal'], corsOrigins: ['https://app.example'] });
    port = new URL(server.url).port;
  });
  after(() => server.close());

  it('refuses a Host that is not the bound address or an allowed name (DNS rebinding), 403 naming it', async () => {
    for (const host of [`evil.example:${port}`, `attacker.test`, `127.0.0.1.nip.io:${port}`]) {
      const reply = await send(server, 'GET', '/v1/models', { headers: { Host: host } });
      assert.equal(reply.status, 403, host);
      assert.equal(reply.json.error.code, 'invalid_host');
      assert.match(reply.json.error.message, new RegExp(`Host "${host.replace(/\./g, '\\.')}" is not allowed.*--allowed-hosts`));
    }
    const rebound = await send(server, 'POST', '/v1/completions', { headers: { ...JSON_TYPE, Host: `evil.example:${port}` }, body: normalBody });
    assert.equal(rebound.status, 403);
    await normalRequest(server);
  });

  it('answers the bound address, the loopback names on loopback, and --allowed-hosts', async () => {
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, 'olmoe.internal', `olmoe.internal:8443`]) {
      assert.equal((await send(server, 'GET', '/v1/models', { headers: { Host: host } })).status, 200, host);
    }
    assert.equal((await send(server, 'GET', '/v1/models', { headers: { Host: 'localhost:1' } })).status, 403, 'a loopback name on another port');
  });

  it('refuses a cross-origin browser request unless its origin is in --cors-origins; same origin passes', async () => {
    const evil = await send(server, 'POST', '/v1/completions', { headers: { ...JSON_TYPE, Origin: 'http://evil.example' }, body: normalBody });
    assert.equal(evil.status, 403);
    assert.equal(evil.json.error.code, 'invalid_origin');
    assert.match(evil.json.error.message, /"http:\/\/evil\.example" are not allowed.*--cors-origins/);
    assert.equal(evil.headers['access-control-allow-origin'], undefined);
    assert.equal((await send(server, 'GET', '/v1/models', { headers: { Origin: 'null' } })).status, 403, 'a sandboxed page');
    const same = await send(server, 'POST', '/v1/completions', { headers: { ...JSON_TYPE, Origin: server.url }, body: normalBody });
    assert.equal(same.status, 200);
    const allowed = await send(server, 'POST', '/v1/completions', { headers: { ...JSON_TYPE, Origin: 'https://app.example' }, body: normalBody });
    assert.equal(allowed.status, 200);
    assert.equal(allowed.headers['access-control-allow-origin'], 'https://app.example');
    await normalRequest(server);
  });

  it('answers a CORS preflight for an allowed origin and refuses it for others', async () => {
    const preflight = { 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization, content-type' };
    const ok = await send(server, 'OPTIONS', '/v1/chat/completions', { headers: { ...preflight, Origin: 'https://app.example' } });
    assert.equal(ok.status, 204);
    assert.equal(ok.headers['access-control-allow-origin'], 'https://app.example');
    assert.match(String(ok.headers['access-control-allow-methods']), /POST/);
    assert.match(String(ok.headers['access-control-allow-headers']), /content-type/);
    const refused = await send(server, 'OPTIONS', '/v1/chat/completions', { headers: { ...preflight, Origin: 'http://evil.example' } });
    assert.equal(refused.status, 403);
    assert.equal(refused.headers['access-control-allow-origin'], undefined);
  });

  it('requires Content-Type: application/json on POST bodies (415 naming what came)', async () => {
    for (const [type, shown] of [['text/plain', /got "text\/plain"/], ['application/x-www-form-urlencoded', /got "application\/x-www-form-urlencoded"/], [undefined, /got no Content-Type/]] as const) {
      const reply = await send(server, 'POST', '/v1/completions', { headers: type ? { 'Content-Type': type } : {}, body: normalBody });
      assert.equal(reply.status, 415, String(type));
      assert.match(reply.json.error.message, shown);
    }
    assert.equal((await send(server, 'POST', '/v1/completions', { headers: { 'Content-Type': 'application/json; charset=utf-8' }, body: normalBody })).status, 200);
  });

  it('answers malformed paths with 400, not 500', async () => {
    for (const path of ['/v1/models/%E0%A4%A', '/v1/models/%', '/v1/models/abc%zz']) {
      const reply = await send(server, 'GET', path);
      assert.equal(reply.status, 400, path);
      assert.equal(reply.json.error.code, 'invalid_path');
      assert.match(reply.json.error.message, /malformed percent-escape/);
    }
    const absolute = await send(server, 'GET', 'http://elsewhere.example/v1/models');
    assert.equal(absolute.status, 400);
    assert.match(absolute.json.error.message, /must start with "\/"/);
    await normalRequest(server);
  });
});

describe('olmoe serve under abuse: size, slowness and connections', () => {
  let server: OlmoeServer;
  const log: string[] = [];
  before(async () => {
    server = await serve({ maxBodyBytes: 8 << 20, maxConnections: 24, headersTimeoutMs: 600, requestTimeoutMs: 1200, keepAliveTimeoutMs: 500, log: (line) => log.push(line) });
  });
  after(() => server.close());

  it('a 4 MB prompt is refused within two seconds as longer than the context can hold, and /health stays fast', async () => {
    const big = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'x'.repeat(4 << 20) }] });
    const started = Date.now();
    const probes = probeHealth(server, 2000);
    const reply = await send(server, 'POST', '/v1/chat/completions', { headers: JSON_TYPE, body: big });
    assert.equal(reply.status, 400);
    assert.equal(reply.json.error.code, 'context_length_exceeded');
    assert.equal(reply.json.error.param, 'messages');
    assert.match(reply.json.error.message, /4194304 characters; the model's context of 256 tokens holds at most \d+/);
    assert.ok(Date.now() - started < 2000, `answered in ${Date.now() - started} ms`);
    assert.ok((await probes) < 500, 'health stayed responsive');
    await normalRequest(server);
  });

  it('a client that sends its headers slowly is cut off (408) after the header timeout', async () => {
    const socket = await open(server);
    const closed = readUntilClosed(socket, 5000);
    socket.write(`GET /health HTTP/1.1\r\nHost: ${new URL(server.url).host}\r\n`);
    const drip = setInterval(() => socket.writable && socket.write('X-Slow: 1\r\n'), 200); // never finishes
    try {
      const normal = normalRequest(server);
      const { text, ms } = await closed;
      await normal;
      assert.match(text, /^HTTP\/1\.1 408/);
      assert.ok(ms < 3000, `closed after ${ms} ms`);
    } finally {
      clearInterval(drip);
      socket.destroy();
    }
  });

  it('a client that sends its body slowly is cut off (408) after the request timeout', async () => {
    const socket = await open(server);
    const closed = readUntilClosed(socket, 6000);
    socket.write(`POST /v1/completions HTTP/1.1\r\nHost: ${new URL(server.url).host}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{`);
    const drip = setInterval(() => socket.writable && socket.write(' '), 100);
    try {
      const normal = normalRequest(server);
      const { text, ms } = await closed;
      await normal;
      assert.match(text, /^HTTP\/1\.1 408/);
      assert.ok(ms < 4000, `closed after ${ms} ms`);
    } finally {
      clearInterval(drip);
      socket.destroy();
    }
  });

  it('idle connections are capped (503 beyond the cap) and closed after the header timeout', async () => {
    const idle = await Promise.all(Array.from({ length: 16 }, () => open(server)));
    const closings = idle.map((socket) => readUntilClosed(socket, 5000));
    try {
      await normalRequest(server); // under the cap: served while they idle
      // 12 more, each sending a request at once (kept alive, so the served ones stay open): those over the cap are refused unserved
      const probe = `GET /refused-probe HTTP/1.1\r\nHost: ${new URL(server.url).host}\r\n\r\n`;
      const extra = await Promise.all(Array.from({ length: 12 }, () => open(server, probe)));
      const answers = extra.map((socket) => readUntilClosed(socket, 5000));
      const texts = (await Promise.all(answers)).map(({ text }) => text);
      const refused = texts.filter((text) => /^HTTP\/1\.1 503/.test(text));
      assert.ok(refused.length >= 4, `${refused.length} of 12 connections over the cap of 24 were refused`);
      assert.match(refused[0]!, /too many open connections \(the limit is 24\)/);
      assert.ok(refused.every((text) => !text.includes('404')), 'a refused connection gets only the refusal');
      assert.equal(log.filter((line) => line.includes('/refused-probe')).length, 12 - refused.length, 'refused requests were not served');
      for (const { ms } of await Promise.all(closings)) assert.ok(ms < 3500, `an idle connection stayed ${ms} ms`);
      await normalRequest(server);
    } finally {
      for (const socket of idle) socket.destroy();
    }
  });
});

describe('olmoe serve under abuse: timeouts do not cut honest work', () => {
  it('a generation that takes longer than the request timeout completes (the timeout covers receiving the request)', async () => {
    const server = await serve({ headersTimeoutMs: 300, requestTimeoutMs: 300, keepAliveTimeoutMs: 300 });
    try {
      const started = Date.now();
      const body = JSON.stringify({ model: MODEL, prompt: 'x', max_tokens: 250, temperature: 0, ignore_eos: true });
      const reply = await send(server, 'POST', '/v1/completions', { headers: JSON_TYPE, body });
      assert.equal(reply.status, 200);
      assert.equal(reply.json.usage.completion_tokens, 250);
      assert.ok(Date.now() - started > 300, `the generation took ${Date.now() - started} ms, longer than the timeout`);
    } finally {
      await server.close();
    }
  });
});

describe('olmoe serve under abuse: a long prompt on a long-context model', () => {
  let dir: string;
  let server: OlmoeServer;
  before(async () => {
    dir = tempDir('olmoe-abuse-');
    const model = join(dir, 'model');
    cpSync(tinyModelDir, model, { recursive: true });
    const config = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(model, 'config.json'), JSON.stringify({ ...config, max_position_embeddings: 1 << 20 }));
    server = await serve({ maxBodyBytes: 8 << 20 }, model);
  });
  after(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is tokenized off the event loop: /health answers within a second while it is', async () => {
    // 2 Mi characters that the tiny vocabulary cannot merge: 2 Mi tokens, over the context only once tokenized
    const body = JSON.stringify({ model: MODEL, prompt: 'x'.repeat(2 << 20), max_tokens: 1 });
    const started = Date.now();
    let answered = false;
    const long = send(server, 'POST', '/v1/completions', { headers: JSON_TYPE, body }).finally(() => (answered = true));
    const worst = await probeHealth(server, 20_000, () => answered);
    const reply = await long;
    assert.equal(reply.status, 400);
    assert.match(reply.json.error.message, /2097152 tokens.*context of 1048576/);
    assert.ok(worst < 1000, `the slowest /health took ${worst} ms while the prompt was tokenized (${Date.now() - started} ms in all)`);
    console.log(`# 2 MiB prompt answered in ${Date.now() - started} ms; slowest /health meanwhile ${worst} ms`);
    await normalRequest(server);
  });
});

/**
 * Ask /health every 50 ms for `durationMs` or until `done()`; the longest round in ms beyond the 50 ms pause. The
 * server runs in this process, so a blocked event loop shows as a long round, not as one slow answer.
 */
async function probeHealth(server: OlmoeServer, durationMs: number, done = () => false): Promise<number> {
  const deadline = Date.now() + durationMs;
  let worst = 0;
  while (Date.now() < deadline && !done()) {
    const started = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const reply = await send(server, 'GET', '/health');
    assert.equal(reply.status, 200);
    worst = Math.max(worst, Date.now() - started - 50);
  }
  return worst;
}
