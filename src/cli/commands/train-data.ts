/**
 * Training data verbs:
 *   `olmoe train-tokenizer --out DIR --vocab-size N INPUTS...`: learn a byte-level BPE tokenizer.json;
 *   `olmoe shard --tokenizer TOK --out DIR INPUTS...`: tokenize documents into token shards.
 * INPUTS are .jsonl files ({"text", "domain"?} per line), text files (documents separated by blank lines) or
 * corpus folders from scripts/build-corpus.mjs (<domain>/{train,valid,test}.jsonl).
 */
import type { Command } from 'commander';
import { readFileSync, statSync, writeFileSync, mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import {
  BpeTrainer,
  CORPUS_SPLITS,
  fileDocuments,
  InputError,
  listInputFiles,
  OlmoeTokenizer,
  shardCorpus,
  tokenizerFingerprint,
  withIo,
  type CorpusSplit,
} from '../../index.js';
import { parseNumber, parsePositiveInteger, printJson } from '../common.js';
import { createProgress } from '../progress.js';


interface TrainTokenizerFlags {
  out: string;
  vocabSize: number;
  minFrequency: number;
  maxMbPerSource?: number;
  quiet?: boolean;
}

export function registerTrainTokenizer(program: Command): void {
  program
    .command('train-tokenizer')
    .description('learn a byte-level BPE tokenizer (OLMo layout: bytes, merges, <|endoftext|>, <|padding|>) and write DIR/tokenizer.json')
    .argument('<inputs...>', '.jsonl / text files, or corpus folders (their train split is used)')
    .requiredOption('--out <dir>', 'folder for tokenizer.json and tokenizer_config.json')
    .option('--vocab-size <n>', 'total vocabulary including the 256 bytes and 2 special tokens', parsePositiveInteger('--vocab-size'), 8192)
    .option('--min-frequency <n>', 'stop when the best pair occurs fewer times', parsePositiveInteger('--min-frequency'), 2)
    .option('--max-mb-per-source <n>', 'sample at most this many MB of text per input file (default: all)', parseNumber('--max-mb-per-source', (n) => n > 0))
    .option('-q, --quiet', 'no progress output on stderr')
    .action(runTrainTokenizer);
}

async function runTrainTokenizer(inputs: string[], flags: TrainTokenizerFlags): Promise<void> {
  const started = performance.now();
  const trainer = new BpeTrainer({
    vocabSize: flags.vocabSize,
    minFrequency: flags.minFrequency,
    maxBytesPerSource: flags.maxMbPerSource === undefined ? undefined : flags.maxMbPerSource * 1e6,
    onProgress: (p) => merges.update(p.done, p.total),
  });
  const files = listInputFiles(inputs, { splits: ['train'] });
  const reading = createProgress('count', { bytes: true, quiet: flags.quiet });
  const total = files.reduce((n, f) => n + f.bytes, 0);
  let done = 0;
  for (const file of files) {
    await trainer.addSourceAsync(file.path, texts(fileDocuments(file)), file.bytes);
    reading.update((done += file.bytes), total);
  }
  reading.finish();
  const merges = createProgress('merge', { quiet: flags.quiet });
  const trained = trainer.train();
  merges.finish();
  withIo(flags.out, 'create folder', () => mkdirSync(flags.out, { recursive: true }));
  writeAtomically(join(flags.out, 'tokenizer.json'), trained.text);
  const config = { eos_token: '<|endoftext|>', pad_token: '<|padding|>', bos_token: null, add_bos_token: false, add_eos_token: false, clean_up_tokenization_spaces: false, model_max_length: 4096, tokenizer_class: 'GPTNeoXTokenizerFast' };
  writeAtomically(join(flags.out, 'tokenizer_config.json'), JSON.stringify(config, null, 2) + '\n');
  const seconds = (performance.now() - started) / 1000;
  if (trained.stats.stoppedEarly) process.stderr.write(`note: only ${trained.vocabSize} tokens: no pair occurs ${flags.minFrequency} times any more\n`);
  printJson({ out: flags.out, vocabSize: trained.vocabSize, merges: trained.merges.length, eosId: trained.eosId, padId: trained.padId, ...trained.stats, seconds: Number(seconds.toFixed(2)) });
}

async function* texts(docs: AsyncIterable<{ text: string }>): AsyncGenerator<string> {
  for await (const doc of docs) yield doc.text;
}

function writeAtomically(path: string, text: string): void {
  const temp = `${path}.tmp-${process.pid}`;
  withIo(path, 'write', () => {
    writeFileSync(temp, text);
    renameSync(temp, path);
  });
}

interface ShardFlags {
  tokenizer: string;
  out: string;
  domain?: string;
  splits: string;
  filterRepeats?: boolean;
  maxTokensPerShard?: number;
  quiet?: boolean;
}

export function registerShard(program: Command): void {
  program
    .command('shard')
    .description('tokenize documents into token shards (<out>/<split>-NNNNN.shard) for training')
    .argument('<inputs...>', '.jsonl files ({"text", "domain"?}), text files (documents separated by blank lines) or corpus folders')
    .requiredOption('--tokenizer <path>', 'tokenizer.json, or a folder holding one')
    .requiredOption('--out <dir>', 'folder for the shards')
    .option('--domain <name>', 'domain of every document (default: "domain" field, corpus folder or file name)')
    .option('--splits <list>', 'corpus-folder splits to shard, comma separated (plain files are "train")', 'train,valid,test')
    .option('--filter-repeats', 'drop documents dominated by back-to-back repeated 1..13-word n-grams (>30% of characters, or ≥32 repeats)')
    .option('--max-tokens-per-shard <n>', 'start a new shard after this many tokens', parsePositiveInteger('--max-tokens-per-shard'))
    .option('-q, --quiet', 'no progress output on stderr')
    .action(runShard);
}

async function runShard(inputs: string[], flags: ShardFlags): Promise<void> {
  const splits = flags.splits.split(',').map((s) => s.trim());
  for (const split of splits) if (!(CORPUS_SPLITS as readonly string[]).includes(split)) throw new InputError(`--splits: ${JSON.stringify(split)} is not one of ${CORPUS_SPLITS.join(', ')}`);
  const { tokenizer, fingerprint } = openTokenizer(flags.tokenizer);
  const bar = createProgress('shard', { bytes: true, quiet: flags.quiet });
  const started = performance.now();
  const result = await shardCorpus({
    tokenizer,
    tokenizerFingerprint: fingerprint,
    inputs,
    outDir: flags.out,
    domain: flags.domain,
    splits: splits as CorpusSplit[],
    filterRepeats: flags.filterRepeats,
    maxTokensPerShard: flags.maxTokensPerShard,
    onProgress: (p) => bar.update(p.bytesRead, p.bytesTotal),
  });
  bar.finish();
  const seconds = (performance.now() - started) / 1000;
  process.stderr.write(`${result.documents} documents, ${result.tokens} tokens in ${result.shards.length} shards (${seconds.toFixed(1)} s); dropped ${result.droppedRepetitive} repetitive, ${result.droppedEmpty} empty\n`);
  printJson({ ...result, seconds: Number(seconds.toFixed(2)) });
}

/** A tokenizer.json file (with tokenizer_config.json beside it if there is one) or a folder holding one. */
function openTokenizer(path: string): { tokenizer: OlmoeTokenizer; fingerprint: string } {
  const stat = statSync(path, { throwIfNoEntry: false });
  if (!stat) throw new InputError(`--tokenizer: ${path}: no such file or folder`);
  const file = stat.isDirectory() ? join(path, 'tokenizer.json') : path;
  const bytes = withIo(file, 'read', () => readFileSync(file));
  const tokenizer = stat.isDirectory() ? OlmoeTokenizer.fromFolder(path) : new OlmoeTokenizer(parseJson(file, bytes), {}, file);
  return { tokenizer, fingerprint: tokenizerFingerprint(bytes) };
}

function parseJson(file: string, bytes: Buffer): Record<string, unknown> {
  try {
    return JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  } catch (error) {
    throw new InputError(`--tokenizer: ${file} is not JSON (${(error as Error).message})`);
  }
}
