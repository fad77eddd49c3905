/**
 * Messages between the HTTP thread and the engine worker. The HTTP thread tokenizes and validates; the worker
 * owns the model and runs generations (several interleaved token by token), streaming events back.
 */
import type { ErrorCode, FinishReason, GenerateOptions, KVCacheType, TokenLogprob } from '../index.js';

/** How the worker loads its model (what `olmoe serve` was given). */
export interface EngineSpec {
  model: string;
  backend?: string;
  threads?: number;
  revision?: string;
  /** KV cache storage (default f16). */
  kvCache?: KVCacheType;
  /** Prompt tokens per step while other requests generate (chunked prefill). */
  prefillChunk?: number;
  /** A LoRA adapter folder merged into the model at load. */
  adapter?: string;
  /**
   * Generations in the warm-up batch run after the load, before the engine reports ready, on the native backend
   * (engine-worker.ts warmUp; the server's default: its `parallel`; 0: none).
   */
  warmup?: number;
}

/** The sampling settings of one request, already validated: the library's options that cross the thread boundary. */
export type JobOptions = Pick<GenerateOptions, 'greedy' | 'temperature' | 'topK' | 'topP' | 'minP' | 'repetitionPenalty' | 'seed' | 'stopStrings' | 'ignoreEos'> & {
  maxNewTokens: number;
};

export interface JobRequest {
  /** One prompt per choice, answered one after another in this job's slot (choice i is prompts[i]). */
  prompts: number[][];
  options: JobOptions;
  /** Return the routing (top-k experts and weights per layer) of every generated token. */
  routing: boolean;
  /** Log-probabilities of each token with this many most likely alternatives (OpenAI's `logprobs: N`); absent: none. */
  logprobs?: number;
  /** Score each prompt teacher-forced first and report its tokens' log-probabilities (OpenAI's `echo` with `logprobs`). */
  echo?: boolean;
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
  /** The sampler's seed; null when nothing was sampled (max_tokens 0). */
  seed: number | null;
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
  /** How long the warm-up batch took (absent when there was none). */
  warmupMs?: number;
}

/** `stop`: drop every generation and let the thread end, between two steps (never inside a native call). */
export type ToWorker = { type: 'generate'; job: number; request: JobRequest } | { type: 'abort'; job: number } | { type: 'stop' };

export type FromWorker =
  | { type: 'progress'; loadedBytes: number; totalBytes: number }
  | { type: 'ready'; info: ModelInfo }
  | { type: 'failed'; message: string; code?: ErrorCode } // the model could not be loaded (code: an OlmoeError's)
  // `eos`: the end-of-sequence token that ended the choice, sent for its log-probabilities only (no text, not counted)
  | { type: 'token'; job: number; choice: number; id: number | null; text: string; routing?: TokenRouting; logprob?: TokenLogprob; eos?: true }
  | { type: 'prompt'; job: number; choice: number; logprobs: TokenLogprob[] } // echo: the prompt's tokens 1 … T-1 scored
  | { type: 'done'; job: number; choice: number; summary: JobSummary } // the job ends with its last choice's
  | { type: 'aborted'; job: number }
  | { type: 'error'; job: number; name: string; message: string };
