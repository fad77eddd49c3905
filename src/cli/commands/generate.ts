/** `olmoe generate MODEL "prompt"`: stream a continuation to stdout. */
import type { Command } from 'commander';
import { generateText, InputError } from '../../index.js';
import { addAdapterOption, addModelOptions, addSamplingOptions, generateOptions, loadModel, parseIds, printJson, type ModelFlags, type SamplingFlags } from '../common.js';

interface GenerateFlags extends ModelFlags, SamplingFlags {
  promptIds?: string;
  json?: boolean;
  chat?: boolean;
}

export function registerGenerate(program: Command): void {
  const command = program
    .command('generate')
    .description('continue a prompt (streams the generated text to stdout)')
    .argument('<model>', 'model folder or hub id (org/name)')
    .argument('[prompt]', 'prompt text')
    .option('--prompt-ids <ids>', 'prompt as comma-separated token ids instead of text')
    .option('--chat', 'wrap the prompt as a user message in the chat template')
    .option('--json', 'print {"ids": [...generated], "text": "..."} at the end instead of streaming');
  addSamplingOptions(addAdapterOption(addModelOptions(command))).action(runGenerate);
}

async function runGenerate(spec: string, prompt: string | undefined, flags: GenerateFlags): Promise<void> {
  if ((prompt === undefined) === (flags.promptIds === undefined)) throw new InputError('give either a prompt or --prompt-ids (exactly one)');
  const pretrained = await loadModel(spec, flags);
  const { tokenizer } = pretrained;
  let promptIds: number[];
  if (flags.promptIds !== undefined) promptIds = parseIds(flags.promptIds, '--prompt-ids');
  else if (flags.chat) promptIds = tokenizer.encodeChat([{ role: 'user', content: prompt! }]);
  else promptIds = tokenizer.encode(prompt!);
  const result = await generateText(pretrained, promptIds, {
    ...generateOptions(flags),
    onToken: (event) => {
      if (!flags.json) process.stdout.write(event.text);
    },
  });
  if (flags.json) printJson({ ids: result.ids, text: result.text });
  else process.stdout.write('\n');
  if (!flags.quiet) {
    const prefill = (result.promptTokens / result.prefillMs) * 1000;
    const decode = result.ids.length > 1 ? ((result.ids.length - 1) / result.decodeMs) * 1000 : 0;
    process.stderr.write(
      `[${result.promptTokens} prompt + ${result.ids.length} generated tokens; prefill ${prefill.toFixed(1)} tok/s, decode ${decode.toFixed(2)} tok/s; ` +
        `finish: ${result.finishReason}; seed ${result.seed}; backend ${pretrained.model.backend.name}]\n`,
    );
  }
}
