/** `olmoe tokenize MODEL`: text on stdin → ids (or ids → text with --decode). Needs only tokenizer files. */
import type { Command } from 'commander';
import { loadTokenizer } from '../../index.js';
import { addHubOptions, hubOptions, parseIds, printJson, readStdin, type ModelFlags } from '../common.js';

interface TokenizeFlags extends ModelFlags {
  decode?: boolean;
  json?: boolean;
  text?: string;
}

export function registerTokenize(program: Command): void {
  const command = program
    .command('tokenize')
    .description('encode text from stdin (or --text) to ids; --decode turns ids into text')
    .argument('<model>', 'model folder (tokenizer files suffice), GGUF file or hub id')
    .option('--text <text>', 'text to encode instead of stdin')
    .option('--decode', 'read token ids (comma or space separated, or a JSON list) and print the text')
    .option('--json', 'print {"ids": [...]} or {"text": "..."}');
  addHubOptions(command).action(runTokenize);
}

async function runTokenize(spec: string, flags: TokenizeFlags): Promise<void> {
  const tokenizer = await loadTokenizer(spec, hubOptions(flags));
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
