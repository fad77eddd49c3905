/**
 * The KV cache of the reference and native backends: per layer, keys and values of each position as one row of
 * Hkv·Hd values in the cache's type (core/backend.ts KVCacheType), rounded once when stored:
 *   f32: the values;  f16: IEEE half, round to nearest even (overflow → ±∞);
 *   q8_0: GGUF/llama.cpp blocks of 32 values {f16 d, int8 q[32]}, d = amax/127, q = round-half-away(x · 1/d),
 *         a row padded with zeros to whole blocks; a block holding ±∞ or NaN stores d = NaN (its values read NaN).
 * The native backend stores the same bytes (native/src/kv-cache.cc), so attention reads the same numbers in both.
 * Dimension legend: S positions, Hkv key/value heads, Hd head dim (width W = Hkv·Hd).
 */
import { DEFAULT_KV_CACHE_TYPE, kvRowBytes, parseKVCacheType, type KVCache, type KVCacheOptions, type KVCacheType } from '../../core/backend.js';
import { InputError, ResourceError } from '../../core/errors.js';
import { f16Value, float32ToF16Bits } from '../../core/f16.js';
import { checkShapes, type Floats } from './tensor.js';

const fround = Math.fround;
const roundAway = (value: number) => Math.sign(value) * Math.round(Math.abs(value));

/** Rows of `width` floats → their stored bytes (rowBytes each). */
export type KVEncoder = (type: KVCacheType, rows: Floats, width: number, out: Uint8Array) => void;

/** Where a cache's memory comes from and how rows are rounded into it (the native backend's: the addon's). */
export interface KVStorage {
  /** Zeroed storage (default: a plain Uint8Array). */
  allocate?: (bytes: number) => Uint8Array;
  /** Rounds rows to the cache type (default encodeKVRows; the native backend's is bit-identical to it). */
  encode?: KVEncoder;
  /**
   * Faults in storage ahead of the writes in one call (on the virtual machine measured, populating and then writing a
   * page cost ~6 µs, a trap at its first write ~15 µs).
   */
  populate?: (bytes: Uint8Array) => void;
  /** Frees storage that growth replaced at once (else the collector might take until the process ends). */
  release?: (storage: Uint8Array) => void;
  /**
   * Takes a released cache's storage for reuse, `faulted` bytes of it from the start faulted in (else it is left to
   * the collector).
   */
  recycle?: (storage: Uint8Array, faulted: number) => void;
  /**
   * The storage grown to `bytes` in place of a new allocation and a copy: what it held kept, the rest zero, the old
   * view unusable after (the native backend's moves the pages: nothing copied, nothing faulted in again).
   */
  resize?: (storage: Uint8Array, bytes: number) => Uint8Array;
}

export class RefKVCache implements KVCache {
  length = 0;
  allocated = 0;
  keys: Uint8Array[] = []; // per layer [allocated, rowBytes]
  values: Uint8Array[] = [];
  /** Counts the times `keys` and `values` moved to new storage (what holds their addresses must look them up again). */
  generation = 0;
  readonly layers: number;
  readonly capacity: number;
  readonly width: number;
  readonly dtype: KVCacheType;
  /** Bytes of one position's keys (or values) in one layer. */
  readonly rowBytes: number;
  readonly encode: KVEncoder;

  /** Per layer: positions from 0 whose storage `populate` has faulted in. */
  private populated: number[] = [];
  private released = false;

  constructor(
    opts: KVCacheOptions,
    private readonly storage: KVStorage = {},
  ) {
    this.layers = opts.layers;
    this.capacity = opts.capacity;
    this.width = opts.kvHeads * opts.headDim;
    this.dtype = parseKVCacheType(opts.dtype ?? DEFAULT_KV_CACHE_TYPE, 'KV cache dtype');
    this.rowBytes = kvRowBytes(this.dtype, this.width);
    this.encode = storage.encode ?? encodeKVRows;
    this.reserve(Math.min(opts.reserve ?? 0, opts.capacity));
  }

  get bytesPerPosition(): number {
    return 2 * this.layers * this.rowBytes;
  }

  /**
   * Storage for at least `positions` positions in every layer: at least double what is there (so a sequence of T
   * tokens is copied O(T) times in all), at most the capacity. What was stored moves to the new storage whole
   * (positions may be written before `length` is advanced).
   */
  reserve(positions: number): void {
    this.checkLive();
    if (positions <= this.allocated) return;
    if (positions > this.capacity) throw new InputError(`KV cache holds ${this.capacity} positions; ${positions} needed`);
    const size = Math.min(this.capacity, Math.max(positions, 2 * this.allocated, MIN_POSITIONS));
    const { allocate = (bytes: number) => new Uint8Array(bytes), populate, release, resize } = this.storage;
    const grow = (old: Uint8Array | undefined) => {
      if (old && resize) return resize(old, size * this.rowBytes);
      const next = allocate(size * this.rowBytes);
      if (old) {
        populate?.(next.subarray(0, old.byteLength));
        next.set(old);
      }
      return next;
    };
    const replaced = resize ? [] : [...this.keys, ...this.values];
    try {
      this.keys = Array.from({ length: this.layers }, (_, layer) => grow(this.keys[layer]));
      this.values = Array.from({ length: this.layers }, (_, layer) => grow(this.values[layer]));
      for (const storage of replaced) release?.(storage);
    } catch (error) {
      if (error instanceof RangeError) throw new ResourceError(`a KV cache of ${size} positions × ${this.layers} layers`, size * this.bytesPerPosition, error);
      throw error;
    }
    if (!resize) this.populated = this.populated.map(() => this.allocated); // what was copied (resized storage keeps its pages)
    this.allocated = size;
    this.generation++;
  }

