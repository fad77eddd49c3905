/**
 * The fuzzer's worker thread: writes one case's input into its scratch folder, loads it the way a user does
 * (loadPretrained on the reference backend), runs a few token ids through the model and exercises the tokenizer,
 * and reports what happened. Reused across cases; the pool replaces it after a hang, a crash or running out of memory.
 * Run as a plain script (e.g. by `node --test` scanning dist/test) it does nothing.
 */
import { mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { ReferenceBackend } from '../../src/backends/reference/index.js';
import { OlmoeError } from '../../src/core/errors.js';
import { loadPretrained, type Pretrained } from '../../src/model/pretrained.js';

export interface CaseRequest {
  id: string;
  /** The clean seed: an HF folder or a .gguf file. */
  seedPath: string;
  kind: 'hf' | 'gguf';
  file: string;
  bytes: Uint8Array;
}

export interface CaseResult {
  id: string;
  outcome: 'loaded' | 'error';
  /** Where a thrown error came from. */
  phase?: 'load' | 'forward' | 'tokenizer';
  errorName?: string;
  olmoeError?: boolean;
  message?: string;
  finite?: boolean;
  /** Logits bit-identical to the clean seed's. */
  identical?: boolean;
  ms: number;
}

/** Token ids every seed's vocabulary has. */
const PROBE_IDS = [1, 2, 3, 5];
const TEXTS = ['Hello, world! 123', ' ünïcödé — 日本語 \u0000 <|endoftext|>', ''];

async function logitsOf(pretrained: Pretrained): Promise<Float32Array> {
  const { model } = pretrained;
  const ids = Int32Array.from(PROBE_IDS.slice(0, Math.max(1, Math.min(PROBE_IDS.length, model.config.maxPositionEmbeddings))));
  return model.backend.toFloat32(model.forward(ids));
}

function exerciseTokenizer(pretrained: Pretrained): void {
  const { tokenizer } = pretrained;
  for (const text of TEXTS) tokenizer.decode(tokenizer.encode(text));
  tokenizer.decode(PROBE_IDS, { skipSpecialTokens: true });
  tokenizer.encodeChat([{ role: 'system', content: 'be brief' }, { role: 'user', content: TEXTS[0]! }]);
  const stream = tokenizer.streamDecoder();
  for (const id of PROBE_IDS) stream.push(id);
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

function prepare(scratch: string, request: CaseRequest): string {
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  if (request.kind === 'gguf') {
    const path = join(scratch, request.file);
    writeFileSync(path, request.bytes);
    return path;
  }
  for (const file of readdirSync(request.seedPath)) if (file !== request.file) symlinkSync(join(request.seedPath, file), join(scratch, file));
  writeFileSync(join(scratch, request.file), request.bytes);
  return scratch;
}

const baselines = new Map<string, Float32Array>();

async function baseline(seedPath: string): Promise<Float32Array> {
  let logits = baselines.get(seedPath);
  if (!logits) baselines.set(seedPath, (logits = await logitsOf(await loadPretrained(seedPath, { backend: new ReferenceBackend() }))));
  return logits;
}

export async function runCase(scratch: string, request: CaseRequest): Promise<CaseResult> {
  const started = performance.now();
  const clean = await baseline(request.seedPath);
  const path = prepare(scratch, request);
  let phase: CaseResult['phase'] = 'load';
  try {
    const pretrained = await loadPretrained(path, { backend: new ReferenceBackend() });
    phase = 'forward';
    const logits = await logitsOf(pretrained);
    phase = 'tokenizer';
    exerciseTokenizer(pretrained);
    return { id: request.id, outcome: 'loaded', finite: logits.every(Number.isFinite), identical: sameBits(logits, clean), ms: performance.now() - started };
  } catch (error) {
    const e = error instanceof Error ? error : new Error(String(error));
    return {
      id: request.id, outcome: 'error', phase, errorName: e.constructor?.name ?? e.name, olmoeError: error instanceof OlmoeError,
      message: e.message.slice(0, 400), ms: performance.now() - started,
    };
  }
}

if (!isMainThread && parentPort && (workerData as { fuzzWorker?: boolean } | undefined)?.fuzzWorker) {
  const port = parentPort;
  const { scratch } = workerData as { scratch: string };
  port.on('message', (request: CaseRequest) => {
    void runCase(scratch, request).then((result) => port.postMessage(result));
  });
}
