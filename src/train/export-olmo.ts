/**
 * `olmoe export-olmo`: a run designed here, continued where the paper trained — OLMo's trainer, on GPUs with FSDP.
 *
 * Data: OLMo's MemMapDataset reads `data.paths` as flat arrays of token ids (raw little-endian memmaps, no .npy
 * header despite the extension, `memmap_dtype` uint16 or uint32) cut into instances of `max_sequence_length`
 * tokens; documents are laid end to end, each followed by the EOS id (as Dolma's tokenizer writes them and as
 * this trainer's packed loader streams them). Each training shard becomes one such file; validation shards become
 * one file per domain, so OLMo's perplexity evaluator reports the domains this trainer reports.
 *
 * Config: a training YAML in the form of allenai/OLMoE's `configs/*.yml` (OLMo's TrainConfig of the MoE branch),
 * every field generated from the run's config. What OLMo's MoE block cannot express (expert choice routing,
 * renormalised top-k weights, a shared expert narrower or wider than the routed ones) is refused, never
 * approximated silently.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { ConfigError, InputError, withIo } from '../core/errors.js';
import { removeStaleStaging, stagingPath, writeStep } from '../io/atomic-file.js';
import { toYaml } from '../io/yaml-writer.js';
import type { TrainConfig } from './config.js';
import { readShardsFor, type ShardDType, type TokenShard } from './data/shard.js';
import { checkOlmoExpressible, olmoTrainYaml, type ExportedData } from './olmo-config.js';
import { modelConfigFor } from './trainer.js';

export const OLMO_CONFIG_FILE = 'config.yaml';
export const OLMO_DATA_DIR = 'data';

export interface ExportOlmoOptions {
  outDir: string;
  /** Replace `outDir` if it exists (it is swapped in only once the new export is complete). */
  force?: boolean;
  /** Token width of the memmaps; default uint16 when every id fits (vocabulary ≤ 65,536), else uint32. */
  dtype?: ShardDType;
  /** Prefix of `data.paths` in the YAML (e.g. where the files will be on the GPU cluster); default "data" (relative to where OLMo runs). */
  dataRoot?: string;
  onProgress?: (progress: { tokens: number; totalTokens: number }) => void;
}

export interface ExportedFile {
  path: string;
  tokens: number;
  documents: number;
}

export interface ExportOlmoResult {
  config: string;
  dtype: ShardDType;
  train: ExportedFile[];
  valid: (ExportedFile & { domain: string })[];
  /** What the YAML cannot carry over (upcycled start, a checkpoint to continue from): say it to the user. */
  notes: string[];
}

/** Write the run's data as OLMo memmaps and its config as OLMo's training YAML into `opts.outDir`, atomically. */
export function exportOlmo(config: TrainConfig, opts: ExportOlmoOptions): ExportOlmoResult {
  const outDir = resolve(opts.outDir);
  checkTarget(outDir, opts.force ?? false);
  checkOlmoExpressible(config);
  for (const [key, paths] of [['data.train', config.data.train], ['data.valid', config.data.valid]] as const) {
    paths.forEach((path, i) => {
      if (!statSync(path, { throwIfNoEntry: false })?.isFile()) throw new ConfigError(`${key}[${i}]`, `shard ${path} does not exist; run \`olmoe shard\` first or fix the path`);
    });
  }
  const tokenizerJson = withIo(config.tokenizer, 'read', () => readFileSync(config.tokenizer, 'utf8'));
  const model = modelConfigFor(config, tokenizerJson);
  const train = readShardsFor(config.data.train, tokenizerJson, model.vocabSize);
  const valid = readShardsFor(config.data.valid, tokenizerJson, model.vocabSize);
  const eosId = commonEosId([...train, ...valid]);
  const dtype = memmapDType(model.vocabSize, opts.dtype);
  const staging = stagingPath(outDir);
  removeStaleStaging(outDir);
  withIo(staging, 'create folder', () => mkdirSync(join(staging, OLMO_DATA_DIR), { recursive: true }));
  try {
    const written = writeMemmaps(staging, train, valid, { eosId, dtype, onProgress: opts.onProgress });
    const data: ExportedData = { ...written, dtype, root: opts.dataRoot ?? OLMO_DATA_DIR };
    const { document, header, notes } = olmoTrainYaml(config, model, { eosId, data, runName: basename(config.out) });
    withIo(join(staging, 'tokenizer.json'), 'write', () => writeFileSync(join(staging, 'tokenizer.json'), tokenizerJson));
    withIo(join(staging, OLMO_CONFIG_FILE), 'write', () => writeFileSync(join(staging, OLMO_CONFIG_FILE), toYaml(document, header)));
    swapInto(staging, outDir);
    const at = <T extends ExportedFile>(file: T): T => ({ ...file, path: join(outDir, OLMO_DATA_DIR, file.path) });
    return { config: join(outDir, OLMO_CONFIG_FILE), dtype, train: written.train.map(at), valid: written.valid.map(at), notes };
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    throw error;
  }
}

function checkTarget(outDir: string, force: boolean): void {
  const stat = statSync(outDir, { throwIfNoEntry: false });
  if (!stat) return;
  if (!stat.isDirectory()) throw new InputError(`${outDir} exists and is not a folder`);
  if (!force && readdirSync(outDir).length > 0) throw new InputError(`${outDir} already exists and is not empty; choose another folder or pass --force to replace it`);
}

/** The memmap token width: the one asked for, if every id of the vocabulary fits it. */
export function memmapDType(vocabSize: number, asked?: ShardDType): ShardDType {
  const fits = vocabSize <= 65536 ? 'uint16' : 'uint32';
  if (asked === 'uint16' && fits === 'uint32') throw new InputError(`dtype uint16 holds ids below 65,536; the vocabulary has ${vocabSize.toLocaleString('en-US')} ids: use uint32`);
  return asked ?? fits;
}

