/**
 * The routing analyses of the OLMoE paper (arXiv 2409.02060, §5 and appendix H.1) as pure functions over routing
 * traces. Every function reads `trace.chunks()` once, chunk by chunk, and keeps only counts: memory is bounded by
 * the size of the result (and, for vocabulary specialization, by the number of distinct token ids seen), never by
 * the length of the trace.
 *
 * Notation. E = experts per layer, K = the model's top-k, k ≤ K = how many of a token's chosen experts an analysis
 * looks at (its first k, i.e. the k with the highest routing weight; k = 1 is the top-1 expert). "Token t is routed
 * to Ei" means Ei is among token t's first k chosen experts in the layer analysed.
 */
import { InputError } from '../core/errors.js';
import type { Trace, TraceChunk, TraceHeader, TraceModel } from './trace.js';

// ---------------------------------------------------------------------------------------------------------------
// Shared checks

/** k defaults to the model's top-k; anything else must be an integer in 1..topK. */
function resolveK(model: TraceModel, k: number | undefined): number {
  if (k === undefined) return model.topK;
  if (!Number.isInteger(k) || k < 1 || k > model.topK) {
    throw new InputError(`k must be an integer from 1 to the model's top-k (${model.topK}), got ${k}`);
  }
  return k;
}

function resolveLayer(model: TraceModel, layer: number): number {
  if (!Number.isInteger(layer) || layer < 0 || layer >= model.layers) {
    throw new InputError(`layer must be an integer from 0 to ${model.layers - 1} (the model has ${model.layers} layers), got ${layer}`);
  }
  return layer;
}

/** A chunk whose columns do not have the lengths the header implies would make every index below wrong. */
function checkChunk(header: TraceHeader, chunk: TraceChunk, chunkIndex: number): void {
  const { layers: L, topK: K, experts: E } = header.model;
  const n = chunk.size;
  const bad = (column: string, length: number, expected: number) =>
    new InputError(`trace chunk ${chunkIndex}: column "${column}" has length ${length}, expected ${expected} (size ${n})`);
  if (!Number.isInteger(n) || n < 0) throw new InputError(`trace chunk ${chunkIndex}: size must be a non-negative integer, got ${n}`);
  for (const column of ['document', 'position', 'domain', 'input', 'target', 'predicted'] as const) {
    if (chunk[column].length !== n) throw bad(column, chunk[column].length, n);
  }
  if (chunk.experts.length !== n * L * K) throw bad('experts', chunk.experts.length, n * L * K);
  if (chunk.weights.length !== n * L * K) throw bad('weights', chunk.weights.length, n * L * K);
  if (chunk.probs !== undefined && chunk.probs.length !== n * L * E) throw bad('probs', chunk.probs.length, n * L * E);
}

function expertOutOfRange(expert: number, experts: number, where: string): InputError {
  return new InputError(`${where}: expert id ${expert} is out of range (the model has ${experts} experts)`);
}

/** The chunks of a trace, checked one by one as they are read. */
function* checkedChunks(trace: Trace): Generator<TraceChunk> {
  let index = 0;
  for (const chunk of trace.chunks()) {
    checkChunk(trace.header, chunk, index++);
    yield chunk;
  }
}

function noTokens(what: string): InputError {
  return new InputError(`${what}: the trace has no tokens`);
}

// ---------------------------------------------------------------------------------------------------------------
// Router saturation (§5.1)

/**
 * Walks a trace token by token across chunk boundaries, so that two traces chunked differently can be compared.
 * Holds one chunk at a time.
 */
class TokenCursor {
  private readonly iterator: Iterator<TraceChunk>;
  chunk: TraceChunk | undefined;
  index = 0;
  /** Global index of the current token. */
  token = 0;
  constructor(trace: Trace) {
    this.iterator = checkedChunks(trace)[Symbol.iterator]();
    this.chunk = undefined;
    this.index = 0;
    this.advanceChunk();
  }
  private advanceChunk(): void {
    for (;;) {
      const next = this.iterator.next();
      if (next.done) {
        this.chunk = undefined;
        return;
      }
      if (next.value.size > 0) {
        this.chunk = next.value;
        this.index = 0;
        return;
      }
    }
  }
  /** Moves to the next token; `chunk` becomes undefined at the end of the trace. */
  next(): void {
    this.token++;
    if (++this.index >= this.chunk!.size) this.advanceChunk();
  }
  close(): void {
    this.iterator.return?.();
  }
}

