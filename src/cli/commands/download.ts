/** `olmoe download REPO`: fetch a model from the hub into the standard HF cache and print its folder. */
import type { Command } from 'commander';
import { hubSnapshotModel } from '../../index.js';
import { addHubOptions, hubOptions, type ModelFlags } from '../common.js';

export function registerDownload(program: Command): void {
  const command = program
    .command('download')
    .description('download a model from the Hugging Face hub into the HF cache (resumes interrupted downloads)')
    .argument('<repo>', 'hub id, e.g. allenai/OLMoE-1B-7B-0924');
  addHubOptions(command).action(async (repo: string, flags: ModelFlags) => {
    process.stdout.write((await hubSnapshotModel(repo, hubOptions(flags))) + '\n');
  });
}
