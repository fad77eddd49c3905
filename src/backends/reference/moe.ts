/**
 * Router and experts of the sparse MoE block (spec §3.6; paper eq. 1), with their backward rules.
 * Dimension legend: T tokens, D hidden, E experts, K experts per token, C tokens per expert, A assignments,
 * F expert FFN width.
 */
import type { ExpertWeights, Routing, RouterOptions, Tensor } from '../../core/backend.js';
import type { SavedState } from '../../core/training.js';
import { indicesByValueDescending } from '../../core/sort.js';
import { FULL_PRODUCTS, type Products } from './ops.js';
import { activation, allocFor, asRef, checkShapes, floats, roundingOf, showShape, type Floats, type RefTensor } from './tensor.js';

/** probs = softmax over all E experts; token choice: each token's top-K (ties to the lower index); expert choice: each expert's top-C tokens. */
export function router(logits: Tensor, opts: RouterOptions): Routing {
  const [tokens, numExperts] = [asRef(logits).rows, asRef(logits).cols];
  const probs = allocFor(tokens * numExperts, logits);
  const values = floats(logits);
  for (let t = 0; t < tokens; t++) softmaxRow(values, probs, t * numExperts, numExperts);
  const mode = opts.mode ?? 'token_choice';
  const { expertIds, tokenIds, perGroup } = mode === 'expert_choice' ? expertChoice(probs, tokens, numExperts, opts.capacity ?? 1) : tokenChoice(probs, tokens, numExperts, opts.topK);
  const weights = allocFor(expertIds.length, logits);
  expertIds.forEach((e, a) => (weights[a] = probs[tokenIds[a]! * numExperts + e]!));
  if (opts.normTopKProb && mode === 'token_choice') for (let t = 0; t < tokens; t++) normalize(weights.subarray(t * perGroup, (t + 1) * perGroup));
  return { tokens, numExperts, mode, perGroup, probs: activation(probs, [tokens, numExperts]), weights: activation(weights, [expertIds.length]), expertIds, tokenIds };
}

function softmaxRow(logits: Floats, out: Floats, offset: number, width: number): void {
  let max = -Infinity;
  for (let i = 0; i < width; i++) max = Math.max(max, logits[offset + i]!);
  let total = 0;
  for (let i = 0; i < width; i++) total += Math.exp(logits[offset + i]! - max);
  for (let i = 0; i < width; i++) out[offset + i] = Math.exp(logits[offset + i]! - max) / total;
}

function tokenChoice(probs: Floats, tokens: number, numExperts: number, topK: number) {
  const expertIds = new Int32Array(tokens * topK);
  const tokenIds = new Int32Array(tokens * topK);
  for (let t = 0; t < tokens; t++) {
    const order = indicesByValueDescending(probs.subarray(t * numExperts, (t + 1) * numExperts));
    for (let k = 0; k < topK; k++) [expertIds[t * topK + k], tokenIds[t * topK + k]] = [order[k]!, t];
  }
  return { expertIds, tokenIds, perGroup: topK };
}

/** Paper §4.1.5 (Zhou et al. 2022): each expert takes its C most probable tokens, so tokens get any number of experts. */
function expertChoice(probs: Floats, tokens: number, numExperts: number, capacity: number) {
  const perExpert = Math.min(capacity, tokens);
  const expertIds = new Int32Array(numExperts * perExpert);
  const tokenIds = new Int32Array(numExperts * perExpert);
  const column = new Float64Array(tokens);
  for (let e = 0; e < numExperts; e++) {
    for (let t = 0; t < tokens; t++) column[t] = probs[t * numExperts + e]!;
    indicesByValueDescending(column).slice(0, perExpert).forEach((t, c) => ([expertIds[e * perExpert + c], tokenIds[e * perExpert + c]] = [e, t]));
  }
  return { expertIds, tokenIds, perGroup: perExpert };
}

function normalize(values: Floats): void {
  let total = 0;
  for (const value of values) total += value;
  for (let i = 0; i < values.length; i++) values[i] = values[i]! / total;
}

