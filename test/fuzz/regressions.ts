/**
 * Regression files: each failure class the fuzzer has found keeps one minimized reproducer under
 * test/fixtures/fuzz/regressions/<class>/ — case.json (what, how found, the oracle) and the input itself
 * (the mutated file, or request.bin for HTTP). The CI test replays all of them on every run.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../helpers.js';
import type { FuzzCase, Step } from './cases.js';
import type { HttpCase } from './http-cases.js';
import type { Oracle } from './mutator.js';
import type { SeedName } from './seeds.js';

export const REGRESSIONS_DIR = join(repoRoot, 'test', 'fixtures', 'fuzz', 'regressions');

interface LoadingMeta {
  kind: 'loading';
  class: string;
  detail: string;
  seed: SeedName;
  file: string;
  steps: Step[];
  oracle: Oracle;
  found: string;
}

interface HttpMeta {
  kind: 'http';
  class: string;
  detail: string;
  mutator: string;
  complete: boolean;
  responses: number;
  found: string;
}

export type Regression = { name: string; meta: LoadingMeta; fuzzCase: FuzzCase } | { name: string; meta: HttpMeta; httpCase: HttpCase };

export function slug(failureClass: string): string {
  return failureClass.replace(/[^A-Za-z0-9._+-]+/g, '_').slice(0, 120);
}

/**
 * Whether a class is already covered. Crashes (exceptions, hangs, memory, 5xx, dropped connections, wrong
 * logits) keep one file per class; the milder property failures (an error not naming its file, non-finite
 * logits) one per file kind and outcome, since every mutator reaching them shows the same gap; HTTP one per outcome.
 */
export function hasRegression(failureClass: string, dir = REGRESSIONS_DIR): boolean {
  if (existsSync(join(dir, slug(failureClass), 'case.json'))) return true;
  const group = groupOf(failureClass);
  return group !== undefined && readRegressions(dir).some((r) => groupOf(r.meta.class) === group);
}

function groupOf(failureClass: string): string | undefined {
  const [mutators, outcome] = failureClass.split('/') as [string, string];
  // HTTP: one request per outcome; the body edits riding along with the message edit that fails do not matter.
  if (mutators.startsWith('http.')) return `http/${outcome}`;
  if (!/^(unnamed:|nonfinite)/.test(outcome ?? '')) return undefined;
  return `${mutators.split('.')[0]}/${outcome}`;
}

export function saveLoadingRegression(failure: { class: string; detail: string }, fuzzCase: FuzzCase, dir = REGRESSIONS_DIR): string {
  const at = join(dir, slug(failure.class));
  mkdirSync(at, { recursive: true });
  const meta: LoadingMeta = { kind: 'loading', class: failure.class, detail: failure.detail, seed: fuzzCase.seed, file: fuzzCase.file, steps: fuzzCase.steps, oracle: fuzzCase.oracle, found: fuzzCase.id };
  writeFileSync(join(at, 'case.json'), `${JSON.stringify(meta, null, 2)}\n`);
  writeFileSync(join(at, fuzzCase.file), fuzzCase.bytes);
  return at;
}

export function saveHttpRegression(failure: { class: string; detail: string }, httpCase: HttpCase, dir = REGRESSIONS_DIR): string {
  const at = join(dir, slug(failure.class));
  mkdirSync(at, { recursive: true });
  const meta: HttpMeta = { kind: 'http', class: failure.class, detail: failure.detail, mutator: httpCase.mutator, complete: httpCase.complete, responses: httpCase.responses, found: httpCase.id };
  writeFileSync(join(at, 'case.json'), `${JSON.stringify(meta, null, 2)}\n`);
  writeFileSync(join(at, 'request.bin'), httpCase.request);
  return at;
}

export function readRegressions(dir = REGRESSIONS_DIR): Regression[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => existsSync(join(dir, name, 'case.json')))
    .sort()
    .map((name): Regression => {
      const meta = JSON.parse(readFileSync(join(dir, name, 'case.json'), 'utf8')) as LoadingMeta | HttpMeta;
      if (meta.kind === 'http') {
        const httpCase = { id: name, mutator: meta.mutator, request: readFileSync(join(dir, name, 'request.bin')), complete: meta.complete, responses: meta.responses };
        return { name, meta, httpCase };
      }
      const fuzzCase = { id: name, seed: meta.seed, file: meta.file, steps: meta.steps, oracle: meta.oracle, bytes: readFileSync(join(dir, name, meta.file)) };
      return { name, meta, fuzzCase };
    });
}
