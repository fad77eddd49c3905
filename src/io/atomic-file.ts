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

export class AtomicFile {
  private readonly fd: number;
  private readonly tempPath: string;
  private closed = false;
  written = 0;

  constructor(readonly path: string) {
    this.tempPath = stagingPath(path);
    removeStaleStaging(path);
    this.fd = withIo(this.tempPath, 'create', () => openSync(this.tempPath, 'w'));
  }

  write(bytes: Uint8Array): void {
    try {
      writeStep();
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
      writeStep();
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
