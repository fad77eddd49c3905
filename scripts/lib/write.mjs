/** Output helpers shared by the data builders (scripts/build-*.mjs). */
import { renameSync, writeFileSync } from 'node:fs';

/** Writes through a temporary file and a rename, so a reader never sees half a file. */
export function writeAtomic(path, text) {
  writeFileSync(`${path}.tmp-${process.pid}`, text);
  renameSync(`${path}.tmp-${process.pid}`, path);
}

/** One JSON record a line, newline-terminated. */
export const jsonl = (rows) => rows.map((row) => JSON.stringify(row)).join('\n') + '\n';
