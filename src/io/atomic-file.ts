/**
 * A file that appears at its path only when complete: bytes go to `path.tmp-<pid>`, which is fsynced and renamed
 * over `path` by finish(); any failure (disk full included) removes the temporary file and leaves `path` as it was.
 * A kill (SIGKILL, power loss) cannot clean up, so each writer first removes the staging of the same path that a
 * process no longer running left behind.
 */
import { closeSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { withIo } from '../core/errors.js';

/** Where this process stages `target` (a file, or a folder for checkpoints). */
export function stagingPath(target: string): string {
  return `${target.replace(/[\\/]+$/, '')}.tmp-${process.pid}`;
}

/** Whether process `pid` still runs (signal 0 checks without sending anything; EPERM means it runs as another user). */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Remove `target.tmp-<pid>` staging (file or folder) whose process is gone. Staging of other targets, and of a
 * process that still runs (another writer of the same path), is left alone. Returns the paths removed.
 */
export function removeStaleStaging(target: string): string[] {
  const trimmed = target.replace(/[\\/]+$/, '');
  const dir = dirname(trimmed);
  const prefix = `${basename(trimmed)}.tmp-`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return []; // no folder yet: nothing was staged there
  }
  const stale = names.filter((name) => name.startsWith(prefix) && /^\d+$/.test(name.slice(prefix.length)) && !processAlive(Number(name.slice(prefix.length))));
  for (const name of stale) withIo(join(dir, name), 'remove stale staging', () => rmSync(join(dir, name), { recursive: true, force: true }));
  return stale.map((name) => join(dir, name));
}

/**
 * Fault injection for tests: with `OLMOE_TEST_KILL_AT=n` the process SIGKILLs itself at its n-th write step (every
 * chunk written, rename and removal on the way to a finished file), as `kill -9` or a power cut would; with
 * `OLMOE_TEST_KILL_AT=count` it reports how many write steps it took on exit. Unset, this is one comparison.
 */
const killAt = process.env.OLMOE_TEST_KILL_AT;
let writeSteps = 0;
if (killAt === 'count') process.on('exit', () => process.stderr.write(`olmoe-test: ${writeSteps} write steps\n`));

export function writeStep(): void {
  if (killAt === undefined) return;
  writeSteps++;
  if (String(writeSteps) === killAt) process.kill(process.pid, 'SIGKILL');
}

/**
 * Bytes reach the disk in pieces of this size at offsets that are its multiples (the last piece shorter). The page
 * cache keeps a written file in folios no larger than the writes that made them, until they are evicted: a model
 * written in 64 KiB or 1 MiB pieces (a download's stream, a converter's tensors) is then mapped in 4 KiB pages, not
 * the 2 MiB pages mapping.cc asks for, and decode over it ran 34 vs 42 tok/s (Q4_0, measured on ext4, Linux 6.18).
 */
const WRITE_CHUNK = 16 << 20;

export class AtomicFile {
  private readonly fd: number;
  private readonly tempPath: string;
  private closed = false;
  private buffer: Buffer | undefined;
  private buffered = 0;
  written = 0;

  constructor(readonly path: string) {
    this.tempPath = stagingPath(path);
    removeStaleStaging(path);
    this.fd = withIo(this.tempPath, 'create', () => openSync(this.tempPath, 'w'));
  }

  write(bytes: Uint8Array): void {
    try {
      writeStep();
      let from = 0;
      while (from < bytes.length) {
        if (this.buffered === 0 && bytes.length - from >= WRITE_CHUNK) {
          this.writeOut(bytes.subarray(from, from + WRITE_CHUNK));
          from += WRITE_CHUNK;
          continue;
        }
        this.buffer ??= Buffer.allocUnsafeSlow(WRITE_CHUNK);
        const take = Math.min(bytes.length - from, WRITE_CHUNK - this.buffered);
        this.buffer.set(bytes.subarray(from, from + take), this.buffered);
        this.buffered += take;
        from += take;
        if (this.buffered === WRITE_CHUNK) this.flush();
      }
      this.written += bytes.length;
    } catch (error) {
      this.abort();
      throw error;
    }
  }

  finish(): void {
    try {
      this.flush();
      withIo(this.tempPath, 'write', () => fsyncSync(this.fd));
      closeSync(this.fd);
      this.closed = true;
      writeStep();
      withIo(this.path, 'move into place', () => renameSync(this.tempPath, this.path));
    } catch (error) {
      this.abort();
      throw error;
    }
  }

  private flush(): void {
    if (this.buffered === 0) return;
    this.writeOut(this.buffer!.subarray(0, this.buffered));
    this.buffered = 0;
  }

  private writeOut(bytes: Uint8Array): void {
    withIo(this.tempPath, 'write', () => {
      let done = 0;
      while (done < bytes.length) done += writeSync(this.fd, bytes, done, bytes.length - done);
    });
  }

  abort(): void {
    if (!this.closed) closeSync(this.fd);
    this.closed = true;
    this.buffer = undefined;
    this.buffered = 0;
    rmSync(this.tempPath, { force: true });
  }
}
