/** `olmoe tokenize MODEL`: text on stdin → ids (or ids → text with --decode). Needs only tokenizer files. */
import type { Command } from 'commander';
import { existsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { hubDownloadFile, InputError, isHubRepoId, OlmoeTokenizer } from '../../index.js';
import { hubOptions, parseIds, printJson, readStdin, type ModelFlags } from '../common.js';

interface TokenizeFlags extends ModelFlags {
  decode?: boolean;
  json?: boolean;
  text?: string;
}

export function registerTokenize(program: Command): void {
  program
    .command('tokenize')
    .description('encode text from stdin (or --text) to ids; --decode turns ids into text')
    .argument('<model>', 'model folder (tokenizer files suffice) or hub id')
    .option('--text <text>', 'text to encode instead of stdin')
    .option('--decode', 'read token ids (comma or space separated, or a JSON list) and print the text')
    .option('--json', 'print {"ids": [...]} or {"text": "..."}')
    .option('--revision <rev>', 'hub branch, tag or commit', 'main')
    .option('-q, --quiet', 'no progress output on stderr')
    .action(runTokenize);
}

async function runTokenize(spec: string, flags: TokenizeFlags): Promise<void> {
  const tokenizer = OlmoeTokenizer.fromFolder(await tokenizerDir(spec, flags));
  const input = flags.text ?? (await readStdin());
  if (flags.decode) {
    const text = tokenizer.decode(parseIds(input.replace(/[[\]]/g, ' '), 'token ids'));
    if (flags.json) printJson({ text });
    else process.stdout.write(text + '\n');
    return;
  }
  const ids = tokenizer.encode(input);
  if (flags.json) printJson({ ids });
  else process.stdout.write(ids.join(' ') + '\n');
}

/** A local folder, or just the tokenizer files of a hub repo (no weights downloaded). */
async function tokenizerDir(spec: string, flags: TokenizeFlags): Promise<string> {
  if (existsSync(spec)) {
    if (!statSync(spec).isDirectory()) throw new InputError(`${spec} is a file; give the folder holding tokenizer.json`);
    return spec;
  }
  if (!isHubRepoId(spec)) throw new InputError(`${spec}: no such folder, and not a hub id of the form org/name`);
  const options = hubOptions(flags);
  const path = await hubDownloadFile(spec, 'tokenizer.json', options);
  await hubDownloadFile(spec, 'tokenizer_config.json', { ...options, optional: true });
  await hubDownloadFile(spec, 'special_tokens_map.json', { ...options, optional: true });
  return dirname(path!);
}
