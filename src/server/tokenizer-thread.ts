/**
 * Prompt tokenization off the HTTP thread: a byte-level BPE over one long word costs ~8 µs a character, so a
 * multi-megabyte prompt tokenized on the event loop stalls every client for tens of seconds. One worker thread
 * tokenizes prompts in arrival order; the HTTP thread keeps answering meanwhile.
 */
import { Worker } from 'node:worker_threads';
import type { ChatMessage } from '../index.js';

export type TokenizeInput = { kind: 'chat'; messages: ChatMessage[]; addGenerationPrompt?: boolean } | { kind: 'text'; text: string; addSpecialTokens?: boolean };
export type TokenizeRequest = TokenizeInput & { id: number };
export type TokenizeReply = { id: number; ids: Int32Array } | { id: number; error: string; input: boolean };

/** A tokenizer failure that is the request's fault (e.g. a chat template refusing the messages). */
export class PromptError extends Error {}

interface Pending {
  resolve(ids: number[]): void;
  reject(error: Error): void;
}

export class TokenizerThread {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  constructor(private readonly tokenizerPath: string) {
    this.start();
  }

  encode(input: TokenizeInput): Promise<number[]> {
    if (this.closed) return Promise.reject(new Error('the server is shutting down'));
    const worker = this.worker ?? this.start();
    const id = this.nextId++;
    return new Promise<number[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ ...input, id } satisfies TokenizeRequest);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.worker?.terminate();
  }

  private start(): Worker {
    const worker = new Worker(new URL('./tokenizer-worker.js', import.meta.url), { workerData: this.tokenizerPath });
    this.worker = worker;
    worker.on('message', (reply: TokenizeReply) => {
      const pending = this.pending.get(reply.id);
      if (!pending) return;
      this.pending.delete(reply.id);
      if ('ids' in reply) pending.resolve(Array.from(reply.ids));
      else pending.reject(reply.input ? new PromptError(reply.error) : new Error(reply.error));
    });
    const stopped = (why: string) => {
      if (this.worker !== worker) return;
      this.worker = undefined; // the next prompt starts a new one
      for (const pending of this.pending.values()) pending.reject(new Error(`the tokenizer stopped: ${why}`));
      this.pending.clear();
    };
    worker.on('error', (error) => stopped(error.message));
    worker.on('exit', (code) => stopped(`exit code ${code}`));
    return worker;
  }
}
