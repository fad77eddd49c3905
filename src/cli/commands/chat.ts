/** `olmoe chat MODEL`: an interactive conversation through the chat template, streamed. */
import type { Command } from 'commander';
import { createInterface } from 'node:readline';
import { generateText, InputError, type ChatMessage } from '../../index.js';
import { addAdapterOption, addModelOptions, addSamplingOptions, generateOptions, loadModel, type ModelFlags, type SamplingFlags } from '../common.js';

interface ChatFlags extends ModelFlags, SamplingFlags {
  system?: string;
}

/** Lines starting with "/" are commands, never sent to the model; "//" sends a message that starts with "/". */
const COMMANDS = new Map([
  ['/help', 'list these commands'],
  ['/reset', 'clear the conversation (the --system message stays)'],
  ['/exit', 'end the chat (as Ctrl-D does)'],
]);

function helpText(): string {
  const lines = [...COMMANDS].map(([name, what]) => `  ${name.padEnd(8)} ${what}`);
  return `${lines.join('\n')}\n  //text   send a message that starts with "/"\n`;
}

export function registerChat(program: Command): void {
  const command = program
    .command('chat')
    .description('chat interactively (one message per line; /help lists the commands, /exit or Ctrl-D ends)')
    .argument('<model>', 'model folder or hub id (org/name)')
    .option('--system <text>', 'system message');
  addSamplingOptions(addAdapterOption(addModelOptions(command))).action(runChat);
}

async function runChat(spec: string, flags: ChatFlags): Promise<void> {
  const pretrained = await loadModel(spec, flags);
  const interactive = process.stdin.isTTY === true;
  const lines = createInterface({ input: process.stdin, output: interactive ? process.stderr : undefined, prompt: '> ' });
  const history: ChatMessage[] = flags.system ? [{ role: 'system', content: flags.system }] : [];
  const options = generateOptions(flags);
  if (interactive) {
    process.stderr.write(`chatting with ${spec} (/help for commands, /exit to end)\n`);
    lines.prompt();
  }
  for await (const line of lines) {
    const message = line.trim();
    if (message === '/exit') break;
    if (message === '/reset') history.splice(flags.system ? 1 : 0);
    else if (message === '/help') process.stderr.write(helpText());
    else if (message.startsWith('/') && !message.startsWith('//')) process.stderr.write(`unknown command ${message.split(/\s/)[0]} (not sent; /help lists the commands)\n`);
    else if (message.length > 0) await replyOrReport(pretrained, history, message.startsWith('//') ? message.slice(1) : message, options);
    if (interactive) lines.prompt();
  }
  lines.close();
}

/** A turn that cannot run (e.g. the conversation outgrew the context) is reported and dropped. */
async function replyOrReport(...args: Parameters<typeof reply>): Promise<void> {
  try {
    await reply(...args);
  } catch (error) {
    if (!(error instanceof InputError)) throw error;
    args[1].pop();
    process.stderr.write(`error: ${error.message} (try /reset)\n`);
  }
}

async function reply(
  pretrained: Awaited<ReturnType<typeof loadModel>>,
  history: ChatMessage[],
  message: string,
  options: ReturnType<typeof generateOptions>,
): Promise<void> {
  history.push({ role: 'user', content: message });
  const promptIds = pretrained.tokenizer.encodeChat(history);
  const result = await generateText(pretrained, promptIds, {
    ...options,
    onToken: (event) => process.stdout.write(event.text),
  });
  process.stdout.write('\n');
  history.push({ role: 'assistant', content: result.text });
}
