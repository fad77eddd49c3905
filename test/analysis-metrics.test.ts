/**
 * The routing analyses of the OLMoE paper (analysis/metrics.ts) on hand-built traces whose answers are known:
 * by hand for small cases, in expectation (within a binomial or hypergeometric standard error) for seeded random
 * routing. Every trace is also fed in chunks of several sizes, through a generator, to check that the functions
 * stream and do not depend on where chunks begin.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OlmoeError } from '../src/core/errors.js';
import { createRng, type Rng } from '../src/core/rng.js';
import {
  coActivation,
  domainSpecialization,
  loadBalance,
  routerSaturation,
  topCoActivated,
  vocabularySpecialization,
} from '../src/analysis/metrics.js';
import { TRACE_VERSION, type Trace, type TraceChunk, type TraceHeader } from '../src/analysis/trace.js';

// ---------------------------------------------------------------------------------------------------------------
// Building traces by hand

interface Shape {
  layers: number;
  experts: number;
  topK: number;
  vocabSize?: number;
}

interface Tok {
  input: number;
  document?: number;
  domain?: number;
  target?: number;
  predicted?: number;
  /** [L][K] chosen experts, highest weight first. */
  experts: number[][];
}

function header(shape: Shape, domains: string[] = ['web'], name = 'model'): TraceHeader {
  return {
    version: TRACE_VERSION,
    model: { name, layers: shape.layers, experts: shape.experts, topK: shape.topK, vocabSize: shape.vocabSize ?? 100, fingerprint: `fp-${name}` },
    domains,
    withProbs: false,
  };
}

/** Columnar chunks of at most `chunkSize` tokens. */
function toChunks(shape: Shape, tokens: readonly Tok[], chunkSize: number): TraceChunk[] {
  const { layers: L, topK: K } = shape;
  const chunks: TraceChunk[] = [];
  for (let start = 0; start < tokens.length; start += chunkSize) {
    const part = tokens.slice(start, start + chunkSize);
    const n = part.length;
    const chunk: TraceChunk = {
      size: n,
      document: Int32Array.from(part, (t) => t.document ?? 0),
      position: Int32Array.from(part, (_, i) => start + i),
      domain: Int32Array.from(part, (t) => t.domain ?? 0),
      input: Int32Array.from(part, (t) => t.input),
      target: Int32Array.from(part, (t) => t.target ?? 0),
      predicted: Int32Array.from(part, (t) => t.predicted ?? 0),
      experts: new Uint16Array(n * L * K),
      weights: new Float32Array(n * L * K),
    };
    part.forEach((t, i) => {
      assert.equal(t.experts.length, L);
      for (let l = 0; l < L; l++) {
        assert.equal(t.experts[l]!.length, K);
        for (let s = 0; s < K; s++) {
          chunk.experts[(i * L + l) * K + s] = t.experts[l]![s]!;
          chunk.weights[(i * L + l) * K + s] = 1 / K;
        }
      }
    });
    chunks.push(chunk);
  }
  return chunks;
}

/**
 * A trace read chunk by chunk from a generator (as from a file): each call of chunks() starts a fresh pass,
 * and the test can see how many passes were made.
 */
function trace(shape: Shape, tokens: readonly Tok[], opts: { chunkSize?: number; domains?: string[]; name?: string } = {}): Trace & { passes: number } {
  const chunks = toChunks(shape, tokens, opts.chunkSize ?? Math.max(1, tokens.length));
  const result = {
    header: header(shape, opts.domains, opts.name),
    passes: 0,
    *chunks() {
      result.passes++;
      yield* chunks;
    },
  };
  return result;
}

/** k distinct experts out of E, uniformly (a partial Fisher–Yates shuffle). */
function randomExperts(rng: Rng, E: number, k: number): number[] {
  const pool = Array.from({ length: E }, (_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rng() * (E - i));
    [pool[i], pool[j]] = [pool[j]!, pool[i]!];
  }
  return pool.slice(0, k);
}

