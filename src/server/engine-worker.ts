/**
 * The engine thread: loads the model once, then runs the generations the HTTP thread sends as one continuous
 * batch: each step samples a token for every running generation and runs all their new tokens (and the prompts
 * of generations that just joined) through the model in one batched forward pass, so the weights are read once per
 * step for all clients. Between steps the thread takes messages, so a new job joins and an abort lands within a step.
 * A job's prompts (a batch of prompts in one request) run one after another; with `echo`, each prompt is first
 * scored teacher-forced, one chunk per step beside the batch, and its generation continues from that KV cache.
 */
import { parentPort, workerData } from 'node:worker_threads';
import {
  adapterPatch, createBackend, GenerationBatch, readPeftAdapter, InputError, loadPretrained, OlmoeError, PromptScorer,
  type GenerationRun, type KVCache, type Prefilled, type Pretrained, type RoutingEvent,
} from '../index.js';
import type { EngineSpec, FromWorker, JobRequest, JobSummary, ToWorker, TokenRouting } from './protocol.js';

const port = parentPort!;
const send = (message: FromWorker) => port.postMessage(message);

/** One job: which of its prompts runs now, and how (being scored, or generating). */
interface JobState {
  job: number;
  request: JobRequest;
  choice: number;
  scorer?: PromptScorer;
  /** The scored prompt's KV cache, which its generation goes on from: released when the prompt is answered or dropped. */
  scored?: KVCache;
  scoreMs: number;
  run?: GenerationRun;
  routing?: RoutingRecorder;
  completionTokens: number;
}

async function main(spec: EngineSpec): Promise<void> {
  let pretrained: Pretrained;
  try {
    const backend = createBackend(spec.backend, { threads: spec.threads });
    pretrained = await loadPretrained(spec.model, {
      backend,
      revision: spec.revision,
      patch: spec.adapter === undefined ? undefined : (config) => adapterPatch(readPeftAdapter(spec.adapter!, config)),
      kvCache: spec.kvCache,
      onLoadProgress: ({ loadedBytes, totalBytes }) => send({ type: 'progress', loadedBytes, totalBytes }),
    });
  } catch (error) {
    send({ type: 'failed', message: error instanceof Error ? error.message : String(error), code: error instanceof OlmoeError ? error.code : undefined });
    return;
  }
  const chunk = spec.prefillChunk ?? 64;
  let warmupMs: number | undefined;
  try {
    // the reference backend keeps no storage for reuse, and its passes over a full-size model take minutes
    if (spec.warmup && pretrained.model.backend.name === 'native') warmupMs = warmUp(pretrained, spec.warmup, chunk);
  } catch (error) {
    send({ type: 'failed', message: `the warm-up generation failed: ${error instanceof Error ? error.message : String(error)}`, code: error instanceof OlmoeError ? error.code : undefined });
    return;
  }
  const engine = new BatchEngine(pretrained, chunk);
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
    info: { maxPositionEmbeddings: config.maxPositionEmbeddings, vocabSize: config.vocabSize, layers: config.numLayers, experts: config.numExperts, topK: config.numExpertsPerTok, backend: backend.name, warmupMs },
  });
}

/** Prompt tokens of each warm-up generation. */
const WARMUP_PROMPT = 32;
/** Steps of the warm-up batch: its prompts, then decode steps. */
const WARMUP_STEPS = 3;

/**
 * One batch of `streams` generations of fixed token ids, run for a few steps before the first request, so that the
 * first requests find in place what a batch's first steps otherwise pay for: the memory of a prompt step's activations
 * and of each stream's KV cache faulted in (the native backend keeps both for reuse: training.ts, kv-pool.ts), and the
 * batch's step plans recorded. Each may run to the end of the context, as a request without max_tokens may, so that
 * its KV storage, released at the end, fits any later cache. On the virtual machine measured (AMD EPYC, OLMoE-1B-7B
 * Q4_0, 2 threads) a first step of 8 prompts faulted in ~30,000 pages without it (~0.3 s) and ~2,400 after it.
 * Returns its time (ms).
 */
function warmUp(pretrained: Pretrained, streams: number, chunk: number): number {
  const { config } = pretrained.model;
  const length = Math.min(WARMUP_PROMPT, config.maxPositionEmbeddings - WARMUP_STEPS);
  if (length < 1) return 0;
  const start = performance.now();
  const batch = new GenerationBatch(pretrained, { prefillChunk: chunk });
  const runs = Array.from({ length: streams }, (_, s) => {
    const prompt = Array.from({ length }, (_, i) => (1 + 7919 * i + 104_729 * s) % config.vocabSize);
    return batch.add(prompt, { maxNewTokens: config.maxPositionEmbeddings - length, greedy: true, ignoreEos: true });
  });
  for (let step = 0; step < WARMUP_STEPS && batch.size > 0; step++) batch.step();
  for (const run of runs) batch.remove(run);
  return performance.now() - start;
}

class BatchEngine {
  private readonly batch: GenerationBatch;
  private readonly jobs = new Map<number, JobState>();
  private readonly byRun = new Map<GenerationRun, JobState>();
  /** Jobs whose current prompt is being scored, served one chunk each in turn. */
  private readonly scoring: JobState[] = [];
  private looping = false;

  constructor(
    private readonly pretrained: Pretrained,
    private readonly chunk: number,
  ) {
    this.batch = new GenerationBatch(pretrained, { prefillChunk: chunk });
  }