/** The checkpoints compared must have the same routing shape (names and fingerprints may differ). */
function checkSameShape(a: TraceModel, b: TraceModel, aName: string, bName: string): void {
  for (const field of ['layers', 'experts', 'topK'] as const) {
    if (a[field] !== b[field]) {
      throw new InputError(
        `the two traces come from models of different shapes: ${field} is ${a[field]} in the ${aName} trace (${a.name}) ` +
          `and ${b[field]} in the ${bName} trace (${b.name})`,
      );
    }
  }
}

/**
 * Router saturation (paper §5.1): for each layer, the share of the final checkpoint's k active experts that
 * the intermediate checkpoint t also activates for the same token, averaged over the N tokens of the corpus:
 *
 *   saturation(t) = (1/N) · Σ_{n=1..N} |E_n^(t) ∩ E_n^(T)| / k
 *
 * where E_n^(t) is the set of the first k experts chosen for token n at checkpoint t, and T is the final checkpoint.
 * k = 1 compares the top-1 experts (1 when equal, else 0); the default k is the model's top-k (the paper's k = 8).
 * 1.0 means the intermediate router already sends every token to the final router's experts.
 *
 * The traces must hold the same token stream (same input ids and document ids in the same order; chunk boundaries
 * may differ), from models with the same layers, experts and top-k.
 */
export function routerSaturation(intermediate: Trace, final: Trace, opts: { k?: number } = {}): number[] {
  const model = final.header.model;
  checkSameShape(intermediate.header.model, model, 'intermediate', 'final');
  const k = resolveK(model, opts.k);
  const { layers: L, experts: E, topK: K } = model;
  // matches[l] = Σ_n |E_n^(t) ∩ E_n^(T)| in layer l.
  const matches = new Float64Array(L);
  // stamp[e] === mark ⇔ e is among the final checkpoint's experts of the current (token, layer).
  const stamp = new Float64Array(E).fill(-1);
  let mark = 0;
  const a = new TokenCursor(intermediate);
  let b: TokenCursor | undefined;
  try {
    b = new TokenCursor(final);
    while (a.chunk !== undefined && b.chunk !== undefined) {
      const ca = a.chunk;
      const cb = b.chunk;
      const i = a.index;
      const j = b.index;
      if (ca.input[i] !== cb.input[j] || ca.document[i] !== cb.document[j]) {
        throw new InputError(
          `the two traces do not cover the same tokens: token ${a.token} is input id ${ca.input[i]} of document ` +
            `${ca.document[i]} in the intermediate trace but input id ${cb.input[j]} of document ${cb.document[j]} in the final trace`,
        );
      }
      for (let l = 0; l < L; l++) {
        const baseA = (i * L + l) * K;
        const baseB = (j * L + l) * K;
        mark++;
        for (let s = 0; s < k; s++) {
          const e = cb.experts[baseB + s]!;
          if (e >= E) throw expertOutOfRange(e, E, `final trace, token ${b.token}, layer ${l}`);
          stamp[e] = mark;
        }
        let common = 0;
        for (let s = 0; s < k; s++) {
          const e = ca.experts[baseA + s]!;
          if (e >= E) throw expertOutOfRange(e, E, `intermediate trace, token ${a.token}, layer ${l}`);
          if (stamp[e] === mark) {
            common++;
            stamp[e] = -1; // a repeated id counts once, as in a set intersection
          }
        }
        matches[l]! += common;
      }
      a.next();
      b.next();
    }
    if (a.chunk !== undefined || b.chunk !== undefined) {
      const [longer, shorter] = a.chunk !== undefined ? ['intermediate', 'final'] : ['final', 'intermediate'];
      throw new InputError(
        `the two traces do not cover the same tokens: the ${shorter} trace ends after ${Math.min(a.token, b.token)} tokens ` +
          `but the ${longer} trace goes on`,
      );
    }
  } finally {
    a.close();
    b?.close();
  }
  const n = a.token;
  if (n === 0) throw noTokens('router saturation');
  return Array.from(matches, (m) => m / (n * k));
}

