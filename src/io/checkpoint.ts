/**
 * An HF model folder's weights: `model.safetensors`, or shards listed by `model.safetensors.index.json`.
 * Produces one map from tensor name to where its bytes are; nothing is read beyond the headers.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { WeightSource } from '../core/backend.js';
import { FormatError, preview, WeightError } from '../core/errors.js';
import { readJsonObject } from './json.js';
import { readSafetensorsHeader, type TensorEntry } from './safetensors.js';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

export function listCheckpointTensors(dir: string): Map<string, TensorEntry> {
  // transformers' order: a single model.safetensors wins over an index.
  const single = join(dir, SINGLE_FILE);
  if (existsSync(single)) return readSafetensorsHeader(single).tensors;
  const indexPath = join(dir, INDEX_FILE);
  if (existsSync(indexPath)) return tensorsFromIndex(dir, indexPath);
  const present = existsSync(dir) ? readdirSync(dir).join(', ') || '(empty)' : '(folder does not exist)';
  throw new WeightError(`${dir}: no ${SINGLE_FILE} or ${INDEX_FILE} (found: ${present})`);
}

function tensorsFromIndex(dir: string, indexPath: string): Map<string, TensorEntry> {
  const weightMap = readWeightMap(indexPath);
  const shards = new Map<string, Map<string, TensorEntry>>();
  for (const shard of new Set(weightMap.values())) {
    if (!statSync(join(dir, shard), { throwIfNoEntry: false })?.isFile()) {
      const first = [...weightMap].find(([, s]) => s === shard)![0];
      throw new FormatError(indexPath, `weight_map places ${preview(first)} in ${shard}: cannot open, no regular file of that name in ${dir}`);
    }
    shards.set(shard, readSafetensorsHeader(join(dir, shard)).tensors);
  }
  const tensors = new Map<string, TensorEntry>();
  for (const [name, shard] of weightMap) {
    const entry = shards.get(shard)!.get(name);
    if (!entry) throw new WeightError(`${INDEX_FILE} places tensor ${JSON.stringify(name)} in ${shard}, which does not contain it`);
    tensors.set(name, entry);
  }
  for (const [shard, entries] of shards) {
    for (const name of entries.keys()) {
      if (weightMap.get(name) !== shard) throw new WeightError(`${shard} holds tensor ${JSON.stringify(name)}, which ${INDEX_FILE} does not place there`);
    }
  }
  return tensors;
}

export function readWeightMap(indexPath: string): Map<string, string> {
  const weightMap = readJsonObject(indexPath).weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new FormatError(indexPath, 'has no "weight_map" object');
  }
  const entries = Object.entries(weightMap);
  if (entries.length === 0) throw new FormatError(indexPath, '"weight_map" is empty');
  for (const [name, shard] of entries) {
    if (typeof shard !== 'string' || shard === '' || shard.includes('/') || shard.includes('\\') || shard.includes('\0') || shard.startsWith('.')) {
      throw new FormatError(indexPath, `weight_map[${preview(name)}] = ${preview(shard)} is not a shard file name`);
    }
  }
  return new Map(entries as [string, string][]);
}

/**
 * The entries as weight sources, file by file in offset order (sequential on disk). Each file stays open while
 * its sources are consumed; `read()` reads one tensor positionally, so memory holds what the consumer keeps.
 */
export async function* weightSources(entries: readonly TensorEntry[]): AsyncGenerator<WeightSource> {
  const byFile = new Map<string, TensorEntry[]>();
  for (const entry of entries) {
    const list = byFile.get(entry.file);
    if (list) list.push(entry);
    else byFile.set(entry.file, [entry]);
  }
  for (const [file, fileEntries] of byFile) {
    const handle = await open(file, 'r').catch((error: Error) => {
      throw new FormatError(file, `cannot open: ${error.message}`, { cause: error });
    });
    try {
      for (const entry of fileEntries.sort((a, b) => a.offset - b.offset)) {
        const { name, dtype, shape, offset, byteLength } = entry;
        yield { name, dtype, shape, file, offset, byteLength, read: () => readEntry(handle, entry) };
      }
    } finally {
      await handle.close();
    }
  }
}

async function readEntry(handle: FileHandle, entry: TensorEntry): Promise<Uint8Array> {
  const bytes = Buffer.allocUnsafeSlow(entry.byteLength);
  let done = 0;
  while (done < bytes.length) {
    const { bytesRead } = await handle.read(bytes, done, Math.min(bytes.length - done, 1 << 30), entry.offset + done);
    if (bytesRead === 0) throw new FormatError(entry.file, `truncated: tensor ${JSON.stringify(entry.name)} ends past the end of the file`);
    done += bytesRead;
  }
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
