/**
 * Multiple-choice scoring as lm-evaluation-harness and OLMES do it: every choice is a continuation of the
 * instance's context; its log-likelihood is compared raw, per token, per character, or as pointwise mutual
 * information (minus its log-likelihood after an unconditioned prompt such as "Answer:"). Accuracy comes with its
 * standard error; bits per byte of the gold continuation is reported beside it.
 */
import { InputError } from '../core/errors.js';
import type { OlmoeModel } from '../model/olmoe.js';
import type { OlmoeTokenizer } from '../tokenizer/tokenizer.js';
import { loglikelihood, type ScoreOptions } from './loglikelihood.js';

export const NORMALIZATIONS = ['none', 'per_token', 'per_char', 'pmi'] as const;
export type Normalization = (typeof NORMALIZATIONS)[number];

export interface ChoiceInstance {
  readonly id: string;
  /** The prompt the choices continue (few-shot examples included). */
  readonly context: string;
  /** Partial scoring (WinoGrande): choice k continues contexts[k] instead of `context`. */
  readonly contexts?: readonly string[];
  /** Continuations, e.g. " Paris" (cloze) or " A" (multiple-choice letters). */
  readonly choices: readonly string[];
  readonly gold: number;
  /** The prompt for pmi's unconditioned term (e.g. "Answer:"); needed only for 'pmi'. */
  readonly unconditionedContext?: string;
}

export interface ChoiceScores {
  readonly id: string;
  readonly gold: number;
  /** Per choice: Σ log p of its tokens given the context. */
  readonly logprobs: readonly number[];
  readonly tokens: readonly number[];
  /** Characters of the continuation string as scored (after moving the context's trailing spaces into it). */
  readonly chars: readonly number[];
  readonly bytes: readonly number[];
  /** Per choice: Σ log p given the unconditioned context (pmi), when asked for. */
  readonly unconditioned?: readonly number[];
  readonly isGreedy: readonly boolean[];
  /** Context tokens dropped from the left to fit the model. */
  readonly truncated: number;
}

export interface ScoredLanguageModel {
  readonly model: OlmoeModel;
  readonly tokenizer: OlmoeTokenizer;
}

/**
 * The harness's encoding of a (context, continuation) pair: trailing spaces of the context move to the
 * continuation, the pair is encoded whole, and the continuation's tokens are what follows the context's own
 * encoding. An empty context becomes the end-of-text token alone.
 */
export function encodePair(tokenizer: OlmoeTokenizer, context: string, continuation: string, prefixToken: number): { context: number[]; continuation: number[]; text: string } {
  const spaces = context.length - context.trimEnd().length;
  const [head, tail] = spaces > 0 ? [context.slice(0, -spaces), context.slice(-spaces) + continuation] : [context, continuation];
  if (head === '') return { context: [prefixToken], continuation: tokenizer.encode(tail, { addSpecialTokens: false }), text: tail };
  const whole = tokenizer.encode(head + tail, { addSpecialTokens: false });
  const contextIds = tokenizer.encode(head, { addSpecialTokens: false });
  return { context: contextIds, continuation: whole.slice(contextIds.length), text: tail };
}

