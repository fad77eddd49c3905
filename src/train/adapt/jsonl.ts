/**
 * Adaptation data files: JSONL, one JSON object per line, read line by line. Every problem is reported with the
 * file, the line and the field (`data.jsonl: line 12: messages[2].role: ...`), never as a stack trace.
 */
import { createReadStream, statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { FormatError, InputError, preview } from '../../core/errors.js';

/** Where a record came from, for errors and for `--show-mask`. */
export interface RecordSource {
  readonly file: string;
  /** 1-based line number. */
  readonly line: number;
}

export type JsonRecord = Record<string, unknown>;

/** An error about one field of one record: `file: line N: field: problem`. */
export function recordError(source: RecordSource, field: string, problem: string): FormatError {
  return new FormatError(source.file, `line ${source.line}: ${field ? `${field}: ` : ''}${problem}`);
}

/** The JSON objects of a JSONL file with their line numbers; blank lines are skipped. */
export async function* readJsonl(file: string): AsyncGenerator<{ record: JsonRecord; source: RecordSource }> {
  if (!statSync(file, { throwIfNoEntry: false })?.isFile()) throw new InputError(`${file}: no such file`);
  const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  let line = 0;
  for await (const text of lines) {
    line++;
    if (text.trim() === '') continue;
    const source = { file, line };
    let record: unknown;
    try {
      record = JSON.parse(text);
    } catch (error) {
      throw recordError(source, '', `not valid JSON (${(error as Error).message})`);
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record)) throw recordError(source, '', `is ${preview(record, 40)}, not a JSON object`);
    yield { record: record as JsonRecord, source };
  }
}

/** Every record of a file, parsed by `parse` (which throws recordError on a bad one). */
export async function readRecords<T>(file: string, parse: (record: JsonRecord, source: RecordSource) => T): Promise<T[]> {
  const records: T[] = [];
  for await (const { record, source } of readJsonl(file)) records.push(parse(record, source));
  if (records.length === 0) throw new InputError(`${file}: no records (the file is empty)`);
  return records;
}