/** Back through the renormalization (w = p / Σp), the gather of the chosen probabilities, and the softmax. */
export function routerBackward(args: { routing: Routing; opts: RouterOptions; dProbs: Tensor | null; dWeights: Tensor | null; dLogits: Tensor }): void {
  const { routing } = args;
  const { tokens, numExperts: width, perGroup } = routing;
  const p = floats(routing.probs);
  const dp = new Float64Array(p.length);
  if (args.dProbs) dp.set(floats(args.dProbs));
  if (args.dWeights) {
    const dw = floats(args.dWeights);
    const renormalized = args.opts.normTopKProb && routing.mode === 'token_choice';
    for (let a = 0; a < dw.length; a++) {
      const t = routing.tokenIds[a]!;
      let grad = dw[a]!;
      if (renormalized) grad = renormalizedGrad(p, dw, routing, t, a, perGroup);
      dp[t * width + routing.expertIds[a]!]! += grad;
    }
  }
  const dx = floats(args.dLogits);
  for (let t = 0; t < tokens; t++) {
    let dot = 0;
    for (let e = 0; e < width; e++) dot += dp[t * width + e]! * p[t * width + e]!;
    for (let e = 0; e < width; e++) dx[t * width + e]! += p[t * width + e]! * (dp[t * width + e]! - dot);
  }
}

/** ∂L/∂p_a through w_j = p_j / S (S = Σ of the token's K chosen p): (dw_a − Σ_j dw_j · w_j) / S. */
function renormalizedGrad(p: Floats, dw: Floats, routing: Routing, t: number, a: number, k: number): number {
  let sum = 0;
  for (let j = 0; j < k; j++) sum += p[t * routing.numExperts + routing.expertIds[t * k + j]!]!;
  let dot = 0;
  for (let j = 0; j < k; j++) dot += dw[t * k + j]! * (p[t * routing.numExperts + routing.expertIds[t * k + j]!]! / sum);
  return (dw[a]! - dot) / sum;
}

/** The assignments of each expert, experts ascending: each token's output then sums in ascending expert id like HF's `index_add_` loop. */
export function groupByExpert(routing: Routing): Map<number, number[]> {
  const groups = new Map<number, number[]>();
  routing.expertIds.forEach((e, a) => (groups.get(e) ?? groups.set(e, []).get(e)!).push(a));
  return new Map([...groups].sort(([a], [b]) => a - b));
}

interface ExpertPass {
  x: RefTensor; // [n, D] the expert's tokens
  gate: RefTensor; // [n, F] before SiLU
  up: RefTensor; // [n, F]
  hidden: RefTensor; // [n, F] silu(gate) ⊙ up
  y: RefTensor; // [n, D] output before weighting
}

function runExpert(input: Floats, width: number, tokens: readonly number[], weights: ExpertWeights, e: number, like: Tensor, products: Products): ExpertPass {
  const rows = allocFor(tokens.length * width, like);
  tokens.forEach((t, i) => rows.set(input.subarray(t * width, (t + 1) * width), i * width));
  const x = activation(rows, [tokens.length, width]);
  const gate = products.matmul(x, weights.gate[e]!);
  const up = products.matmul(x, weights.up[e]!);
  const g = floats(gate);
  const hidden = activation(floats(up).map((u, i) => silu(g[i]!) * u), gate.shape);
  return { x, gate, up, hidden, y: products.matmul(hidden, weights.down[e]!) };
}

/** Σ_a w_a · down(silu(gate·x) ⊙ up·x) into out[token_a], experts ascending; `products`: their precision (bf16.ts). */
export function experts(x: Tensor, weights: ExpertWeights, routing: Routing, products: Products = FULL_PRODUCTS): RefTensor {
  const input = floats(x);
  const width = asRef(x).cols;
  checkShapes('experts', asRef(x).rows === routing.tokens, () => `x ${showShape(x)} but routing for ${routing.tokens} tokens`);
  const out = allocFor(input.length, x);
  const round = roundingOf(out);
  const w = floats(routing.weights);
  for (const [expert, assignments] of groupByExpert(routing)) {
    const y = floats(runExpert(input, width, assignments.map((a) => routing.tokenIds[a]!), weights, expert, x, products).y);
    assignments.forEach((a, i) => {
      const t = routing.tokenIds[a]!;
      for (let d = 0; d < width; d++) out[t * width + d] = out[t * width + d]! + round(y[i * width + d]! * w[a]!);
    });
  }
  return activation(out, asRef(x).shape);
}

