/**
 * Storage of released KV caches (KVCache.release), kept for the next caches of one native backend. A cache's rows are
 * stored into pages that were never touched, and a page's first touch is the costly part: on the virtual machine
 * measured (Firecracker, AMD EPYC), 1–2.6 µs a 4 KiB page for memory the process had just freed and ~9–13 µs for
 * memory that had sat free for a few seconds: up to ~0.4 ms a position of OLMoE-1B-7B's 32 f16 rows. A server's next
 * request, or a chat's next turn, finds its pages already there.
 *
 * The pool holds at most `limit` bytes that were faulted in (what it adds to the resident memory); a buffer that would
 * take it over is freed instead. Buffers are whole allocations of the addon; a cache gets the smallest that fits, as a
 * view of the bytes it asked for. Their contents are stale: a cache writes each row before it reads it.
 */
export class KVStoragePool {
  private readonly free: ArrayBuffer[] = [];
  /** Per buffer, the most bytes from its start known to be faulted in (by any cache that used it). */
  private readonly faulted = new WeakMap<ArrayBuffer, number>();
  private held = 0;

  constructor(
    private readonly limit: number,
    private readonly drop: (buffer: ArrayBuffer) => void,
  ) {}

  /** Faulted-in bytes the pool holds now. */
  get bytes(): number {
    return this.held;
  }

  /** A pooled buffer of at least `bytes` (the smallest such) as a view of `bytes`, else undefined. */
  take(bytes: number): Uint8Array | undefined {
    let best = -1;
    this.free.forEach((buffer, i) => {
      if (buffer.byteLength >= bytes && (best < 0 || buffer.byteLength < this.free[best]!.byteLength)) best = i;
    });
    if (best < 0) return undefined;
    const [buffer] = this.free.splice(best, 1);
    this.held -= this.faulted.get(buffer!) ?? 0;
    return new Uint8Array(buffer!, 0, bytes);
  }

  /** A released cache's storage, `faulted` bytes of it from the start faulted in by that cache. */
  put(storage: Uint8Array, faulted: number): void {
    const buffer = storage.buffer as ArrayBuffer;
    if (buffer.byteLength === 0 || this.free.includes(buffer)) return; // detached (resized away) or empty; already here
    const resident = Math.min(buffer.byteLength, Math.max(this.faulted.get(buffer) ?? 0, storage.byteOffset + faulted));
    if (this.held + resident > this.limit) return this.drop(buffer);
    this.faulted.set(buffer, resident);
    this.free.push(buffer);
    this.held += resident;
  }
}
