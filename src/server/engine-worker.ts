/**
 * The engine thread: loads the model once, then runs the generations the HTTP thread sends as one continuous
 * batch: each step samples a token for every running generation and runs all their new tokens (and the prompts
 * of generations that just joined) through the model in one batched forward pass, so the weights are read once per
 * step for all clients. Between steps the thread takes messages, so a new job joins and an abort lands within a step.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createBackend, GenerationBatch, InputError, loadPretrained, OlmoeError, type GenerationRun, type Pretrained, type RoutingEvent } from '../index.js';
import type { EngineSpec, FromWorker, JobRequest, ToWorker, TokenRouting } from './protocol.js';

const port = parentPort!;
const send = (message: FromWorker) => port.postMessage(message);

interface Running {
  job: number;
  run: GenerationRun;
  routing: RoutingRecorder | undefined;
  completionTokens: number;
}

async function main(spec: EngineSpec): Promise<void> {
  let pretrained: Pretrained;
  try {
    const backend = createBackend(spec.backend, { threads: spec.threads });
    pretrained = await loadPretrained(spec.model, {
      backend,
      revision: spec.revision,
      onLoadProgress: ({ loadedBytes, totalBytes }) => send({ type: 'progress', loadedBytes, totalBytes }),
    });
  } catch (error) {
    send({ type: 'failed', message: error instanceof Error ? error.message : String(error), code: error instanceof OlmoeError ? error.code : undefined });
    return;
  }
  const engine = new BatchEngine(pretrained, spec.prefillChunk ?? 64);
  port.on('message', (message: ToWorker) => {
    if (message.type === 'abort') engine.abort(message.job);
    else if (message.type === 'stop') {
      engine.abortAll();
      port.close(); // nothing left to wait for: the thread ends once the current step is done
    } else engine.start(message.job, message.request);
  });
  const { config, backend } = pretrained.model;
  send({
    type: 'ready',
    info: { maxPositionEmbeddings: config.maxPositionEmbeddings, vocabSize: config.vocabSize, layers: config.numLayers, experts: config.numExperts, topK: config.numExpertsPerTok, backend: backend.name },
  });
}

class BatchEngine {
  private readonly batch: GenerationBatch;
  private readonly jobs = new Map<number, Running>();
  private readonly byRun = new Map<GenerationRun, Running>();
  private looping = false;

  constructor(pretrained: Pretrained, prefillChunk: number) {
    this.batch = new GenerationBatch(pretrained, { prefillChunk });
  }

  start(job: number, request: JobRequest): void {
    const routing = request.routing ? new RoutingRecorder(request.promptIds.length) : undefined;
    let run: GenerationRun;
    try {
      run = this.batch.add(request.promptIds, { ...request.options, observer: routing?.observe });
    } catch (error) {
      return this.failed(job, error);
    }
    const running = { job, run, routing, completionTokens: 0 };
    this.jobs.set(job, running);
    this.byRun.set(run, running);
    if (run.finished) this.finish(running); // nothing to generate (no room left, or max 0)
    else if (!this.looping) void this.loop();
  }

  abort(job: number): void {
    const running = this.jobs.get(job);
    if (!running) return;
    this.batch.remove(running.run);
    this.forget(running);
    send({ type: 'aborted', job });
  }

  abortAll(): void {
    for (const running of [...this.jobs.values()]) this.abort(running.job);
  }

  private async loop(): Promise<void> {
    this.looping = true;
    while (this.batch.size > 0) {
      let results: ReturnType<GenerationBatch['step']>;
      try {
        results = this.batch.step();
      } catch (error) {
        for (const running of [...this.jobs.values()]) {
          this.batch.remove(running.run);
          this.forget(running);
          this.failed(running.job, error);
        }
        break;
      }
      for (const { run, event } of results) {
        const running = this.byRun.get(run);
        if (!running) continue;
        if (event?.id != null) running.completionTokens++;
        if (event) send({ type: 'token', job: running.job, id: event.id, text: event.text, routing: running.routing?.take() });
      }
      for (const running of [...this.jobs.values()]) if (running.run.finished) this.finish(running);
      await new Promise((resolve) => setImmediate(resolve)); // take messages: new jobs, aborts
    }
    this.looping = false;
  }

  private finish(running: Running): void {
    const { job, run } = running;
    const tail = run.flush();
    if (tail) send({ type: 'token', job, id: null, text: tail.text });
    const { finishReason, promptTokens, seed, prefillMs, decodeMs } = run.result();
    send({ type: 'done', job, summary: { finishReason, promptTokens, completionTokens: running.completionTokens, seed, prefillMs, decodeMs } });
    this.forget(running);
  }

  private forget(running: Running): void {
    this.jobs.delete(running.job);
    this.byRun.delete(running.run);
  }

  private failed(job: number, error: unknown): void {
    const known = error instanceof InputError;
    send({ type: 'error', job, name: known ? 'InputError' : error instanceof Error ? error.name : 'Error', message: error instanceof Error ? error.message : String(error) });
  }
}

/**
 * Collects the routing of each generated token: the observer fires once per layer per forward pass; the prompt's
 * pass comes first (skipped), then one single-token pass per generated token, finished before its event is sent.
 */
class RoutingRecorder {
  private current: TokenRouting = { experts: [], weights: [] };

  constructor(private readonly promptTokens: number) {}

  readonly observe = (event: RoutingEvent): void => {
    if (event.start < this.promptTokens) return; // the prompt's own pass
    const { topK: k, tokens } = event;
    const last = (tokens - 1) * k;
    this.current.experts[event.layer] = Array.from(event.expertIds.subarray(last, last + k));
    this.current.weights[event.layer] = Array.from(event.weights.subarray(last, last + k), (w) => Math.round(w * 1e4) / 1e4);
  };

  take(): TokenRouting | undefined {
    const taken = this.current;
    this.current = { experts: [], weights: [] };
    return taken.experts.length > 0 ? taken : undefined;
  }
}

await main(workerData as EngineSpec);
