/** JSON files of a model folder, read with errors that name the file. */
import { existsSync } from 'node:fs';
import { FormatError } from '../core/errors.js';
import { readRegularFile } from './files.js';

/** Model folders' JSON files (tokenizer.json is the largest: a few MB); larger is not a config. */
const MAX_JSON_BYTES = 512 * 2 ** 20;

export type JsonObject = Record<string, unknown>;

export function readJsonObject(path: string): JsonObject {
  const text = readRegularFile(path, MAX_JSON_BYTES).toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new FormatError(path, `not valid JSON (${(error as Error).message})`, { cause: error });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError(path, 'is not a JSON object');
  return json as JsonObject;
}

export function readJsonObjectIfExists(path: string): JsonObject | undefined {
  return existsSync(path) ? readJsonObject(path) : undefined;
}

/**
 * The first key that appears twice in one object of a JSON text that JSON.parse accepted (which keeps the last
 * silently), or undefined. A single pass over the tokens: inside an object, a string after `{` or `,` is a key.
 */
export function firstDuplicateKey(text: string): string | undefined {
  const objects: (Set<string> | null)[] = []; // null for an array
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const start = i;
      for (i++; text[i] !== '"'; i++) if (text[i] === '\\') i++;
      const keys = objects[objects.length - 1];
      if (expectKey && keys) {
        const key = JSON.parse(text.slice(start, i + 1)) as string;
        if (keys.has(key)) return key;
        keys.add(key);
      }
      expectKey = false;
    } else if (c === '{') {
      objects.push(new Set());
      expectKey = true;
    } else if (c === '[') {
      objects.push(null);
      expectKey = false;
    } else if (c === '}' || c === ']') {
      objects.pop();
      expectKey = false;
    } else if (c === ',') {
      expectKey = objects[objects.length - 1] != null;
    }
  }
  return undefined;
}