function commonEosId(shards: readonly TokenShard[]): number {
  const eos = shards[0]!.header.eosId;
  const other = shards.find((s) => s.header.eosId !== eos);
  if (other) throw new InputError(`${other.path}: EOS id ${other.header.eosId} differs from ${shards[0]!.path}'s ${eos}; OLMo separates documents by one EOS id`);
  return eos;
}

const CHUNK_TOKENS = 1 << 20;

/** Stream documents (each followed by EOS) into one memmap file, CHUNK_TOKENS at a time. */
class MemmapWriter {
  private readonly buffer: Uint16Array | Uint32Array;
  private readonly fd: number;
  private used = 0;
  private closed = false;
  tokens = 0;
  documents = 0;

  constructor(
    readonly path: string,
    dtype: ShardDType,
    private readonly eosId: number,
    private readonly progress: (tokens: number) => void,
  ) {
    this.buffer = dtype === 'uint16' ? new Uint16Array(CHUNK_TOKENS) : new Uint32Array(CHUNK_TOKENS);
    this.fd = withIo(path, 'create', () => openSync(path, 'w'));
  }

  addDocument(ids: Uint16Array | Uint32Array): void {
    for (let at = 0; at < ids.length; ) {
      const take = Math.min(ids.length - at, CHUNK_TOKENS - this.used);
      this.buffer.set(ids.subarray(at, at + take), this.used);
      this.used += take;
      at += take;
      if (this.used === CHUNK_TOKENS) this.flush();
    }
    this.buffer[this.used++] = this.eosId;
    if (this.used === CHUNK_TOKENS) this.flush();
    this.tokens += ids.length + 1;
    this.documents++;
  }

  /** Write what is buffered, fsync and close: the file is whole before the export folder is moved into place. */
  close(): void {
    this.flush();
    withIo(this.path, 'write', () => fsyncSync(this.fd));
    this.abort();
  }

  /** Release the file (the staging folder it is in is removed by the caller on failure). */
  abort(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }

  private flush(): void {
    if (this.used === 0) return;
    const bytes = new Uint8Array(this.buffer.buffer, 0, this.used * this.buffer.BYTES_PER_ELEMENT);
    writeStep();
    withIo(this.path, 'write', () => {
      for (let done = 0; done < bytes.length; ) done += writeSync(this.fd, bytes, done, bytes.length - done);
    });
    this.progress(this.used);
    this.used = 0;
  }
}

function documentIds(shard: TokenShard, d: number): Uint16Array | Uint32Array {
  const offset = shard.documents[3 * d]!;
  return shard.tokens.subarray(offset, offset + shard.documents[3 * d + 1]!);
}

/** Training shards one file each (train-NNNNN.npy), validation one file per domain (valid-NN.npy). */
function writeMemmaps(
  dir: string,
  train: readonly TokenShard[],
  valid: readonly TokenShard[],
  o: { eosId: number; dtype: ShardDType; onProgress?: ExportOlmoOptions['onProgress'] },
): { train: ExportedFile[]; valid: (ExportedFile & { domain: string })[] } {
  const totalTokens = [...train, ...valid].reduce((n, s) => n + s.header.tokenCount + s.header.documentCount, 0);
  let done = 0;
  const progress = (tokens: number) => o.onProgress?.({ tokens: (done += tokens), totalTokens });
  const opened: MemmapWriter[] = [];
  const open = (name: string) => {
    opened.push(new MemmapWriter(join(dir, OLMO_DATA_DIR, name), o.dtype, o.eosId, progress));
    return opened.at(-1)!;
  };
  try {
    return writeFiles(train, valid, open);
  } finally {
    opened.forEach((writer) => writer.abort()); // closed already unless a write failed
  }
}

function writeFiles(train: readonly TokenShard[], valid: readonly TokenShard[], open: (name: string) => MemmapWriter): { train: ExportedFile[]; valid: (ExportedFile & { domain: string })[] } {
  const trainFiles = train.map((shard, i) => {
    const writer = open(`train-${String(i).padStart(5, '0')}.npy`);
    for (let d = 0; d < shard.header.documentCount; d++) writer.addDocument(documentIds(shard, d));
    writer.close();
    return { path: basename(writer.path), tokens: writer.tokens, documents: writer.documents };
  });
  const byDomain = new Map<string, MemmapWriter>();
  for (const shard of valid) {
    for (let d = 0; d < shard.header.documentCount; d++) {
      const domain = shard.header.domains[shard.documents[3 * d + 2]!]!;
      if (!byDomain.has(domain)) byDomain.set(domain, open(`valid-${String(byDomain.size).padStart(2, '0')}.npy`));
      byDomain.get(domain)!.addDocument(documentIds(shard, d));
    }
  }
  const validFiles = [...byDomain].map(([domain, writer]) => {
    writer.close();
    return { domain, path: basename(writer.path), tokens: writer.tokens, documents: writer.documents };
  });
  return { train: trainFiles, valid: validFiles };
}

/** Move the finished staging folder to `outDir`; an old `outDir` (--force) is moved aside first, then removed. */
function swapInto(staging: string, outDir: string): void {
  const old = existsSync(outDir) ? `${outDir}.old-${process.pid}` : null;
  if (old) withIo(outDir, 'move aside', () => renameSync(outDir, old));
  writeStep();
  try {
    withIo(outDir, 'move into place', () => renameSync(staging, outDir));
  } catch (error) {
    if (old) renameSync(old, outDir);
    throw error;
  }
  if (old) withIo(old, 'remove', () => rmSync(old, { recursive: true, force: true }));
}
