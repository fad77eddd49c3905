/**
 * Routing traces: what the router decided for every token of a corpus, per layer, with the tokens around it.
 * The analysis functions depend only on this record, never on the model (ARCHITECTURE.md, "Routing as data").
 * In memory a trace is a header plus a sequence of columnar chunks; on disk, an Apache Arrow IPC file
 * (trace-file.ts) with the header in its schema metadata.
 */

export const TRACE_VERSION = 1;

/** The model a trace was recorded with: analyses check that traces they combine come from compatible models. */
export interface TraceModel {
  /** What the user named (folder, file or hub id). */
  name: string;
  layers: number;
  experts: number;
  topK: number;
  vocabSize: number;
  /** Hash of the config and of a sample of every weight tensor: equal for the same checkpoint, different otherwise. */
  fingerprint: string;
}

export interface TraceHeader {
  version: number;
  model: TraceModel;
  /** Domain names; chunks refer to them by index. */
  domains: string[];
  /** Whether chunks carry the full router probabilities (`probs`). */
  withProbs: boolean;
}

/**
 * N consecutive tokens of the trace. Per-token columns have length N; routing columns are token-major:
 * experts[(t·L + l)·K + k] is the k-th chosen expert (by weight, descending) of token t in layer l.
 */
export interface TraceChunk {
  size: number;
  /** Document index, global in the trace (documents are not split across traces, but may span chunks). */
  document: Int32Array;
  /** Position of the token in its document. */
  position: Int32Array;
  /** Index into TraceHeader.domains. */
  domain: Int32Array;
  /** The input token id. */
  input: Int32Array;
  /** The ground-truth next token id; −1 for the last token of a document. */
  target: Int32Array;
  /** The model's most likely next token (argmax of the logits). */
  predicted: Int32Array;
  /** [N, L, K] chosen expert ids. */
  experts: Uint16Array;
  /** [N, L, K] routing weights of the chosen experts. */
  weights: Float32Array;
  /** [N, L, E] router probabilities (softmax over all experts), when the header says withProbs. */
  probs?: Float32Array;
}

/** A trace to analyse: its header and its chunks, read once each time it is iterated (bounded memory). */
export interface Trace {
  header: TraceHeader;
  chunks(): Iterable<TraceChunk>;
}

/** A trace held in memory (built by hand in tests, or collected from a recorder). */
export function memoryTrace(header: TraceHeader, chunks: readonly TraceChunk[]): Trace {
  return { header, chunks: () => chunks };
}
