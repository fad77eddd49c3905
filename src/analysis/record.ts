/**
 * Recording routing traces: run a model over documents (teacher forcing, windows of at most `maxLength` tokens)
 * and write, per token, its ids and each layer's top-k experts and weights (optionally all router probabilities)
 * to a TraceWriter. Memory stays bounded by one window plus one part, whatever the input size.
 */
import { InputError } from '../core/errors.js';
import { modelFingerprint } from '../model/fingerprint.js';
import type { OlmoeModel, RoutingEvent } from '../model/olmoe.js';
import type { OlmoeTokenizer } from '../tokenizer/tokenizer.js';
import type { TraceChunk, TraceModel } from './trace.js';
import type { TraceWriter } from './trace-file.js';

export interface TraceDocument {
  /** Text to tokenize, or ids already tokenized. */
  text?: string;
  ids?: readonly number[];
  domain: string;
}

export interface RecordProgress {
  documents: number;
  tokens: number;
  /** Input bytes consumed, when documents come from files. */
  bytes?: number;
}

export interface RecordOptions {
  /** Longest forward pass; longer documents are cut into windows (each attends only within itself). Default 512. */
  maxLength?: number;
  /** Stop after this many documents / tokens (this run). */
  maxDocuments?: number;
  maxTokens?: number;
  onProgress?: (progress: RecordProgress) => void;
}

export function traceModel(name: string, path: string, model: OlmoeModel): TraceModel {
  const { numLayers, numExperts, numExpertsPerTok, vocabSize } = model.config;
  return { name, layers: numLayers, experts: numExperts, topK: numExpertsPerTok, vocabSize, fingerprint: modelFingerprint(path) };
}

/** Record `documents` into `writer`, skipping the ones a resumed trace already holds. */
export async function recordTrace(
  lm: { model: OlmoeModel; tokenizer: OlmoeTokenizer },
  documents: AsyncIterable<TraceDocument & { bytes?: number }>,
  writer: TraceWriter,
  opts: RecordOptions = {},
): Promise<RecordProgress> {
  const maxLength = Math.min(opts.maxLength ?? 512, lm.model.config.maxPositionEmbeddings);
  if (!(maxLength >= 1)) throw new InputError(`max length ${opts.maxLength} must be at least 1 token`);
  const skip = writer.documentsDone;
  const progress: RecordProgress = { documents: 0, tokens: 0, bytes: 0 };
  let index = 0;
  for await (const document of documents) {
    progress.bytes = document.bytes ?? progress.bytes;
    const number = index++;
    if (number < skip) continue;
    if ((opts.maxDocuments !== undefined && progress.documents >= opts.maxDocuments) || (opts.maxTokens !== undefined && progress.tokens >= opts.maxTokens)) break;
    const ids = document.ids ?? lm.tokenizer.encode(document.text ?? '');
    const domain = writer.domainIndex(document.domain);
    for (let start = 0; start < ids.length; start += maxLength) {
      writer.append(traceWindow(lm.model, ids, start, Math.min(ids.length, start + maxLength), number, domain, writer.index.withProbs));
      await new Promise((resolve) => setImmediate(resolve));
    }
    writer.endDocument();
    progress.documents++;
    progress.tokens += ids.length;
    opts.onProgress?.(progress);
  }
  writer.flush();
  return progress;
}

/** One forward pass over ids[start, end) of a document → its chunk. */
function traceWindow(model: OlmoeModel, ids: readonly number[], start: number, end: number, document: number, domain: number, withProbs: boolean): TraceChunk {
  const { numLayers: L, numExpertsPerTok: K, numExperts: E, vocabSize: V } = model.config;
  const n = end - start;
  const experts = new Uint16Array(n * L * K);
  const weights = new Float32Array(n * L * K);
  const probs = withProbs ? new Float32Array(n * L * E) : undefined;
  const observe = (event: RoutingEvent) => {
    const l = event.layer;
    for (let t = 0; t < n; t++) {
      for (let k = 0; k < K; k++) {
        experts[(t * L + l) * K + k] = event.expertIds[t * K + k]!;
        weights[(t * L + l) * K + k] = event.weights[t * K + k]!;
      }
      probs?.set(event.probs.subarray(t * E, (t + 1) * E), (t * L + l) * E);
    }
  };
  const logits = model.backend.toFloat32(model.forward(Int32Array.from(ids.slice(start, end)), { observer: observe }));
  const predicted = new Int32Array(n);
  for (let t = 0; t < n; t++) {
    let best = 0;
    for (let v = 1; v < V; v++) if (logits[t * V + v]! > logits[t * V + best]!) best = v;
    predicted[t] = best;
  }
  return {
    size: n,
    document: new Int32Array(n).fill(document),
    position: Int32Array.from({ length: n }, (_, t) => start + t),
    domain: new Int32Array(n).fill(domain),
    input: Int32Array.from(ids.slice(start, end)),
    target: Int32Array.from({ length: n }, (_, t) => (start + t + 1 < ids.length ? ids[start + t + 1]! : -1)),
    predicted,
    experts,
    weights,
    probs,
  };
}
