/**
 * Training documents from the inputs the CLI accepts:
 *   - `.jsonl`: one JSON object per line with "text" and optionally "domain";
 *   - any other file: plain text, documents separated by blank lines;
 *   - a folder made by scripts/build-corpus.mjs: `<dir>/<domain>/<split>.jsonl`, the domain being the folder name.
 * The domain is the caller's `domain` if given, else the line's "domain", else the folder (corpus) or file name.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { readDocuments } from '../../io/documents.js';
import { InputError } from '../../core/errors.js';

export const CORPUS_SPLITS = ['train', 'valid', 'test'] as const;
export type CorpusSplit = (typeof CORPUS_SPLITS)[number];

export interface TextDocument {
  text: string;
  domain: string;
}

/** One input file with the domain it implies (undefined: per line or from the file name). */
export interface InputFile {
  path: string;
  domain: string | undefined;
  split: CorpusSplit;
  bytes: number;
}

/** Expand inputs into files; corpus folders give their `<domain>/<split>.jsonl` for each of `splits`. */
export function listInputFiles(inputs: readonly string[], opts: { domain?: string; splits?: readonly CorpusSplit[] } = {}): InputFile[] {
  const splits = opts.splits ?? ['train'];
  const files: InputFile[] = [];
  for (const input of inputs) {
    const stat = statSync(input, { throwIfNoEntry: false });
    if (!stat) throw new InputError(`${input}: no such file or folder`);
    if (stat.isFile()) {
      files.push({ path: input, domain: opts.domain, split: 'train', bytes: stat.size });
      continue;
    }
    const domains = readdirSync(input).filter((name) => statSync(join(input, name)).isDirectory()).sort();
    const found = domains.flatMap((domain) =>
      splits.filter((split) => existsSync(join(input, domain, `${split}.jsonl`))).map((split) => {
        const path = join(input, domain, `${split}.jsonl`);
        return { path, domain: opts.domain ?? domain, split, bytes: statSync(path).size };
      }),
    );
    if (found.length === 0) throw new InputError(`${input}: a folder input must be a corpus with <domain>/{${splits.join(',')}}.jsonl files; none found`);
    files.push(...found);
  }
  return files;
}

/** The documents of one input file, in file order. */
export async function* fileDocuments(file: InputFile): AsyncGenerator<TextDocument> {
  for await (const { text, domain } of readDocuments([file.path], { domain: file.domain })) yield { text: text ?? '', domain };
}
