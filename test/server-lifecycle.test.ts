/**
 * `olmoe serve` start and recovery: a busy port is a prompt non-zero exit naming the port, and an engine worker
 * that dies is replaced — the requests it held get 503, the restart is logged, and the next request succeeds.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { startServer } from '../src/server/index.js';
import { announceSkip, nativeSkip } from './backends.js';
import { cliPath, tinyModelDir } from './helpers.js';

const MODEL = 'tiny';
const JSON_TYPE = { 'Content-Type': 'application/json' };

/** Run the CLI; its exit code (null if it had to be killed after `limitMs`), stderr and run time. */
function runCli(args: string[], limitMs: number): Promise<{ code: number | null; stderr: string; ms: number }> {
  const started = Date.now();
  const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
  return new Promise((resolve) => {
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, ms: Date.now() - started });
    });
  });
}

describe('olmoe serve: startup and recovery', () => {
  it('`olmoe serve --port BUSY` exits non-zero within seconds, naming the port', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as AddressInfo).port;
    try {
      const run = await runCli(['serve', tinyModelDir, '--port', String(port), '--backend', 'reference', '-q'], 30_000);
      assert.notEqual(run.code, null, `still running after ${run.ms} ms; stderr: ${run.stderr}`);
      assert.notEqual(run.code, 0);
      assert.match(run.stderr, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use \\(choose another with --port\\)`));
      assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
    } finally {
      blocker.close();
    }
  });

  it('a dead engine worker is restarted: held requests get 503, the restart is logged, the next request succeeds', async () => {
    const log: string[] = [];
    const server = await startServer(tinyModelDir, { port: 0, modelId: MODEL, backend: 'reference', parallel: 1, queue: 1, log: (line) => log.push(line) });
    try {
      await server.ready;
      const long = JSON.stringify({ model: MODEL, prompt: 'x', max_tokens: 250, temperature: 0, ignore_eos: true });
      const post = (body: string) => fetch(`${server.url}/v1/completions`, { method: 'POST', headers: JSON_TYPE, body });
      const running = post(long);
      await until(async () => (await health(server)).running === 1);
      const waiting = post(long);
      await until(async () => (await health(server)).waiting === 1);

      await server.engine.thread.terminate(); // what an addon crash or an out-of-memory kill looks like from here
      for (const response of await Promise.all([running, waiting])) {
        assert.equal(response.status, 503);
        assert.ok(Number(response.headers.get('retry-after')) > 0);
        const { error } = (await response.json()) as { error: { message: string; code: string; type: string } };
        assert.equal(error.code, 'unavailable');
        assert.equal(error.type, 'server_error');
        assert.match(error.message, /the engine restarted while this request was held.*retry it/);
      }
      assert.ok(log.some((line) => /engine worker died \(the engine exited \(code 1\)\); 2 request\(s\) answered 503; restarting \(restart 1\)/.test(line)), log.join('\n'));

      await until(async () => (await fetch(`${server.url}/health`)).status === 200, 20_000);
      assert.ok(log.some((line) => /engine worker restarted \(restart 1\); serving again/.test(line)), log.join('\n'));
      assert.equal((await health(server)).restarts, 1);
      const after = await post(JSON.stringify({ model: MODEL, prompt: 'y', max_tokens: 3, temperature: 0, ignore_eos: true }));
      assert.equal(after.status, 200);
      assert.equal(((await after.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 3);
    } finally {
      await server.close();
    }
  });
});

describe('olmoe serve: the warm-up batch', () => {
  it('runs by default and reports its time; the warmed server answers the same tokens as one started without it', { skip: announceSkip(nativeSkip) }, async () => {
    const answers = async (warmup: number | undefined) => {
      const server = await startServer(tinyModelDir, { port: 0, modelId: MODEL, backend: 'native', threads: 1, parallel: 3, warmup });
      try {
        const info = await server.ready;
        const texts = [];
        for (const prompt of ['the sea', 'a garden of owls', 'salt']) {
          // one at a time: each runs alone in its step, as in the other server (a batch's sums may round differently)
          const body = JSON.stringify({ model: MODEL, prompt, max_tokens: 12, temperature: 0, ignore_eos: true, logprobs: 1 });
          const response = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: JSON_TYPE, body });
          assert.equal(response.status, 200);
          const { choices } = (await response.json()) as { choices: { text: string; logprobs: { token_logprobs: number[] } }[] };
          texts.push(choices[0]!);
        }
        return { warmupMs: info.warmupMs, texts };
      } finally {
        await server.close();
      }
    };
    const cold = await answers(0);
    const warm = await answers(undefined);
    assert.equal(cold.warmupMs, undefined);
    assert.ok(typeof warm.warmupMs === 'number' && warm.warmupMs > 0, `warm-up time ${warm.warmupMs}`);
    assert.deepEqual(warm.texts.map((choice) => choice.text), cold.texts.map((choice) => choice.text));
    assert.deepEqual(warm.texts.map((choice) => choice.logprobs.token_logprobs), cold.texts.map((choice) => choice.logprobs.token_logprobs));
  });

  it('`olmoe serve` says how long it warmed up; with --no-warmup it does not warm up', { skip: announceSkip(nativeSkip) }, async () => {
    const readyLine = async (extra: string[]) => {
      const child = spawn(process.execPath, [cliPath, 'serve', tinyModelDir, '--port', '0', '--backend', 'native', '--threads', '1', ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      try {
        await until(async () => /ready at .*\n/.test(stderr), 30_000);
        return /ready at .*/.exec(stderr)![0];
      } finally {
        child.kill('SIGKILL');
      }
    };
    assert.match(await readyLine([]), /native backend, context \d+ \(warmed up in \d+\.\d s\)/);
    assert.doesNotMatch(await readyLine(['--no-warmup']), /warmed up/);
  });
});

describe('olmoe serve: the CLI flags reach the server', () => {
  it('--allowed-hosts and --cors-origins are honoured, and SIGTERM ends the server with exit 0', async () => {
    const child = spawn(process.execPath, [cliPath, 'serve', tinyModelDir, '--port', '0', '--backend', 'reference', '--model-id', MODEL, '--allowed-hosts', 'olmoe.test,other.test:1', '--cors-origins', 'https://app.example'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await until(async () => /ready at http:\/\/127\.0\.0\.1:\d+/.test(stderr), 30_000);
      const url = /ready at (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr)![1]!;
      const ask = (headers: Record<string, string>) => getWith(url, '/v1/models', headers);
      assert.equal((await ask({ Host: 'olmoe.test' })).status, 200);
      assert.equal((await ask({ Host: 'other.test:1' })).status, 200);
      assert.equal((await ask({ Host: 'other.test:2' })).status, 403);
      const allowed = await ask({ Origin: 'https://app.example' });
      assert.equal(allowed.status, 200);
      assert.equal(allowed.headers['access-control-allow-origin'], 'https://app.example');
      assert.equal((await ask({ Origin: 'https://evil.example' })).status, 403);
      child.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise<string>((resolve) => setTimeout(resolve, 10_000, 'still running'))]);
      assert.equal(code, 0, stderr);
    } finally {
      child.kill('SIGKILL');
    }
  });
});

/** A GET through node:http, which (unlike fetch) sends the Host and Origin given. */
function getWith(url: string, path: string, headers: Record<string, string>): Promise<{ status: number; headers: Record<string, unknown> }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('olmoe serve: shutdown', () => {
  // Terminating the engine thread inside a native kernel made the addon's next N-API call abort the process
  // (FATAL ERROR: napi_throw); close() now lets the worker stop between two steps.
  it('closing the server while native generations run ends cleanly and promptly, ten times over', { skip: announceSkip(nativeSkip) }, async () => {
    for (let round = 0; round < 10; round++) {
      const server = await startServer(tinyModelDir, { port: 0, modelId: MODEL, backend: 'native', threads: 1, parallel: 4 });
      await server.ready;
      const readers = await Promise.all(
        Array.from({ length: 4 }, async (_, i) => {
          const body = JSON.stringify({ model: MODEL, prompt: `stream ${i}`, max_tokens: 250, temperature: 0, ignore_eos: true, stream: true });
          const response = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: JSON_TYPE, body });
          const reader = response.body!.getReader();
          await reader.read(); // generating
          return reader;
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, round * 7)); // land the close at different points of a step
      const started = Date.now();
      await server.close();
      assert.ok(Date.now() - started < 3000, `close took ${Date.now() - started} ms`);
      await Promise.all(readers.map((reader) => reader.cancel().catch(() => {})));
    }
  });
});

async function health(server: { url: string }): Promise<{ running: number; waiting: number; restarts: number }> {
  return (await (await fetch(`${server.url}/health`)).json()) as { running: number; waiting: number; restarts: number };
}

async function until(condition: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