  start(job: number, request: JobRequest): void {
    const state: JobState = { job, request, choice: 0, scoreMs: 0, completionTokens: 0 };
    this.jobs.set(job, state);
    this.startChoice(state);
    if (this.jobs.has(job) && !this.looping) void this.loop();
  }

  abort(job: number): void {
    const state = this.jobs.get(job);
    if (!state) return;
    this.forget(state);
    send({ type: 'aborted', job });
  }

  abortAll(): void {
    for (const state of [...this.jobs.values()]) this.abort(state.job);
  }

  /** Begin the job's current prompt: score it first (echo), or generate at once. */
  private startChoice(state: JobState): void {
    const { request, choice } = state;
    const promptIds = request.prompts[choice]!;
    if (!request.echo) return this.startRun(state);
    const context = this.pretrained.model.config.maxPositionEmbeddings;
    try {
      const capacity = Math.min(context, promptIds.length + request.options.maxNewTokens);
      state.scorer = new PromptScorer(this.pretrained.model, promptIds, { topLogprobs: request.logprobs ?? 0, chunk: this.chunk, capacity });
    } catch (error) {
      return this.failed(state, error);
    }
    this.scoring.push(state);
  }

  /** Generate for the current prompt, from the scorer's KV cache when it was scored. */
  private startRun(state: JobState, prefilled?: Prefilled): void {
    const { request } = state;
    const promptIds = request.prompts[state.choice]!;
    const routing = request.routing ? new RoutingRecorder(promptIds.length) : undefined;
    try {
      state.run = this.batch.add(promptIds, { ...request.options, logprobs: request.logprobs, observer: routing?.observe }, prefilled);
    } catch (error) {
      return this.failed(state, error);
    }
    state.routing = routing;
    state.completionTokens = 0;
    this.byRun.set(state.run, state);
    if (state.run.finished) this.finishChoice(state); // nothing to generate (no room left, or max 0)
  }

  private async loop(): Promise<void> {
    this.looping = true;
    while (this.batch.size > 0 || this.scoring.length > 0) {
      if (this.scoring.length > 0) this.scoreStep(this.scoring.shift()!);
      if (this.batch.size > 0) this.generateStep();
      await new Promise((resolve) => setImmediate(resolve)); // take messages: new jobs, aborts
    }
    this.looping = false;
  }

  /** One chunk of a prompt being scored; when the prompt is done, report it and go on to its generation. */
  private scoreStep(state: JobState): void {
    const scorer = state.scorer!;
    const started = performance.now();
    try {
      scorer.step();
    } catch (error) {
      return this.failed(state, error);
    }
    state.scoreMs += performance.now() - started;
    if (!scorer.done) return void this.scoring.push(state);
    state.scorer = undefined;
    state.scored = scorer.cache;
    send({ type: 'prompt', job: state.job, choice: state.choice, logprobs: scorer.logprobs });
    if (state.request.options.maxNewTokens === 0) return this.finishChoice(state);
    this.startRun(state, { cache: scorer.cache, logits: scorer.lastLogits! });
  }

  private generateStep(): void {
    let results: ReturnType<GenerationBatch['step']>;
    try {
      results = this.batch.step();
    } catch (error) {
      for (const state of [...this.byRun.values()]) this.failed(state, error);
      return;
    }
    for (const { run, event } of results) {
      const state = this.byRun.get(run);
      if (!state || !event) continue;
      if (event.id != null) state.completionTokens++;
      send({ type: 'token', job: state.job, choice: state.choice, id: event.id, text: event.text, routing: state.routing?.take(), logprob: event.logprob });
    }
    for (const state of [...this.byRun.values()]) if (state.run!.finished && this.jobs.has(state.job)) this.finishChoice(state);
  }

  /** The current prompt is answered: send what is left of it, then start the next prompt or end the job. */
  private finishChoice(state: JobState): void {
    const { job, choice, run } = state;
    const promptTokens = state.request.prompts[choice]!.length;
    let summary: JobSummary = { finishReason: 'length', promptTokens, completionTokens: 0, seed: null, prefillMs: state.scoreMs, decodeMs: 0 };
    if (run) {
      const tail = run.flush();
      if (tail) send({ type: 'token', job, choice, id: null, text: tail.text });
      if (run.eosLogprob) send({ type: 'token', job, choice, id: run.eosLogprob.id, text: '', logprob: run.eosLogprob, eos: true });
      const { finishReason, seed, prefillMs, decodeMs } = run.result();
      summary = { finishReason, promptTokens, completionTokens: state.completionTokens, seed, prefillMs: state.scoreMs + prefillMs, decodeMs };
      this.byRun.delete(run);
    }
    send({ type: 'done', job, choice, summary });
    state.scored?.release?.();
    Object.assign(state, { choice: choice + 1, run: undefined, routing: undefined, scored: undefined, scoreMs: 0 });
    if (state.choice < state.request.prompts.length) this.startChoice(state);
    else this.jobs.delete(job);
  }

  /** Drop a job wherever it is: the batch, the scoring turn, the job table. */
  private forget(state: JobState): void {
    if (state.run) {
      this.batch.remove(state.run);
      this.byRun.delete(state.run);
    }
    (state.scored ?? state.scorer?.cache)?.release?.();
    const at = this.scoring.indexOf(state);
    if (at >= 0) this.scoring.splice(at, 1);
    this.jobs.delete(state.job);
  }

  private failed(state: JobState, error: unknown): void {
    this.forget(state);
    const known = error instanceof InputError;
    send({ type: 'error', job: state.job, name: known ? 'InputError' : error instanceof Error ? error.name : 'Error', message: error instanceof Error ? error.message : String(error) });
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
