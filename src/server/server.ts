/**
 * `olmoe serve`: an OpenAI-compatible HTTP server over node:http, with the engine and the prompt tokenizer in
 * worker threads and the web UI at `/`. Routes: GET /health, GET /v1/models[/ID], POST /v1/chat/completions,
 * POST /v1/completions, and vLLM's tokenizer routes POST /tokenize, POST /detokenize, GET /tokenizer_info (which
 * lm-evaluation-harness probes to use the server's tokenizer). Errors are OpenAI-shaped:
 * {"error": {"message", "type", "param", "code"}}.
 * Limits against a hostile or broken client (README "Security and limits"): Host/Origin checks (guard.ts), a
 * body limit, a prompt limit, a connection cap, and header/body/idle timeouts.
 */
import { timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo, Socket } from 'node:net';
import { basename, resolve as resolvePath } from 'node:path';
import { InputError, loadTokenizer, resolveModelPath, type HubOptions, type OlmoeTokenizer } from '../index.js';
import { Engine, QueueFullError, type EngineLimits, type Job } from './engine.js';
import { Guard, requireJson, type GuardOptions } from './guard.js';
import { readJsonBody, sendError, sendJson, errorBody } from './http.js';
import {
  chatMessages, chatRequest, completionJob, completionRequest, detokenizeRequest, jobOptions, parseBody, promptParam, RequestError, tokenizeRequest,
  type ChatRequest, type CompletionRequest, type DetokenizeRequest, type Prompts, type TokenizeRequest,
} from './openai.js';
import type { EngineSpec, JobRequest, ModelInfo } from './protocol.js';
import { Reply } from './reply.js';
import { PromptError, TokenizerThread, type TokenizeInput } from './tokenizer-thread.js';

export interface ServeOptions extends Omit<EngineSpec, 'model'>, Partial<EngineLimits>, GuardOptions {
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** The name clients use in `model`; default: the folder or file name, or the hub id. */
  modelId?: string;
  /** Require `Authorization: Bearer <key>` on /v1/*. */
  apiKey?: string;
  /** Largest request body (413 beyond); default 4 MiB. */
  maxBodyBytes?: number;
  /**
   * Prompt tokens one completions request may hold, its prompts together (400 beyond), or the model's context when
   * that is more; default 65,536 (lm-eval's batch of 32 at 2,048). It bounds what a batch's answer holds: with
   * logprobs, up to 21 numbers per token.
   */
  maxPromptTokens?: number;
  /** Open connections at once; more are answered 503 and closed. Default 256. */
  maxConnections?: number;
  /** Time for a client to send its request headers (408 after), default 10 s. */
  headersTimeoutMs?: number;
  /** Time for a client to send its whole request, body included (408 after), default 30 s. */
  requestTimeoutMs?: number;
  /** How long an idle keep-alive connection stays open between requests, default 5 s. */
  keepAliveTimeoutMs?: number;
  hub?: HubOptions;
  onLoadProgress?: (loadedBytes: number, totalBytes: number) => void;
  /** One line per request (method, path, status, tokens, time). */
  log?: (line: string) => void;
}

export interface OlmoeServer {
  readonly url: string;
  readonly modelId: string;
  /** Resolves when the model is loaded (the server answers 503 until then). */
  readonly ready: Promise<ModelInfo>;
  readonly engine: Engine;
  close(): Promise<void>;
}

const WEB_FILES: Record<string, string> = { '/': 'index.html', '/index.html': 'index.html', '/app.js': 'app.js', '/style.css': 'style.css' };
const CONTENT_TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };
const webDir = new URL('../../../web/', import.meta.url); // dist/src/server → package root

