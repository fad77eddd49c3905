/** The tokenizer thread (see tokenizer-thread.ts): prompts in, token ids out, one at a time. */
import { parentPort, workerData } from 'node:worker_threads';
import { InputError, loadTokenizer } from '../index.js';
import type { TokenizeReply, TokenizeRequest } from './tokenizer-thread.js';

const port = parentPort!;
const tokenizer = await loadTokenizer(workerData as string);
port.on('message', (request: TokenizeRequest) => {
  let reply: TokenizeReply;
  try {
    const ids = Int32Array.from(
      request.kind === 'chat'
        ? tokenizer.encodeChat(request.messages, { addGenerationPrompt: request.addGenerationPrompt })
        : tokenizer.encode(request.text, { addSpecialTokens: request.addSpecialTokens }),
    );
    reply = { id: request.id, ids };
    port.postMessage(reply, [ids.buffer]);
  } catch (error) {
    reply = { id: request.id, error: error instanceof Error ? error.message : String(error), input: error instanceof InputError };
    port.postMessage(reply);
  }
});
