/**
 * Traces on disk: a folder with `trace.json` (the header and the list of parts) and `part-NNNNNN.arrow` files,
 * each an Apache Arrow IPC file of whole documents (readable by pyarrow, polars, DuckDB as one dataset). Parts
 * and the index are written atomically, so a recording that is killed leaves every listed part complete and
 * resumes after the last one.
 *
 * Arrow columns per token: document, position, domain, input, target, predicted (int32); experts
 * (fixed-size list of L·K uint16), weights (fixed-size list of L·K float32), probs (L·E float32, optional).
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  Field,
  FixedSizeList,
  Float32,
  Int32,
  makeData,
  RecordBatch,
  RecordBatchFileWriter,
  Schema,
  Struct,
  tableFromIPC,
  Uint16,
  type Data,
  type DataType,
} from 'apache-arrow';
import { FormatError, InputError } from '../core/errors.js';
import { AtomicFile } from '../io/atomic-file.js';
import { TRACE_VERSION, type Trace, type TraceChunk, type TraceHeader } from './trace.js';

export const TRACE_INDEX = 'trace.json';

export interface TracePart {
  file: string;
  /** Documents [first, last] (inclusive) in this part. */
  firstDocument: number;
  lastDocument: number;
  tokens: number;
}

/** trace.json: the header, then the parts in order. */
export interface TraceIndex extends TraceHeader {
  parts: TracePart[];
}

/** Read a trace folder lazily: the index now, each part when iterated. */
export function openTrace(dir: string): Trace & { index: TraceIndex } {
  const index = readIndex(dir);
  return {
    header: index,
    index,
    chunks: () => readParts(dir, index),
  };
}

export function readIndex(dir: string): TraceIndex {
  const path = join(dir, TRACE_INDEX);
  if (!existsSync(path)) throw new InputError(`${dir}: not a trace (no ${TRACE_INDEX}); record one with \`olmoe trace\``);
  let index: TraceIndex;
  try {
    index = JSON.parse(readFileSync(path, 'utf8')) as TraceIndex;
  } catch (error) {
    throw new FormatError(path, `not valid JSON (${(error as Error).message})`);
  }
  if (index.version !== TRACE_VERSION) throw new FormatError(path, `trace version ${index.version}; this olmoe reads version ${TRACE_VERSION}`);
  const model = index.model;
  const positive = (n: unknown) => Number.isSafeInteger(n) && (n as number) > 0;
  if (!model || ![model.layers, model.experts, model.topK, model.vocabSize].every(positive) || !Array.isArray(index.domains) || !Array.isArray(index.parts)) {
    throw new FormatError(path, `malformed trace index (model shape, domains or parts missing)`);
  }
  return index;
}

function* readParts(dir: string, index: TraceIndex): Generator<TraceChunk> {
  const { layers, topK, experts } = index.model;
  for (const part of index.parts) {
    const path = join(dir, part.file);
    let table;
    try {
      table = tableFromIPC(readFileSync(path));
    } catch (error) {
      throw new FormatError(path, `not a readable Arrow IPC file (${(error as Error).message})`);
    }
    let tokens = 0;
    for (const batch of table.batches) {
      const chunk = chunkOf(batch, path, layers * topK, index.withProbs ? layers * experts : 0);
      tokens += chunk.size;
      yield chunk;
    }
    if (tokens !== part.tokens) throw new FormatError(path, `holds ${tokens} tokens, ${TRACE_INDEX} says ${part.tokens}`);
  }
}

function chunkOf(batch: RecordBatch, path: string, routeWidth: number, probsWidth: number): TraceChunk {
  const n = batch.numRows;
  const column = <T extends Int32Array | Uint16Array | Float32Array>(name: string, width: number, kind: new (length: number) => T): T => {
    const child = batch.getChild(name);
    if (!child) throw new FormatError(path, `column "${name}" is missing`);
    const data = child.data[0] as Data<DataType>;
    const values = (width === 1 ? data : data.children[0]!).values as unknown;
    if (!(values instanceof kind)) throw new FormatError(path, `column "${name}" has the wrong type`);
    const start = width === 1 ? data.offset : data.offset * width + data.children[0]!.offset;
    const view = (values as T).subarray(start, start + n * width) as T;
    if (view.length !== n * width) throw new FormatError(path, `column "${name}" holds ${view.length} values, expected ${n * width}`);
    return view;
  };
  return {
    size: n,
    document: column('document', 1, Int32Array),
    position: column('position', 1, Int32Array),
    domain: column('domain', 1, Int32Array),
    input: column('input', 1, Int32Array),
    target: column('target', 1, Int32Array),
    predicted: column('predicted', 1, Int32Array),
    experts: column('experts', routeWidth, Uint16Array),
    weights: column('weights', routeWidth, Float32Array),
    probs: probsWidth > 0 ? column('probs', probsWidth, Float32Array) : undefined,
  };
}

/**
 * Writes a trace folder part by part. `resume` continues a folder whose header matches (same model fingerprint,
 * same withProbs); otherwise an existing trace is an error unless `overwrite`.
 */
export class TraceWriter {
  readonly index: TraceIndex;
  private readonly partTokens: number;
  private pending: TraceChunk[] = [];
  private pendingTokens = 0;

