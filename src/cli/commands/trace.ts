/** `olmoe trace MODEL --data FILE... --out DIR`: record routing traces for analysis. */
import type { Command } from 'commander';
import { statSync } from 'node:fs';
import { readDocuments, recordTrace, traceModel, TraceWriter } from '../../index.js';
import { addModelOptions, loadModel, modelDir, parseInteger, parsePositiveInteger, type ModelFlags } from '../common.js';
import { createProgress } from '../progress.js';

interface TraceFlags extends ModelFlags {
  data: string[];
  out: string;
  domain?: string;
  wholeFiles?: boolean;
  maxLength: number;
  maxDocuments?: number;
  maxTokens?: number;
  probs?: boolean;
  resume?: boolean;
  overwrite?: boolean;
}

export function registerTrace(program: Command): void {
  const command = program
    .command('trace')
    .description('run the model over text and record, per token and layer, the chosen experts and weights (a trace folder of Arrow files)')
    .argument('<model>', 'model folder, GGUF file or hub id (org/name)')
    .requiredOption('--data <files...>', 'text files (documents separated by blank lines) or .jsonl ({"text", "domain"} per line)')
    .requiredOption('--out <dir>', 'trace folder to write')
    .option('--domain <name>', 'domain of every document (default: the .jsonl "domain", else the file name)')
    .option('--whole-files', 'each text file is one document')
    .option('--max-length <n>', 'tokens per forward pass; longer documents are cut into windows', parsePositiveInteger('--max-length'), 512)
    .option('--max-documents <n>', 'stop after this many documents', parseInteger('--max-documents'))
    .option('--max-tokens <n>', 'stop after this many tokens', parseInteger('--max-tokens'))
    .option('--probs', 'also record the router probabilities over all experts (E floats per token and layer)')
    .option('--resume', 'continue a trace folder that a killed run left behind')
    .option('--overwrite', 'replace an existing trace folder');
  addModelOptions(command).action(runTrace);
}

async function runTrace(spec: string, flags: TraceFlags): Promise<void> {
  for (const file of flags.data) statSync(file); // a missing file fails now, not after loading the model
  const path = await modelDir(spec, flags);
  const pretrained = await loadModel(path, flags);
  const model = traceModel(spec, path, pretrained.model);
  const writer = new TraceWriter(flags.out, { version: 1, model, domains: [], withProbs: flags.probs ?? false }, { resume: flags.resume, overwrite: flags.overwrite });
  if (writer.documentsDone > 0) process.stderr.write(`resuming ${flags.out} after ${writer.documentsDone} documents\n`);
  const totalBytes = flags.data.reduce((sum, file) => sum + statSync(file).size, 0);
  const bar = createProgress('trace', { bytes: true, quiet: flags.quiet });
  const started = performance.now();
  const done = await recordTrace(pretrained, readDocuments(flags.data, { domain: flags.domain, wholeFiles: flags.wholeFiles }), writer, {
    maxLength: flags.maxLength,
    maxDocuments: flags.maxDocuments,
    maxTokens: flags.maxTokens,
    onProgress: (p) => bar.update(p.bytes ?? 0, totalBytes),
  });
  bar.finish();
  const seconds = (performance.now() - started) / 1000;
  process.stderr.write(
    `recorded ${done.documents} documents, ${done.tokens} tokens in ${seconds.toFixed(1)} s (${(done.tokens / seconds).toFixed(0)} tokens/s) → ${flags.out} ` +
      `(${writer.index.parts.length} parts; domains: ${writer.index.domains.join(', ')})\n`,
  );
}
