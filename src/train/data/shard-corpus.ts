/**
 * Inputs → token shards: read documents (documents.ts), optionally drop repetitive ones (repeat-filter.ts),
 * tokenize, and write `<out>/<split>-NNNNN.shard` files of at most `maxTokensPerShard` tokens each. Plain files
 * count as split "train"; corpus folders give one shard series per split asked for.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { InputError, withIo } from '../../core/errors.js';
import type { OlmoeTokenizer } from '../../tokenizer/tokenizer.js';
import { fileDocuments, listInputFiles, type CorpusSplit, type InputFile } from './documents.js';
import { hasRepeatedNgrams, type RepeatFilterOptions } from './repeat-filter.js';
import { TokenShardBuilder, type ShardHeader } from './shard.js';

export interface ShardCorpusOptions {
  tokenizer: OlmoeTokenizer;
  /** sha256 of the tokenizer.json bytes (tokenizerFingerprint). */
  tokenizerFingerprint: string;
  inputs: readonly string[];
  outDir: string;
  /** Every document's domain (overrides file names and "domain" fields). */
  domain?: string;
  /** Corpus-folder splits to shard (default all three). */
  splits?: readonly CorpusSplit[];
  /** Drop documents with repeated n-grams (true: the default thresholds). */
  filterRepeats?: boolean | RepeatFilterOptions;
  maxTokensPerShard?: number;
  onProgress?: (progress: { bytesRead: number; bytesTotal: number; documents: number; tokens: number }) => void;
}

export interface ShardCorpusResult {
  shards: { path: string; split: CorpusSplit; documents: number; tokens: number }[];
  documents: number;
  tokens: number;
  droppedRepetitive: number;
  droppedEmpty: number;
  domains: string[];
}

export async function shardCorpus(opts: ShardCorpusOptions): Promise<ShardCorpusResult> {
  const eosToken = opts.tokenizer.eosToken ?? '<|endoftext|>';
  const eosId = opts.tokenizer.tokenId(eosToken);
  if (eosId === undefined) throw new InputError(`the tokenizer has no EOS token ${JSON.stringify(eosToken)}; documents need one between them`);
  const files = listInputFiles(opts.inputs, { domain: opts.domain, splits: opts.splits ?? ['train', 'valid', 'test'] });
  const domains = await domainNames(files);
  withIo(opts.outDir, 'create folder', () => mkdirSync(opts.outDir, { recursive: true }));
  const filter = opts.filterRepeats === true ? {} : opts.filterRepeats || undefined;
  const maxTokens = opts.maxTokensPerShard ?? 2 ** 26;
  const result: ShardCorpusResult = { shards: [], documents: 0, tokens: 0, droppedRepetitive: 0, droppedEmpty: 0, domains };
  const bytesTotal = files.reduce((n, f) => n + f.bytes, 0);
  let bytesDone = 0;
  for (const split of [...new Set(files.map((f) => f.split))]) {
    const newBuilder = () => new TokenShardBuilder({ vocabSize: opts.tokenizer.vocabSize, eosId, domains, tokenizer: opts.tokenizerFingerprint });
    let builder = newBuilder();
    const flush = () => {
      if (builder.documentCount === 0) return;
      const path = join(opts.outDir, `${split}-${String(result.shards.filter((s) => s.split === split).length).padStart(5, '0')}.shard`);
      const header: ShardHeader = builder.write(path);
      result.shards.push({ path, split, documents: header.documentCount, tokens: header.tokenCount });
      builder = newBuilder();
    };
    for (const file of files.filter((f) => f.split === split)) {
      for await (const doc of fileDocuments(file)) {
        if (filter && hasRepeatedNgrams(doc.text, filter)) {
          result.droppedRepetitive++;
          continue;
        }
        const ids = opts.tokenizer.encode(doc.text, { addSpecialTokens: false });
        if (ids.length === 0) {
          result.droppedEmpty++;
          continue;
        }
        if (builder.tokenCount + ids.length > maxTokens) flush();
        builder.add(ids, domains.indexOf(doc.domain));
        result.documents++;
        result.tokens += ids.length;
        if (result.documents % 200 === 0) opts.onProgress?.({ bytesRead: bytesDone, bytesTotal, documents: result.documents, tokens: result.tokens });
      }
      bytesDone += file.bytes;
      opts.onProgress?.({ bytesRead: bytesDone, bytesTotal, documents: result.documents, tokens: result.tokens });
    }
    flush();
  }
  if (result.shards.length === 0) throw new InputError(`no documents to shard in ${opts.inputs.join(', ')} (all empty${filter ? ' or filtered as repetitive' : ''})`);
  return result;
}

/** Domain names in order of first appearance; reading .jsonl "domain" fields needs a pass over those files. */
async function domainNames(files: readonly InputFile[]): Promise<string[]> {
  const names = new Set<string>();
  for (const file of files) {
    if (file.domain !== undefined) names.add(file.domain);
    else for await (const doc of fileDocuments(file)) names.add(doc.domain);
  }
  return [...names];
}
