/**
 * One reusable worker thread with a per-case time limit and memory limits: V8 heap through resourceLimits,
 * and the whole process's resident size (typed-array allocations are outside the V8 heap) watched from this
 * thread, whose event loop stays free while the worker runs a case. A hang, an out-of-memory or a crash ends
 * the case with that outcome and the next case gets a fresh worker.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { CaseRequest, CaseResult } from './worker.js';

export interface PoolOptions {
  timeoutMs: number;
  /** V8 old-generation limit of the worker. */
  heapMb: number;
  /** Resident-size growth over the pool's start that counts as unbounded memory. */
  rssGrowthMb: number;
}

export type PoolResult = CaseResult | { id: string; outcome: 'timeout' | 'memory' | 'crash'; message: string; ms: number };

export class WorkerPool {
  private worker: Worker | undefined;
  private readonly scratch = mkdtempSync(join(tmpdir(), 'olmoe-fuzz-'));
  /** The worker being terminated after a failure: the next one starts when it is gone and its memory freed. */
  private dying: Promise<unknown> | undefined;
  restarts = 0;

  constructor(private readonly opts: PoolOptions) {}

  private start(): Worker {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), {
      workerData: { fuzzWorker: true, scratch: join(this.scratch, 'case') },
      // 1 MB of stack, like the CLI's main thread: a recursion that overflows there overflows here.
      resourceLimits: { maxOldGenerationSizeMb: this.opts.heapMb, maxYoungGenerationSizeMb: 32, stackSizeMb: 1 },
      stdout: true, // a case's console output stays out of the report
      stderr: true,
    });
    this.worker.stdout.resume();
    this.worker.stderr.resume();
    this.worker.unref();
    this.worker.on('error', () => {}); // a killed worker may still report its end; the case was already judged
    return this.worker;
  }

  async run(request: CaseRequest): Promise<PoolResult> {
    if (this.dying) await this.dying;
    this.dying = undefined;
    const worker = this.worker ?? this.start();
    const started = performance.now();
    const baseRss = process.memoryUsage.rss(); // per case: memory freed by a killed worker may not be returned at once
    return new Promise<PoolResult>((resolve) => {
      let settled = false;
      const finish = (result: PoolResult, kill: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        clearInterval(watch);
        worker.off('message', onMessage).off('error', onError).off('exit', onExit);
        if (kill) {
          this.worker = undefined;
          this.restarts++;
          this.dying = worker.terminate();
        }
        resolve(result);
      };
      const elapsed = () => performance.now() - started;
      const onMessage = (result: CaseResult) => finish(result, false);
      const onError = (error: Error & { code?: string }) =>
        finish({ id: request.id, outcome: error.code === 'ERR_WORKER_OUT_OF_MEMORY' ? 'memory' : 'crash', message: `${error.name}: ${error.message}`.slice(0, 400), ms: elapsed() }, true);
      const onExit = (code: number) => finish({ id: request.id, outcome: 'crash', message: `worker exited with code ${code}`, ms: elapsed() }, true);
      const timer = setTimeout(() => finish({ id: request.id, outcome: 'timeout', message: `no answer in ${this.opts.timeoutMs} ms`, ms: elapsed() }, true), this.opts.timeoutMs);
      const watch = setInterval(() => {
        const grown = (process.memoryUsage.rss() - baseRss) / 2 ** 20;
        if (grown > this.opts.rssGrowthMb) finish({ id: request.id, outcome: 'memory', message: `resident size grew by ${grown.toFixed(0)} MiB`, ms: elapsed() }, true);
      }, 20);
      worker.on('message', onMessage).on('error', onError).on('exit', onExit);
      worker.postMessage(request);
    });
  }

  async close(): Promise<void> {
    await this.worker?.terminate();
    this.worker = undefined;
    rmSync(this.scratch, { recursive: true, force: true });
  }
}
