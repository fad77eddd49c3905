/**
 * The HTTP thread's handle on the engine worker: starts it, admits jobs (a bounded number run at once, a bounded
 * number wait), routes the worker's events to each job's handlers and frees a slot when the worker says the
 * job is over — never earlier, so a cancelled job cannot overlap the next one's slot. A worker that dies after
 * it was ready (an addon crash, out of memory) is replaced: the jobs it held fail as `unavailable` (503), the
 * restart is logged, and new jobs are refused until the new worker has loaded the model.
 */
import { Worker } from 'node:worker_threads';
import { OlmoeError, type TokenLogprob } from '../index.js';
import type { EngineSpec, FromWorker, JobRequest, JobSummary, ModelInfo, ToWorker } from './protocol.js';

export type TokenMessage = Extract<FromWorker, { type: 'token' }>;

/** What a job reports, choice by choice (a job answers its prompts in order). */
export interface JobHandlers {
  onToken(token: TokenMessage): void;
  /** echo: the log-probabilities of the prompt's tokens after the first. */
  onPrompt?(choice: number, logprobs: TokenLogprob[]): void;
  /** One choice is complete; the job is over after its last choice's. */
  onDone(choice: number, summary: JobSummary): void;
  /** The job failed: `input` errors are the request's fault (400), `unavailable` the engine died (503), `internal` others (500). */
  onError(kind: 'input' | 'internal' | 'unavailable', message: string): void;
}

export interface Job {
  readonly id: number;
  /** Stop the job: a waiting job leaves the queue, a running one stops before its next token. No handler runs after this. */
  cancel(): void;
}

export interface EngineLimits {
  /** Jobs generating at once (interleaved token by token). */
  parallel: number;
  /** Jobs waiting for a slot; more than this are refused. */
  queue: number;
}

export class QueueFullError extends Error {}

interface Entry {
  id: number;
  request: JobRequest;
  handlers: JobHandlers;
  cancelled: boolean;
}

export interface EngineEvents {
  onProgress?: (loadedBytes: number, totalBytes: number) => void;
  /** Worker deaths and restarts. */
  log?: (line: string) => void;
}

export class Engine {
  /** `restarting`: the worker died and a new one is loading the model. */
  state: 'loading' | 'ready' | 'restarting' | 'failed' = 'loading';
  info: ModelInfo | undefined;
  failure: string | undefined;
  /** Resolves when the first worker has loaded the model. */
  readonly ready: Promise<ModelInfo>;
  /** Workers started after the first one died. */
  restarts = 0;
  private worker!: Worker;
  private closing = false;
  private readonly running = new Map<number, Entry>();
  private readonly waiting: Entry[] = [];
  private nextId = 1;

  constructor(
    private readonly spec: EngineSpec,
    readonly limits: EngineLimits,
    private readonly events: EngineEvents = {},
  ) {
    this.ready = this.spawn();
    this.ready.catch(() => {}); // observed through `state`; callers that await it see the error
  }

  /** The worker thread now running the model (tests terminate it to check the restart). */
  get thread(): Worker {
    return this.worker;
  }

  /** Start a worker; resolves when it has loaded the model, rejects when it cannot. */
  private spawn(): Promise<ModelInfo> {
    const worker = new Worker(new URL('./engine-worker.js', import.meta.url), { workerData: this.spec });
    this.worker = worker;
    return new Promise<ModelInfo>((resolve, reject) => {
      let loaded = false;
      worker.on('message', (message: FromWorker) => {
        if (message.type === 'progress') this.events.onProgress?.(message.loadedBytes, message.totalBytes);
        else if (message.type === 'ready') {
          loaded = true;
          this.state = 'ready';
          this.info = message.info;
          if (this.restarts > 0) this.events.log?.(`engine worker restarted (restart ${this.restarts}); serving again`);
          resolve(message.info);
        } else if (message.type === 'failed') {
          this.fail(message.message);
          reject(message.code ? new OlmoeError(message.code, message.message) : new Error(message.message));
        } else this.route(message);
      });
      let stopped = false;
      const stop = (why: string) => {
        if (stopped || this.closing) return;
        stopped = true;
        if (loaded) return this.restart(why);
        this.fail(why); // it died while loading: the model itself is the problem, so do not loop
        reject(new Error(why));
      };
      worker.on('error', (error) => stop(`the engine stopped: ${error.message}`));
      worker.on('exit', (code) => stop(`the engine exited (code ${code})`));
    });
  }

