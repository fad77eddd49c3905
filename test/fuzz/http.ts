/**
 * The HTTP fuzzer: the real `olmoe serve` (in-process, 127.0.0.1, port 0, the HF seed on the reference
 * backend) gets each case's raw bytes on a fresh connection. Property: every response is well-formed HTTP with a
 * 2xx or 4xx status (never 5xx, and a 200 stream carries no server_error event), a complete request is answered
 * within the time limit, and afterwards the server still answers GET /health and a normal completion.
 */
import { connect } from 'node:net';
import { startServer, type OlmoeServer } from '../../src/server/index.js';
import { generateHttpCase, MODEL_ID, type HttpCase } from './http-cases.js';

export interface HttpFinding {
  class: string;
  outcome: string;
  detail: string;
  httpCase: HttpCase;
  count: number;
}

export interface HttpSummary {
  cases: number;
  ms: number;
  findings: Map<string, HttpFinding>;
  statuses: Map<number, number>;
}

export interface HttpFuzzOptions {
  modelDir: string;
  runSeed: number;
  cases: number;
  timeoutMs?: number;
  maxMs?: number;
}

interface Parsed {
  statuses: number[];
  error?: string;
  /** Bytes of an unfinished response at the end. */
  partial: boolean;
  bodies: string[];
}

/** Split received bytes into HTTP/1.x responses (Content-Length, chunked, or to the end of the connection). */
export function parseResponses(bytes: Buffer, closed: boolean): Parsed {
  const out: Parsed = { statuses: [], partial: false, bodies: [] };
  let at = 0;
  while (at < bytes.length) {
    const headEnd = bytes.indexOf('\r\n\r\n', at);
    if (headEnd < 0) return { ...out, partial: true };
    const head = bytes.toString('latin1', at, headEnd).split('\r\n');
    const status = /^HTTP\/1\.[01] (\d{3})(?: [^\r\n]*)?$/.exec(head[0]!);
    if (!status) return { ...out, error: `bad status line ${JSON.stringify(head[0]!.slice(0, 80))}` };
    const headers = new Map(head.slice(1).map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]));
    if (head.slice(1).some((line) => !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:/.test(line))) return { ...out, error: `bad header line in ${JSON.stringify(head.join(' | ').slice(0, 200))}` };
    out.statuses.push(Number(status[1]));
    let bodyStart = headEnd + 4;
    let body: Buffer;
    if (headers.get('transfer-encoding')?.toLowerCase() === 'chunked') {
      const chunks: Buffer[] = [];
      for (;;) {
        const lineEnd = bytes.indexOf('\r\n', bodyStart);
        if (lineEnd < 0) return { ...out, partial: true };
        const size = Number.parseInt(bytes.toString('latin1', bodyStart, lineEnd), 16);
        if (!Number.isFinite(size)) return { ...out, error: 'bad chunk size' };
        if (lineEnd + 2 + size + 2 > bytes.length) return { ...out, partial: true };
        chunks.push(bytes.subarray(lineEnd + 2, lineEnd + 2 + size));
        bodyStart = lineEnd + 2 + size + 2;
        if (size === 0) break;
      }
      body = Buffer.concat(chunks);
      at = bodyStart;
    } else if (headers.has('content-length')) {
      const length = Number(headers.get('content-length'));
      if (bodyStart + length > bytes.length) return { ...out, partial: true };
      body = bytes.subarray(bodyStart, bodyStart + length);
      at = bodyStart + length;
    } else if ([204, 304].includes(out.statuses.at(-1)!) || out.statuses.at(-1)! < 200) {
      body = Buffer.alloc(0);
      at = bodyStart;
    } else {
      if (!closed) return { ...out, partial: true };
      body = bytes.subarray(bodyStart);
      at = bytes.length;
    }
    out.bodies.push(body.toString('utf8'));
  }
  return out;
}

/** Send raw bytes on a new connection; collect what comes back until the responses are complete, the server closes, or the time limit. */
function exchange(port: number, request: Buffer, opts: { expected: number; endAfterWrite: boolean; timeoutMs: number }): Promise<{ bytes: Buffer; closed: boolean; timedOut: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = connect({ host: '127.0.0.1', port });
    let done = false;
    const finish = (closed: boolean, timedOut = false) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ bytes: Buffer.concat(chunks), closed, timedOut });
    };
    const timer = setTimeout(() => finish(false, true), opts.timeoutMs);
    socket.on('connect', () => {
      socket.write(request);
      if (opts.endAfterWrite) socket.end();
    });
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      const parsed = parseResponses(Buffer.concat(chunks), false);
      if (!parsed.partial && !parsed.error && parsed.statuses.filter((s) => s >= 200).length >= opts.expected) finish(false);
    });
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
  });
}

