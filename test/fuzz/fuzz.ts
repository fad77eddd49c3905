/**
 * The loading fuzzer's loop: generate case → run it in the worker → judge it; a failing case with two
 * mutations is minimized to the single mutation that still fails the same way. Failures are grouped by class.
 */
import { buildCase, generateCase, type FuzzCase } from './cases.js';
import { caseSeed } from './random.js';
import { judge, type Failure } from './judge.js';
import { WorkerPool, type PoolOptions, type PoolResult } from './pool.js';
import { isFolderSeed, type Seeds } from './seeds.js';

export interface FuzzOptions extends Partial<PoolOptions> {
  seeds: Seeds;
  runSeed: number;
  cases: number;
  /** Only mutators whose name matches. */
  only?: RegExp;
  /** Stop starting new cases after this long (the cases run so far are reported). */
  maxMs?: number;
  onProgress?: (done: number, classes: number) => void;
  /** Called once per failure class, when it is first seen (e.g. to save a regression file at once). */
  onNewClass?: (finding: Finding) => void;
}

export interface Finding {
  failure: Failure;
  fuzzCase: FuzzCase;
  count: number;
}

export interface FuzzSummary {
  cases: number;
  ms: number;
  findings: Map<string, Finding>;
  outcomes: Map<string, number>;
  restarts: number;
}

export const DEFAULT_POOL: PoolOptions = { timeoutMs: 5000, heapMb: 384, rssGrowthMb: 1536 };

export function requestOf(seeds: Seeds, fuzzCase: FuzzCase) {
  return { id: fuzzCase.id, seedPath: seeds.path(fuzzCase.seed), kind: isFolderSeed(fuzzCase.seed) ? ('hf' as const) : ('gguf' as const), file: fuzzCase.file, bytes: fuzzCase.bytes };
}

export async function runCaseIn(pool: WorkerPool, seeds: Seeds, fuzzCase: FuzzCase): Promise<{ result: PoolResult; failure: Failure | undefined }> {
  const result = await pool.run(requestOf(seeds, fuzzCase));
  return { result, failure: judge(fuzzCase, result) };
}

/** The single step of a two-step case that fails with the same outcome on its own, if any. */
async function minimize(pool: WorkerPool, seeds: Seeds, fuzzCase: FuzzCase, failure: Failure): Promise<{ fuzzCase: FuzzCase; failure: Failure }> {
  if (fuzzCase.steps.length < 2) return { fuzzCase, failure };
  for (const step of fuzzCase.steps) {
    const single = buildCase(seeds, fuzzCase, [step]);
    if (!single) continue;
    const again = (await runCaseIn(pool, seeds, single)).failure;
    if (again?.outcome === failure.outcome) return { fuzzCase: single, failure: again };
  }
  return { fuzzCase, failure };
}

function outcomeKey(result: PoolResult): string {
  return result.outcome === 'error' ? `error:${result.olmoeError ? 'olmoe' : result.errorName}` : result.outcome;
}

export async function fuzzLoading(opts: FuzzOptions): Promise<FuzzSummary> {
  const pool = new WorkerPool({ ...DEFAULT_POOL, ...opts });
  const findings = new Map<string, Finding>();
  const outcomes = new Map<string, number>();
  const started = performance.now();
  let done = 0;
  try {
    for (; done < opts.cases; done++) {
      if (opts.maxMs !== undefined && performance.now() - started > opts.maxMs) break;
      const fuzzCase = generateCase(opts.seeds, opts.runSeed, done, opts.only);
      const { result, failure } = await runCaseIn(pool, opts.seeds, fuzzCase);
      outcomes.set(outcomeKey(result), (outcomes.get(outcomeKey(result)) ?? 0) + 1);
      if (failure) {
        const minimal = await minimize(pool, opts.seeds, fuzzCase, failure);
        const seen = findings.get(minimal.failure.class);
        if (seen) seen.count++;
        else {
          const finding = { ...minimal, count: 1 };
          findings.set(minimal.failure.class, finding);
          opts.onNewClass?.(finding);
        }
      }
      if (done % 100 === 99) opts.onProgress?.(done + 1, findings.size);
    }
  } finally {
    await pool.close();
  }
  return { cases: done, ms: performance.now() - started, findings, outcomes, restarts: pool.restarts };
}

/**
 * A smaller reproducer of the same failure class, for the regression file: the same mutators re-drawn with
 * other seeds (on the smaller q8_0 GGUF seed when the case is a GGUF), keeping the smallest input that still
 * fails the same way. Deep-nesting and many-entries finds otherwise make megabyte fixtures.
 */
export async function shrink(pool: WorkerPool, seeds: Seeds, finding: Finding, tries = 24): Promise<FuzzCase> {
  let best = finding.fuzzCase;
  for (let t = 0; t < tries && best.bytes.length > 16_384; t++) {
    const seed = isFolderSeed(best.seed) ? best.seed : 'gguf-q8_0';
    const steps = best.steps.map((step, k) => ({ ...step, seed: caseSeed(step.seed, t, k + 99) }));
    const candidate = buildCase(seeds, { ...best, seed }, steps);
    if (!candidate || candidate.bytes.length >= best.bytes.length) continue;
    const { failure } = await runCaseIn(pool, seeds, candidate);
    if (failure?.class === finding.failure.class) best = candidate;
  }
  return best;
}
