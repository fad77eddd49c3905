/**
 * Stop strings over streamed text: text is held back while its tail could still become a stop string,
 * and cut just before the first stop string found. Stop strings never reach the output.
 */
export class StopStringMatcher {
  private pending = '';
  stopped = false;

  constructor(private readonly stops: readonly string[]) {}

  /** Feed newly decoded text; returns the text that is now safe to emit. */
  push(text: string): string {
    if (this.stopped) return '';
    this.pending += text;
    const hit = this.firstStop();
    if (hit >= 0) {
      this.stopped = true;
      return this.take(hit);
    }
    return this.take(this.pending.length - this.heldTailLength());
  }

  /** End of generation: everything held back is final. */
  flush(): string {
    return this.stopped ? '' : this.take(this.pending.length);
  }

  private firstStop(): number {
    let first = -1;
    for (const stop of this.stops) {
      const at = this.pending.indexOf(stop);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    return first;
  }

  /** Length of the longest tail of `pending` that is a proper prefix of some stop string. */
  private heldTailLength(): number {
    let longest = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, this.pending.length); n > longest; n--) {
        if (this.pending.endsWith(stop.slice(0, n))) {
          longest = n;
          break;
        }
      }
    }
    return longest;
  }

  private take(length: number): string {
    const out = this.pending.slice(0, length);
    this.pending = this.stopped ? '' : this.pending.slice(length);
    return out;
  }
}
