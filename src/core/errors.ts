/**
 * Typed errors. Every error a user can cause carries the offending name (file, tensor, key, value) in its
 * message; the CLI prints `message` alone for an OlmoeError and a stack trace only for anything else.
 */

export type ErrorCode =
  | 'format' // a file's bytes do not follow its format (safetensors, JSON, GGUF)
  | 'config' // config.json is malformed or holds impossible values
  | 'weights' // checkpoint tensors do not match what the config requires
  | 'input' // bad user input: token ids, prompt length, options
  | 'hub' // model hub / download failures
  | 'unsupported' // valid input that this version cannot handle
  | 'io' // a file could not be read or written (permissions, disk full, not a folder)
  | 'resources' // not enough memory for what was asked
  | 'aborted' // cancelled through an AbortSignal
  | 'diverged' // training produced a non-finite loss or gradient
  | 'numeric'; // a forward pass produced NaN or infinity

/**
 * A value read from a file, for an error message: its JSON when short, cut to `max` characters, and safe where
 * JSON.stringify is not (a BigInt from a GGUF, nesting deep enough to overflow the stack).
 */
export function preview(value: unknown, max = 80): string {
  let text: string;
  try {
    text = typeof value === 'bigint' ? `${value}` : JSON.stringify(value, (_, v: unknown) => (typeof v === 'bigint' ? `${v}` : v)) ?? String(value);
  } catch {
    text = Array.isArray(value) ? '[…] (nested too deep to show)' : '{…} (nested too deep to show)';
  }
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

export class OlmoeError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OlmoeError';
    this.code = code;
  }
}

/** A file that does not follow its format; the message starts with the file path. */
export class FormatError extends OlmoeError {
  readonly file: string;
  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super('format', `${file}: ${message}`, options);
    this.name = 'FormatError';
    this.file = file;
  }
}

/** config.json values that are missing, mistyped or impossible; names the key. */
export class ConfigError extends OlmoeError {
  readonly key: string;
  /** What is wrong with the key's value, without the file and key. */
  readonly problem: string;
  constructor(key: string, problem: string, file = 'config.json') {
    super('config', `${file}: ${key}: ${problem}`);
    this.name = 'ConfigError';
    this.key = key;
    this.problem = problem;
  }
}

/** Checkpoint tensors that are missing, extra or misshaped. */
export class WeightError extends OlmoeError {
  constructor(message: string) {
    super('weights', message);
    this.name = 'WeightError';
  }
}

/** Bad arguments from the caller: ids out of range, prompt too long, invalid sampling values. */
export class InputError extends OlmoeError {
  constructor(message: string) {
    super('input', message);
    this.name = 'InputError';
  }
}

export class HubError extends OlmoeError {
  readonly status: number | undefined;
  readonly url: string | undefined;
  constructor(message: string, opts: { status?: number; url?: string; cause?: unknown } = {}) {
    super('hub', message, { cause: opts.cause });
    this.name = 'HubError';
    this.status = opts.status;
    this.url = opts.url;
  }
}

export class UnsupportedError extends OlmoeError {
  constructor(message: string) {
    super('unsupported', message);
    this.name = 'UnsupportedError';
  }
}

export class AbortError extends OlmoeError {
  constructor(message = 'aborted') {
    super('aborted', message);
    this.name = 'AbortError';
  }
}

/** An allocation failed: names what was being allocated and how large it was. */
export class ResourceError extends OlmoeError {
  constructor(what: string, bytes: number, cause?: unknown) {
    super('resources', `out of memory: cannot allocate ${what} (${(bytes / 2 ** 20).toFixed(0)} MiB); use a shorter context or free memory`, { cause });
    this.name = 'ResourceError';
  }
}

/** A file-system operation failed; names the path and the system's reason. */
export class IoError extends OlmoeError {
  readonly path: string;
  constructor(path: string, action: string, cause: unknown) {
    super('io', `cannot ${action} ${path}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'IoError';
    this.path = path;
  }
}

/** Run a file-system operation, turning its failure into an IoError naming `path`. */
export function withIo<T>(path: string, action: string, operation: () => T): T {
  try {
    return operation();
  } catch (error) {
    if (error instanceof OlmoeError) throw error;
    throw new IoError(path, action, error);
  }
}

/** Training stopped on a NaN/inf loss or gradient; the last good checkpoint is kept. */
export class DivergedError extends OlmoeError {
  constructor(message: string) {
    super('diverged', message);
    this.name = 'DivergedError';
  }
}

/** A forward pass produced NaN or infinity; names where it first appeared. */
export class NumericError extends OlmoeError {
  constructor(message: string) {
    super('numeric', message);
    this.name = 'NumericError';
  }
}
