/**
 * What a mutator is, and the oracle that judges its output. The oracle is the mutator's claim about content:
 *
 * - `identical`: the content is unchanged (keys reordered, data relaid out, unknown metadata added), so the
 *   input must load, and its logits must equal the clean seed's bit for bit.
 * - `identical-or-error`: the content is unchanged but the form is one a strict reader may refuse (trailing
 *   bytes, gaps, a key given twice with the same value, a tokenizer-only change). If it loads, its logits must
 *   equal the clean seed's; if not, the error must be an OlmoeError naming the file.
 * - `finite-or-error`: the content changed. If it loads, every logit must be finite (a NaN weight that reaches
 *   the output must be refused, not served); if not, the error must be an OlmoeError naming the file.
 * - `error`: the file breaks a rule of ARCHITECTURE.md's strict readers (tensors exactly tiling the data region,
 *   no overlaps, each name once), so it must fail with an OlmoeError naming the file; loading it is a failure
 *   even when the logits come out finite (they would be computed from the wrong bytes).
 */
import type { Random } from './random.js';

export type Oracle = 'identical' | 'identical-or-error' | 'finite-or-error' | 'error';

/** Which file of a seed a mutator edits. */
export type Target = 'gguf' | 'safetensors' | 'index' | 'config' | 'tokenizer' | 'tokenizer_config' | 'generation_config';

export interface Mutator {
  readonly name: string;
  readonly target: Target;
  readonly oracle: Oracle;
  /** The mutated bytes, or undefined when the mutator does not apply to this input. */
  apply(bytes: Buffer, random: Random): Buffer | undefined;
}

const STRENGTH: Record<Oracle, number> = { identical: 0, 'identical-or-error': 1, 'finite-or-error': 2, error: 2 };

/**
 * The oracle of several mutations applied together: the weakest claim wins, and `error` holds only alone
 * (a second edit may repair what the first broke: a gap, then a truncation of it).
 */
export function combinedOracle(oracles: readonly Oracle[]): Oracle {
  if (oracles.length === 1) return oracles[0]!;
  return oracles.map((o) => (o === 'error' ? 'finite-or-error' : o)).reduce<Oracle>((a, b) => (STRENGTH[b] > STRENGTH[a] ? b : a), 'identical');
}

export function mutator(target: Target, name: string, oracle: Oracle, apply: Mutator['apply']): Mutator {
  return { name: `${target}.${name}`, target, oracle, apply };
}
