/**
 * Scored requests on disk: one JSONL file per model fingerprint, a line per request keyed by a hash of what was
 * scored. An interrupted evaluation resumes from it, and a re-run that reports another metric scores nothing again.
 * Lines are appended as results arrive; a last line cut short by a kill is dropped, any other bad line is an error.
 */
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, withIo } from '../core/errors.js';

export class ResultCache<T> {
  private readonly entries = new Map<string, T>();

  private constructor(readonly path: string) {}

  /** The cache of one model in `dir` (created when missing). */
  static open<T>(dir: string, fingerprint: string, isValue: (value: unknown) => value is T): ResultCache<T> {
    if (!/^[0-9a-f]{8,64}$/.test(fingerprint)) throw new FormatError(dir, `model fingerprint ${JSON.stringify(fingerprint)} is not a hex digest`);
    withIo(dir, 'create folder', () => mkdirSync(dir, { recursive: true }));
    const cache = new ResultCache<T>(join(dir, `${fingerprint}.jsonl`));
    if (existsSync(cache.path)) cache.load(isValue);
    return cache;
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): T | undefined {
    return this.entries.get(key);
  }

  put(key: string, value: T): void {
    this.entries.set(key, value);
    withIo(this.path, 'append to', () => appendFileSync(this.path, `${JSON.stringify({ key, value })}\n`));
  }

  private load(isValue: (value: unknown) => value is T): void {
    const text = withIo(this.path, 'read', () => readFileSync(this.path, 'utf8'));
    const complete = text.lastIndexOf('\n') + 1;
    if (complete < text.length) withIo(this.path, 'repair', () => truncateSync(this.path, Buffer.byteLength(text.slice(0, complete))));
    text.slice(0, complete).split('\n').forEach((line, i) => {
      if (line === '') return;
      let entry: unknown;
      try {
        entry = JSON.parse(line);
      } catch {
        throw new FormatError(this.path, `line ${i + 1} is not JSON: the result cache is corrupt (delete the file to rescore)`);
      }
      const { key, value } = (entry ?? {}) as { key?: unknown; value?: unknown };
      if (typeof key !== 'string' || !isValue(value)) throw new FormatError(this.path, `line ${i + 1} is not a {key, value} result: the result cache is corrupt (delete the file to rescore)`);
      this.entries.set(key, value);
    });
  }
}

/** A stable key for a request: the hash of its kind and everything that determines its result. */
export function requestKey(kind: string, ...parts: unknown[]): string {
  return createHash('sha256').update(JSON.stringify([kind, ...parts])).digest('hex').slice(0, 32);
}
