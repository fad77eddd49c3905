/**
 * The document reader shared by training, tracing and pruning: text documents with a domain, read from `.jsonl`
 * files or plain text files, streamed line by line so that memory stays bounded whatever the file size.
 */
import { createReadStream, statSync } from 'node:fs';
import { basename, dirname, extname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { FormatError, InputError } from '../core/errors.js';

export interface FileDocument {
  text: string;
  domain: string;
  /** Input bytes consumed so far, over all files (for progress). */
  bytes: number;
}

/**
 * Documents from files: `.jsonl` files hold one JSON object per line with a "text" (and optionally a "domain");
 * other files are plain text with documents separated by blank lines (`wholeFiles`: each file is one document).
 * The domain is `domain` if given, else the line's "domain", else the file's name without extension — or, for a
 * corpus split file (`<domain>/train|valid|test.jsonl`, as scripts/build-corpus.mjs writes), its folder's name.
 */
export async function* readDocuments(files: readonly string[], opts: { domain?: string; wholeFiles?: boolean } = {}): AsyncGenerator<FileDocument> {
  let bytes = 0;
  for (const file of files) {
    const size = statSync(file, { throwIfNoEntry: false });
    if (!size?.isFile()) throw new InputError(`${file}: no such file`);
    const stem = basename(file, extname(file));
    const fileDomain = opts.domain ?? (['train', 'valid', 'test'].includes(stem) ? basename(dirname(resolve(file))) : stem);
    const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
    const jsonl = extname(file) === '.jsonl';
    let paragraph: string[] = [];
    let lineNumber = 0;
    for await (const line of lines) {
      lineNumber++;
      bytes += Buffer.byteLength(line) + 1;
      if (jsonl) {
        if (line.trim() === '') continue;
        let record: { text?: unknown; domain?: unknown };
        try {
          record = JSON.parse(line) as typeof record;
        } catch (error) {
          throw new FormatError(file, `line ${lineNumber} is not JSON (${(error as Error).message})`);
        }
        if (typeof record.text !== 'string') throw new FormatError(file, `line ${lineNumber} has no "text" string`);
        const domain = opts.domain ?? (typeof record.domain === 'string' && record.domain ? record.domain : fileDomain);
        yield { text: record.text, domain, bytes };
      } else if (opts.wholeFiles || line.trim() !== '') {
        paragraph.push(line);
      } else if (paragraph.length > 0) {
        yield { text: paragraph.join('\n'), domain: fileDomain, bytes };
        paragraph = [];
      }
    }
    if (paragraph.length > 0) yield { text: paragraph.join('\n'), domain: fileDomain, bytes };
  }
}