  /** The worker died after loading: answer its jobs (503), then load the model again in a new worker. */
  private restart(why: string): void {
    this.state = 'restarting';
    this.failure = why;
    this.restarts++;
    this.events.log?.(`engine worker died (${why}); ${this.running.size + this.waiting.length} request(s) answered 503; restarting (restart ${this.restarts})`);
    this.failAll('unavailable', `the engine restarted while this request was held (${why}); retry it`);
    this.spawn().catch(() => {}); // a failed reload sets state 'failed' through fail()
  }

  get load(): { running: number; waiting: number } {
    return { running: this.running.size, waiting: this.waiting.length };
  }

  /** Admit a job, or throw QueueFullError when every slot and queue place is taken. */
  submit(request: JobRequest, handlers: JobHandlers): Job {
    if (this.state !== 'ready') throw new Error(this.failure ?? 'the model is still loading');
    if (this.running.size >= this.limits.parallel && this.waiting.length >= this.limits.queue) throw new QueueFullError();
    const entry: Entry = { id: this.nextId++, request, handlers, cancelled: false };
    if (this.running.size < this.limits.parallel) this.start(entry);
    else this.waiting.push(entry);
    return { id: entry.id, cancel: () => this.cancel(entry) };
  }

  /**
   * Stop the worker. A loaded one is asked to stop between two steps: terminating a thread inside a native kernel
   * makes the addon's next N-API call abort the whole process. `terminate` remains the fallback.
   */
  async close(graceMs = 5000): Promise<void> {
    const wasReady = this.state === 'ready';
    this.closing = true;
    this.state = 'failed';
    this.failure = 'the server is shutting down';
    this.failAll('unavailable', this.failure);
    const worker = this.worker;
    if (wasReady) {
      const exited = new Promise<boolean>((resolve) => worker.once('exit', () => resolve(true)));
      worker.postMessage({ type: 'stop' } satisfies ToWorker);
      const timer = new Promise<boolean>((resolve) => setTimeout(resolve, graceMs, false).unref());
      if (await Promise.race([exited, timer])) return;
    }
    await worker.terminate();
  }

  private start(entry: Entry): void {
    this.running.set(entry.id, entry);
    this.worker.postMessage({ type: 'generate', job: entry.id, request: entry.request });
  }

  private cancel(entry: Entry): void {
    if (entry.cancelled) return;
    entry.cancelled = true;
    const at = this.waiting.indexOf(entry);
    if (at >= 0) this.waiting.splice(at, 1);
    else if (this.running.has(entry.id)) this.worker.postMessage({ type: 'abort', job: entry.id });
  }

  private route(message: Exclude<FromWorker, { type: 'progress' | 'ready' | 'failed' }>): void {
    const entry = this.running.get(message.job);
    if (!entry) return;
    const live = !entry.cancelled;
    if (message.type === 'token' || message.type === 'prompt') {
      if (!live) return;
      if (message.type === 'token') entry.handlers.onToken(message);
      else entry.handlers.onPrompt?.(message.choice, message.logprobs);
      return;
    }
    const last = message.type !== 'done' || message.choice === entry.request.prompts.length - 1;
    if (last) this.running.delete(message.job);
    if (live && message.type === 'done') entry.handlers.onDone(message.choice, message.summary);
    else if (live && message.type === 'error') entry.handlers.onError(message.name === 'InputError' ? 'input' : 'internal', message.message);
    else if (live && message.type === 'aborted') entry.handlers.onError('internal', 'generation aborted');
    if (last) this.startWaiting();
  }

  private startWaiting(): void {
    while (this.running.size < this.limits.parallel && this.waiting.length > 0) this.start(this.waiting.shift()!);
  }

  private fail(why: string): void {
    if (this.state === 'failed') return;
    if (this.restarts > 0) this.events.log?.(`engine worker could not load the model again (${why}); the server must be restarted`);
    this.state = 'failed';
    this.failure = why;
    this.failAll('unavailable', why);
  }

  private failAll(kind: 'internal' | 'unavailable', why: string): void {
    const held = [...this.running.values(), ...this.waiting];
    this.running.clear();
    this.waiting.length = 0;
    for (const entry of held) if (!entry.cancelled) entry.handlers.onError(kind, why);
  }
}
