/** `olmoe download REPO`: fetch a model from the hub into the standard HF cache and print its folder. */
import type { Command } from 'commander';
import { hubSnapshotModel } from '../../index.js';
import { addHubOptions, hubOptions, parseNumber, type ModelFlags } from '../common.js';

export function registerDownload(program: Command): void {
  const command = program
    .command('download')
    .description('download a model from the Hugging Face hub into the HF cache (resumes interrupted downloads)')
    .argument('<repo>', 'hub id, e.g. allenai/OLMoE-1B-7B-0924')
    .option('--timeout <seconds>', 'give up on a hub that sends nothing for this long (default: $HF_HUB_DOWNLOAD_TIMEOUT, else 10)', parseNumber('--timeout', (s) => s > 0));
  addHubOptions(command).action(async (repo: string, flags: ModelFlags & { timeout?: number }) => {
    const timeoutMs = flags.timeout === undefined ? undefined : flags.timeout * 1000;
    process.stdout.write((await hubSnapshotModel(repo, { ...hubOptions(flags), timeoutMs })) + '\n');
  });
}
