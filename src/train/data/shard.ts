/**
 * Token shards: tokenized documents in one binary file, read whole and validated before use.
 *
 * Layout (little-endian; sections start at multiples of 8 bytes, zero padding between them):
 *   0   8 bytes  magic "OLMOESHD"
 *   8   u32      format version (1)
 *   12  u32      header length H in bytes
 *   16  H bytes  header, UTF-8 JSON: ShardHeader
 *   ..  tokenCount × u16|u32      the documents' tokens, back to back, no separators
 *   ..  documentCount × 3 × u32   per document: token offset, token count (> 0), domain id
 * The header's sha256 covers everything after the header (tokens, padding and table), so a flipped bit is found.
 */
import { createHash } from 'node:crypto';
import { endianness } from 'node:os';
import { readFileSync, statSync } from 'node:fs';
import { FormatError, InputError, UnsupportedError, withIo } from '../../core/errors.js';
import { AtomicFile } from '../../io/atomic-file.js';

export const SHARD_MAGIC = 'OLMOESHD';
export const SHARD_VERSION = 1;
const PREFIX_BYTES = 16;

export type ShardDType = 'uint16' | 'uint32';

export interface ShardHeader {
  vocabSize: number;
  /** uint16 when every id fits (vocabSize ≤ 65536), else uint32. */
  dtype: ShardDType;
  eosId: number;
  domains: string[];
  documentCount: number;
  tokenCount: number;
  /** sha256 of the tokenizer.json bytes the shard was made with. */
  tokenizer: string;
  /** sha256 of the bytes after the header. */
  sha256: string;
}

export interface TokenShard {
  path: string;
  header: ShardHeader;
  tokens: Uint16Array | Uint32Array;
  /** Per document (offset, length, domain id), flattened. */
  documents: Uint32Array;
}

export function shardDType(vocabSize: number): ShardDType {
  return vocabSize <= 65536 ? 'uint16' : 'uint32';
}

export function tokenizerFingerprint(tokenizerJsonBytes: Uint8Array | string): string {
  return createHash('sha256').update(tokenizerJsonBytes).digest('hex');
}

const align8 = (n: number) => Math.ceil(n / 8) * 8;

function checkLittleEndian(): void {
  if (endianness() !== 'LE') throw new UnsupportedError('token shards are little-endian; this machine is big-endian');
}

/** Collects documents in memory, then writes one shard atomically. */
export class TokenShardBuilder {
  private tokens: Uint32Array = new Uint32Array(1 << 16);
  private table: number[] = [];
  tokenCount = 0;

  constructor(private readonly meta: { vocabSize: number; eosId: number; domains: readonly string[]; tokenizer: string }) {
    if (!Number.isSafeInteger(meta.vocabSize) || meta.vocabSize < 1 || meta.vocabSize > 2 ** 32) throw new InputError(`vocabSize ${meta.vocabSize} is invalid`);
    if (!Number.isSafeInteger(meta.eosId) || meta.eosId < 0 || meta.eosId >= meta.vocabSize) throw new InputError(`eosId ${meta.eosId} is not below vocabSize ${meta.vocabSize}`);
    if (meta.domains.length === 0) throw new InputError('a shard needs at least one domain name');
  }

  get documentCount(): number {
    return this.table.length / 3;
  }

