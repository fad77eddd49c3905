/**
 * `olmoe export-olmo RUN_OR_CONFIG OUT/`: a run's token shards as OLMo memmaps and its config as OLMo's training
 * YAML (allenai/OLMoE configs/*.yml form), so that it continues on GPUs with FSDP in OLMo's trainer.
 */
import type { Command } from 'commander';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { exportOlmo, InputError, readTrainConfig, type ShardDType } from '../../index.js';
import { printJson } from '../common.js';
import { createProgress } from '../progress.js';

interface ExportOlmoFlags {
  force?: boolean;
  dtype?: string;
  dataRoot?: string;
  quiet?: boolean;
}

export function registerExportOlmo(program: Command): void {
  program
    .command('export-olmo')
    .description('write a run\'s token shards as the flat memmap token files OLMo\'s trainer reads (data.paths) and its model, optimizer, schedule and loss weights as an OLMo training YAML (OUT/config.yaml)')
    .argument('<run-or-config>', 'a run folder (its train-config.json) or a training config JSON')
    .argument('<out>', 'folder to create: config.yaml, tokenizer.json, data/*.npy')
    .option('--force', 'replace OUT if it exists (swapped in only once the export is complete)')
    .option('--dtype <type>', 'memmap token type: uint16 | uint32 (default: uint16 when the vocabulary has at most 65,536 ids)')
    .option('--data-root <prefix>', 'prefix of data.paths in the YAML, e.g. where the files will live on the cluster', 'data')
    .option('-q, --quiet', 'no progress output on stderr')
    .action(runExportOlmo);
}

function configPath(runOrConfig: string): string {
  const stat = statSync(runOrConfig, { throwIfNoEntry: false });
  if (!stat) throw new InputError(`${runOrConfig}: no such run folder or config file`);
  if (!stat.isDirectory()) return runOrConfig;
  const path = join(runOrConfig, 'train-config.json');
  if (!statSync(path, { throwIfNoEntry: false })?.isFile()) throw new InputError(`${runOrConfig}: a run folder holds train-config.json (written when training starts); none found`);
  return path;
}

async function runExportOlmo(runOrConfig: string, out: string, flags: ExportOlmoFlags): Promise<void> {
  if (flags.dtype !== undefined && flags.dtype !== 'uint16' && flags.dtype !== 'uint32') throw new InputError(`--dtype: ${JSON.stringify(flags.dtype)} is not uint16 or uint32`);
  const config = readTrainConfig(configPath(runOrConfig));
  const bar = createProgress('export', { quiet: flags.quiet });
  const result = exportOlmo(config, {
    outDir: out, force: flags.force, dtype: flags.dtype as ShardDType | undefined, dataRoot: flags.dataRoot,
    onProgress: (p) => bar.update(p.tokens, p.totalTokens),
  });
  bar.finish();
  for (const note of result.notes) process.stderr.write(`note: ${note}\n`);
  printJson(result);
}