// ---------------------------------------------------------------------------------------------------------------
// Expert co-activation (§5.2)

export interface CoActivation {
  layer: number;
  k: number;
  /** Tokens in the trace. */
  tokens: number;
  /** counts[i][j] = N_{Ei,Ej}: tokens routed to both Ei and Ej (i ≠ j); counts[i][i] = N_{Ei}: tokens routed to Ei. */
  counts: number[][];
  /**
   * matrix[i][j] = N_{Ei,Ej} / N_{Ei}: of the tokens routed to Ei, the fraction also routed to Ej (not symmetric).
   * The diagonal is 1 for an expert that fires; the whole row of an expert that never fires is NaN (0/0: undefined,
   * not "never co-fires").
   */
  matrix: number[][];
}

/**
 * Expert co-activation (paper §5.2): in one layer, for experts Ei and Ej,
 *
 *   coactivation(Ei, Ej) = N_{Ei,Ej} / N_{Ei}
 *
 * where N_{Ei} is the number of tokens that route to Ei (among their first k experts; default: the model's top-k)
 * and N_{Ei,Ej} the number that route to both Ei and Ej. Every pair of a token's k experts counts (all k·(k−1)
 * ordered pairs). 1 means Ej fires whenever Ei does; 0 that they never fire together.
 */
export function coActivation(trace: Trace, opts: { layer: number; k?: number }): CoActivation {
  const model = trace.header.model;
  const layer = resolveLayer(model, opts.layer);
  const k = resolveK(model, opts.k);
  const { layers: L, experts: E, topK: K } = model;
  const counts = new Float64Array(E * E);
  let tokens = 0;
  for (const chunk of checkedChunks(trace)) {
    for (let t = 0; t < chunk.size; t++) {
      const base = (t * L + layer) * K;
      for (let s = 0; s < k; s++) {
        const ei = chunk.experts[base + s]!;
        if (ei >= E) throw expertOutOfRange(ei, E, `token ${tokens + t}, layer ${layer}`);
        for (let r = 0; r < k; r++) {
          const ej = chunk.experts[base + r]!;
          if (ej >= E) throw expertOutOfRange(ej, E, `token ${tokens + t}, layer ${layer}`);
          // s === r gives N_{Ei} on the diagonal; a repeated id (never produced by top-k routing) is not a pair.
          if (r === s || ej !== ei) counts[ei * E + ej]! += 1;
        }
      }
    }
    tokens += chunk.size;
  }
  if (tokens === 0) throw noTokens('expert co-activation');
  const countRows: number[][] = [];
  const matrix: number[][] = [];
  for (let i = 0; i < E; i++) {
    const fired = counts[i * E + i]!;
    countRows.push(Array.from(counts.subarray(i * E, (i + 1) * E)));
    matrix.push(Array.from(counts.subarray(i * E, (i + 1) * E), (c) => (fired === 0 ? Number.NaN : c / fired)));
  }
  return { layer, k, tokens, counts: countRows, matrix };
}

/**
 * The n experts to show in a co-activation figure, as the paper picks them: experts ranked by their strongest
 * co-activation with any other expert, in either direction (max over j ≠ i of matrix[i][j] and matrix[j][i]),
 * highest first; ties go to the lower expert id. Returns those experts and the sub-matrix between them
 * (rows and columns in that order).
 */
export function topCoActivated(result: CoActivation, n: number): { experts: number[]; matrix: number[][] } {
  const E = result.matrix.length;
  if (!Number.isInteger(n) || n < 1 || n > E) throw new InputError(`n must be an integer from 1 to ${E} (the number of experts), got ${n}`);
  const score = (i: number): number => {
    let best = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < E; j++) {
      if (j === i) continue;
      for (const v of [result.matrix[i]![j]!, result.matrix[j]![i]!]) if (!Number.isNaN(v) && v > best) best = v;
    }
    return best;
  };
  const scores = Array.from({ length: E }, (_, i) => score(i));
  const experts = Array.from({ length: E }, (_, i) => i)
    .sort((x, y) => scores[y]! - scores[x]! || x - y)
    .slice(0, n);
  return { experts, matrix: experts.map((i) => experts.map((j) => result.matrix[i]![j]!)) };
}

