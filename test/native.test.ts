/** Native backend specifics: memory-mapped weights and what happens when files change; allocation failures. */
import assert from 'node:assert/strict';
import { cpSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { recycle, retire, scoped, uninitialized } from '../src/backends/native/training.js';
import { NativeBackend } from '../src/backends/native/index.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { encodeFloats } from '../src/core/dtype.js';
import { ResourceError } from '../src/core/errors.js';
import { createRng } from '../src/core/rng.js';
import { weightFromBytes } from '../src/core/backend.js';
import { loadModel } from '../src/model/load.js';
import { firstNonFinite } from '../src/model/olmoe.js';
import { writeRandomCheckpoint } from '../src/model/random-checkpoint.js';
import { announceSkip, backendCases } from './backends.js';
import { logitsOf, maxAbsDiff } from './checkpoints.js';
import { repoRoot, tempDir, tinyModelDir } from './helpers.js';

const IDS = Int32Array.from([5, 80, 17, 200, 33]);
const native = backendCases.find((b) => b.name === 'native')!;
const inCi = /^(1|true)$/i.test(process.env.CI ?? '') || process.env.OLMOE_REQUIRE_NATIVE === '1';

// Without the addon every native test is skipped with its reason; in CI that must fail the run, not vanish.
it('the native addon is built (required in CI; elsewhere its tests skip, saying why)', { skip: inCi ? false : announceSkip(native.skip) }, () => {
  assert.equal(native.skip, false, `CI needs the native backend, but ${native.skip}`);
});

describe('memory-mapped weights', { skip: announceSkip(native.skip) }, () => {
  it('a checkpoint replaced on disk (new file renamed over the old) leaves a loaded model unchanged; a new load sees it', async () => {
    const dir = tempDir();
    cpSync(tinyModelDir, dir, { recursive: true });
    const addon = (native.create() as unknown as { addon: never }).addon;
    const backend = new NativeBackend(addon, { minMapped: 0 }); // the tiny model's weights mapped too (small ones are read by default)
    const loaded = await loadModel(dir, { backend });
    const before = logitsOf(loaded, IDS);
    // olmoe's own writers replace files atomically (temp file + rename): the mapping keeps the old inode.
    const other = tempDir();
    writeRandomCheckpoint(other, { layers: 3, experts: 16, topK: 4, hidden: 96, heads: 6, intermediate: 48, vocab: 600, context: 256, dtype: 'bf16', seed: 99, std: 0.25 });
    cpSync(join(other, 'model.safetensors'), join(dir, 'model.safetensors.new'));
    renameSync(join(dir, 'model.safetensors.new'), join(dir, 'model.safetensors'));
    assert.equal(maxAbsDiff(logitsOf(loaded, IDS), before), 0, 'the loaded model still reads the old weights');
    const reloaded = await loadModel(dir, { backend });
    assert.ok(maxAbsDiff(logitsOf(reloaded, IDS), before) > 1e-3, 'a new load maps the new file');
  });

  it('rows read from a mapped table\'s file are its bytes, and no page of the mapping becomes resident', { skip: process.platform === 'linux' ? false : 'reads /proc/self/smaps' }, () => {
    const addon = (native.create() as unknown as { addon: { mapTensor(path: string, offset: number, length: number): ArrayBuffer; embedRows(...args: unknown[]): boolean } }).addon;
    const page = 4096, rowBytes = 1000; // rows straddle pages; float32 rows of 250 (widened: copied bit for bit)
    const file = join(tempDir(), 'table.bin');
    const content = Uint8Array.from({ length: 16 * page }, (_, i) => (i * 7 + 3) & 255);
    writeFileSync(file, content);
    const offset = 1234, rows = 60;
    const table = new Uint8Array(addon.mapTensor(file, offset, rows * rowBytes));
    const resident = () => {
      const smaps = readFileSync('/proc/self/smaps', 'utf8').split('\n');
      const at = smaps.findIndex((line) => line.endsWith(file));
      return Number(smaps.slice(at + 1).find((line) => line.startsWith('Rss:'))!.match(/(\d+)/)![1]);
    };
    const ids = Int32Array.of(4, 59, 0, 4, 37);
    const out = new Float32Array((ids.length * rowBytes) / 4);
    assert.equal(addon.embedRows(table, rowBytes, 0, ids, out), true);
    const bytes = new Uint8Array(out.buffer);
    ids.forEach((id, i) => assert.deepEqual(bytes.subarray(i * rowBytes, (i + 1) * rowBytes), content.subarray(offset + id * rowBytes, offset + (id + 1) * rowBytes), `row ${id}`));
    assert.equal(resident(), 0, 'the mapping was not touched');
    assert.equal(addon.embedRows(table, rowBytes, 0, Int32Array.of(60), new Float32Array(rowBytes / 4)), false, 'a row past the table');
    assert.equal(addon.embedRows(new Uint8Array(5000), rowBytes, 0, Int32Array.of(1), new Float32Array(rowBytes / 4)), false, 'memory not mapped from a file');
  });

  it('firstNonFinite: the first NaN or ±∞, as the model\'s JavaScript scan finds it, at chunk edges and among extreme finite values', () => {
    const backend = native.create();
    const values = Float32Array.from({ length: 50304 }, (_, i) => Math.sin(i) * 100);
    values[7] = 3.4028234663852886e38; // the largest finite float32
    values[8] = -3.4028234663852886e38;
    values[9] = 1e-45; // a denormal
    const tensor = backend.fromFloat32(values, [1, values.length]);
    assert.equal(backend.firstNonFinite!(tensor), -1);
    assert.equal(firstNonFinite(values), -1);
    for (const [at, bad] of [[0, NaN], [4095, Infinity], [4096, -Infinity], [50303, NaN], [12345, -NaN]] as const) {
      const copy = values.slice();
      copy[at] = bad;
      copy[50303 - ((at + 1) % 50304)] = NaN; // a later (or earlier) one too: the first is named
      const expected = firstNonFinite(copy);
      assert.equal(backend.firstNonFinite!(backend.fromFloat32(copy, [1, copy.length])), expected, `${bad} at ${at}`);
      assert.equal(expected, Math.min(at, 50303 - ((at + 1) % 50304)));
    }
  });

  it('embedRows: rows of a mapped table of every stored type (k-quants too) read from its file and widened bit for bit as the reference widens them; a row outside is false, a misfit out or row size a RangeError', async () => {
    const addon = (native.create() as unknown as { addon: { mapTensor(path: string, offset: number, length: number): ArrayBuffer; embedRows(...args: unknown[]): boolean } }).addon;
    const reference = new ReferenceBackend();
    const codes = { f32: 0, bf16: 1, f16: 2, q8_0: 3, q4_0: 4, q4_k: 5, q5_k: 6, q6_k: 7 } as const; // DTYPE_CODES
    const [rows, width] = [24, 512];
    const rng = createRng(5);
    const values = Float32Array.from({ length: rows * width }, () => (rng() - 0.5) * 3);
    for (const [dtype, code] of Object.entries(codes) as [keyof typeof codes, number][]) {
      const bytes = encodeFloats(dtype, values);
      const file = join(tempDir(), `table-${dtype}.bin`);
      writeFileSync(file, Buffer.concat([Buffer.alloc(77), bytes])); // an offset inside the first page
      const table = new Uint8Array(addon.mapTensor(file, 77, bytes.byteLength));
      const rowBytes = bytes.byteLength / rows;
      const ids = Int32Array.of(3, 23, 0, 3);
      const out = new Float32Array(ids.length * width);
      assert.equal(addon.embedRows(table, rowBytes, code, ids, out), true, dtype);
      const expected = reference.toFloat32(reference.embedding(await reference.weight(weightFromBytes('table', dtype, [rows, width], bytes)), ids));
      assert.deepEqual(out, expected, `${dtype}: the reference's rows`);
      assert.equal(addon.embedRows(table, rowBytes, code, Int32Array.of(24), new Float32Array(width)), false, `${dtype}: a row past the table`);
      assert.throws(() => addon.embedRows(table, rowBytes, code, Int32Array.of(1), new Float32Array(width - 1)), /embedRows: out must hold ids × width floats/);
      assert.throws(() => addon.embedRows(table, rowBytes + 1, code, Int32Array.of(1), new Float32Array(width)), /rowBytes must be width values of the dtype/);
    }
  });

  it('a decode token\'s embedding rows come from the file for every weight type, widened natively: the same rows, bit for bit, as the reference widens through the mapping', async () => {
    const addon = (native.create() as unknown as { addon: { embedRows(...args: unknown[]): boolean } }).addon;
    let fromFiles = 0; // gathers the file answered (not the fallback through the mapping)
    const spy = Object.assign(Object.create(addon) as typeof addon, { embedRows: (...args: unknown[]) => (addon.embedRows(...args) ? (fromFiles++, true) : false) });
    const backend = new NativeBackend(spy as never, { minMapped: 0 });
    const peer = join(repoRoot, 'test', 'fixtures', 'q8-peer');
    // bf16 (safetensors), f32 (safetensors), q8_0, q4_0 and f16 (GGUF)
    for (const spec of [tinyModelDir, join(peer, 'model'), ...['q8_0', 'q4_0', 'f16'].map((type) => join(peer, `make_olmoe-${type}.gguf`))]) {
      const model = await loadModel(spec, { backend });
      const table = model.weights.embed;
      const width = table.shape[1]!;
      const many = Int32Array.from({ length: 40 }, (_, i) => (i * 7) % 50), few = Int32Array.of(many[5]!, many[1]!, many[5]!);
      const through = backend.toFloat32(backend.embedding(table, many)); // more than FEW_ROWS: read through the mapping
      const fromFile = backend.toFloat32(backend.embedding(table, few));
      few.forEach((id, i) => assert.deepEqual(fromFile.subarray(i * width, (i + 1) * width), through.subarray(many.indexOf(id) * width, (many.indexOf(id) + 1) * width), `${spec}: row ${id}`));
      assert.throws(() => backend.embedding(table, Int32Array.of(1, 1e6)), /id 1000000 outside table/);
    }
    assert.equal(fromFiles, 5, 'each model\'s few rows came from its file');
  });
});

describe('allocation failures', () => {
  for (const backend of backendCases) {
    it(`${backend.name}: a KV cache too large to allocate is a ResourceError naming its size`, { skip: backend.skip }, async () => {
      const model = await loadModel(tinyModelDir, { backend: backend.name === 'reference' ? new ReferenceBackend() : backend.create() });
      // The cache grows as tokens arrive, so a huge capacity costs nothing until it is reserved.
      const { numLayers, numKVHeads, headDim } = model.config;
      const huge = { layers: numLayers, capacity: 2 ** 33, kvHeads: numKVHeads, headDim };
      assert.equal(model.backend.createKVCache(huge).allocated, 0);
      assert.throws(() => model.backend.createKVCache({ ...huge, reserve: 2 ** 33 }), (e: Error) => e instanceof ResourceError && /out of memory: cannot allocate a KV cache of 8589934592 positions/.test(e.message));
    });
  }
});

describe('storage reused between inference passes (Backend.scoped)', () => {
  it('the next pass gets the small activations of the last one, never its result; large ones, a failed pass and released storage are not handed out twice', () => {
    const width = 1024; // 4 KiB: its own ArrayBuffer (smaller ones share Node's pool and are never reused)
    let made: Float32Array[] = [];
    const pass = (count: number, size = width) => () => {
      made = Array.from({ length: count }, () => uninitialized(size));
      return made[0]!;
    };
    const first = scoped(pass(3), (result) => result.buffer);
    const firstMade = made;
    scoped(pass(3), (result) => result.buffer);
    assert.equal(new Set(made).size, 3);
    assert.deepEqual(new Set(made.filter((a) => firstMade.includes(a))), new Set(firstMade.slice(1)), 'the next pass reuses all but the result');
    assert.ok(!made.includes(first), 'a result is never reused');
    assert.ok(!firstMade.includes(uninitialized(width)), 'outside a pass nothing is handed out from them');
    // Above the size limit (decode-sized activations only): left to the garbage collector.
    const big = 1 << 17; // 512 KiB
    scoped(pass(2, big), (result) => result.buffer);
    const bigMade = made;
    scoped(pass(2, big), (result) => result.buffer);
    assert.ok(!made.some((a) => bigMade.includes(a)), 'large activations are not reused');
    // A pass that throws gives nothing back.
    assert.throws(() => scoped(() => { made = [uninitialized(width + 1)]; throw new Error('boom'); }, () => new ArrayBuffer(0)), /boom/);
    const thrown = made[0]!;
    scoped(pass(1, width + 1), () => new ArrayBuffer(0));
    assert.notEqual(made[0], thrown);
    // Storage released inside a pass goes back once (by the pass), not twice.
    let released!: Float32Array;
    scoped(() => {
      released = uninitialized(width + 2);
      recycle(released);
      return uninitialized(width + 3);
    }, (result) => result.buffer);
    scoped(pass(2, width + 2), () => new ArrayBuffer(0));
    assert.equal(made.filter((a) => a === released).length, 1);
    assert.notEqual(made[0], made[1]);
  });

  it('retired storage goes to the pass\'s next ops at once, small and large, once even if retired twice; outside a pass nothing', () => {
    const small = 1024, large = 1 << 17; // 4 KiB (the pass's set) and 512 KiB (above it)
    for (const size of [small, large]) {
      let first!: Float32Array, second!: Float32Array, third!: Float32Array, fourth!: Float32Array;
      scoped(() => {
        first = uninitialized(size);
        retire([first, first]);
        second = uninitialized(size);
        third = uninitialized(size);
        retire([first.subarray(1)]); // a view: its buffer may hold others
        fourth = uninitialized(size);
        return uninitialized(7);
      }, (result) => result.buffer);
      assert.equal(second, first, `${size}: the retired array is the next one of its length`);
      assert.notEqual(third, second, `${size}: retired twice, handed out once`);
      assert.ok(fourth !== second && fourth !== third, `${size}: a view retires nothing`);
    }
    const outside = uninitialized(large);
    retire([outside]);
    assert.notEqual(scoped(() => uninitialized(large), (result) => result.buffer), outside, 'retired outside a pass: not kept');
  });

  it('a retired large array serves shorter ones down to half its length, as a view that gives it back whole once', () => {
    const size = 3 << 16; // 768 KiB: the large pool
    let whole!: Float32Array, view!: Float32Array, again!: Float32Array, next!: Float32Array, tooShort!: Float32Array;
    scoped(() => {
      whole = uninitialized(size);
      retire([whole]);
      tooShort = uninitialized(size / 2 - 1); // more than twice shorter: new storage
      view = uninitialized(size - 100);
      retire([view, view]);
      again = uninitialized(size);
      next = uninitialized(size);
      return uninitialized(7);
    }, (result) => result.buffer);
    assert.notEqual(tooShort.buffer, whole.buffer, 'under half the length: not lent');
    assert.equal(view.buffer, whole.buffer, 'a shorter array is a view of the retired one');
    assert.equal(view.length, size - 100);
    assert.equal(again, whole, 'the view retired gives the whole array back');
    assert.notEqual(next.buffer, whole.buffer, 'retired twice, handed out once');
  });

  it('a forward pass that retires its intermediates gives the logits of one that does not, prompt then decode', { skip: announceSkip(native.skip) }, async () => {
    // hidden 1024 and 80 tokens: the prompt's activations are 320 KiB (the large pool), decode's 4 KiB (the pass's set)
    const dir = tempDir();
    writeRandomCheckpoint(dir, { layers: 3, experts: 4, topK: 2, hidden: 1024, heads: 8, intermediate: 64, vocab: 1500, context: 160, dtype: 'bf16', seed: 9, std: 0.05 });
    const run = async (retiring: boolean) => {
      const backend = native.create() as { retire?: unknown };
      if (!retiring) backend.retire = undefined;
      const model = await loadModel(dir, { backend: backend as never });
      const cache = model.createCache(120);
      const out: Float32Array[] = [];
      for (const ids of [Int32Array.from({ length: 80 }, (_, i) => (i * 37) % 1500), Int32Array.of(3), Int32Array.from({ length: 30 }, (_, i) => i + 9), Int32Array.of(4)])
        out.push(model.backend.toFloat32(model.forward(ids, { cache, logits: 'all' })).slice());
      return out;
    };
    const [retiring, keeping] = [await run(true), await run(false)];
    retiring.forEach((logits, i) => assert.deepEqual(logits, keeping[i], `pass ${i}`));
  });

  it('decoded logits stay as they were while later tokens are decoded', { skip: announceSkip(native.skip) }, async () => {
    // Wide enough that every activation and the logits have storage of their own (4 KiB and more; smaller ones
    // share Node's pool and are never reused).
    const dir = tempDir();
    writeRandomCheckpoint(dir, { layers: 2, experts: 4, topK: 2, hidden: 1024, heads: 8, intermediate: 64, vocab: 1500, context: 64, dtype: 'bf16', seed: 5, std: 0.05 });
    const model = await loadModel(dir, { backend: native.create() });
    const cache = model.createCache(32);
    const kept: Float32Array[] = [], copies: Float32Array[] = [];
    let ids = IDS;
    for (let step = 0; step < 6; step++) {
      const logits = model.backend.toFloat32(model.forward(ids, { cache, logits: 'last' }));
      kept.push(logits);
      copies.push(logits.slice());
      ids = Int32Array.of(step + 7);
    }
    kept.forEach((logits, i) => assert.deepEqual(logits, copies[i], `the logits of step ${i}`));
    // And the passes equal the reference backend's greedy path within tolerance.
    const reference = await loadModel(dir, { backend: new ReferenceBackend() });
    const refCache = reference.createCache(32);
    ids = IDS;
    for (let step = 0; step < 6; step++) {
      const logits = reference.backend.toFloat32(reference.forward(ids, { cache: refCache, logits: 'last' }));
      assert.ok(maxAbsDiff(logits, copies[step]!) < 1e-3, `step ${step}`);
      ids = Int32Array.of(step + 7);
    }
  });
});

describe('native allocations (KV caches)', { skip: announceSkip(native.skip) }, () => {
  it('the size asked, zeroed, writable end to end, below and above 2 MiB; a size beyond memory is an error', () => {
    const addon = (native.create() as unknown as { addon: { allocate(bytes: number): ArrayBuffer } }).addon;
    for (const bytes of [4096, (2 << 20) - 1, 2 << 20, (3 << 20) + 5]) {
      const memory = new Uint8Array(addon.allocate(bytes));
      assert.equal(memory.byteLength, bytes);
      assert.ok(memory.every((b) => b === 0), `${bytes} bytes zeroed`);
      memory[0] = 1;
      memory[bytes - 1] = 2;
      assert.equal(memory[0]! + memory[bytes - 1]!, 3);
    }
    assert.throws(() => addon.allocate(2 ** 52), /out of memory: cannot allocate 4503599627370496 bytes/);
  });

  it('populating pages of allocated memory keeps what was written there and the zeros around it', () => {
    const addon = (native.create() as unknown as { addon: { allocate(bytes: number): ArrayBuffer; populate(view: Uint8Array): boolean } }).addon;
    const memory = new Uint8Array(addon.allocate(1 << 20));
    memory.fill(7, 5000, 9000);
    assert.equal(typeof addon.populate(memory.subarray(3000, 700_001)), 'boolean'); // unaligned ends: the whole pages inside
    assert.ok(memory.subarray(5000, 9000).every((b) => b === 7), 'written bytes kept');
    assert.ok(memory.subarray(0, 5000).every((b) => b === 0) && memory.subarray(9000).every((b) => b === 0), 'the rest still zero');
    memory[700_000] = 3;
    assert.equal(memory[700_000], 3);
  });
});