/** Training's forward: nothing kept (the reference backward recomputes each expert's activations). */
export function expertsForward(x: Tensor, weights: ExpertWeights, routing: Routing, products: Products = FULL_PRODUCTS): { out: RefTensor; saved: SavedState } {
  return { out: experts(x, weights, routing, products), saved: { op: 'experts' } };
}

/**
 * Per expert, with dY_a = w_a · dOut[token_a]: dw_a += dOut[token_a] · y_a; dDown += dYᵀ·h; dh = dY·Down;
 * dGate_pre = dh ⊙ up ⊙ silu'(gate); dUp_pre = dh ⊙ silu(gate); dGate += dGate_preᵀ·x; dUp += dUp_preᵀ·x;
 * dx[token_a] += dGate_pre·Gate + dUp_pre·Up.
 */
export function expertsBackward(
  args: { x: Tensor; weights: ExpertWeights; routing: Routing; dOut: Tensor; dx: Tensor | null; dRoutingWeights: Tensor | null; dWeights: ExpertWeights | null },
  products: Products = FULL_PRODUCTS,
): void {
  const { routing, weights } = args;
  const [input, dy, w] = [floats(args.x), floats(args.dOut), floats(routing.weights)];
  const width = asRef(args.x).cols;
  const dRouting = args.dRoutingWeights ? floats(args.dRoutingWeights) : null;
  for (const [e, assignments] of groupByExpert(routing)) {
    const tokens = assignments.map((a) => routing.tokenIds[a]!);
    const pass = runExpert(input, width, tokens, weights, e, args.x, products);
    const y = floats(pass.y);
    const dY = allocFor(y.length, args.x);
    assignments.forEach((a, i) => {
      const t = tokens[i]!;
      let dot = 0;
      for (let d = 0; d < width; d++) {
        dY[i * width + d] = w[a]! * dy[t * width + d]!;
        dot += dy[t * width + d]! * y[i * width + d]!;
      }
      if (dRouting) dRouting[a]! += dot;
    });
    const dHidden = activation(allocFor(floats(pass.hidden).length, args.x), pass.hidden.shape);
    products.matmulBackward({ x: pass.hidden, w: weights.down[e]!, dOut: activation(dY, pass.y.shape), dx: dHidden, dw: args.dWeights?.down[e] ?? null });
    const [g, u, dh] = [floats(pass.gate), floats(pass.up), floats(dHidden)];
    const dGate = activation(g.map((z, i) => dh[i]! * u[i]! * siluGrad(z)), pass.gate.shape);
    const dUp = activation(g.map((z, i) => dh[i]! * silu(z)), pass.up.shape);
    const dRows = args.dx ? activation(allocFor(floats(pass.x).length, args.x), pass.x.shape) : null;
    products.matmulBackward({ x: pass.x, w: weights.gate[e]!, dOut: dGate, dx: dRows, dw: args.dWeights?.gate[e] ?? null });
    products.matmulBackward({ x: pass.x, w: weights.up[e]!, dOut: dUp, dx: dRows, dw: args.dWeights?.up[e] ?? null });
    if (!dRows || !args.dx) continue;
    const [dx, dr] = [floats(args.dx), floats(dRows)];
    tokens.forEach((t, i) => {
      for (let d = 0; d < width; d++) dx[t * width + d]! += dr[i * width + d]!;
    });
  }
}

/** silu(z) = z·sigmoid(z). */
function silu(z: number): number {
  return z / (1 + Math.exp(-z));
}

/** silu'(z) = σ(z)·(1 + z·(1 − σ(z))). */
function siluGrad(z: number): number {
  const sigmoid = 1 / (1 + Math.exp(-z));
  return sigmoid * (1 + z * (1 - sigmoid));
}