// ---------------------------------------------------------------------------------------------------------------
// Domain specialization (§5.3)

export interface DomainSpecialization {
  k: number;
  domains: string[];
  layers: number;
  /** N_D: tokens of each domain. */
  tokens: number[];
  /** perDomain[d][l][i] = N^(k)_{Ei,D} / N_D in layer l. */
  perDomain: number[][][];
  /** What every expert would get under uniform routing: k / E. */
  uniform: number;
}

/**
 * Domain specialization (paper §5.3, Eq. 7): for a domain D, a layer and an expert Ei,
 *
 *   specialization(Ei, D) = N^(k)_{Ei,D} / N_D
 *
 * where N_D is the number of tokens of D and N^(k)_{Ei,D} the number of those tokens that route to Ei among their
 * first k experts (k = 1: the top-1 expert; default: the model's top-k). 1 means every token of D goes to Ei, 0 that
 * none does; uniform routing gives k/E. (The authors' plotting notebooks divide by the k·N_D routed slots instead,
 * which is this value / k, with uniform baseline 1/E.)
 *
 * Every domain of the header must have tokens: an empty domain throws an InputError naming it.
 */
export function domainSpecialization(trace: Trace, opts: { k?: number } = {}): DomainSpecialization {
  const { header } = trace;
  const model = header.model;
  const k = resolveK(model, opts.k);
  const { layers: L, experts: E, topK: K } = model;
  const D = header.domains.length;
  if (D === 0) throw new InputError('domain specialization: the trace header lists no domains');
  const counts = new Float64Array(D * L * E);
  const tokens = new Float64Array(D);
  let seen = 0;
  for (const chunk of checkedChunks(trace)) {
    for (let t = 0; t < chunk.size; t++) {
      const d = chunk.domain[t]!;
      if (d < 0 || d >= D) throw new InputError(`token ${seen + t}: domain index ${d} is out of range (the header lists ${D} domains)`);
      tokens[d]! += 1;
      for (let l = 0; l < L; l++) {
        const base = (t * L + l) * K;
        const row = (d * L + l) * E;
        for (let s = 0; s < k; s++) {
          const e = chunk.experts[base + s]!;
          if (e >= E) throw expertOutOfRange(e, E, `token ${seen + t}, layer ${l}`);
          counts[row + e]! += 1;
        }
      }
    }
    seen += chunk.size;
  }
  if (seen === 0) throw noTokens('domain specialization');
  const empty = header.domains.filter((_, d) => tokens[d] === 0);
  if (empty.length > 0) {
    throw new InputError(
      `domain specialization: ${empty.length === 1 ? 'domain' : 'domains'} ${empty.map((name) => JSON.stringify(name)).join(', ')} ` +
        `${empty.length === 1 ? 'has' : 'have'} no tokens in the trace (N_D = 0, the specialization is undefined)`,
    );
  }
  const perDomain = header.domains.map((_, d) =>
    Array.from({ length: L }, (_, l) => Array.from(counts.subarray((d * L + l) * E, (d * L + l + 1) * E), (c) => c / tokens[d]!)),
  );
  return { k, domains: [...header.domains], layers: L, tokens: Array.from(tokens), perDomain, uniform: k / E };
}

// ---------------------------------------------------------------------------------------------------------------
// Vocabulary specialization (§5.4)

export type VocabularyTokenKind = 'input' | 'predicted' | 'target';

export interface VocabularyTokenEntry {
  token: number;
  /** N_x: occurrences of the token (as the chosen kind). */
  count: number;
  /** N^(k)_{x,Ei}: occurrences routed to the expert. */
  routed: number;
  /** N^(k)_{x,Ei} / N_x. */
  specialization: number;
}