/** Score every choice of every instance (with the pmi terms when `withUnconditioned`). */
export async function scoreChoices(
  lm: ScoredLanguageModel,
  instances: readonly ChoiceInstance[],
  opts: ScoreOptions & { withUnconditioned?: boolean; prefixToken: number },
): Promise<ChoiceScores[]> {
  const withUnconditioned = opts.withUnconditioned === true;
  const pairs = instances.map((instance) => {
    checkInstance(instance, withUnconditioned);
    const encode = (context: (k: number) => string) => instance.choices.map((choice, k) => encodePair(lm.tokenizer, context(k), choice, opts.prefixToken));
    return {
      conditioned: encode((k) => instance.contexts?.[k] ?? instance.context),
      unconditioned: withUnconditioned ? encode(() => instance.unconditionedContext!) : [],
    };
  });
  const results = await loglikelihood(lm.model, pairs.flatMap((p) => [...p.conditioned, ...p.unconditioned]), opts);
  let at = 0;
  return instances.map((instance, i) => {
    const { conditioned, unconditioned } = pairs[i]!;
    const own = results.slice(at, (at += conditioned.length));
    const free = results.slice(at, (at += unconditioned.length));
    return {
      id: instance.id,
      gold: instance.gold,
      logprobs: own.map((r) => r.logprob),
      tokens: conditioned.map((pair) => pair.continuation.length),
      chars: conditioned.map((pair) => pair.text.length),
      bytes: conditioned.map((pair) => Buffer.byteLength(pair.text, 'utf8')),
      unconditioned: withUnconditioned ? free.map((r) => r.logprob) : undefined,
      isGreedy: own.map((r) => r.isGreedy),
      truncated: Math.max(...own.map((r) => r.truncated)),
    };
  });
}

/** The choice a normalization picks: the first of the highest scores (as argmax over a list). */
export function predicted(scores: ChoiceScores, normalization: Normalization): number {
  const values = scores.logprobs.map((logprob, k) => {
    switch (normalization) {
      case 'none': return logprob;
      case 'per_token': return logprob / scores.tokens[k]!;
      case 'per_char': return logprob / scores.chars[k]!;
      case 'pmi': {
        if (!scores.unconditioned) throw new InputError(`instance ${scores.id}: pmi needs the unconditioned scores`);
        return logprob - scores.unconditioned[k]!;
      }
    }
  });
  let best = 0;
  for (let k = 1; k < values.length; k++) if (values[k]! > values[best]!) best = k;
  return best;
}

export interface Estimate {
  /** Mean over instances. */
  readonly value: number;
  /** Standard error of the mean: sample standard deviation / √n (lm-evaluation-harness's stderr). */
  readonly stderr: number;
  readonly n: number;
}

export function meanWithStderr(values: readonly number[]): Estimate {
  const n = values.length;
  if (n === 0) return { value: NaN, stderr: NaN, n };
  const mean = values.reduce((s, v) => s + v, 0) / n;
  const variance = n > 1 ? values.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1) : NaN;
  return { value: mean, stderr: Math.sqrt(variance / n), n };
}

export function accuracy(scores: readonly ChoiceScores[], normalization: Normalization): Estimate {
  return meanWithStderr(scores.map((s) => (predicted(s, normalization) === s.gold ? 1 : 0)));
}

/** Bits per byte of the gold continuation: −log₂ p(gold) / its UTF-8 bytes, averaged over instances. */
export function goldBitsPerByte(scores: readonly ChoiceScores[]): Estimate {
  return meanWithStderr(scores.map((s) => -s.logprobs[s.gold]! / Math.LN2 / s.bytes[s.gold]!));
}

/** Chance accuracy: the mean over instances of 1 / (number of choices). */
export function chanceAccuracy(scores: readonly ChoiceScores[]): number {
  return scores.reduce((sum, s) => sum + 1 / s.logprobs.length, 0) / scores.length;
}

function checkInstance(instance: ChoiceInstance, withUnconditioned: boolean): void {
  if (instance.choices.length === 0) throw new InputError(`instance ${instance.id}: no choices`);
  if (!Number.isInteger(instance.gold) || instance.gold < 0 || instance.gold >= instance.choices.length) {
    throw new InputError(`instance ${instance.id}: gold answer ${instance.gold} is not one of its ${instance.choices.length} choices (0..${instance.choices.length - 1})`);
  }
  if (instance.contexts && instance.contexts.length !== instance.choices.length) {
    throw new InputError(`instance ${instance.id}: ${instance.contexts.length} contexts for ${instance.choices.length} choices`);
  }
  if (withUnconditioned && instance.unconditionedContext === undefined) throw new InputError(`instance ${instance.id}: pmi needs an unconditioned context`);
}
