/**
 * The strict safetensors reader: a writer → reader round trip, and every malformed file rejected with a
 * FormatError that names the file and the problem (never a hang, never a non-OlmoeError crash).
 */
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, openSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { DType } from '../src/core/dtype.js';
import { FormatError } from '../src/core/errors.js';
import { weightSources } from '../src/io/checkpoint.js';
import type { TensorEntry as Entry } from '../src/io/safetensors.js';

/** Every entry's bytes through the loader's path (weight sources read positionally). */
async function readTensors(entries: Entry[], onTensor: (entry: { name: string }, bytes: Uint8Array) => void): Promise<void> {
  for await (const source of weightSources(entries)) onTensor(source, await source.read());
}
import { readSafetensorsHeader, readTensorBytes } from '../src/io/safetensors.js';
import { writeSafetensors } from '../src/io/safetensors-writer.js';
import { tempDir } from './helpers.js';

/** Write a safetensors file by hand: 8-byte LE length, the header text as given, then `data`. */
function writeRaw(path: string, header: unknown, data: Uint8Array = new Uint8Array(0), declaredLength?: bigint): void {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(declaredLength ?? BigInt(text.length));
  writeFileSync(path, Buffer.concat([length, text, data]));
}

function freshFile(name = 'bad.safetensors'): string {
  return join(tempDir('olmoe-st-'), name);
}

/** readSafetensorsHeader(file) must throw a FormatError naming the file and matching `problem`. */
function assertRejects(file: string, problem: RegExp): void {
  assert.throws(
    () => readSafetensorsHeader(file),
    (error: unknown) => {
      assert.ok(error instanceof FormatError, `expected FormatError, got ${String(error)}`);
      assert.equal(error.file, file);
      assert.ok(error.message.startsWith(`${file}: `), `message does not start with the file: ${error.message}`);
      assert.match(error.message, problem);
      return true;
    },
  );
}

/** A one-tensor header, with `entry` overriding the valid fields. */
function oneTensor(entry: Record<string, unknown>): Record<string, unknown> {
  return { 'w.weight': { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16], ...entry } };
}

function bytesOf(values: number[], dtype: DType): Uint8Array {
  if (dtype === 'f32') return new Uint8Array(Float32Array.from(values).buffer);
  return new Uint8Array(Uint16Array.from(values).buffer);
}

