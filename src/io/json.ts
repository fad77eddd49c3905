/** JSON files of a model folder, read with errors that name the file. */
import { existsSync, readFileSync } from 'node:fs';
import { FormatError } from '../core/errors.js';

export type JsonObject = Record<string, unknown>;

export function readJsonObject(path: string): JsonObject {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new FormatError(path, `cannot read: ${(error as Error).message}`, { cause: error });
  }
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
