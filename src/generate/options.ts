/**
 * Resolving generation options, HF-style: what the caller sets wins, then the checkpoint's
 * generation_config.json, then transformers' defaults — greedy unless sampling is asked for, and when sampling
 * temperature 1, top-k 50, top-p 1. Setting any sampling knob (or a seed) asks for sampling; temperature 0 means greedy.
 */
import { parseKVCacheType, type KVCacheType } from '../core/backend.js';
import { InputError } from '../core/errors.js';
import { randomSeed } from '../core/rng.js';
import type { GenerationDefaults } from '../model/pretrained.js';
import { checkSamplingOptions, type SamplingOptions } from './sampling.js';

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens?: number; // default: generation_config max_new_tokens, else 128
  seed?: number;
  /** Token ids that end generation (not part of the output); default: the checkpoint's eos ids. */
  eosTokenIds?: readonly number[];
  ignoreEos?: boolean;
  stopStrings?: readonly string[];
  signal?: AbortSignal;
  /** false: recompute the whole sequence every step (slow; must give the same tokens). */
  useCache?: boolean;
  /** Routing of every forward pass: the prompt's tokens, then each generated token's, the last one included (with useCache false, the whole sequence each step). */
  observer?: import('../model/olmoe.js').RoutingObserver;
  /** Give each generated token its log-probability under the raw logits and this many most likely alternatives (OpenAI's `logprobs: N`). */
  logprobs?: number;
  /** KV cache storage of this generation (default: the model's, f16 unless loaded with another). */
  kvCache?: KVCacheType;
}

export interface ResolvedOptions extends Required<Omit<GenerateOptions, 'signal' | 'observer' | 'eosTokenIds' | 'logprobs' | 'kvCache'>> {
  kvCache: KVCacheType | undefined;
  eosTokenIds: readonly number[];
  signal: AbortSignal | undefined;
  observer: GenerateOptions['observer'];
  logprobs: number | undefined;
}

const SAMPLING_KNOBS = ['temperature', 'topK', 'topP', 'minP', 'seed'] as const;

export function resolveOptions(opts: GenerateOptions, defaults: GenerationDefaults | undefined, configEos: readonly number[]): ResolvedOptions {
  const samplingAsked = SAMPLING_KNOBS.some((knob) => opts[knob] !== undefined);
  const greedy = opts.temperature === 0 || (opts.greedy ?? (samplingAsked ? false : (defaults?.greedy ?? true)));
  const resolved: ResolvedOptions = {
    greedy,
    temperature: opts.temperature || defaults?.temperature || 1,
    topK: opts.topK ?? defaults?.topK ?? 50,
    topP: opts.topP ?? defaults?.topP ?? 1,
    minP: opts.minP ?? defaults?.minP ?? 0,
    repetitionPenalty: opts.repetitionPenalty ?? defaults?.repetitionPenalty ?? 1,
    maxNewTokens: opts.maxNewTokens ?? defaults?.maxNewTokens ?? 128,
    seed: opts.seed ?? randomSeed(),
    eosTokenIds: opts.ignoreEos ? [] : (opts.eosTokenIds ?? defaults?.eosTokenIds ?? configEos),
    ignoreEos: opts.ignoreEos ?? false,
    stopStrings: opts.stopStrings ?? [],
    useCache: opts.useCache ?? true,
    signal: opts.signal,
    observer: opts.observer,
    logprobs: opts.logprobs,
    kvCache: opts.kvCache === undefined ? undefined : parseKVCacheType(opts.kvCache, 'kvCache'),
  };
  check(resolved);
  return resolved;
}

function check(o: ResolvedOptions): void {
  // Greedy decoding ignores the sampling knobs, so a generation_config with temperature 0 must not fail it.
  if (!o.greedy) checkSamplingOptions(o);
  else checkSamplingOptions({ repetitionPenalty: o.repetitionPenalty });
  if (!Number.isSafeInteger(o.maxNewTokens) || o.maxNewTokens < 0) throw new InputError(`max new tokens ${o.maxNewTokens} is not a non-negative integer`);
  if (o.stopStrings.some((stop) => typeof stop !== 'string' || stop.length === 0)) throw new InputError('stop strings must be non-empty strings');
  if (o.logprobs !== undefined && !(Number.isSafeInteger(o.logprobs) && o.logprobs >= 0)) throw new InputError(`logprobs ${o.logprobs} is not a non-negative integer`);
}
