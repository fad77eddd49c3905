/**
 * Stop strings over streamed text: text is held back while its tail could still become a stop string,
 * and cut just before the first stop string found. Stop strings never reach the output.
 */
import { InputError } from '../core/errors.js';

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

const SIMPLE_ESCAPES: Record<string, number> = { n: 10, r: 13, t: 9, "'": 39, '"': 34, '\\': 92 };

/**
 * Backslash escapes in a command-line string, as llama.cpp's string_process_escapes reads them: \n \r \t \' \"
 * \\ and \xHH (one byte; bytes join into UTF-8, so "\xc3\xa9" is "é"). Any other backslash stays as written.
 * `--stop "\n\n"` then means two newlines, as a shell cannot easily pass them.
 */
export function processEscapes(text: string, flag: string): string {
  const source = new TextEncoder().encode(text);
  const bytes: number[] = [];
  const charAt = (at: number) => String.fromCharCode(source[at] ?? 0);
  for (let i = 0; i < source.length; i++) {
    const escaped = source[i] === 92 && i + 1 < source.length ? charAt(i + 1) : '';
    const hexDigits = charAt(i + 2) + charAt(i + 3);
    if (Object.hasOwn(SIMPLE_ESCAPES, escaped)) {
      bytes.push(SIMPLE_ESCAPES[escaped]!);
      i += 1;
    } else if (escaped === 'x' && /^[0-9a-fA-F]{2}$/.test(hexDigits)) {
      bytes.push(parseInt(hexDigits, 16));
      i += 3;
    } else {
      bytes.push(source[i]!);
    }
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes));
  } catch {
    throw new InputError(`${flag}: ${JSON.stringify(text)}: its \\x escapes do not form UTF-8 text`);
  }
}
