/**
 * A file that appears at its path only when complete: bytes go to `path.tmp-<pid>`, which is fsynced and renamed
 * over `path` by finish(); any failure (disk full included) removes the temporary file and leaves `path` as it was.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { withIo } from '../core/errors.js';

export class AtomicFile {
  private readonly fd: number;
  private readonly tempPath: string;
  private closed = false;
  written = 0;

  constructor(readonly path: string) {
    this.tempPath = `${path}.tmp-${process.pid}`;
    this.fd = withIo(this.tempPath, 'create', () => openSync(this.tempPath, 'w'));
  }

  write(bytes: Uint8Array): void {
    try {
      withIo(this.tempPath, 'write', () => {
        let done = 0;
        while (done < bytes.length) done += writeSync(this.fd, bytes, done, bytes.length - done);
      });
      this.written += bytes.length;
    } catch (error) {
      this.abort();
      throw error;
    }
  }

  finish(): void {
    try {
      withIo(this.tempPath, 'write', () => fsyncSync(this.fd));
      closeSync(this.fd);
      this.closed = true;
      withIo(this.path, 'move into place', () => renameSync(this.tempPath, this.path));
    } catch (error) {
      this.abort();
      throw error;
    }
  }

  abort(): void {
    if (!this.closed) closeSync(this.fd);
    this.closed = true;
    rmSync(this.tempPath, { force: true });
  }
}