export interface VocabularySpecialization {
  of: VocabularyTokenKind;
  layer: number;
  k: number;
  minCount: number;
  /** Distinct token ids with at least minCount occurrences: the vocabulary the summaries are over. */
  vocabulary: number;
  /** Mean over that vocabulary of each token's highest specialization (max over experts): the per-layer figure value. */
  mean: number;
  /**
   * Per expert Ei: the tokens whose most specialized expert is Ei (`tokens`) and the mean of their specialization to
   * Ei (`mean`, NaN when there are none): the per-expert figure value.
   */
  perExpert: { tokens: number; mean: number }[];
  /** N^(k)_{x,Ei} / N_x; NaN for a token seen fewer than minCount times (or never). */
  specialization(expert: number, token: number): number;
  /**
   * The n tokens most specialized to an expert, highest first (ties: more occurrences, then lower id), like the
   * paper's Table 4. By default only tokens whose most specialized expert it is (each token listed under one expert,
   * as in the paper); `{ assignedOnly: false }` ranks every token that ever routes to it.
   */
  topTokens(expert: number, n: number, opts?: { assignedOnly?: boolean }): VocabularyTokenEntry[];
}

/**
 * Vocabulary specialization (paper §5.4): in one layer, for a token id x and an expert Ei,
 *
 *   specialization(Ei, x) = N^(k)_{x,Ei} / N_x
 *
 * where N_x is the number of occurrences of x and N^(k)_{x,Ei} how many of them route to Ei among their first k
 * experts (k = 1: top-1; default: the model's top-k). x is the input token, the model's predicted next token, or the
 * ground-truth next token (`target`; the −1 at a document's end is skipped), always with the routing of the same
 * position. Tokens seen fewer than minCount times (default 1) are left out.
 *
 * The summaries follow the authors' analysis: each token is assigned to its most specialized expert
 * (argmax_i N^(k)_{x,Ei}, ties to the lower id); a layer's value is the mean over tokens of that highest
 * specialization, an expert's value the mean over the tokens assigned to it.
 */
