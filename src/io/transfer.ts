/**
 * The two guards of a download stream: an idle timer that aborts a request when the server stops sending, and a
 * sha256 kept up to date as chunks are appended (checked against the hub's X-Linked-Etag when the file is complete).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';

/**
 * Aborts a request when nothing arrives for `ms`: no connection, no answer, or no next bytes of the body (a stalled
 * hub otherwise keeps a download waiting forever). `stalled` tells this abort from the caller's own.
 */
export class StallWatch {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private url = '';
  private answered = false;
  stalled = false;
  readonly signal: AbortSignal;

  constructor(
    private readonly ms: number,
    outer: AbortSignal | undefined,
  ) {
    this.signal = outer ? AbortSignal.any([outer, this.controller.signal]) : this.controller.signal;
  }

  /** A request to `url` starts: its answer is due within the timeout. */
  waitFor(url: string): void {
    [this.url, this.answered] = [url, false];
    this.restart();
  }

  /** Headers or body bytes arrived: the next bytes are due within the timeout. */
  progress(): void {
    this.answered = true;
    this.restart();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  get reason(): string {
    const seconds = `${this.ms / 1000} s`;
    return `${this.url} stalled: ${this.answered ? `no data for ${seconds}` : `no answer within ${seconds}`}`;
  }

  private restart(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.stalled = true;
      this.controller.abort();
    }, this.ms);
  }
}

/** A stalled transfer: retried (resuming) like a dropped connection, unlike the hub's HubError answers. */
export class StalledError extends Error {}

/** A sha256 that follows a file being appended to; it re-reads the file's prefix when it has lost count. */
export class RunningHash {
  private hash = createHash('sha256');
  private bytes = 0;

  /** Before appending at `offset`: start over from the file's first `offset` bytes unless those are what was hashed. */
  async resumeAt(file: string, offset: number): Promise<void> {
    if (this.bytes === offset) return;
    [this.hash, this.bytes] = [createHash('sha256'), 0];
    if (offset > 0) for await (const chunk of fs.createReadStream(file, { end: offset - 1 })) this.update(chunk as Buffer);
  }

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
    this.bytes += chunk.byteLength;
  }

  async digest(file: string, size: number): Promise<string> {
    await this.resumeAt(file, size);
    return this.hash.digest('hex');
  }
}