  constructor(
    readonly dir: string,
    header: TraceHeader,
    opts: { resume?: boolean; overwrite?: boolean; partTokens?: number } = {},
  ) {
    this.partTokens = opts.partTokens ?? 65536;
    if (existsSync(join(dir, TRACE_INDEX))) {
      if (opts.overwrite) {
        rmSync(dir, { recursive: true, force: true });
      } else if (!opts.resume) {
        throw new InputError(`${dir} already holds a trace: pass --resume to continue it or --overwrite to replace it`);
      }
    }
    mkdirSync(dir, { recursive: true });
    if (opts.resume && existsSync(join(dir, TRACE_INDEX))) {
      const existing = readIndex(dir);
      if (existing.model.fingerprint !== header.model.fingerprint) {
        throw new InputError(`${dir} was recorded with another model (${existing.model.name}, fingerprint ${existing.model.fingerprint}); cannot resume it with ${header.model.name}`);
      }
      if (existing.withProbs !== header.withProbs) throw new InputError(`${dir} was recorded ${existing.withProbs ? 'with' : 'without'} --probs; resume it the same way`);
      this.index = { ...existing, domains: [...existing.domains] };
      this.removeStrayParts();
    } else {
      this.index = { ...header, version: TRACE_VERSION, domains: [...header.domains], parts: [] };
      this.writeIndex();
    }
  }

  /** Documents already recorded (a resumed recording skips this many). */
  get documentsDone(): number {
    const last = this.index.parts.at(-1);
    return last ? last.lastDocument + 1 : 0;
  }

  /** The index of a domain name, adding it if new. */
  domainIndex(name: string): number {
    let at = this.index.domains.indexOf(name);
    if (at < 0) at = this.index.domains.push(name) - 1;
    return at;
  }

  /** Add a chunk; call `endDocument` after a document's last chunk (parts end only at document boundaries). */
  append(chunk: TraceChunk): void {
    this.pending.push(chunk);
    this.pendingTokens += chunk.size;
  }

  endDocument(): void {
    if (this.pendingTokens >= this.partTokens) this.flush();
  }

  /** Write what is pending as a part, then the index. */
  flush(): void {
    if (this.pending.length === 0) return;
    const number = this.index.parts.length;
    const file = `part-${String(number).padStart(6, '0')}.arrow`;
    const { layers, topK, experts } = this.index.model;
    const schema = traceSchema(layers * topK, this.index.withProbs ? layers * experts : 0);
    const batches = this.pending.map((chunk) => toBatch(schema, chunk, this.index.withProbs));
    const out = new AtomicFile(join(this.dir, file));
    out.write(RecordBatchFileWriter.writeAll(batches).toUint8Array(true));
    out.finish();
    const first = this.pending[0]!.document[0]!;
    const lastChunk = this.pending.at(-1)!;
    this.index.parts.push({ file, firstDocument: first, lastDocument: lastChunk.document[lastChunk.size - 1]!, tokens: this.pendingTokens });
    this.pending = [];
    this.pendingTokens = 0;
    this.writeIndex();
  }

  private writeIndex(): void {
    const out = new AtomicFile(join(this.dir, TRACE_INDEX));
    out.write(Buffer.from(JSON.stringify(this.index, null, 1)));
    out.finish();
  }

  /** Parts written after the index was last saved (a kill between the two) are not listed: remove them. */
  private removeStrayParts(): void {
    const listed = new Set(this.index.parts.map((p) => p.file));
    for (const name of readdirSync(this.dir)) if (/^part-\d+\.arrow/.test(name) && !listed.has(name)) rmSync(join(this.dir, name), { force: true });
  }
}

function traceSchema(routeWidth: number, probsWidth: number): Schema {
  const int = (name: string) => new Field(name, new Int32(), false);
  const list = (name: string, width: number, item: DataType) => new Field(name, new FixedSizeList(width, new Field('item', item, false)), false);
  const fields = [
    int('document'), int('position'), int('domain'), int('input'), int('target'), int('predicted'),
    list('experts', routeWidth, new Uint16()), list('weights', routeWidth, new Float32()),
  ];
  if (probsWidth > 0) fields.push(list('probs', probsWidth, new Float32()));
  return new Schema(fields);
}

function toBatch(schema: Schema, chunk: TraceChunk, withProbs: boolean): RecordBatch {
  const n = chunk.size;
  const ints = [chunk.document, chunk.position, chunk.domain, chunk.input, chunk.target, chunk.predicted].map((data) => makeData({ type: new Int32(), length: n, data }));
  const list = (field: Field, values: Uint16Array | Float32Array) => {
    const type = field.type as FixedSizeList;
    const child = makeData({ type: type.children[0]!.type, length: values.length, data: values } as never);
    return makeData({ type, length: n, child } as never);
  };
  const fields = schema.fields;
  const children = [...ints, list(fields[6]!, chunk.experts), list(fields[7]!, chunk.weights)];
  if (withProbs) {
    if (!chunk.probs) throw new InputError('the trace records router probabilities but a chunk has none');
    children.push(list(fields[8]!, chunk.probs));
  }
  return new RecordBatch(schema, makeData({ type: new Struct(fields), length: n, children } as never) as never);
}
