/** `olmoe evaluate CHECKPOINT --shards FILE...`: validation loss and bits per byte per domain. */
import type { Command } from 'commander';
import { createBackend, evaluateCheckpoint, type DomainScore } from '../../index.js';
import { parsePositiveInteger, printJson } from '../common.js';

interface EvaluateFlags {
  shards: string[];
  baseline?: string[];
  seq?: number;
  batch: number;
  maxBatches?: number;
  backend?: string;
  threads?: number;
  json?: boolean;
}

export function registerEvaluate(program: Command): void {
  program
    .command('evaluate')
    .description('cross-entropy (nats/token) and bits per byte of an HF checkpoint on token shards, per domain, optionally against a unigram baseline')
    .argument('<checkpoint>', 'HF folder (e.g. a training checkpoint)')
    .requiredOption('--shards <files...>', 'token shards to score (made by `olmoe shard` with the checkpoint\'s tokenizer)')
    .option('--baseline <files...>', 'training shards: also score a unigram model counted on them')
    .option('--seq <n>', 'tokens per window (default: min(256, the model\'s context))', parsePositiveInteger('--seq'))
    .option('--batch <n>', 'windows per forward pass', parsePositiveInteger('--batch'), 8)
    .option('--max-batches <n>', 'at most this many batches per domain', parsePositiveInteger('--max-batches'))
    .option('--backend <name>', 'native | reference')
    .option('--threads <n>', 'native backend threads', parsePositiveInteger('--threads'))
    .option('--json', 'print JSON')
    .action((dir: string, flags: EvaluateFlags) => {
      const backend = createBackend(flags.backend, { threads: flags.threads });
      const result = evaluateCheckpoint(dir, flags.shards, { backend, sequenceLength: flags.seq, batchSize: flags.batch, maxBatches: flags.maxBatches, baselineShards: flags.baseline });
      if (flags.json) return printJson(result);
      const unigram = new Map((result.unigram ?? []).map((s) => [s.domain, s]));
      process.stdout.write(`| domain | tokens | CE (nats/token) | bits per byte |${result.unigram ? ' unigram CE | unigram bits per byte |' : ''}\n`);
      process.stdout.write(`|---|---|---|---|${result.unigram ? '---|---|' : ''}\n`);
      for (const s of result.model) process.stdout.write(row(s, unigram.get(s.domain)));
    });
}

function row(s: DomainScore, baseline?: DomainScore): string {
  const extra = baseline ? ` ${baseline.crossEntropy.toFixed(3)} | ${baseline.bitsPerByte.toFixed(3)} |` : '';
  return `| ${s.domain} | ${s.tokens} | ${s.crossEntropy.toFixed(3)} | ${s.bitsPerByte.toFixed(3)} |${extra}\n`;
}
