/**
 * Messages between the HTTP thread and the engine worker. The HTTP thread tokenizes and validates; the worker
 * owns the model and runs generations (several interleaved token by token), streaming events back.
 */
import type { ErrorCode, FinishReason, GenerateOptions } from '../index.js';

/** How the worker loads its model (what `olmoe serve` was given). */
export interface EngineSpec {
  model: string;
  backend?: string;
  threads?: number;
  revision?: string;
  /** Prompt tokens per step while other requests generate (chunked prefill). */
  prefillChunk?: number;
}

/** The sampling settings of one request, already validated: the library's options that cross the thread boundary. */
export type JobOptions = Pick<GenerateOptions, 'greedy' | 'temperature' | 'topK' | 'topP' | 'minP' | 'repetitionPenalty' | 'seed' | 'stopStrings' | 'ignoreEos'> & {
  maxNewTokens: number;
};

export interface JobRequest {
  promptIds: number[];
  options: JobOptions;
  /** Return the routing (top-k experts and weights per layer) of every generated token. */
  routing: boolean;
}

/** Top-k experts and their weights per layer for one token: experts[layer][k], weights[layer][k]. */
export interface TokenRouting {
  experts: number[][];
  weights: number[][];
}

export interface JobSummary {
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  seed: number;
  prefillMs: number;
  decodeMs: number;
}

export interface ModelInfo {
  maxPositionEmbeddings: number;
  vocabSize: number;
  layers: number;
  experts: number;
  topK: number;
  backend: string;
}

/** `stop`: drop every generation and let the thread end, between two steps (never inside a native call). */
export type ToWorker = { type: 'generate'; job: number; request: JobRequest } | { type: 'abort'; job: number } | { type: 'stop' };

export type FromWorker =
  | { type: 'progress'; loadedBytes: number; totalBytes: number }
  | { type: 'ready'; info: ModelInfo }
  | { type: 'failed'; message: string; code?: ErrorCode } // the model could not be loaded (code: an OlmoeError's)
  | { type: 'token'; job: number; id: number | null; text: string; routing?: TokenRouting }
  | { type: 'done'; job: number; summary: JobSummary }
  | { type: 'aborted'; job: number }
  | { type: 'error'; job: number; name: string; message: string };
