/**
 * The engine thread: loads the model once, then runs the generations the HTTP thread sends. Several run at once,
 * interleaved token by token (each generation yields to the event loop between tokens), so every client streams
 * and an abort message lands between two tokens.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { AbortError, createBackend, OlmoeError, generate, InputError, loadPretrained, type Pretrained, type RoutingEvent } from '../index.js';
import type { EngineSpec, FromWorker, JobRequest, ToWorker, TokenRouting } from './protocol.js';

const port = parentPort!;
const send = (message: FromWorker) => port.postMessage(message);
const running = new Map<number, AbortController>();

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
  const { config, backend } = pretrained.model;
  port.on('message', (message: ToWorker) => {
    if (message.type === 'abort') running.get(message.job)?.abort();
    else void run(pretrained, message.job, message.request);
  });
  send({
    type: 'ready',
    info: { maxPositionEmbeddings: config.maxPositionEmbeddings, vocabSize: config.vocabSize, layers: config.numLayers, experts: config.numExperts, topK: config.numExpertsPerTok, backend: backend.name },
  });
}

async function run(pretrained: Pretrained, job: number, request: JobRequest): Promise<void> {
  const controller = new AbortController();
  running.set(job, controller);
  const routing = request.routing ? new RoutingRecorder(request.promptIds.length) : undefined;
  try {
    const iterator = generate(pretrained, request.promptIds, { ...request.options, signal: controller.signal, observer: routing?.observe });
    let completionTokens = 0;
    for (;;) {
      const step = await iterator.next();
      if (step.done) {
        const { finishReason, promptTokens, seed, prefillMs, decodeMs } = step.value;
        send({ type: 'done', job, summary: { finishReason, promptTokens, completionTokens, seed, prefillMs, decodeMs } });
        break;
      }
      const { id, text } = step.value;
      if (id !== null) completionTokens++;
      send({ type: 'token', job, id, text, routing: id === null ? undefined : routing?.take() });
    }
  } catch (error) {
    if (error instanceof AbortError) send({ type: 'aborted', job });
    else {
      const known = error instanceof InputError;
      send({ type: 'error', job, name: known ? 'InputError' : error instanceof Error ? error.name : 'Error', message: error instanceof Error ? error.message : String(error) });
    }
  } finally {
    running.delete(job);
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