describe('safetensors writer → reader round trip', () => {
  const tensors = [
    { name: 'a.weight', dtype: 'f32' as const, shape: [2, 3], bytes: bytesOf([1, -2, 3.5, 0, 1e-7, -1e30], 'f32') },
    { name: 'b.norm', dtype: 'bf16' as const, shape: [5], bytes: bytesOf([0x3f80, 0xc000, 0x7f80, 0x0001, 0xffff], 'bf16') },
    { name: 'c.proj', dtype: 'f16' as const, shape: [1, 3, 1], bytes: bytesOf([0x3c00, 0x7bff, 0x8000], 'f16') },
    { name: 'empty', dtype: 'f32' as const, shape: [0, 4], bytes: new Uint8Array(0) },
    { name: 'scalar', dtype: 'bf16' as const, shape: [], bytes: bytesOf([0x4049], 'bf16') },
  ];

  it('reads back every name, dtype, shape, metadata entry and exact byte', () => {
    const file = freshFile('model.safetensors');
    writeSafetensors(file, tensors, { format: 'pt', note: 'round trip' });
    const header = readSafetensorsHeader(file);
    assert.equal(header.file, file);
    assert.deepEqual(header.metadata, { format: 'pt', note: 'round trip' });
    assert.deepEqual([...header.tensors.keys()].sort(), tensors.map((t) => t.name).sort());
    for (const t of tensors) {
      const entry = header.tensors.get(t.name)!;
      assert.equal(entry.name, t.name);
      assert.equal(entry.dtype, t.dtype);
      assert.deepEqual(entry.shape, t.shape);
      assert.equal(entry.file, file);
      assert.equal(entry.byteLength, t.bytes.length);
      assert.deepEqual(Buffer.from(readTensorBytes(entry)), Buffer.from(t.bytes), `bytes of ${t.name}`);
    }
  });

  it('data region starts 8-byte aligned and tensors are laid out in order without gaps', () => {
    const file = freshFile('model.safetensors');
    writeSafetensors(file, tensors);
    const entries = [...readSafetensorsHeader(file).tensors.values()].sort((a, b) => a.offset - b.offset);
    assert.equal(entries[0]!.offset % 8, 0);
    for (let i = 1; i < entries.length; i++) assert.equal(entries[i]!.offset, entries[i - 1]!.offset + entries[i - 1]!.byteLength);
  });

  it('readTensorBytes with a caller-owned fd and readTensors give the same bytes', async () => {
    const file = freshFile('model.safetensors');
    writeSafetensors(file, tensors);
    const header = readSafetensorsHeader(file);
    const fd = openSync(file, 'r');
    try {
      for (const t of tensors) assert.deepEqual(Buffer.from(readTensorBytes(header.tensors.get(t.name)!, fd)), Buffer.from(t.bytes));
    } finally {
      closeSync(fd);
    }
    const seen = new Map<string, Buffer>();
    await readTensors([...header.tensors.values()], (entry, bytes) => seen.set(entry.name, Buffer.from(bytes)));
    for (const t of tensors) assert.deepEqual(seen.get(t.name), Buffer.from(t.bytes), `readTensors bytes of ${t.name}`);
  });

  it('an empty header object gives no tensors and no metadata', () => {
    const file = freshFile();
    writeRaw(file, {});
    const header = readSafetensorsHeader(file);
    assert.equal(header.tensors.size, 0);
    assert.deepEqual(header.metadata, {});
  });
});