export async function startServer(model: string, opts: ServeOptions = {}): Promise<OlmoeServer> {
  const path = await resolveModelPath(model, opts.hub);
  const tokenizer = await loadTokenizer(path);
  const modelId = opts.modelId ?? (existsSync(model) ? basename(resolvePath(model)) : model);
  let app: App | undefined;
  const server = createServer(
    { headersTimeout: opts.headersTimeoutMs ?? 10_000, requestTimeout: opts.requestTimeoutMs ?? 30_000, connectionsCheckingInterval: 500 },
    (req, res) => (refused(req.socket) ? res.destroy() : void app!.handle(req, res)),
  );
  server.keepAliveTimeout = opts.keepAliveTimeoutMs ?? 5_000;
  refuseTunnels(server);
  const refused = capConnections(server, opts.maxConnections ?? 256);
  // Listen before starting any thread: a busy port is then a plain error with nothing left running.
  await listen(server, opts.port ?? 8080, opts.host ?? '127.0.0.1');
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const parallel = opts.parallel ?? 4;
  const spec = { model: path, backend: opts.backend, threads: opts.threads, revision: opts.revision, prefillChunk: opts.prefillChunk, adapter: opts.adapter, kvCache: opts.kvCache, warmup: opts.warmup ?? parallel };
  const engine = new Engine(spec, { parallel, queue: opts.queue ?? 16 }, { onProgress: opts.onLoadProgress, log: opts.log });
  const prompts = new TokenizerThread(path);
  app = new App(engine, tokenizer, prompts, new Guard(host, address.port, opts), modelId, opts);
  return {
    url: `http://${host}:${address.port}`,
    modelId,
    ready: engine.ready,
    engine,
    close: async () => {
      server.closeAllConnections();
      await Promise.all([new Promise((resolve) => server.close(resolve)), engine.close(), prompts.close()]);
    },
  };
}

/**
 * CONNECT and Upgrade requests go to node:http's 'connect'/'upgrade' events, not the handler; without a listener
 * the socket is dropped unanswered (fuzz finding F12). The server is no proxy and speaks no WebSocket: 405.
 */
