/**
 * Opening files named by a model folder or a user: only regular files, opened without blocking (a FIFO would
 * wait forever for a writer), and small files read whole only under a size limit (a link to /dev/zero never ends).
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { FormatError } from '../core/errors.js';

/** A descriptor of a regular file (symlinks followed), or a FormatError naming the path and what it is instead. */
export function openRegularFile(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    throw new FormatError(path, `cannot open: ${(error as Error).message}`, { cause: error });
  }
  const stat = fstatSync(fd);
  if (stat.isFile()) return fd;
  closeSync(fd);
  const kind = stat.isDirectory() ? 'a folder' : stat.isFIFO() ? 'a FIFO' : stat.isCharacterDevice() || stat.isBlockDevice() ? 'a device' : stat.isSocket() ? 'a socket' : 'not a file';
  throw new FormatError(path, `is ${kind}, not a regular file`);
}

/** The whole of a regular file of at most `maxBytes`. */
export function readRegularFile(path: string, maxBytes: number): Buffer {
  const fd = openRegularFile(path);
  try {
    const size = fstatSync(fd).size;
    if (size > maxBytes) throw new FormatError(path, `is ${size} bytes, more than the ${maxBytes} allowed for this kind of file`);
    const bytes = Buffer.alloc(size);
    let done = 0;
    while (done < size) {
      const n = readSync(fd, bytes, done, size - done, done);
      if (n === 0) break;
      done += n;
    }
    return bytes.subarray(0, done);
  } finally {
    closeSync(fd);
  }
}