  /** Append one document; empty documents are skipped (a packed stream gains nothing from them). */
  add(ids: ArrayLike<number>, domainId: number): void {
    if (ids.length === 0) return;
    if (!Number.isSafeInteger(domainId) || domainId < 0 || domainId >= this.meta.domains.length) throw new InputError(`domain id ${domainId} is not one of the ${this.meta.domains.length} domains`);
    if (this.tokenCount + ids.length > 2 ** 32 - 1) throw new InputError('a shard holds at most 2^32 - 1 tokens; start a new shard');
    this.reserve(this.tokenCount + ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!(id >= 0 && id < this.meta.vocabSize && Number.isInteger(id))) throw new InputError(`token id ${id} is outside the vocabulary (size ${this.meta.vocabSize})`);
      this.tokens[this.tokenCount + i] = id;
    }
    this.table.push(this.tokenCount, ids.length, domainId);
    this.tokenCount += ids.length;
  }

  /** Write the shard to `path` (temporary file + rename: the path holds a whole shard or nothing new). */
  write(path: string): ShardHeader {
    checkLittleEndian();
    if (this.documentCount === 0) throw new InputError(`${path}: no documents to write (every input document was empty or filtered out)`);
    const dtype = shardDType(this.meta.vocabSize);
    const tokens = dtype === 'uint16' ? Uint16Array.from(this.tokens.subarray(0, this.tokenCount)) : this.tokens.slice(0, this.tokenCount);
    const body = shardBody(tokens, Uint32Array.from(this.table));
    const header: ShardHeader = {
      vocabSize: this.meta.vocabSize,
      dtype,
      eosId: this.meta.eosId,
      domains: [...this.meta.domains],
      documentCount: this.documentCount,
      tokenCount: this.tokenCount,
      tokenizer: this.meta.tokenizer,
      sha256: createHash('sha256').update(body).digest('hex'),
    };
    const file = new AtomicFile(path);
    file.write(shardPrefix(header));
    file.write(body);
    file.finish();
    return header;
  }

  private reserve(size: number): void {
    if (size <= this.tokens.length) return;
    const grown = new Uint32Array(Math.max(size, this.tokens.length * 2));
    grown.set(this.tokens.subarray(0, this.tokenCount));
    this.tokens = grown;
  }
}

/** Magic, version, header length and the header JSON padded to 8 bytes. */
function shardPrefix(header: ShardHeader): Uint8Array {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const out = Buffer.alloc(align8(PREFIX_BYTES + json.length));
  out.write(SHARD_MAGIC, 0, 'latin1');
  out.writeUInt32LE(SHARD_VERSION, 8);
  out.writeUInt32LE(json.length, 12);
  json.copy(out, PREFIX_BYTES);
  return out;
}

/** Tokens padded to 8 bytes, then the document table. */
function shardBody(tokens: Uint16Array | Uint32Array, table: Uint32Array): Uint8Array {
  const tokenBytes = align8(tokens.byteLength);
  const out = new Uint8Array(tokenBytes + table.byteLength);
  out.set(new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength), 0);
  out.set(new Uint8Array(table.buffer, table.byteOffset, table.byteLength), tokenBytes);
  return out;
}

/** Read and validate a whole shard; every problem is a FormatError naming the file and the field. */
export function readTokenShard(path: string): TokenShard {
  checkLittleEndian();
  const size = withIo(path, 'read', () => statSync(path)).size;
  if (size === 0) throw new FormatError(path, 'empty file: not a token shard');
  const bytes = withIo(path, 'read', () => readFileSync(path));
  if (bytes.length < PREFIX_BYTES) throw new FormatError(path, `truncated: ${bytes.length} bytes, the fixed prefix alone is ${PREFIX_BYTES}`);
  const magic = bytes.subarray(0, 8).toString('latin1');
  if (magic !== SHARD_MAGIC) throw new FormatError(path, `magic is ${JSON.stringify(magic)}, expected ${JSON.stringify(SHARD_MAGIC)}: not a token shard`);
  const version = bytes.readUInt32LE(8);
  if (version !== SHARD_VERSION) throw new FormatError(path, `version ${version} is not supported (this reader knows version ${SHARD_VERSION})`);
  const headerLength = bytes.readUInt32LE(12);
  if (PREFIX_BYTES + headerLength > bytes.length) throw new FormatError(path, `truncated: header length ${headerLength} runs past the end of the ${bytes.length}-byte file`);
  const header = parseHeader(path, bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength));
  const bodyStart = align8(PREFIX_BYTES + headerLength);
  const width = header.dtype === 'uint16' ? 2 : 4;
  const tableStart = bodyStart + align8(header.tokenCount * width);
  const expected = tableStart + header.documentCount * 12;
  if (bytes.length !== expected) {
    const what = bytes.length < expected ? 'truncated' : 'has trailing bytes';
    throw new FormatError(path, `${what}: tokenCount ${header.tokenCount} and documentCount ${header.documentCount} need ${expected} bytes, the file has ${bytes.length}`);
  }
  const body = bytes.subarray(bodyStart);
  const digest = createHash('sha256').update(body).digest('hex');
  if (digest !== header.sha256) throw new FormatError(path, `sha256 of the token data is ${digest}, the header says ${header.sha256}: the file is corrupt`);
  const aligned = new Uint8Array(body.length); // own, 8-aligned buffer for the typed views
  aligned.set(body);
  const tokens = width === 2 ? new Uint16Array(aligned.buffer, 0, header.tokenCount) : new Uint32Array(aligned.buffer, 0, header.tokenCount);
  const documents = new Uint32Array(aligned.buffer, tableStart - bodyStart, header.documentCount * 3);
  checkDocuments(path, header, documents);
  checkTokens(path, header, tokens);
  return { path, header, tokens, documents };
}