  /** KVCache.release: the storage to the backend's `recycle` (faulted-in bytes with it), then no storage at all. */
  release(): void {
    if (this.released) return;
    this.released = true;
    const { recycle } = this.storage;
    this.keys.forEach((keys, layer) => recycle?.(keys, (this.populated[layer] ?? 0) * this.rowBytes));
    this.values.forEach((values, layer) => recycle?.(values, (this.populated[layer] ?? 0) * this.rowBytes));
    [this.keys, this.values, this.populated, this.allocated, this.length] = [[], [], [], 0, 0];
  }

  private checkLive(): void {
    if (this.released) throw new InputError('this KV cache was released (KVCache.release): its storage belongs to another cache now');
  }

  /** Storage for rows [start, start+T) of every layer, allocated and faulted in as `store` leaves it (a step replayed natively). */
  prepare(start: number, rows: number): void {
    this.reserve(start + rows);
    for (let layer = 0; layer < this.layers; layer++) this.faultIn(layer, start, rows);
  }

  /** Write rows of new keys and values at [start, start+T) of a layer, rounded to the cache type. */
  store(layer: number, start: number, kv: { keys: Floats; values: Floats }): void {
    checkShapes('attention', kv.keys.length % this.width === 0 && kv.values.length === kv.keys.length, () => `keys of ${kv.keys.length} values for a cache ${this.width} wide`);
    const rows = kv.keys.length / this.width;
    this.reserve(start + rows);
    this.faultIn(layer, start, rows);
    const span = (bytes: Uint8Array) => bytes.subarray(start * this.rowBytes, (start + rows) * this.rowBytes);
    this.encode(this.dtype, kv.keys, this.width, span(this.keys[layer]!));
    this.encode(this.dtype, kv.values, this.width, span(this.values[layer]!));
  }

  /** Rows [start, start+T) of a layer's storage (and POPULATE_AHEAD more) faulted in, where the storage can. */
  private faultIn(layer: number, start: number, rows: number): void {
    const ready = this.populated[layer] ?? 0;
    const populate = this.storage.populate;
    if (populate && start + rows > ready) {
      const [from, to] = [Math.max(ready, start) * this.rowBytes, Math.min(this.allocated, start + rows + POPULATE_AHEAD) * this.rowBytes];
      populate(this.keys[layer]!.subarray(from, to));
      populate(this.values[layer]!.subarray(from, to));
      this.populated[layer] = to / this.rowBytes;
    }
  }

  /** Positions [0, count) of a layer's keys or values, read back as float32 [count, W]. */
  read(which: 'keys' | 'values', layer: number, count: number): Float32Array {
    this.checkLive();
    return decodeKVRows(this.dtype, this[which][layer]!.subarray(0, count * this.rowBytes), this.width);
  }
}

/** The smallest growth step, so the first decode tokens after a short prompt do not each reallocate. */
const MIN_POSITIONS = 16;
/** Positions of storage populated past the rows being stored (decode: one populate call per 64 tokens and layer). */
const POPULATE_AHEAD = 64;

/** Rows of `width` floats rounded to `type`, written to out (rows × kvRowBytes bytes). */
export function encodeKVRows(type: KVCacheType, rows: Floats, width: number, out: Uint8Array): void {
  const count = rows.length / width;
  const rowBytes = kvRowBytes(type, width);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let r = 0; r < count; r++) {
    const row = rows.subarray(r * width, (r + 1) * width);
    if (type === 'f32') for (let i = 0; i < width; i++) view.setFloat32(r * rowBytes + 4 * i, row[i]!, true);
    else if (type === 'f16') for (let i = 0; i < width; i++) view.setUint16(r * rowBytes + 2 * i, float32ToF16Bits(row[i]!), true);
    else for (let b = 0; b < rowBytes / 34; b++) encodeQ8Block(row, 32 * b, view, r * rowBytes + 34 * b);
  }
}

/** One q8_0 block of values [first, first+32) of a row (zeros past its end), llama.cpp's quantize_row_q8_0 rounding. */
function encodeQ8Block(row: Floats, first: number, view: DataView, at: number): void {
  const end = Math.min(row.length, first + 32);
  let amax = 0;
  let finite = true;
  for (let i = first; i < end; i++) {
    const magnitude = Math.abs(row[i]!);
    if (!(magnitude <= 3.4028234663852886e38)) finite = false;
    else if (magnitude > amax) amax = magnitude;
  }
  const d = finite ? fround(amax / 127) : NaN;
  const inverse = d ? fround(1 / d) : 0;
  view.setUint16(at, float32ToF16Bits(d), true);
  for (let i = 0; i < 32; i++) view.setInt8(at + 2 + i, first + i < end && finite ? roundAway(fround(row[first + i]! * inverse)) : 0);
}

/** Stored rows back to float32 [rows, width]: exact for f32 and f16; q8_0 values d·q. */
export function decodeKVRows(type: KVCacheType, bytes: Uint8Array, width: number): Float32Array {
  const rowBytes = kvRowBytes(type, width);
  const count = bytes.byteLength / rowBytes;
  const out = new Float32Array(count * width);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let r = 0; r < count; r++) {
    for (let i = 0; i < width; i++) {
      const at = r * rowBytes;
      if (type === 'f32') out[r * width + i] = view.getFloat32(at + 4 * i, true);
      else if (type === 'f16') out[r * width + i] = f16Value(view.getUint16(at + 2 * i, true));
      else {
        const block = at + 34 * Math.floor(i / 32);
        out[r * width + i] = fround(f16Value(view.getUint16(block, true)) * view.getInt8(block + 2 + (i % 32)));
      }
    }
  }
  return out;
}
