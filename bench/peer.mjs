#!/usr/bin/env node
// olmoe vs llama.cpp (node-llama-cpp 3.21.1, CPU) on the same GGUF files in the same run: load seconds, resident
// memory, prefill tok/s (one 512-token prompt) and decode tok/s (128 greedy tokens), median of 3 runs after a
// warm-up, N threads each. Each engine runs in its own process, one after the other, on a pre-warmed page cache;
// --rounds R alternates the two engines R times and reports medians over the rounds (two rounds: their mean), then
// each round's own ratios.
// olmoe's runs also measure the machine (read bandwidth sampled beside each decode run, FP32 peak) and print decode as
// a % of its memory bound (the median over the rounds). llama.cpp's decode runs get the same samples (olmoe's native
// measurement, loaded in its process), so each round also prints llama.cpp's decode as a % of that bound and the
// ratio of the two per byte the machine delivered: on a machine whose bandwidth changes by phases, the plain ratio
// compares whichever phases the two runs fell in.
//   (in a scratch folder) npm i -E node-llama-cpp@3.21.1
//   NLC=/scratch/node_modules/node-llama-cpp/dist/index.js node bench/peer.mjs [--threads 2] [--rounds 3] [--no-memory-warmup] A.gguf B.gguf ...
// Before a file's first round a child process touches twice the file's size of fresh memory and exits (warmFreshMemory).
// An argument HF_FOLDER=FILE.gguf runs olmoe on the HF folder (its safetensors, as `olmoe generate` loads a hub model)
// and llama.cpp on the GGUF converted from it (llama.cpp reads no HF folder).
import { execFileSync, spawnSync } from 'node:child_process';
import { openSync, readSync, closeSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const flag = (name, fallback) => (args.includes(name) ? args.splice(args.indexOf(name), 2)[1] : fallback);
const threads = Number(flag('--threads', '2'));
const prompt = Number(flag('--prompt', '512'));
const gen = Number(flag('--gen', '128'));
const runs = Number(flag('--runs', '3'));
const rounds = Number(flag('--rounds', '1'));
const warmMemory = args.includes('--no-memory-warmup') ? (args.splice(args.indexOf('--no-memory-warmup'), 1), false) : true;
// olmoe bench's own rules: the weights' bytes, when a run's bandwidth samples agree, decode as a % of its bound
const { weightFileBytes, steadySamples, decodeBound } = await import(join(here, '..', 'dist', 'src', 'cli', 'commands', 'bench.js'));

if (process.env.PEER_CHILD) await llamaChild(process.env.PEER_CHILD);
else await main();

async function main() {
  if (!process.env.NLC) throw new Error('set NLC to node-llama-cpp/dist/index.js (npm i -E node-llama-cpp@3.21.1 in a scratch folder)');
  const rows = [];
  for (const arg of args) {
    const [ours, file = ours] = arg.split('=');
    warmPageCache(ours);
    if (file !== ours) warmPageCache(file);
    if (warmMemory) warmFreshMemory(2 * weightFileBytes(ours));
    // Alternating rounds (olmoe, llama.cpp, olmoe, …): on a shared machine the load changes by the minute, and
    // alternation spreads it over both engines; each number is the median over rounds of each round's median.
    const oursRuns = [];
    const theirsRuns = [];
    for (let round = 0; round < rounds; round++) {
      oursRuns.push(JSON.parse(execFileSync(process.execPath, [join(here, '..', 'dist', 'src', 'cli', 'main.js'), 'bench', ours, '--threads', String(threads),
        '--prompt', String(prompt), '--gen', String(gen), '--runs', String(runs), '--json', '-q'],
        { encoding: 'utf8', maxBuffer: 1 << 24 })));
      const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
        encoding: 'utf8', env: { ...process.env, PEER_CHILD: file }, maxBuffer: 1 << 24,
      });
      if (child.status !== 0) throw new Error(`llama.cpp run failed on ${file}: ${child.stderr}`);
      theirsRuns.push(JSON.parse(child.stdout.trim().split('\n').pop()));
      console.error(`${file} round ${round + 1}/${rounds}: olmoe ${JSON.stringify(oursRuns.at(-1))}\n${file} round ${round + 1}/${rounds}: llama.cpp ${JSON.stringify(theirsRuns.at(-1))}`);
    }
    rows.push({ file: arg, ours: medianRecord(oursRuns), theirs: medianRecord(theirsRuns), oursRuns, theirsRuns });
  }
  printTable(rows);
}

/** Field-wise median of numeric fields over records (other fields from the first record). */
function medianRecord(records) {
  const result = { ...records[0] };
  for (const [key, value] of Object.entries(result)) {
    const values = records.map((r) => r[key]).filter((v) => typeof v === 'number');
    if (typeof value === 'number' || (value == null && values.length)) result[key] = values.length ? median(values) : value;
  }
  return result;
}