function randomRouting(rng: Rng, shape: Shape): number[][] {
  return Array.from({ length: shape.layers }, () => randomExperts(rng, shape.experts, shape.topK));
}

const close = (actual: number, expected: number, tolerance: number, what: string) =>
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual} is not within ${tolerance} of ${expected}`);

const inputError = (pattern: RegExp) => (error: unknown) => {
  assert.ok(error instanceof OlmoeError, `expected an OlmoeError, got ${String(error)}`);
  assert.equal(error.code, 'input');
  assert.match(error.message, pattern);
  return true;
};

// ---------------------------------------------------------------------------------------------------------------
// Router saturation

describe('router saturation', () => {
  const shape = { layers: 2, experts: 4, topK: 2 };
  // Worked by hand. Layer 0, top-2: {0,1}∩{1,0} = 2, {2,3}∩{2,0} = 1, {0,2}∩{3,1} = 0 → (2+1+0)/(3·2) = 0.5;
  // top-1: 0≠1, 2=2, 0≠3 → 1/3. Layer 1, top-2: all sets equal → 1; top-1: 0=0, 0=0, 0≠1 → 2/3.
  const finalTokens: Tok[] = [
    { input: 10, experts: [[0, 1], [0, 1]] },
    { input: 11, experts: [[2, 3], [0, 1]] },
    { input: 12, experts: [[0, 2], [0, 1]] },
  ];
  const intermediateTokens: Tok[] = [
    { input: 10, experts: [[1, 0], [0, 1]] },
    { input: 11, experts: [[2, 0], [0, 1]] },
    { input: 12, experts: [[3, 1], [1, 0]] },
  ];

  it('is 1 for every layer when the checkpoints route identically (k = 1 and k = top-k)', () => {
    const rng = createRng(1);
    const big = { layers: 3, experts: 8, topK: 3 };
    const tokens = Array.from({ length: 50 }, (_, i) => ({ input: i % 7, document: Math.floor(i / 20), experts: randomRouting(rng, big) }));
    const a = trace(big, tokens, { chunkSize: 7, name: 'step5000' });
    const b = trace(big, tokens, { chunkSize: 50, name: 'final' });
    assert.deepEqual(routerSaturation(a, b), [1, 1, 1]);
    assert.deepEqual(routerSaturation(a, b, { k: 1 }), [1, 1, 1]);
    assert.deepEqual(routerSaturation(a, b, { k: 2 }), [1, 1, 1]);
  });

  it('is 0 when the checkpoints choose disjoint experts', () => {
    const tokens = (offset: number): Tok[] =>
      Array.from({ length: 9 }, (_, i) => ({ input: i, experts: [[offset, offset + 1], [(offset + 2) % 4, (offset + 3) % 4]] }));
    const a = trace(shape, tokens(0), { chunkSize: 4 });
    const b = trace(shape, tokens(2), { chunkSize: 2 });
    assert.deepEqual(routerSaturation(a, b), [0, 0]);
    assert.deepEqual(routerSaturation(a, b, { k: 1 }), [0, 0]);
  });

  it('matches a partially matching case worked by hand, whatever the chunking', () => {
    for (const [ca, cb] of [[3, 3], [1, 2], [2, 1], [1, 3]] as const) {
      const a = trace(shape, intermediateTokens, { chunkSize: ca });
      const b = trace(shape, finalTokens, { chunkSize: cb });
      assert.deepEqual(routerSaturation(a, b), [0.5, 1], `chunks ${ca}/${cb}`);
      const top1 = routerSaturation(a, b, { k: 1 });
      close(top1[0]!, 1 / 3, 1e-12, 'layer 0, k = 1');
      close(top1[1]!, 2 / 3, 1e-12, 'layer 1, k = 1');
    }
  });

  it('reads each trace once, a chunk at a time', () => {
    const a = trace(shape, intermediateTokens, { chunkSize: 1 });
    const b = trace(shape, finalTokens, { chunkSize: 2 });
    routerSaturation(a, b);
    assert.equal(a.passes, 1);
    assert.equal(b.passes, 1);
  });

  it('is k/E in expectation for independent uniformly random routing', () => {
    const big = { layers: 4, experts: 16, topK: 4 };
    const N = 6000;
    const rng = createRng(20240902);
    const inputs = Array.from({ length: N }, (_, i) => ({ input: i % 97, document: Math.floor(i / 500) }));
    const a = trace(big, inputs.map((t) => ({ ...t, experts: randomRouting(rng, big) })), { chunkSize: 512 });
    const b = trace(big, inputs.map((t) => ({ ...t, experts: randomRouting(rng, big) })), { chunkSize: 333 });
    for (const k of [1, 2, 4]) {
      const E = big.experts;
      // |A ∩ B| for two independent uniform k-subsets of E is hypergeometric: mean k²/E, variance
      // k·(k/E)·(1 − k/E)·(E − k)/(E − 1). Saturation averages |A ∩ B|/k over N tokens.
      const variance = (k * (k / E) * (1 - k / E) * (E - k)) / (E - 1);
      const standardError = Math.sqrt(variance) / k / Math.sqrt(N);
      routerSaturation(a, b, { k }).forEach((s, l) => close(s, k / E, 4 * standardError, `k = ${k}, layer ${l}`));
    }
  });

  it('rejects traces of different token streams, naming the first mismatch', () => {
    const other = finalTokens.map((t, i) => (i === 2 ? { ...t, input: 99 } : t));
    assert.throws(
      () => routerSaturation(trace(shape, intermediateTokens, { chunkSize: 2 }), trace(shape, other, { chunkSize: 1 })),
      inputError(/token 2 is input id 12 of document 0 in the intermediate trace but input id 99 of document 0 in the final trace/),
    );
    const otherDocument = finalTokens.map((t, i) => (i === 1 ? { ...t, document: 4 } : t));
    assert.throws(
      () => routerSaturation(trace(shape, intermediateTokens), trace(shape, otherDocument)),
      inputError(/token 1 is input id 11 of document 0 in the intermediate trace but input id 11 of document 4/),
    );
    assert.throws(
      () => routerSaturation(trace(shape, intermediateTokens), trace(shape, finalTokens.slice(0, 2), { chunkSize: 1 })),
      inputError(/the final trace ends after 2 tokens but the intermediate trace goes on/),
    );
    assert.throws(
      () => routerSaturation(trace(shape, intermediateTokens.slice(0, 1)), trace(shape, finalTokens)),
      inputError(/the intermediate trace ends after 1 tokens but the final trace goes on/),
    );
  });

  it('rejects traces of models with different shapes, naming the field', () => {
    const a = trace(shape, intermediateTokens, { name: 'small' });
    const wider = { ...shape, experts: 8 };
    assert.throws(() => routerSaturation(a, trace(wider, finalTokens, { name: 'wide' })), inputError(/experts is 4 in the intermediate trace \(small\) and 8 in the final trace \(wide\)/));
    const deeper = { ...shape, layers: 3 };
    assert.throws(() => routerSaturation(a, trace(deeper, finalTokens.map((t) => ({ ...t, experts: [...t.experts, [0, 1]] })))), inputError(/layers is 2/));
    const topK1 = { ...shape, topK: 1 };
    assert.throws(() => routerSaturation(a, trace(topK1, finalTokens.map((t) => ({ ...t, experts: t.experts.map((e) => e.slice(0, 1)) })))), inputError(/topK is 2/));
  });

  it('rejects k out of range and empty traces', () => {
    const a = trace(shape, intermediateTokens);
    const b = trace(shape, finalTokens);
    for (const k of [0, 3, 1.5, -1, Number.NaN]) {
      assert.throws(() => routerSaturation(a, b, { k }), inputError(/k must be an integer from 1 to the model's top-k \(2\)/));
    }
    assert.throws(() => routerSaturation(trace(shape, []), trace(shape, [])), inputError(/no tokens/));
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Expert co-activation

describe('expert co-activation', () => {
  // E = 6, top-3, one layer: experts 0 and 1 always fire together, with one of 2, 3, 4 (so 2, 3 and 4 never co-fire),
  // expert 5 never fires. Order inside a token varies, which must not matter.
  const shape = { layers: 1, experts: 6, topK: 3 };
  const thirds = [2, 3, 4, 2, 2, 3, 4, 2, 3, 2]; // expert 2: 5 tokens, 3: 3 tokens, 4: 2 tokens
  const tokens: Tok[] = thirds.map((third, i) => ({ input: i, experts: [i % 2 === 0 ? [0, third, 1] : [third, 1, 0]] }));

  it('is 1 for experts that always fire together, 0 for experts that never do, N_ij/N_i otherwise', () => {
    for (const chunkSize of [10, 3, 1]) {
      const { matrix, counts, tokens: n } = coActivation(trace(shape, tokens, { chunkSize }), { layer: 0 });
      assert.equal(n, 10);
      assert.equal(matrix[0]![1], 1);
      assert.equal(matrix[1]![0], 1);
      for (const [i, j] of [[2, 3], [3, 2], [2, 4], [4, 2], [3, 4], [4, 3]] as const) assert.equal(matrix[i]![j], 0, `${i}, ${j}`);
      // Of the tokens routed to 0, 5/10 also go to 2; of those routed to 2, all go to 0: not symmetric.
      assert.equal(matrix[0]![2], 0.5);
      assert.equal(matrix[2]![0], 1);
      assert.equal(matrix[0]![3], 0.3);
      assert.equal(matrix[4]![1], 1);
      assert.deepEqual([0, 1, 2, 3, 4].map((i) => matrix[i]![i]), [1, 1, 1, 1, 1]);
      assert.deepEqual(counts[0], [10, 10, 5, 3, 2, 0]);
      assert.deepEqual(counts[2], [5, 5, 5, 0, 0, 0]);
      // Counts of pairs are symmetric even though the ratios are not.
      for (let i = 0; i < 6; i++) for (let j = 0; j < 6; j++) assert.equal(counts[i]![j], counts[j]![i]);
      // An expert that never fires has an undefined (NaN) row, and its column is 0.
      assert.ok(matrix[5]!.every(Number.isNaN));
      assert.deepEqual([0, 1, 2, 3, 4].map((i) => matrix[i]![5]), [0, 0, 0, 0, 0]);
    }
  });

  it('with k = 1 only the top-1 expert counts: no pairs at all', () => {
    const { matrix } = coActivation(trace(shape, tokens), { layer: 0, k: 1 });
    // Top-1 experts: 0 on even tokens, 2/3/4 on odd ones; a single expert per token never co-fires with another.
    for (let i = 0; i < 6; i++) for (let j = 0; j < 6; j++) if (i !== j && !Number.isNaN(matrix[i]![j]!)) assert.equal(matrix[i]![j], 0);
    assert.ok(matrix[1]!.every(Number.isNaN)); // expert 1 is never first
  });

  it('picks the experts with the highest co-activation for a figure', () => {
    const result = coActivation(trace(shape, tokens), { layer: 0 });
    const top = topCoActivated(result, 3);
    // 0, 1 (co-activation 1 with each other), 2, 3, 4 (each 1 with 0 and 1): all 1, ties by id; 5 comes last.
    assert.deepEqual(top.experts, [0, 1, 2]);
    assert.deepEqual(top.matrix, [[1, 1, 0.5], [1, 1, 0.5], [1, 1, 1]]);
    assert.deepEqual(topCoActivated(result, 6).experts, [0, 1, 2, 3, 4, 5]);
    assert.throws(() => topCoActivated(result, 7), inputError(/n must be an integer from 1 to 6/));
  });

  it('ranks by the strongest co-activation in either direction', () => {
    // E = 4, top-2: expert 3 fires rarely but always with 2 (matrix[3][2] = 1); 0 and 1 fire with each other
    // half of the time.
    const s = { layers: 1, experts: 4, topK: 2 };
    const t: Tok[] = [[0, 1], [0, 2], [1, 2], [0, 1], [2, 3], [0, 2], [1, 2]].map((e, i) => ({ input: i, experts: [e] }));
    const result = coActivation(trace(s, t), { layer: 0 });
    assert.equal(result.matrix[3]![2], 1);
    assert.deepEqual(topCoActivated(result, 2).experts, [2, 3]);
  });

  it('rejects a layer or k out of range', () => {
    const t = trace(shape, tokens);
    assert.throws(() => coActivation(t, { layer: 1 }), inputError(/layer must be an integer from 0 to 0/));
    assert.throws(() => coActivation(t, { layer: -1 }), inputError(/layer must be/));
    assert.throws(() => coActivation(t, { layer: 0, k: 4 }), inputError(/k must be an integer from 1 to the model's top-k \(3\), got 4/));
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Domain specialization

describe('domain specialization', () => {
  const shape = { layers: 2, experts: 8, topK: 2 };
  const rng = createRng(7);
  const perDomain = 4000;
  // Domain "arxiv": top-1 expert is always 3 in both layers, second expert uniform among the others.
  // Domain "c4": uniformly random top-2.
  const tokens: Tok[] = [];
  for (let i = 0; i < perDomain; i++) {
    const others = randomExperts(rng, 7, 2).map((e) => (e >= 3 ? e + 1 : e));
    tokens.push({ input: i % 50, domain: 0, document: 0, experts: [[3, others[0]!], [3, others[1]!]] });
    tokens.push({ input: i % 50, domain: 1, document: 1, experts: randomRouting(rng, shape) });
  }
  const domains = ['arxiv', 'c4'];

  it('is 1.0 for the only expert a domain uses and 0 for experts it never uses (k = 1)', () => {
    for (const chunkSize of [8000, 777]) {
      const result = domainSpecialization(trace(shape, tokens, { chunkSize, domains }), { k: 1 });
      assert.deepEqual(result.domains, domains);
      assert.deepEqual(result.tokens, [perDomain, perDomain]);
      assert.equal(result.uniform, 1 / 8);
      for (let l = 0; l < 2; l++) assert.deepEqual(result.perDomain[0]![l], [0, 0, 0, 1, 0, 0, 0, 0]);
    }
  });

  it('counts every expert among the top-k for k > 1: expert 3 stays 1, the others share the remaining slot', () => {
    const result = domainSpecialization(trace(shape, tokens, { domains }));
    assert.equal(result.k, 2);
    assert.equal(result.uniform, 2 / 8);
    for (let l = 0; l < 2; l++) {
      const row = result.perDomain[0]![l]!;
      assert.equal(row[3], 1);
      close(row.reduce((a, b) => a + b, 0), 2, 1e-9, 'a domain’s specializations sum to k');
    }
  });

  it('is k/E (within the binomial standard error) for uniformly random routing', () => {
    for (const k of [1, 2]) {
      const result = domainSpecialization(trace(shape, tokens, { domains, chunkSize: 1000 }), { k });
      const p = k / shape.experts;
      const standardError = Math.sqrt((p * (1 - p)) / perDomain);
      for (let l = 0; l < 2; l++) result.perDomain[1]![l]!.forEach((v, e) => close(v, p, 4 * standardError, `k = ${k}, layer ${l}, expert ${e}`));
    }
  });

  it('rejects a domain with no tokens, naming it', () => {
    const withEmpty = trace(shape, tokens.slice(0, 10), { domains: ['arxiv', 'c4', 'books'] });
    assert.throws(() => domainSpecialization(withEmpty), inputError(/domain "books" has no tokens/));
    const onlyArxiv = trace(shape, tokens.filter((t) => t.domain === 0).slice(0, 5), { domains: ['arxiv', 'c4', 'books'] });
    assert.throws(() => domainSpecialization(onlyArxiv), inputError(/domains "c4", "books" have no tokens/));
  });

  it('rejects a domain index outside the header, k out of range, and an empty trace', () => {
    const bad = trace(shape, [{ input: 1, domain: 2, experts: [[0, 1], [0, 1]] }], { domains });
    assert.throws(() => domainSpecialization(bad), inputError(/token 0: domain index 2 is out of range/));
    assert.throws(() => domainSpecialization(trace(shape, tokens, { domains }), { k: 3 }), inputError(/k must be/));
    assert.throws(() => domainSpecialization(trace(shape, [], { domains })), inputError(/no tokens/));
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Vocabulary specialization

describe('vocabulary specialization', () => {
  const shape = { layers: 2, experts: 4, topK: 2, vocabSize: 16 };

  it('is 1.0 for a token always routed to one expert, and lists it first for that expert', () => {
    const rng = createRng(3);
    const tokens: Tok[] = Array.from({ length: 400 }, (_, i) => {
      const input = i % 4 === 0 ? 7 : 1 + Math.floor(rng() * 6); // ids 1..6 at random, 7 every 4th token
      const routing = randomRouting(rng, shape);
      if (input === 7) routing[1] = [2, routing[1]![0] === 2 ? routing[1]![1]! : routing[1]![0]!];
      return { input, experts: routing };
    });
    for (const chunkSize of [400, 13]) {
      const t = trace(shape, tokens, { chunkSize });
      const top1 = vocabularySpecialization(t, { of: 'input', layer: 1, k: 1 });
      assert.equal(top1.specialization(2, 7), 1);
      for (const e of [0, 1, 3]) assert.equal(top1.specialization(e, 7), 0);
      assert.deepEqual(top1.topTokens(2, 1), [{ token: 7, count: 100, routed: 100, specialization: 1 }]);
      // With top-2, token 7 still always routes to 2.
      const top2 = vocabularySpecialization(t, { of: 'input', layer: 1 });
      assert.equal(top2.specialization(2, 7), 1);
      assert.equal(top2.topTokens(2, 1)[0]!.token, 7);
    }
  });

  it('matches a case worked by hand: per token, per expert and per layer summaries', () => {
    // Layer 0 top-1 experts. Token 5: experts 1, 1, 1, 0 → spec(1, 5) = 0.75, spec(0, 5) = 0.25; assigned to 1.
    // Token 6: 0, 0 → spec(0, 6) = 1; assigned to 0. Token 8: 3 → spec(3, 8) = 1 (1 occurrence); assigned to 3.
    // Token 9: 2, 3 → a tie, assigned to the lower id, 2, with 0.5.
    const seq: [number, number][] = [[5, 1], [6, 0], [5, 1], [8, 3], [5, 1], [9, 2], [6, 0], [5, 0], [9, 3]];
    const tokens: Tok[] = seq.map(([input, e]) => ({ input, experts: [[e, (e + 1) % 4], [0, 1]] }));
    const result = vocabularySpecialization(trace(shape, tokens, { chunkSize: 2 }), { of: 'input', layer: 0, k: 1 });
    assert.equal(result.specialization(1, 5), 0.75);
    assert.equal(result.specialization(0, 5), 0.25);
    assert.equal(result.specialization(0, 6), 1);
    assert.ok(Number.isNaN(result.specialization(0, 4)), 'a token never seen');
    assert.equal(result.vocabulary, 4);
    close(result.mean, (0.75 + 1 + 1 + 0.5) / 4, 1e-12, 'layer mean');
    assert.deepEqual(result.perExpert, [
      { tokens: 1, mean: 1 },
      { tokens: 1, mean: 0.75 },
      { tokens: 1, mean: 0.5 },
      { tokens: 1, mean: 1 },
    ]);
    assert.deepEqual(result.topTokens(0, 5), [{ token: 6, count: 2, routed: 2, specialization: 1 }]);
    // Not only the tokens assigned to the expert: token 5 also routes to 0 once.
    assert.deepEqual(
      result.topTokens(0, 5, { assignedOnly: false }).map((e) => [e.token, e.specialization]),
      [[6, 1], [5, 0.25]],
    );
    // minCount drops the tokens seen once (8) from everything.
    const frequent = vocabularySpecialization(trace(shape, tokens), { of: 'input', layer: 0, k: 1, minCount: 2 });
    assert.equal(frequent.vocabulary, 3);
    assert.ok(Number.isNaN(frequent.specialization(3, 8)));
    assert.deepEqual(frequent.perExpert[3], { tokens: 0, mean: Number.NaN });
    assert.deepEqual(frequent.topTokens(3, 5), []);
    // With top-2, token 5's experts are {1,2}, {1,2}, {1,2}, {0,1}: spec(1, 5) = 1.
    const top2 = vocabularySpecialization(trace(shape, tokens), { of: 'input', layer: 0 });
    assert.equal(top2.specialization(1, 5), 1);
    assert.equal(top2.specialization(2, 5), 0.75);
  });

  it('uses the routing of the same position for predicted and ground-truth next tokens, skipping the −1 targets', () => {
    // Two documents; the last token of each has target −1. Positions routed (top-1, layer 0) to expert 3 always
    // have target 7 and prediction 7.
    const tokens: Tok[] = [
      { input: 1, document: 0, target: 7, predicted: 7, experts: [[3, 0], [0, 1]] },
      { input: 7, document: 0, target: 2, predicted: 4, experts: [[1, 0], [0, 1]] },
      { input: 2, document: 0, target: -1, predicted: 7, experts: [[3, 2], [0, 1]] },
      { input: 5, document: 1, target: 7, predicted: 7, experts: [[3, 1], [0, 1]] },
      { input: 7, document: 1, target: -1, predicted: 2, experts: [[0, 1], [0, 1]] },
    ];
    const t = trace(shape, tokens, { chunkSize: 2 });
    const target = vocabularySpecialization(t, { of: 'target', layer: 0, k: 1 });
    assert.equal(target.specialization(3, 7), 1);
    assert.equal(target.vocabulary, 2); // targets 7 and 2; the two −1 are skipped
    assert.deepEqual(target.topTokens(3, 3), [{ token: 7, count: 2, routed: 2, specialization: 1 }]);
    const predicted = vocabularySpecialization(t, { of: 'predicted', layer: 0, k: 1 });
    assert.deepEqual(predicted.topTokens(3, 3), [{ token: 7, count: 3, routed: 3, specialization: 1 }]);
    const input = vocabularySpecialization(t, { of: 'input', layer: 0, k: 1 });
    assert.equal(input.specialization(1, 7), 0.5);
    assert.equal(input.specialization(0, 7), 0.5);
  });

  it('rejects bad options and token ids outside the vocabulary', () => {
    const t = trace(shape, [{ input: 3, experts: [[0, 1], [0, 1]] }]);
    assert.throws(() => vocabularySpecialization(t, { of: 'input', layer: 2 }), inputError(/layer must be an integer from 0 to 1/));
    assert.throws(() => vocabularySpecialization(t, { of: 'input', layer: 0, k: 0 }), inputError(/k must be/));
    assert.throws(() => vocabularySpecialization(t, { of: 'input', layer: 0, minCount: 0 }), inputError(/minCount must be a positive integer/));
    assert.throws(() => vocabularySpecialization(t, { of: 'output' as 'input', layer: 0 }), inputError(/"of" must be/));
    const bad = trace(shape, [{ input: 16, experts: [[0, 1], [0, 1]] }]);
    assert.throws(() => vocabularySpecialization(bad, { of: 'input', layer: 0 }), inputError(/token 0: input id 16 is out of range \(the vocabulary has 16 ids\)/));
    const result = vocabularySpecialization(t, { of: 'input', layer: 0 });
    assert.throws(() => result.topTokens(4, 1), inputError(/expert must be an integer from 0 to 3/));
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Load balance

describe('load balance', () => {
  it('has normalized entropy ≈ 1 and shares ≈ 1/E under uniform routing', () => {
    const shape = { layers: 2, experts: 8, topK: 2 };
    const rng = createRng(11);
    const N = 5000;
    const tokens = Array.from({ length: N }, (_, i) => ({ input: i % 10, experts: randomRouting(rng, shape) }));
    const result = loadBalance(trace(shape, tokens, { chunkSize: 1024 }));
    assert.equal(result.tokens, N);
    for (const layer of result.layers) {
      close(layer.shares.reduce((a, b) => a + b, 0), 1, 1e-9, 'shares sum to 1');
      assert.equal(layer.counts.reduce((a, b) => a + b, 0), 2 * N);
      // Each share is a mean of 2N slot indicators with p = 1/8 (nearly independent).
      const standardError = Math.sqrt((1 / 8) * (7 / 8) / (2 * N));
      for (const s of layer.shares) close(s, 1 / 8, 4 * standardError, 'share');
      assert.ok(layer.normalizedEntropy > 0.999 && layer.normalizedEntropy <= 1, `normalized entropy ${layer.normalizedEntropy}`);
      close(layer.entropy, layer.normalizedEntropy * Math.log(8), 1e-12, 'entropy in nats');
    }
  });

  it('is 0 when everything goes to one expert, ln 2 / ln E when it goes to two', () => {
    const shape = { layers: 1, experts: 4, topK: 2 };
    const tokens: Tok[] = Array.from({ length: 6 }, (_, i) => ({ input: i, experts: [[3, i % 3]] }));
    const top1 = loadBalance(trace(shape, tokens, { chunkSize: 4 }), { k: 1 }).layers[0]!;
    assert.deepEqual(top1.counts, [0, 0, 0, 6]);
    assert.deepEqual(top1.shares, [0, 0, 0, 1]);
    assert.equal(top1.entropy, 0);
    assert.equal(top1.normalizedEntropy, 0);
    assert.equal(top1.maxShare, 1);
    assert.equal(top1.minShare, 0);
    const two = loadBalance(trace(shape, tokens.map((t) => ({ ...t, experts: [[3, 1]] })))).layers[0]!;
    assert.deepEqual(two.shares, [0, 0.5, 0, 0.5]);
    close(two.entropy, Math.log(2), 1e-12, 'entropy');
    close(two.normalizedEntropy, 0.5, 1e-12, 'normalized entropy');
  });

  it('rejects k out of range, expert ids out of range and malformed chunks', () => {
    const shape = { layers: 1, experts: 4, topK: 2 };
    assert.throws(() => loadBalance(trace(shape, [{ input: 0, experts: [[0, 1]] }]), { k: 3 }), inputError(/k must be/));
    assert.throws(() => loadBalance(trace(shape, [{ input: 0, experts: [[0, 4]] }])), inputError(/token 0, layer 0: expert id 4 is out of range \(the model has 4 experts\)/));
    const [chunk] = toChunks(shape, [{ input: 0, experts: [[0, 1]] }], 1);
    const broken: Trace = { header: header(shape), chunks: () => [{ ...chunk!, experts: new Uint16Array(3) }] };
    assert.throws(() => loadBalance(broken), inputError(/trace chunk 0: column "experts" has length 3, expected 2/));
  });
});