describe('safetensors reader rejects malformed files with a FormatError naming the file', () => {
  it('a file shorter than 8 bytes', () => {
    const file = freshFile();
    writeFileSync(file, Buffer.from([1, 2, 3]));
    assertRejects(file, /truncated: 3 bytes/);
    writeFileSync(file, Buffer.alloc(0));
    assertRejects(file, /truncated: 0 bytes/);
  });

  it('a header length past the end of the file', () => {
    const file = freshFile();
    writeRaw(file, '{}', undefined, 1000n);
    assertRejects(file, /header length 1000 runs past the end of the file \(10 bytes\)/);
    writeRaw(file, '{}', undefined, 2n ** 64n - 1n);
    assertRejects(file, /header length 18446744073709551615 runs past the end/);
  });

  it('a header that is not JSON', () => {
    const file = freshFile();
    writeRaw(file, '{"w.weight": {"dtype": "F32", ');
    assertRejects(file, /header is not valid JSON/);
    writeRaw(file, '');
    assertRejects(file, /header is not valid JSON/);
  });

  it('header JSON that is not an object', () => {
    const file = freshFile();
    for (const header of ['[1, 2]', 'null', '42', '"str"']) {
      writeRaw(file, header);
      assertRejects(file, /header JSON is not an object/);
    }
  });

  it('a tensor entry that is not an object, and __metadata__ that is not string → string', () => {
    const file = freshFile();
    writeRaw(file, { 'w.weight': [1, 2] });
    assertRejects(file, /tensor "w\.weight": entry is not an object/);
    writeRaw(file, { __metadata__: { format: 1 } });
    assertRejects(file, /__metadata__ must map strings to strings/);
  });

  it('an unknown dtype, naming the tensor and the dtype', () => {
    const file = freshFile();
    for (const dtype of ['I64', 'Q9', 'f32', 'constructor', 'toString', '__proto__']) {
      writeRaw(file, oneTensor({ dtype }), new Uint8Array(16));
      assertRejects(file, new RegExp(`tensor "w\\.weight": unsupported dtype "${dtype}" \\(supported: F32, BF16, F16\\)`));
    }
    writeRaw(file, oneTensor({ dtype: undefined }), new Uint8Array(16));
    assertRejects(file, /tensor "w\.weight": unsupported dtype/);
  });

  it('a shape that is not a list of non-negative integers', () => {
    const file = freshFile();
    for (const shape of [[2, -2], [2, 2.5], '2x2', [2, '2'], null, [2, null], { 0: 2 }]) {
      writeRaw(file, oneTensor({ shape }), new Uint8Array(16));
      assertRejects(file, /tensor "w\.weight": shape .* is not a list of non-negative integers/);
    }
  });

  it('data_offsets that are not [begin, end]', () => {
    const file = freshFile();
    for (const data_offsets of [[0], [0, 16, 32], [-16, 0], [0, '16'], [0.5, 16.5], null]) {
      writeRaw(file, oneTensor({ data_offsets }), new Uint8Array(32));
      assertRejects(file, /tensor "w\.weight": data_offsets .* is not \[begin, end\]/);
    }
  });

  it('data_offsets out of the data region, or reversed', () => {
    const file = freshFile();
    writeRaw(file, oneTensor({ data_offsets: [8, 24] }), new Uint8Array(16));
    assertRejects(file, /tensor "w\.weight": data_offsets \[8, 24\] outside the data region of 16 bytes/);
    writeRaw(file, oneTensor({ data_offsets: [16, 0] }), new Uint8Array(16));
    assertRejects(file, /tensor "w\.weight": data_offsets \[16, 0\] outside the data region/);
  });

  it('overlapping offsets of two tensors, naming both', () => {
    const file = freshFile();
    const header = {
      'first.weight': { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
      'second.weight': { dtype: 'F32', shape: [4], data_offsets: [8, 24] },
    };
    writeRaw(file, header, new Uint8Array(24));
    assertRejects(file, /tensors "first\.weight" and "second\.weight" overlap/);
    // Overlap with a tensor that is not the neighbour in header order, and an identical range.
    const nested = {
      'z.big': { dtype: 'F32', shape: [8], data_offsets: [0, 32] },
      'a.small': { dtype: 'F16', shape: [2], data_offsets: [36, 40] },
      'm.inside': { dtype: 'BF16', shape: [2], data_offsets: [12, 16] },
    };
    writeRaw(file, nested, new Uint8Array(40));
    assertRejects(file, /tensors "z\.big" and "m\.inside" overlap/);
    const same = { x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, y: { dtype: 'F16', shape: [4], data_offsets: [0, 8] } };
    writeRaw(file, same, new Uint8Array(8));
    assertRejects(file, /tensors "[xy]" and "[xy]" overlap/);
  });

  it('adjacent and zero-length tensors between others tile the data region', () => {
    const file = freshFile();
    const header = {
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [0], data_offsets: [8, 8] },
      c: { dtype: 'BF16', shape: [4], data_offsets: [8, 16] },
    };
    writeRaw(file, header, new Uint8Array(16));
    assert.equal(readSafetensorsHeader(file).tensors.size, 3);
    // Inside another tensor's bytes even an empty tensor is refused, as the safetensors crate does.
    writeRaw(file, { ...header, b: { dtype: 'F32', shape: [0], data_offsets: [4, 4] } }, new Uint8Array(16));
    assertRejects(file, /tensors "a" and "b" overlap/);
  });

  it('tensors must tile the data region: no gap, nothing after the last, header length exact', () => {
    const file = freshFile();
    const a = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
    writeRaw(file, { a, c: { dtype: 'F32', shape: [2], data_offsets: [12, 20] } }, new Uint8Array(20));
    assertRejects(file, /4 bytes before tensor "c" belong to no tensor/);
    writeRaw(file, { a }, new Uint8Array(9));
    assertRejects(file, /the tensors end at byte \d+ but the file has \d+ bytes/);
    // A header length one short: JSON still parses (writers pad the header with spaces) but every tensor would shift.
    const padded = `${JSON.stringify({ a })} `;
    writeRaw(file, padded, new Uint8Array(8));
    assert.equal(readSafetensorsHeader(file).tensors.size, 1);
    writeRaw(file, padded, new Uint8Array(8), BigInt(padded.length - 1));
    assertRejects(file, /the tensors end at byte \d+ but the file has \d+ bytes/);
  });

  it('a name twice in the header is refused (JSON.parse would keep the last)', () => {
    const file = freshFile();
    const entry = '{"dtype":"F32","shape":[2],"data_offsets":[0,8]}';
    const json = Buffer.from(`{"w":${entry},"w":${entry}}`);
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    writeFileSync(file, Buffer.concat([length, json, new Uint8Array(8)]));
    assertRejects(file, /header names "w" twice/);
  });

  it('shape × dtype bytes that differ from the offsets span', () => {
    const file = freshFile();
    writeRaw(file, oneTensor({ dtype: 'BF16' }), new Uint8Array(16)); // [2, 2] bf16 is 8 bytes, span 16
    assertRejects(file, /tensor "w\.weight": shape \[2,2\] × bf16 is 8 bytes but data_offsets span 16/);
    writeRaw(file, oneTensor({ shape: [3, 2] }), new Uint8Array(16));
    assertRejects(file, /tensor "w\.weight": shape \[3,2\] × f32 is 24 bytes but data_offsets span 16/);
  });

  it('a file truncated inside the data region is rejected when its header is read', () => {
    const file = freshFile();
    writeSafetensors(file, [
      { name: 'a', dtype: 'f32', shape: [4], bytes: new Uint8Array(16) },
      { name: 'b', dtype: 'f32', shape: [4], bytes: new Uint8Array(16) },
    ]);
    truncateSync(file, statSync(file).size - 5);
    assertRejects(file, /tensor "b": data_offsets \[16, 32\] outside the data region of 27 bytes/);
  });

  it('a file truncated after its header was read: readTensorBytes and readTensors throw FormatError naming the file', async () => {
    const file = freshFile();
    writeSafetensors(file, [
      { name: 'a', dtype: 'f32', shape: [4], bytes: new Uint8Array(16).fill(1) },
      { name: 'b', dtype: 'f32', shape: [4], bytes: new Uint8Array(16).fill(2) },
    ]);
    const header = readSafetensorsHeader(file);
    truncateSync(file, statSync(file).size - 5);
    const b = header.tensors.get('b')!;
    assert.deepEqual(Buffer.from(readTensorBytes(header.tensors.get('a')!)), Buffer.alloc(16, 1), 'a is still whole');
    assert.throws(
      () => readTensorBytes(b),
      (error: unknown) => error instanceof FormatError && error.file === file && /truncated: expected 16 bytes/.test(error.message),
    );
    await assert.rejects(
      readTensors([...header.tensors.values()], () => {}),
      (error: unknown) => error instanceof FormatError && error.file === file && /truncated: tensor "b" ends past the end of the file/.test(error.message),
    );
  });

  it('a missing file and a directory are FormatErrors, not raw fs errors', () => {
    const dir = tempDir('olmoe-st-');
    assertRejects(join(dir, 'absent.safetensors'), /cannot open/);
    const folder = join(dir, 'model.safetensors');
    mkdirSync(folder);
    assertRejects(folder, /not a regular file/);
  });

  it('random garbage never hangs or escapes as a non-FormatError', () => {
    const file = freshFile();
    let seed = 12345;
    const next = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (let trial = 0; trial < 200; trial++) {
      const length = Math.floor(next() * 64);
      const bytes = Buffer.from(Array.from({ length }, () => Math.floor(next() * 256)));
      if (trial % 2 === 0 && length >= 8) bytes.writeBigUInt64LE(BigInt(Math.floor(next() * (length - 7))), 0); // plausible length
      writeFileSync(file, bytes);
      try {
        readSafetensorsHeader(file);
      } catch (error) {
        assert.ok(error instanceof FormatError, `trial ${trial}: ${String(error)}`);
      }
    }
  });
});