function refuseTunnels(server: Server): void {
  const body = JSON.stringify({ error: errorBody(new RequestError(405, 'CONNECT and protocol upgrades are not supported by this server', null, 'method_not_allowed')) });
  const answer = `HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
  const refuse = (_req: IncomingMessage, socket: Duplex) => void socket.end(answer, () => socket.destroy());
  server.on('connect', refuse);
  server.on('upgrade', refuse);
}

/**
 * Answer connections beyond `limit` with a 503 and close them, so idle sockets cannot exhaust descriptors. node:http
 * still parses what a refused socket sent before it closes: the returned test tells the handler to drop it unserved.
 */
function capConnections(server: Server, limit: number): (socket: Socket) => boolean {
  const open = new Set<Socket>();
  const refused = new WeakSet<Socket>();
  const body = JSON.stringify({ error: errorBody(new RequestError(503, `too many open connections (the limit is ${limit}); retry shortly`, null, 'too_many_connections')) });
  const refusal = `HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n${body}`;
  server.on('connection', (socket: Socket) => {
    if (open.size >= limit) {
      refused.add(socket);
      return void socket.end(refusal, () => socket.destroy());
    }
    open.add(socket);
    socket.once('close', () => open.delete(socket));
  });
  return (socket) => refused.has(socket);
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'EADDRINUSE' ? new InputError(`port ${port} on ${host} is already in use (choose another with --port)`) : error),
    );
    server.listen(port, host, () => resolve());
  });
}

/** The per-request logic; one instance per server. */
class App {
  private readonly created = Math.floor(Date.now() / 1000);

  /** Characters one token can cover at most: a prompt longer than context × this cannot fit, whatever it says. */
  private readonly charsPerToken: number;
  /** Each token's own text, decoded once (logprobs name every token and its alternatives); at most one entry per id. */
  private readonly tokenTexts = new Map<number, string>();
  private readonly tokenText = (id: number): string => {
    let text = this.tokenTexts.get(id);
    if (text === undefined) this.tokenTexts.set(id, (text = this.tokenizer.decode([id])));
    return text;
  };

  constructor(
    private readonly engine: Engine,
    private readonly tokenizer: OlmoeTokenizer,
    private readonly prompts: TokenizerThread,
    private readonly guard: Guard,
    private readonly modelId: string,
    private readonly opts: ServeOptions,
  ) {
    this.charsPerToken = longestToken(tokenizer);
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const path = (req.url ?? '/').split('?')[0]!;
    let note = '';
    try {
      this.guard.check(req, res);
      note = (await this.route(req, res, path)) ?? '';
    } catch (error) {
      if (error instanceof RequestError) sendError(res, error);
      else {
        sendError(res, new RequestError(500, `internal error: ${error instanceof Error ? error.message : String(error)}`));
        this.opts.log?.(`error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      }
    }
    this.opts.log?.(`${req.method} ${path.slice(0, 200)} ${res.statusCode}${note ? ` ${note}` : ''} ${(performance.now() - started).toFixed(0)} ms`);
  }

  private async route(req: IncomingMessage, res: ServerResponse, path: string): Promise<string | void> {
    const method = req.method ?? 'GET';
    if (!path.startsWith('/')) throw new RequestError(400, `the request path must start with "/" (got ${JSON.stringify(path.slice(0, 100))})`, null, 'invalid_path');
    if (method === 'OPTIONS') return this.guard.preflight(req, res);
    const allow = (...methods: string[]) => {
      if (!methods.includes(method)) throw new RequestError(405, `${method} is not allowed on ${path} (use ${methods.join(' or ')})`);
    };
    if (path in WEB_FILES) return allow('GET', 'HEAD'), sendWebFile(res, WEB_FILES[path]!);
    if (path === '/health') return allow('GET', 'HEAD'), this.health(res);
    if (path === '/tokenize' || path === '/detokenize') {
      allow('POST');
      this.authorize(req);
      requireJson(req);
      const body = await readJsonBody(req, this.opts.maxBodyBytes ?? 4 << 20);
      return path === '/tokenize' ? this.tokenize(res, parseBody(tokenizeRequest, body)) : this.detokenize(res, parseBody(detokenizeRequest, body));
    }
    if (path === '/tokenizer_info') return allow('GET'), this.authorize(req), this.tokenizerInfo(res);
    if (!path.startsWith('/v1/')) {
      throw new RequestError(404, `no route ${path} (see GET /v1/models, POST /v1/chat/completions, POST /v1/completions, POST /tokenize, POST /detokenize, GET /tokenizer_info, GET /health)`, null, 'not_found');
    }
    this.authorize(req);
    if (path === '/v1/models') return allow('GET'), sendJson(res, 200, { object: 'list', data: [this.modelCard()] });
    if (path.startsWith('/v1/models/')) {
      allow('GET');
      const id = decodePath(path.slice('/v1/models/'.length));
      if (id !== this.modelId) throw modelNotFound(id, this.modelId);
      return sendJson(res, 200, this.modelCard());
    }
    if (path === '/v1/chat/completions') {
      allow('POST');
      requireJson(req);
      const request = parseBody(chatRequest, await readJsonBody(req, this.opts.maxBodyBytes ?? 4 << 20));
      return this.complete(res, 'chat', request);
    }
    if (path === '/v1/completions') {
      allow('POST');
      requireJson(req);
      const request = parseBody(completionRequest, await readJsonBody(req, this.opts.maxBodyBytes ?? 4 << 20));
      return this.complete(res, 'text', request);
    }
    throw new RequestError(404, `no route ${path}`, null, 'not_found');
  }

  private authorize(req: IncomingMessage): void {
    const key = this.opts.apiKey;
    if (!key) return;
    const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
    const a = Buffer.from(given);
    const b = Buffer.from(key);
    if (a.length !== b.length || !timingSafeEqual(a, b)) {
      throw new RequestError(401, given ? 'incorrect API key' : 'missing API key: send "Authorization: Bearer <key>"', null, 'invalid_api_key');
    }
  }

  private health(res: ServerResponse): void {
    const { state, info, failure, limits, load } = this.engine;
    const restarts = this.engine.restarts;
    if (state !== 'ready') {
      res.setHeader('Retry-After', '5');
      return sendJson(res, 503, { status: state === 'failed' ? 'error' : state, error: state === 'loading' ? null : (failure ?? null), restarts });
    }
    sendJson(res, 200, { status: 'ok', model: this.modelId, backend: info!.backend, running: load.running, waiting: load.waiting, restarts, ...limits });
  }

  /**
   * The token ids of a chat prompt (as /v1/chat/completions builds it) or a text; the web UI fits turns with it, and
   * lm-eval's remote tokenizer encodes with it. The answer is vLLM's TokenizeResponse {count, max_model_len, tokens,
   * token_strs?} (vllm/entrypoints/serve/tokenize/protocol.py) plus `context_length`, this server's earlier name.
   */
  private async tokenize(res: ServerResponse, request: TokenizeRequest): Promise<string> {
    const info = this.available(res);
    const ids = request.messages
      ? await this.encode({ kind: 'chat', messages: chatMessages({ messages: request.messages } as ChatRequest), addGenerationPrompt: request.add_generation_prompt ?? true }, 'messages', info)
      : await this.encode({ kind: 'text', text: request.prompt!, addSpecialTokens: request.add_special_tokens ?? true }, 'prompt', info);
    const tokenStrs = request.return_token_strs ? { token_strs: ids.map((id) => this.tokenizer.idToToken(id) ?? '') } : {};
    sendJson(res, 200, { count: ids.length, max_model_len: info.maxPositionEmbeddings, tokens: ids, ...tokenStrs, context_length: info.maxPositionEmbeddings });
    return `${ids.length} tokens`;
  }

  /** vLLM's `POST /detokenize`: {tokens} → {prompt}, special tokens kept (lm-eval's RemoteTokenizer.decode). */
  private detokenize(res: ServerResponse, request: DetokenizeRequest): string {
    const { maxPositionEmbeddings: context, vocabSize } = this.available(res);
    const { tokens } = request;
    if (tokens.length > context) throw new RequestError(400, `tokens: at most ${context} ids (the model's context), got ${tokens.length}`, 'tokens');
    const bad = tokens.findIndex((id) => id >= vocabSize);
    if (bad >= 0) throw new RequestError(400, `tokens[${bad}]: token id ${tokens[bad]} is out of range (the vocabulary has ${vocabSize} ids)`, `tokens[${bad}]`);
    sendJson(res, 200, { prompt: this.tokenizer.decode(tokens) });
    return `${tokens.length} tokens`;
  }

  /**
   * vLLM's `GET /tokenizer_info`: the tokenizer's settings as tokenizer_config.json names them, plus tokenizer_class
   * (vllm/entrypoints/serve/tokenize/serving.py, TokenizerInfo). lm-eval takes the server's tokenizer when this has an
   * `eos_token` key and /tokenize answers (lm_eval/utils.py, check_remote_tokenizer_support).
   */
  private tokenizerInfo(res: ServerResponse): void {
    const info = this.available(res);
    const t = this.tokenizer;
    sendJson(res, 200, {
      tokenizer_class: 'PreTrainedTokenizerFast', // what transformers builds from a tokenizer.json
      bos_token: t.bosToken, eos_token: t.eosToken, pad_token: t.padToken,
      add_bos_token: t.addBosToken, add_eos_token: t.addEosToken, clean_up_tokenization_spaces: t.cleanUpTokenizationSpaces,
      model_max_length: info.maxPositionEmbeddings,
      ...(t.chatTemplate ? { chat_template: t.chatTemplate } : {}),
    });
  }

  private modelCard() {
    const info = this.engine.info;
    return {
      id: this.modelId,
      object: 'model',
      created: this.created,
      owned_by: 'olmoe',
      // extension: what a client needs to read routing
      meta: info && { context_length: info.maxPositionEmbeddings, vocab_size: info.vocabSize, layers: info.layers, experts: info.experts, top_k: info.topK, backend: info.backend },
    };
  }

  /**
   * Ids of a chat or a text, tokenized on the tokenizer thread. A prompt with more characters than the context can
   * hold at `charsPerToken` each is refused before tokenizing, so its size bounds the tokenizer's time and memory.
   */
  private async encode(input: TokenizeInput, param: string, info: ModelInfo): Promise<number[]> {
    const chars = input.kind === 'chat' ? input.messages.reduce((sum, m) => sum + m.content.length, 0) : input.text.length;
    const limit = info.maxPositionEmbeddings * this.charsPerToken;
    if (chars > limit) {
      throw new RequestError(400, `${param}: the prompt has ${chars} characters; the model's context of ${info.maxPositionEmbeddings} tokens holds at most ${limit} (${this.charsPerToken} per token at most)`, param, 'context_length_exceeded');
    }
    try {
      return await this.prompts.encode(input);
    } catch (error) {
      if (error instanceof PromptError) throw new RequestError(400, error.message, param);
      throw new RequestError(503, `the prompt could not be tokenized: ${(error as Error).message}; retry`, null, 'unavailable');
    }
  }

  /** A completions prompt's ids, one list per choice: texts tokenized, ids checked against the vocabulary. */
  private async promptIds(prompts: Prompts, info: ModelInfo): Promise<number[][]> {
    if ('ids' in prompts) {
      for (const [i, ids] of prompts.ids.entries()) {
        const bad = ids.findIndex((id) => id >= info.vocabSize);
        const param = promptParam(prompts, i, bad);
        if (bad >= 0) throw new RequestError(400, `${param}: token id ${ids[bad]} is out of range (the vocabulary has ${info.vocabSize} ids)`, param);
      }
      return prompts.ids;
    }
    const ids: number[][] = [];
    for (const [i, text] of prompts.texts.entries()) ids.push(await this.encode({ kind: 'text', text }, promptParam(prompts, i), info));
    return ids;
  }

  /** What the engine runs for a request, and the reply that collects it. */
  private async work(res: ServerResponse, kind: 'chat' | 'text', request: ChatRequest | CompletionRequest, info: ModelInfo): Promise<{ job: JobRequest; reply: Reply }> {
    const context = info.maxPositionEmbeddings;
    const common = { model: this.modelId, stream: request.stream ?? false, withUsage: request.stream_options?.include_usage ?? false, routing: request.routing ?? false, tokenText: this.tokenText };
    if (kind === 'chat') {
      const ids = await this.encode({ kind: 'chat', messages: chatMessages(request as ChatRequest) }, 'messages', info);
      const job = { prompts: [ids], options: jobOptions(request, ids.length, context), routing: request.routing ?? false };
      return { job, reply: new Reply(res, { ...common, kind, logprobs: false, prompts: job.prompts }) };
    }
    const completion = request as CompletionRequest;
    const ids = await this.promptIds(completion.prompt, info);
    const job = completionJob(completion, ids, { context, maxPromptTokens: this.opts.maxPromptTokens ?? 65_536 });
    const echoTexts = completion.echo ? ('texts' in completion.prompt ? completion.prompt.texts : ids.map((list) => this.tokenizer.decode(list))) : undefined;
    return { job, reply: new Reply(res, { ...common, kind, logprobs: completion.logprobs != null, echoTexts, prompts: ids }) };
  }

  private async complete(res: ServerResponse, kind: 'chat' | 'text', request: ChatRequest | CompletionRequest): Promise<string> {
    if (request.model !== this.modelId) throw modelNotFound(request.model, this.modelId);
    const info = this.available(res);
    let gone = false;
    res.once('close', () => (gone = true));
    const { job, reply } = await this.work(res, kind, request, info);
    if (gone) return 'client went away while the prompt was tokenized';
    this.available(res); // the engine may have restarted meanwhile
    return this.run(res, job, reply);
  }

  /** Submit the job and feed its events to the reply until its last choice is done, it fails, or the client leaves. */
  private run(res: ServerResponse, request: JobRequest, reply: Reply): Promise<string> {
    return new Promise<string>((resolve) => {
      let finished = false;
      const end = (note: string) => {
        finished = true;
        resolve(note);
      };
      const tokens = { prompt: 0, completion: 0 };
      let job: Job;
      try {
        job = this.engine.submit(request, {
          onToken: (token) => reply.token(token),
          onPrompt: (choice, logprobs) => reply.prompt(choice, logprobs),
          onDone: (choice, summary) => {
            reply.finish(choice, summary);
            tokens.prompt += summary.promptTokens;
            tokens.completion += summary.completionTokens;
            const batch = request.prompts.length > 1 ? `${request.prompts.length} prompts, ` : '';
            if (choice === request.prompts.length - 1) end(`${batch}${tokens.prompt}+${tokens.completion} tokens, ${summary.finishReason}`);
          },
          onError: (errorKind, message) => {
            if (errorKind === 'unavailable' && !res.headersSent) res.setHeader('Retry-After', '5');
            reply.fail(new RequestError(errorKind === 'input' ? 400 : errorKind === 'unavailable' ? 503 : 500, message, null, errorKind === 'unavailable' ? 'unavailable' : null));
            end(`failed: ${message}`);
          },
        });
      } catch (error) {
        if (!(error instanceof QueueFullError)) throw error;
        res.setHeader('Retry-After', '1');
        throw new RequestError(429, `the server is busy: ${this.engine.limits.parallel} requests are running and ${this.engine.limits.queue} waiting; retry shortly`, null, 'rate_limit_exceeded');
      }
      reply.begin();
      res.on('close', () => {
        if (finished) return;
        job.cancel();
        end('client went away');
      });
    });
  }

  /** The model's facts when the engine can take work; otherwise a 503 saying why. */
  private available(res: ServerResponse): ModelInfo {
    const { state, failure, info } = this.engine;
    if (state === 'ready') return info!;
    res.setHeader('Retry-After', '5');
    const why = state === 'loading' ? 'the model is still loading' : state === 'restarting' ? `the engine is restarting after it stopped (${failure})` : `the engine is not running: ${failure}`;
    throw new RequestError(503, `${why}; try again shortly`, null, 'unavailable');
  }
}

