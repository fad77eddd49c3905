/**
 * The HTTP thread's handle on the engine worker: starts it, admits jobs (a bounded number run at once, a bounded
 * number wait), routes the worker's events to each job's handlers and frees a slot when the worker says the
 * job is over — never earlier, so a cancelled job cannot overlap the next one's slot.
 */
import { Worker } from 'node:worker_threads';
import { OlmoeError } from '../index.js';
import type { EngineSpec, FromWorker, JobRequest, JobSummary, ModelInfo, TokenRouting } from './protocol.js';

export interface JobHandlers {
  onToken(id: number | null, text: string, routing: TokenRouting | undefined): void;
  onDone(summary: JobSummary): void;
  /** The job failed: `input` errors are the request's fault (400), others the server's (500). */
  onError(kind: 'input' | 'internal', message: string): void;
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

export class Engine {
  state: 'loading' | 'ready' | 'failed' = 'loading';
  info: ModelInfo | undefined;
  failure: string | undefined;
  readonly ready: Promise<ModelInfo>;
  private readonly worker: Worker;
  private readonly running = new Map<number, Entry>();
  private readonly waiting: Entry[] = [];
  private nextId = 1;

  constructor(
    spec: EngineSpec,
    readonly limits: EngineLimits,
    onProgress?: (loadedBytes: number, totalBytes: number) => void,
  ) {
    this.worker = new Worker(new URL('./engine-worker.js', import.meta.url), { workerData: spec });
    this.ready = new Promise<ModelInfo>((resolve, reject) => {
      this.worker.on('message', (message: FromWorker) => {
        if (message.type === 'progress') onProgress?.(message.loadedBytes, message.totalBytes);
        else if (message.type === 'ready') {
          this.state = 'ready';
          this.info = message.info;
          resolve(message.info);
        } else if (message.type === 'failed') {
          this.fail(message.message);
          reject(message.code ? new OlmoeError(message.code, message.message) : new Error(message.message));
        } else this.route(message);
      });
      const stopped = (why: string) => {
        const wasLoading = this.state === 'loading';
        this.fail(why);
        if (wasLoading) reject(new Error(why));
      };
      this.worker.on('error', (error) => stopped(`the engine stopped: ${error.message}`));
      this.worker.on('exit', (code) => stopped(`the engine exited (code ${code})`));
    });
    this.ready.catch(() => {}); // observed through `state`; callers that await it see the error
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

  async close(): Promise<void> {
    this.state = 'failed';
    this.failure = 'the server is shutting down';
    await this.worker.terminate();
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
    if (message.type === 'token') {
      if (live) entry.handlers.onToken(message.id, message.text, message.routing);
      return;
    }
    this.running.delete(message.job);
    if (live && message.type === 'done') entry.handlers.onDone(message.summary);
    else if (live && message.type === 'error') entry.handlers.onError(message.name === 'InputError' ? 'input' : 'internal', message.message);
    else if (live && message.type === 'aborted') entry.handlers.onError('internal', 'generation aborted');
    this.startWaiting();
  }

  private startWaiting(): void {
    while (this.running.size < this.limits.parallel && this.waiting.length > 0) this.start(this.waiting.shift()!);
  }

  private fail(why: string): void {
    if (this.state === 'failed') return;
    this.state = 'failed';
    this.failure = why;
    for (const entry of [...this.running.values(), ...this.waiting]) if (!entry.cancelled) entry.handlers.onError('internal', why);
    this.running.clear();
    this.waiting.length = 0;
  }
}
