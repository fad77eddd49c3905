/**
 * `olmoe bench MODEL`: load time, resident memory, prefill and decode speed (median of several runs after a
 * warm-up), as llama-bench measures them: prefill = one forward over P prompt tokens; decode = G single-token
 * forwards over the KV cache, greedy. Token ids are fixed pseudo-random ids, so any checkpoint works.
 * On the native backend it also measures, in the same run, the machine's read bandwidth and FP32 peak, and prints
 * the bytes a decoded token reads (weights of its actual routing, KV cache) and decode as a % of that bound. The
 * bandwidth is sampled right before and right after every run's decode and the run is set against the mean of its
 * two samples (a shared machine's bandwidth moves by tens of % within minutes); the best of five passes at the end is
 * printed too.
 */
import type { Command } from 'commander';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { argmax, createRng, InputError, type DType, type KVCache, type OlmoeModel, type RoutingObserver, type StepProfile } from '../../index.js';
import { addKVCacheOption, addModelOptions, loadModel, parseInteger, printJson, type ModelFlags } from '../common.js';
import { DecodeTraffic } from './bench-traffic.js';

interface BenchFlags extends ModelFlags {
  prompt: number;
  gen: number;
  runs: number;
  json?: boolean;
  machine: boolean;
  profile?: boolean;
}

/** The native backend's measurement of the machine (src/backends/native/machine.ts). */
interface MeasuringBackend {
  measureMachine(): { readBytesPerSecond: number; fp32FlopsPerSecond: number };
  sampleReadBandwidth(keep: boolean): number;
}

export function registerBench(program: Command): void {
  const command = program
    .command('bench')
    .description('measure load time, resident memory, prefill and decode tokens/s')
    .argument('<model>', 'model folder or hub id (org/name)')
    .option('--prompt <n>', 'prompt tokens per prefill', parseInteger('--prompt'), 512)
    .option('--gen <n>', 'generated tokens per decode run', parseInteger('--gen'), 128)
    .option('--runs <n>', 'measured runs (median reported)', parseInteger('--runs'), 3)
    .option('--no-machine', 'skip measuring read bandwidth and FP32 peak (native backend; takes a few seconds)')
    .option('--profile', 'after the runs, one more decode with every native op timed: where a token goes, per kind of op (native backend)')
    .option('--json', 'print the result as JSON');
  addKVCacheOption(addModelOptions(command)).action(runBench);
}

function residentMiB(): number {
  const match = readFileSync('/proc/self/status', 'utf8').match(/VmRSS:\s+(\d+) kB/);
  return match ? Math.round(Number(match[1]) / 1024) : NaN;
}