export function vocabularySpecialization(
  trace: Trace,
  opts: { of: VocabularyTokenKind; layer: number; k?: number; minCount?: number },
): VocabularySpecialization {
  const model = trace.header.model;
  const layer = resolveLayer(model, opts.layer);
  const k = resolveK(model, opts.k);
  const minCount = opts.minCount ?? 1;
  if (!Number.isInteger(minCount) || minCount < 1) throw new InputError(`minCount must be a positive integer, got ${minCount}`);
  const of = opts.of;
  if (of !== 'input' && of !== 'predicted' && of !== 'target') {
    throw new InputError(`"of" must be "input", "predicted" or "target", got ${JSON.stringify(of)}`);
  }
  const { layers: L, experts: E, topK: K, vocabSize } = model;
  // perToken.get(x)[i] = N^(k)_{x,Ei}; [E] = N_x.
  const perToken = new Map<number, Float64Array>();
  let seen = 0;
  for (const chunk of checkedChunks(trace)) {
    const ids = chunk[of];
    for (let t = 0; t < chunk.size; t++) {
      const x = ids[t]!;
      if (of === 'target' && x === -1) continue;
      if (x < 0 || x >= vocabSize) {
        throw new InputError(`token ${seen + t}: ${of} id ${x} is out of range (the vocabulary has ${vocabSize} ids)`);
      }
      let row = perToken.get(x);
      if (row === undefined) perToken.set(x, (row = new Float64Array(E + 1)));
      row[E]! += 1;
      const base = (t * L + layer) * K;
      for (let s = 0; s < k; s++) {
        const e = chunk.experts[base + s]!;
        if (e >= E) throw expertOutOfRange(e, E, `token ${seen + t}, layer ${layer}`);
        row[e]! += 1;
      }
    }
    seen += chunk.size;
  }
  if (seen === 0) throw noTokens('vocabulary specialization');

  // Assign every token with enough occurrences to its most specialized expert.
  const assigned = new Map<number, number>();
  const sums = new Float64Array(E);
  const assignedCounts = new Float64Array(E);
  let total = 0;
  for (const [x, row] of perToken) {
    if (row[E]! < minCount) continue;
    let best = 0;
    for (let e = 1; e < E; e++) if (row[e]! > row[best]!) best = e;
    const share = row[best]! / row[E]!;
    assigned.set(x, best);
    sums[best]! += share;
    assignedCounts[best]! += 1;
    total += share;
  }
  const vocabulary = assigned.size;
  const checkExpert = (expert: number) => {
    if (!Number.isInteger(expert) || expert < 0 || expert >= E) throw new InputError(`expert must be an integer from 0 to ${E - 1}, got ${expert}`);
  };
  return {
    of,
    layer,
    k,
    minCount,
    vocabulary,
    mean: vocabulary === 0 ? Number.NaN : total / vocabulary,
    perExpert: Array.from({ length: E }, (_, e) => ({
      tokens: assignedCounts[e]!,
      mean: assignedCounts[e] === 0 ? Number.NaN : sums[e]! / assignedCounts[e]!,
    })),
    specialization(expert, token) {
      checkExpert(expert);
      const row = perToken.get(token);
      return row === undefined || row[E]! < minCount ? Number.NaN : row[expert]! / row[E]!;
    },
    topTokens(expert, n, topOpts = {}) {
      checkExpert(expert);
      if (!Number.isInteger(n) || n < 0) throw new InputError(`n must be a non-negative integer, got ${n}`);
      const assignedOnly = topOpts.assignedOnly ?? true;
      const entries: VocabularyTokenEntry[] = [];
      for (const [x, row] of perToken) {
        if (row[E]! < minCount || row[expert] === 0) continue;
        if (assignedOnly && assigned.get(x) !== expert) continue;
        entries.push({ token: x, count: row[E]!, routed: row[expert]!, specialization: row[expert]! / row[E]! });
      }
      entries.sort((p, q) => q.specialization - p.specialization || q.count - p.count || p.token - q.token);
      return entries.slice(0, n);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Load balance

export interface LayerLoad {
  /** Routed slots per expert (each token contributes k). */
  counts: number[];
  /** counts / (k · tokens): sums to 1; uniform routing gives 1/E each. */
  shares: number[];
  /** −Σ share · ln share, in nats (0·ln 0 = 0). */
  entropy: number;
  /** entropy / ln E: 1 for perfectly uniform load, 0 when everything goes to one expert. */
  normalizedEntropy: number;
  maxShare: number;
  minShare: number;
}

export interface LoadBalance {
  k: number;
  tokens: number;
  layers: LayerLoad[];
}

/**
 * Load balance per layer: the share of the routed slots (k per token: the first k experts; default the model's
 * top-k) that each expert receives, p_i = N^(k)_{Ei} / (k·N), with its entropy H = −Σ_i p_i ln p_i (nats), the
 * normalized entropy H / ln E (1 = uniform, 0 = a single expert takes everything) and the max and min shares.
 * (The quantity the load-balancing loss of §2 pushes towards uniform; not one of the §5 analyses.)
 */
export function loadBalance(trace: Trace, opts: { k?: number } = {}): LoadBalance {
  const model = trace.header.model;
  const k = resolveK(model, opts.k);
  const { layers: L, experts: E, topK: K } = model;
  const counts = new Float64Array(L * E);
  let tokens = 0;
  for (const chunk of checkedChunks(trace)) {
    for (let t = 0; t < chunk.size; t++) {
      for (let l = 0; l < L; l++) {
        const base = (t * L + l) * K;
        for (let s = 0; s < k; s++) {
          const e = chunk.experts[base + s]!;
          if (e >= E) throw expertOutOfRange(e, E, `token ${tokens + t}, layer ${l}`);
          counts[l * E + e]! += 1;
        }
      }
    }
    tokens += chunk.size;
  }
  if (tokens === 0) throw noTokens('load balance');
  const slots = tokens * k;
  const layers: LayerLoad[] = [];
  for (let l = 0; l < L; l++) {
    const layerCounts = Array.from(counts.subarray(l * E, (l + 1) * E));
    const shares = layerCounts.map((c) => c / slots);
    let entropy = 0;
    for (const p of shares) if (p > 0) entropy -= p * Math.log(p);
    layers.push({
      counts: layerCounts,
      shares,
      entropy,
      // One expert: its share is always 1 and there is no spread to measure; report it as balanced.
      normalizedEntropy: E > 1 ? entropy / Math.log(E) : 1,
      maxShare: Math.max(...shares),
      minShare: Math.min(...shares),
    });
  }
  return { k, tokens, layers };
}
