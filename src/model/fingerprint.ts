/** Naming a checkpoint's weights cheaply, for caches and traces that must not be reused with another model. */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import type { TensorEntry } from '../io/safetensors.js';
import { openCheckpoint } from './load.js';

/**
 * A model's identity (traces, evaluation caches, the adaptation commands' reference caches): its shape and a hash of its config and of a few bytes at the start, middle and
 * end of every tensor (cheap to compute, different for any two checkpoints that differ in training).
 */
export function modelFingerprint(path: string): string {
  const sample = Buffer.alloc(64);
  return hashCheckpoint(path, 16, (fd, entry, hash) => {
    for (const at of [0, Math.floor(entry.byteLength / 2), entry.byteLength - 64]) {
      const read = readSync(fd, sample, 0, Math.min(64, entry.byteLength), entry.offset + Math.max(0, at));
      hash.update(sample.subarray(0, read));
    }
  });
}

/**
 * Every byte of a checkpoint's tensors (and its config) through sha256: slower than modelFingerprint (it reads the
 * whole model, ~1 s per GB), for caches that must change with any weight, however small the change (the
 * adaptation commands' reference log-probs).
 */
export function modelContentHash(path: string): string {
  const buffer = Buffer.alloc(1 << 20);
  return hashCheckpoint(path, 32, (fd, entry, hash) => {
    for (let at = 0; at < entry.byteLength; at += buffer.length) {
      const read = readSync(fd, buffer, 0, Math.min(buffer.length, entry.byteLength - at), entry.offset + at);
      hash.update(buffer.subarray(0, read));
    }
  });
}

/** sha256 of the config, then per tensor (by name) its name, dtype and shape and what `hashBytes` reads of it. */
function hashCheckpoint(path: string, hexChars: number, hashBytes: (fd: number, entry: TensorEntry, hash: Hash) => void): string {
  const checkpoint = openCheckpoint(path);
  const hash = createHash('sha256');
  hash.update(JSON.stringify(checkpoint.config));
  const files = new Map<string, number>();
  try {
    for (const entry of [...checkpoint.tensors.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      hash.update(`${entry.name}:${entry.dtype}:${entry.shape.join('x')}`);
      let fd = files.get(entry.file);
      if (fd === undefined) files.set(entry.file, (fd = openSync(entry.file, 'r')));
      hashBytes(fd, entry, hash);
    }
  } finally {
    for (const fd of files.values()) closeSync(fd);
  }
  return hash.digest('hex').slice(0, hexChars);
}