/** Resident memory on 2 MiB pages (anonymous, and file pages mapped whole), or null where Linux does not say. */
function hugePageMiB(): number | null {
  let rollup: string;
  try {
    rollup = readFileSync('/proc/self/smaps_rollup', 'utf8');
  } catch {
    return null;
  }
  const kB = [...rollup.matchAll(/^(?:AnonHugePages|FilePmdMapped|ShmemPmdMapped):\s+(\d+) kB/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
  return Math.round(kB / 1024);
}

/** The middle value; with an even count, the mean of the two middle ones. */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Bytes of a checkpoint's weights: the GGUF file, or the folder's safetensors files (the bar resident memory is set against). */
export function weightFileBytes(path: string): number {
  const stat = statSync(path);
  if (stat.isFile()) return stat.size;
  return readdirSync(path).filter((name) => name.endsWith('.safetensors')).reduce((sum, name) => sum + statSync(join(path, name)).size, 0);
}

/**
 * Seconds for one prefill of `prompt` tokens and one decode of `gen` tokens after it (`beforeDecode` runs between
 * them, untimed). The KV cache is allocated once and emptied per run, as llama.cpp reuses its context between runs.
 */
function timeRun(model: OlmoeModel, cache: KVCache, promptIds: Int32Array, gen: number, observer?: RoutingObserver, beforeDecode?: () => void): { prefill: number; decode: number } {
  cache.length = 0;
  let started = performance.now();
  let result = model.forward(promptIds, { cache, logits: 'last' });
  const prefill = (performance.now() - started) / 1000;
  beforeDecode?.();
  started = performance.now();
  for (let i = 0; i < gen; i++) {
    const next = argmax(model.backend.toFloat32(result));
    model.backend.release?.(result); // read: its storage takes the next token's logits (as generate's loop does)
    result = model.forward(Int32Array.of(next), { cache, logits: 'last', observer });
  }
  model.backend.release?.(result);
  return { prefill, decode: (performance.now() - started) / 1000 };
}

/**
 * timeRun with the read bandwidth sampled right before and right after its decode by `sample` (its argument: keep the
 * buffer mapped for a next sample), set against the run as the mean of the two: 0 without `sample`, or where a sample
 * could not allocate.
 */
function sampledRun(model: OlmoeModel, cache: KVCache, promptIds: Int32Array, gen: number, sample: ((keep: boolean) => number) | undefined, keep: boolean) {
  let before = 0;
  const run = timeRun(model, cache, promptIds, gen, undefined, sample ? () => (before = sample(true)) : undefined);
  const after = sample ? sample(keep) : 0;
  return { ...run, readBytesPerSecond: before > 0 && after > 0 ? (before + after) / 2 : 0, steady: steadySamples(before, after) };
}

/** How far apart (as a ratio) a run's two bandwidth samples may be for the run to count as steady. */
const STEADY_SAMPLE_RATIO = 1.25;

/**
 * Whether the bandwidth sampled before and after a decode run agree within STEADY_SAMPLE_RATIO. On a machine whose
 * bandwidth changes by phases (~2× within seconds on the AMD EPYC virtual machine measured, README), samples on
 * either side of a change give the run a bound it did not run against: their mean can be half way between the two
 * phases while the decode ran in one of them.
 */
export function steadySamples(before: number, after: number): boolean {
  return before > 0 && after > 0 && Math.max(before, after) <= STEADY_SAMPLE_RATIO * Math.min(before, after);
}

/**
 * Decode against its memory bound: bytes per token (weights of the routing seen in `traffic`, KV cache at the
 * decode positions) and, with the bandwidth sampled beside each decode run (`paired`: tokens/s, bytes/s and whether
 * its two samples agreed, per run), the bound (median bandwidth ÷ bytes) and decode as a % of it: the median of the
 * runs' own percentages. Both over the steady runs (steadySamples) where there are any, else over all of them;
 * `decodePercentOfBoundRuns` lists every run's, and `decodeSteadyRuns` counts the steady ones.
 */
export function decodeBound(traffic: Pick<DecodeTraffic, 'weightBytesPerToken' | 'cacheBytesPerToken'>, machine: { readBytesPerSecond: number; fp32FlopsPerSecond: number } | undefined, paired: { tokensPerSecond: number; readBytesPerSecond: number; steady: boolean }[], prompt: number, gen: number) {
  const weights = traffic.weightBytesPerToken(), cache = traffic.cacheBytesPerToken(prompt, gen);
  const runs = paired.filter((run) => run.readBytesPerSecond > 0);
  const percent = (run: { tokensPerSecond: number; readBytesPerSecond: number }) => +((100 * run.tokensPerSecond * (weights + cache)) / run.readBytesPerSecond).toFixed(1);
  const steady = runs.filter((run) => run.steady);
  const counted = steady.length > 0 ? steady : runs;
  const bandwidth = counted.length > 0 ? median(counted.map((run) => run.readBytesPerSecond)) : null;
  return {
    readGBPerSecond: bandwidth === null ? null : +(bandwidth / 1e9).toFixed(2),
    readGBPerSecondRuns: runs.map((run) => +(run.readBytesPerSecond / 1e9).toFixed(2)),
    readGBPerSecondBest: machine ? +(machine.readBytesPerSecond / 1e9).toFixed(2) : null,
    fp32PeakGflops: machine ? +(machine.fp32FlopsPerSecond / 1e9).toFixed(0) : null,
    decodeWeightMBPerToken: +(weights / 1e6).toFixed(3), decodeCacheMBPerToken: +(cache / 1e6).toFixed(3),
    decodeBoundTokensPerSecond: bandwidth === null ? null : +(bandwidth / (weights + cache)).toFixed(2),
    decodePercentOfBoundRuns: runs.map(percent),
    decodeSteadyRuns: steady.length,
    decodePercentOfBound: counted.length > 0 ? +median(counted.map(percent)).toFixed(2) : null, // (a median of two: their mean)
  };
}

/**
 * Prompt tokens that fit with `gen` generated ones in the model's context: --prompt, clamped (with a message) when
 * the two exceed max_position_embeddings, as the default 512 does on the bundled 256-position model.
 */
function promptLength(flags: BenchFlags, context: number, say: (text: string) => void): number {
  const wanted = Math.max(1, flags.prompt);
  if (flags.gen + 1 > context) throw new InputError(`--gen ${flags.gen}: the model's context is ${context} positions (max_position_embeddings); give --gen ${context - 1} or less`);
  if (wanted + flags.gen <= context) return wanted;
  const clamped = context - flags.gen;
  say(`--prompt ${wanted} + --gen ${flags.gen} exceed the model's context of ${context} positions (max_position_embeddings): measuring a prompt of ${clamped} tokens\n`);
  return clamped;
}

async function runBench(spec: string, flags: BenchFlags): Promise<void> {
  const loadStarted = performance.now();
  const { model, dir } = await loadModel(spec, flags);
  const loadSeconds = (performance.now() - loadStarted) / 1000;
  const say = (text: string) => flags.quiet || process.stderr.write(text);
  const rng = createRng(1234);
  const promptTokens = promptLength(flags, model.config.maxPositionEmbeddings, (text) => process.stderr.write(text));
  const promptIds = Int32Array.from({ length: promptTokens }, () => Math.floor(rng() * Math.min(model.config.vocabSize, 50000)));
  if (flags.profile) {
    if (typeof model.backend.profileSteps !== 'function' || typeof model.backend.readStepProfile !== 'function') throw new InputError('--profile: the backend has no per-op profile (it needs --backend native)');
    if (flags.gen < 2) throw new InputError('--profile: give --gen 2 or more (a profile times the decode steps after the first)');
  }
  say(`warm-up …\n`);
  const cache = model.createCache(promptIds.length + flags.gen);
  // The warm-up decodes as many tokens as a run, so that the runs find every KV-cache position they write already
  // faulted in (llama.cpp clears its whole cache when it creates it): with a 4-token warm-up the first run wrote 124
  // fresh positions per layer (~6,300 page faults, 0.7 ms of system time a token) and ran 10–15 % slower than the
  // others (Q4_0, AMD EPYC, 2 threads). It also observes the routing (the runs decode the same tokens): a step with an
  // observer runs the model's code, not the recorded step plans the runs replay (Backend.recordStep), and timing it made
  // the first run ~20 % slower than the others (Q4_K_M).
  const traffic = new DecodeTraffic(model);
  timeRun(model, cache, promptIds, flags.gen, traffic.observer);
  const backend = model.backend as { name: string; threads?: number; simd?: string; streamPrefetch?: boolean; quantGemmKernel?(dtype: DType): string } & Partial<MeasuringBackend>;
  const measurable = flags.machine && typeof backend.measureMachine === 'function' && typeof backend.sampleReadBandwidth === 'function';
  const runCount = Math.max(1, flags.runs);
  // The read bandwidth sampled right before and right after each run's decode (the buffer kept mapped until the last,
  // the profiled run's included).
  const sample = measurable && flags.gen > 0 ? (keep: boolean) => backend.sampleReadBandwidth!(keep) : undefined;
  const runs: { prefill: number; decode: number }[] = [];
  const paired: { tokensPerSecond: number; readBytesPerSecond: number; steady: boolean }[] = [];
  for (let i = 0; i < runCount; i++) {
    const run = sampledRun(model, cache, promptIds, flags.gen, sample, i + 1 < runCount || flags.profile === true);
    runs.push(run);
    const tokensPerSecond = flags.gen / run.decode;
    let read = '';
    if (sample) {
      paired.push({ tokensPerSecond, readBytesPerSecond: run.readBytesPerSecond, steady: run.steady });
      read = `, read ${(run.readBytesPerSecond / 1e9).toFixed(1)} GB/s beside it${run.steady ? '' : ` (its two samples differ by more than ${Math.round(100 * (STEADY_SAMPLE_RATIO - 1))} %: not counted where other runs are steady)`}`;
    }
    say(`run ${i + 1}: prefill ${(promptIds.length / run.prefill).toFixed(1)} tok/s, decode ${tokensPerSecond.toFixed(2)} tok/s${read}\n`);
  }
  const profile = flags.profile ? profileDecode(model, cache, promptIds, flags.gen, sample, say) : undefined;
  // The many-token kernel of the first layer's expert weights (prefill's bulk): amx-int8, avx512-vnni, integer-dot or float-tiles.
  const expertDtype = model.weights.layers[0]?.experts.gate[0]?.dtype;
  const prefillKernel = backend.quantGemmKernel && expertDtype && expertDtype !== 'f64' ? backend.quantGemmKernel(expertDtype) : 'none';
  if (measurable) say('measuring read bandwidth and FP32 peak …\n');
  const machine = measurable ? backend.measureMachine!() : undefined;
  const [resident, hugePages, weightBytes] = [residentMiB(), hugePageMiB(), weightFileBytes(dir)];
  const decodeTokensPerSecond = flags.gen > 0 ? +(flags.gen / median(runs.map((r) => r.decode))).toFixed(2) : null;
  const result = {
    model: spec, backend: backend.name, threads: backend.threads ?? 1, simd: backend.simd ?? 'none', streamPrefetch: backend.streamPrefetch ?? null, prefillKernel,
    loadSeconds: +loadSeconds.toFixed(2), residentMiB: resident, hugePageMiB: hugePages, weightFileMiB: Math.round(weightBytes / 2 ** 20), residentOverWeightFile: weightBytes > 0 ? +((resident * 2 ** 20) / weightBytes).toFixed(3) : null,
    kvCache: model.kvCacheType, kvCacheMiB: +((cache.allocated * cache.bytesPerPosition) / 2 ** 20).toFixed(2), promptTokens: promptIds.length, genTokens: flags.gen,
    prefillTokensPerSecond: +(promptIds.length / median(runs.map((r) => r.prefill))).toFixed(2),
    decodeTokensPerSecond, runs: runs.length,
    ...decodeBound(traffic, machine, paired, promptIds.length, flags.gen),
  };
  if (flags.json) printJson(profile ? { ...result, decodeProfile: profile } : result);
  else {
    process.stdout.write(Object.entries(result).map(([k, v]) => `${k.padEnd(28)} ${v}`).join('\n') + '\n');
    if (profile) process.stdout.write(profileTable(profile));
  }
}

interface DecodeProfile {
  tokens: number;
  msPerToken: number;
  readGBPerSecond: number | null;
  ops: { kind: string; callsPerToken: number; microsecondsPerToken: number; percentOfToken: number; mbPerToken: number; gbPerSecond: number | null; percentOfRead: number | null }[];
  /** The token's time outside the timed ops: the embedding row, JavaScript, the KV cache's page faults, the logits copy. */
  outsideMicrosecondsPerToken: number;
}

/**
 * One more decode of `gen` tokens with every native op of the replayed steps timed (NativeBackend.profileSteps), and
 * the read bandwidth sampled beside it: per kind of op its share of a token and the rate at which it read its bytes.
 */
function profileDecode(model: OlmoeModel, cache: KVCache, promptIds: Int32Array, gen: number, sample: ((keep: boolean) => number) | undefined, say: (text: string) => void): DecodeProfile {
  const { backend } = model; // (runBench checked that it profiles and that gen ≥ 2)
  say('profiled decode …\n');
  backend.profileSteps!(true);
  let run: ReturnType<typeof sampledRun>;
  let steps: StepProfile | null;
  try {
    run = sampledRun(model, cache, promptIds, gen, sample, false);
    steps = backend.readStepProfile!();
  } finally {
    backend.profileSteps!(false);
  }
  const read = run.readBytesPerSecond > 0 ? run.readBytesPerSecond : null;
  if (!steps || steps.tokens === 0) throw new InputError('--profile: no decode step was replayed natively (step plans off: OLMOE_STEP_PLANS=0, or a model the plans refuse)');
  const tokens = steps.tokens, token = run.decode / gen;
  const ops = steps.ops.map((op) => {
    const seconds = op.seconds / tokens, bytes = op.bytes / tokens;
    const rate = op.seconds > 0 && op.bytes > 0 && op.kind !== 'kv store' ? op.bytes / op.seconds : null; // (a store's bytes are written)
    return {
      kind: op.kind, callsPerToken: +(op.calls / tokens).toFixed(2), microsecondsPerToken: +(seconds * 1e6).toFixed(1), percentOfToken: +((100 * seconds) / token).toFixed(1),
      mbPerToken: +(bytes / 1e6).toFixed(4), gbPerSecond: rate === null ? null : +(rate / 1e9).toFixed(1), percentOfRead: rate === null || read === null ? null : +((100 * rate) / read).toFixed(1),
    };
  });
  const timed = steps.ops.reduce((sum, op) => sum + op.seconds, 0) / tokens;
  return { tokens, msPerToken: +(token * 1e3).toFixed(3), readGBPerSecond: read === null ? null : +(read / 1e9).toFixed(1), ops, outsideMicrosecondsPerToken: +((token - timed) * 1e6).toFixed(1) };
}

function profileTable(profile: DecodeProfile): string {
  const read = profile.readGBPerSecond === null ? '' : `; read ${profile.readGBPerSecond} GB/s beside it`;
  const lines = [`decode profile: ${profile.tokens} tokens, ${profile.msPerToken} ms a token (${(1000 / profile.msPerToken).toFixed(2)} tok/s${read})`];
  const width = Math.max(12, ...profile.ops.map((op) => op.kind.length)); // 'matmul q4_k+q6_k'
  const row = (cells: string[]) => cells.map((cell, i) => (i === 0 ? cell.padEnd(width) : cell.padStart(11))).join(' ');
  lines.push(row(['op', 'calls/token', 'µs/token', '% of token', 'MB/token', 'GB/s', '% of read']));
  for (const op of profile.ops) {
    lines.push(row([op.kind, String(op.callsPerToken), op.microsecondsPerToken.toFixed(1), op.percentOfToken.toFixed(1), op.mbPerToken > 0 ? op.mbPerToken.toFixed(2) : '', op.gbPerSecond?.toFixed(1) ?? '', op.percentOfRead?.toFixed(1) ?? '']));
  }
  const outside = (100 * profile.outsideMicrosecondsPerToken) / (profile.msPerToken * 1000);
  lines.push(row(['(outside)', '', profile.outsideMicrosecondsPerToken.toFixed(1), outside.toFixed(1), '', '', '']));
  return lines.join('\n') + '\n';
}