/** The middle value, or the mean of the two middle ones (two rounds: their mean, not the larger one). */
function median(values) {
  const sorted = [...values].sort((a, b) => a - b), middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function warmPageCache(file) {
  if (statSync(file).isDirectory()) {
    for (const name of readdirSync(file)) if (name.endsWith('.safetensors')) warmPageCache(join(file, name));
    return;
  }
  const fd = openSync(file, 'r');
  const buffer = Buffer.allocUnsafe(1 << 24);
  for (let at = 0; readSync(fd, buffer, 0, buffer.length, at) > 0; at += buffer.length);
  closeSync(fd);
}

/**
 * Fresh memory touched by a child process that then exits, before a file's first round. Every engine run after the
 * first follows another engine's exit; on a virtual machine that reports free memory to its host (Linux free page
 * reporting, virtio-balloon), memory left free for a few seconds is taken back and faults in again at ~0.45 GB/s
 * against ~2.5 (docs/speed-history.md, twentieth session), so without this the first engine of a run, olmoe, loads
 * on memory the others do not get. `--no-memory-warmup` skips it. At most half of MemAvailable.
 */
function warmFreshMemory(bytes) {
  const available = Number(readFileSync('/proc/meminfo', 'utf8').match(/MemAvailable:\s+(\d+)/)?.[1] ?? 0) * 1024;
  const chunks = Math.floor(Math.min(bytes, available / 2) / (1 << 30));
  if (chunks < 1) return;
  spawnSync(process.execPath, ['-e', `const kept = []; for (let i = 0; i < ${chunks}; i++) kept.push(Buffer.allocUnsafe(1 << 30).fill(1));`], { stdio: 'inherit' });
}

/** A row's name: the file name, or both of an HF_FOLDER=FILE.gguf argument. */
function label(file) {
  return file.split('=').map((p) => p.split('/').pop()).join(' = ');
}

function printTable(rows) {
  const ratio = (a, b) => (a / b).toFixed(2) + '×';
  const machines = rows.map(({ ours }) => ours).filter((o) => o.readGBPerSecond != null);
  const machine = machines.length ? `; read bandwidth ${machines.map((o) => o.readGBPerSecond.toFixed(1)).join(', ')} GB/s, FP32 peak ${machines.map((o) => o.fp32PeakGflops.toFixed(0)).join(', ')} GFLOP/s (per file, measured by olmoe bench)` : '';
  console.log(`threads ${threads}, prompt ${prompt}, decode ${gen}, median of ${runs} runs after a warm-up, ${rounds} alternating round(s)${machine}`);
  console.log('| file | olmoe prefill tok/s | llama.cpp prefill | ratio | olmoe decode tok/s | llama.cpp decode | ratio | olmoe MB read per token / % of bound | olmoe load s / RSS MiB | llama.cpp load s / RSS MiB |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const { file, ours, theirs } of rows) {
    const bound = ours.decodePercentOfBound == null ? '–' : `${(ours.decodeWeightMBPerToken + ours.decodeCacheMBPerToken).toFixed(0)} / ${+ours.decodePercentOfBound.toFixed(1)} %`;
    const round2 = (x) => +x.toFixed(2);
    console.log(`| ${label(file)} | ${round2(ours.prefillTokensPerSecond)} | ${round2(theirs.prefill)} | ${ratio(ours.prefillTokensPerSecond, theirs.prefill)} | ` +
      `${round2(ours.decodeTokensPerSecond)} | ${round2(theirs.decode)} | ${ratio(ours.decodeTokensPerSecond, theirs.decode)} | ${bound} | ${round2(ours.loadSeconds)} / ${Math.round(ours.residentMiB)}${ours.residentOverWeightFile ? ` (${ours.residentOverWeightFile.toFixed(3)}× the file)` : ''} | ${round2(theirs.load)} / ${Math.round(theirs.rss)} |`);
  }
  if (rounds < 2) return;
  // Each round's own ratios (olmoe and llama.cpp of the same round), the range the README gives.
  const range = (values) => `${Math.min(...values).toFixed(2)}–${Math.max(...values).toFixed(2)}`;
  for (const { file, oursRuns, theirsRuns } of rows) {
    const per = (ourKey, theirKey) => range(oursRuns.map((o, i) => o[ourKey] / theirsRuns[i][theirKey]));
    const bound = oursRuns.map((o) => o.decodePercentOfBound).filter((v) => v != null);
    const theirBound = theirsRuns.map((t, i) => theirPercentOfBound(oursRuns[i], t));
    const both = bound.length === theirBound.length && theirBound.every((v) => v != null);
    console.log(`${label(file)}: per round, prefill ${per('prefillTokensPerSecond', 'prefill')}×, decode ${per('decodeTokensPerSecond', 'decode')}×` +
      `${bound.length ? `, decode ${bound.join(' / ')} % of bound` : ''}` +
      `${both ? ` (llama.cpp ${theirBound.join(' / ')} % of the same bound: ${theirBound.map((v, i) => (bound[i] / v).toFixed(2)).join(' / ')}× per bandwidth)` : ''}` +
      `, read GB/s beside the decode runs olmoe ${oursRuns.map((o) => (o.readGBPerSecondRuns ?? []).join(', ')).join(' | ')} vs llama.cpp ${theirsRuns.map((t) => (t.readGBPerSecondRuns ?? []).join(', ')).join(' | ')}` +
      `, load ${oursRuns.map((o) => o.loadSeconds).join(' / ')} s vs ${theirsRuns.map((t) => t.load).join(' / ')} s`);
  }
}

/**
 * llama.cpp's decode as a % of the bound olmoe's run of the same round set (olmoe's bytes per token: the same file,
 * prompt and decode length), each run against the bandwidth sampled beside it, by bench.ts's decodeBound (the median
 * over the runs whose two samples agree, steadySamples, where there are any, as olmoe bench counts its own), or null
 * where a run has no sample. In the machine's slow and fast phases the bandwidth differs by ~2× (README), so this
 * compares the two engines per byte the machine delivered during each one's own runs.
 */
function theirPercentOfBound(ours, theirs) {
  const bytes = (ours.decodeWeightMBPerToken + ours.decodeCacheMBPerToken) * 1e6;
  const reads = theirs.readGBPerSecondRuns ?? [];
  if (!(bytes > 0) || reads.length === 0 || reads.length !== (theirs.decodeRuns ?? []).length) return null;
  const paired = theirs.decodeRuns.map((decode, i) => ({ tokensPerSecond: decode, readBytesPerSecond: reads[i] * 1e9, steady: theirs.readSteadyRuns?.[i] === true }));
  const { decodePercentOfBound } = decodeBound({ weightBytesPerToken: () => bytes, cacheBytesPerToken: () => 0 }, undefined, paired, 0, 0);
  return decodePercentOfBound === null ? null : +decodePercentOfBound.toFixed(1);
}

/** One engine, one file: llama.cpp through node-llama-cpp, measured as `olmoe bench` measures itself. */
async function llamaChild(file) {
  const { getLlama } = await import(process.env.NLC);
  // olmoe's native measurement of the read bandwidth, where the addon is built (its pool idles while llama.cpp runs)
  const { createBackend } = await import(join(here, '..', 'dist', 'src', 'index.js'));
  let meter;
  try {
    meter = createBackend('native', { threads });
  } catch {
    meter = undefined;
  }
  const seconds = () => performance.now() / 1000;
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
  let started = seconds();
  const model = await llama.loadModel({ modelPath: file });
  const load = +(seconds() - started).toFixed(2);
  const context = await model.createContext({ contextSize: prompt + gen + 64, batchSize: prompt, threads: { ideal: threads, min: threads } });
  const sequence = context.getSequence();
  let x = 1234;
  const ids = Array.from({ length: prompt }, () => (x = (x * 1103515245 + 12345) % 2147483648) % 50000);
  const prefills = [];
  const decodes = [];
  const reads = [];
  let rss;
  for (let run = 0; run <= runs; run++) {
    await sequence.clearHistory();
    started = seconds();
    await sequence.evaluateWithoutGeneratingNewTokens(ids);
    const prefill = seconds() - started;
    // The read bandwidth right before and right after each measured decode run, as olmoe bench samples it beside its
    // own (its kept 2 GiB buffer mapped after the warm-up's resident memory was read, and unmapped by the last sample).
    const before = run > 0 && meter ? meter.sampleReadBandwidth(true) : 0;
    started = seconds();
    let [n, last] = [0, ids[prompt - 1]];
    while (n < gen) {
      // The generator ends at an end-of-generation token; continue from it until `gen` tokens were decoded.
      for await (const token of sequence.evaluate([last], { temperature: 0, yieldEogToken: true })) {
        last = token;
        if (++n >= gen) break;
      }
    }
    const decode = gen / (seconds() - started);
    if (run === 0) {
      rss = Math.round(Number(readFileSync('/proc/self/status', 'utf8').match(/VmRSS:\s+(\d+)/)[1]) / 1024);
      continue; // warm-up
    }
    const after = meter ? meter.sampleReadBandwidth(run < runs) : 0;
    prefills.push(prompt / prefill);
    decodes.push(decode);
    if (before > 0 && after > 0) reads.push({ mean: (before + after) / 2, steady: steadySamples(before, after) });
  }
  const sampled = reads.length === decodes.length;
  const readGBPerSecondRuns = sampled ? reads.map((r) => +(r.mean / 1e9).toFixed(2)) : [];
  const readSteadyRuns = sampled ? reads.map((r) => r.steady) : [];
  console.log(JSON.stringify({ load, rss, prefill: +median(prefills).toFixed(2), decode: +median(decodes).toFixed(2), decodeRuns: decodes.map((d) => +d.toFixed(2)), readGBPerSecondRuns, readSteadyRuns }));
  await context.dispose();
  await model.dispose();
  await llama.dispose();
}