function parseHeader(path: string, bytes: Uint8Array): ShardHeader {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8')) as Record<string, unknown>;
  } catch (error) {
    throw new FormatError(path, `header is not valid JSON (${(error as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError(path, 'header is not a JSON object');
  const integer = (key: string, min: number, max: number): number => {
    const value = json[key];
    if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > max) throw new FormatError(path, `header field ${key} is ${JSON.stringify(value)}, expected an integer in [${min}, ${max}]`);
    return value as number;
  };
  const vocabSize = integer('vocabSize', 1, 2 ** 32);
  const eosId = integer('eosId', 0, vocabSize - 1);
  const documentCount = integer('documentCount', 1, 2 ** 32 - 1);
  const tokenCount = integer('tokenCount', documentCount, 2 ** 32 - 1);
  if (json.dtype !== shardDType(vocabSize)) throw new FormatError(path, `header field dtype is ${JSON.stringify(json.dtype)}, expected "${shardDType(vocabSize)}" for vocabSize ${vocabSize}`);
  const domains = json.domains;
  if (!Array.isArray(domains) || domains.length === 0 || !domains.every((d) => typeof d === 'string' && d.length > 0)) throw new FormatError(path, 'header field domains must be a non-empty list of names');
  if (new Set(domains).size !== domains.length) throw new FormatError(path, 'header field domains has a name twice');
  for (const key of ['tokenizer', 'sha256']) {
    if (typeof json[key] !== 'string' || !/^[0-9a-f]{64}$/.test(json[key] as string)) throw new FormatError(path, `header field ${key} must be a sha256 in hex`);
  }
  return { vocabSize, dtype: json.dtype as ShardDType, eosId, domains: domains as string[], documentCount, tokenCount, tokenizer: json.tokenizer as string, sha256: json.sha256 as string };
}

/** Documents tile the token array in order, none empty, each with a known domain. */
function checkDocuments(path: string, header: ShardHeader, documents: Uint32Array): void {
  let expectedOffset = 0;
  for (let d = 0; d < header.documentCount; d++) {
    const offset = documents[3 * d]!;
    const length = documents[3 * d + 1]!;
    const domain = documents[3 * d + 2]!;
    if (offset !== expectedOffset) throw new FormatError(path, `document ${d}: offset ${offset}, expected ${expectedOffset} (documents must follow each other)`);
    if (length === 0 || offset + length > header.tokenCount) throw new FormatError(path, `document ${d}: length ${length} at offset ${offset} is outside the ${header.tokenCount} tokens`);
    if (domain >= header.domains.length) throw new FormatError(path, `document ${d}: domain id ${domain} is not below the ${header.domains.length} domains`);
    expectedOffset += length;
  }
  if (expectedOffset !== header.tokenCount) throw new FormatError(path, `documents cover ${expectedOffset} tokens, header field tokenCount is ${header.tokenCount}`);
}

function checkTokens(path: string, header: ShardHeader, tokens: Uint16Array | Uint32Array): void {
  const limit = header.vocabSize;
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i]! >= limit) throw new FormatError(path, `token ${i} has id ${tokens[i]}, not below vocabSize ${limit}`);
  }
}

/** Read shards that must have been made with `tokenizerJson` (same sha256) and whose ids fit `vocabSize`. */
export function readShardsFor(paths: readonly string[], tokenizerJson: string, vocabSize: number): TokenShard[] {
  const expected = tokenizerFingerprint(tokenizerJson);
  return paths.map((path) => {
    const shard = readTokenShard(path);
    if (shard.header.tokenizer !== expected) throw new FormatError(path, `was tokenized with another tokenizer (fingerprint ${shard.header.tokenizer}, the tokenizer given has ${expected})`);
    if (shard.header.vocabSize > vocabSize) throw new FormatError(path, `vocabulary ${shard.header.vocabSize} is larger than the model's ${vocabSize}`);
    return shard;
  });
}