/** What is wrong with the answer to one case, if anything. */
export function judgeHttp(httpCase: HttpCase, answer: { bytes: Buffer; closed: boolean; timedOut: boolean }): { outcome: string; detail: string } | undefined {
  const parsed = parseResponses(answer.bytes, answer.closed);
  if (parsed.error) return { outcome: 'malformed', detail: parsed.error };
  const bad = parsed.statuses.find((s) => s >= 500 || (s >= 300 && s < 400));
  if (bad !== undefined) return { outcome: `status-${bad}`, detail: parsed.bodies.join(' | ').slice(0, 300) };
  const streamed = parsed.bodies.find((b) => b.includes('"server_error"'));
  if (streamed) return { outcome: 'stream-server-error', detail: streamed.slice(0, 300) };
  if (!httpCase.complete) return undefined;
  const answered = parsed.statuses.filter((s) => s >= 200).length;
  if (answered === 0) return { outcome: answer.timedOut ? 'no-response-timeout' : 'no-response-closed', detail: `${answer.bytes.length} bytes back` };
  if (answered < httpCase.responses && !parsed.statuses.some((s) => s >= 400)) return { outcome: 'missing-response', detail: `${answered} of ${httpCase.responses} responses` };
  return undefined;
}

/** GET /health and a short completion must both succeed. */
export async function serverAlive(server: OlmoeServer, withCompletion: boolean): Promise<string | undefined> {
  try {
    const health = await fetch(`${server.url}/health`, { signal: AbortSignal.timeout(10_000) });
    await health.arrayBuffer();
    if (health.status !== 200) return `GET /health answered ${health.status}`;
    if (!withCompletion) return undefined;
    const body = JSON.stringify({ model: MODEL_ID, prompt: 'Hi', max_tokens: 2, temperature: 0 });
    const completion = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body, signal: AbortSignal.timeout(20_000) });
    const text = await completion.text();
    return completion.status === 200 ? undefined : `a normal completion answered ${completion.status}: ${text.slice(0, 200)}`;
  } catch (error) {
    return `the server does not answer: ${(error as Error).message}`;
  }
}

export async function startFuzzServer(modelDir: string): Promise<OlmoeServer> {
  const server = await startServer(modelDir, { port: 0, host: '127.0.0.1', modelId: MODEL_ID, backend: 'reference', parallel: 2, queue: 8 });
  await server.ready;
  return server;
}

export async function runHttpCase(server: OlmoeServer, httpCase: HttpCase, timeoutMs: number, checkCompletion: boolean): Promise<{ outcome: string; detail: string } | undefined> {
  const port = Number(new URL(server.url).port);
  const answer = await exchange(port, httpCase.request, { expected: httpCase.responses, endAfterWrite: !httpCase.complete, timeoutMs });
  const verdict = judgeHttp(httpCase, answer);
  if (verdict) return verdict;
  const dead = await serverAlive(server, checkCompletion);
  return dead ? { outcome: 'server-broken-after', detail: dead } : undefined;
}

export async function fuzzHttp(opts: HttpFuzzOptions): Promise<HttpSummary> {
  const started = performance.now();
  const findings = new Map<string, HttpFinding>();
  const statuses = new Map<number, number>();
  let server = await startFuzzServer(opts.modelDir);
  let done = 0;
  try {
    for (; done < opts.cases; done++) {
      if (opts.maxMs !== undefined && performance.now() - started > opts.maxMs) break;
      const httpCase = generateHttpCase(opts.runSeed, done);
      const verdict = await runHttpCase(server, httpCase, opts.timeoutMs ?? 10_000, done % 25 === 0);
      if (!verdict) continue;
      const key = `${httpCase.mutator}/${verdict.outcome}`;
      const seen = findings.get(key);
      if (seen) seen.count++;
      else findings.set(key, { class: key, ...verdict, httpCase, count: 1 });
      if (verdict.outcome === 'server-broken-after') {
        await server.close();
        server = await startFuzzServer(opts.modelDir);
      }
    }
  } finally {
    await server.close();
  }
  return { cases: done, ms: performance.now() - started, findings, statuses };
}