/**
 * The most prompt characters (UTF-16 units) one token can stand for: the longest vocabulary entry (byte-level
 * entries have one character per byte, and a character is at least one byte), times 3 because the NFC normalizer
 * of OLMo's tokenizer can compose up to three code points into one (a Hangul syllable from its jamo).
 */
function longestToken(tokenizer: OlmoeTokenizer): number {
  let longest = 1;
  for (let id = 0; id < tokenizer.vocabSize; id++) longest = Math.max(longest, tokenizer.idToToken(id)?.length ?? 0);
  return 3 * longest;
}

function decodePath(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new RequestError(400, `the path holds a malformed percent-escape: ${JSON.stringify(segment.slice(0, 100))}`, null, 'invalid_path');
  }
}

function modelNotFound(asked: string, served: string): RequestError {
  return new RequestError(404, `the model ${JSON.stringify(asked)} does not exist here; this server serves ${JSON.stringify(served)}`, 'model', 'model_not_found');
}

function sendWebFile(res: ServerResponse, name: string): void {
  const body = readFileSync(new URL(name, webDir));
  res.writeHead(200, { 'Content-Type': CONTENT_TYPES[name.split('.').pop()!]!, 'Content-Length': body.length, 'Cache-Control': 'no-cache' });
  res.end(body);
}
