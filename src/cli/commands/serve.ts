/** `olmoe serve MODEL`: the OpenAI-compatible server with the web UI, until Ctrl-C. */
import type { Command } from 'commander';
import { startServer } from '../../server/index.js';
import { addAdapterOption, addKVCacheOption, addModelOptions, hubOptions, parseInteger, parsePositiveInteger, type ModelFlags } from '../common.js';
import { createProgress } from '../progress.js';

interface ServeFlags extends ModelFlags {
  host: string;
  port: number;
  modelId?: string;
  apiKey?: string;
  parallel: number;
  queue: number;
  maxBody: number;
  prefillChunk: number;
  allowedHosts?: string[];
  corsOrigins?: string[];
  maxConnections: number;
  warmup: boolean;
}

/** "a,b" → ["a", "b"]; the flag may also be repeated. */
const list = (value: string, previous: string[] = []) => [...previous, ...value.split(',').map((item) => item.trim()).filter(Boolean)];

export function registerServe(program: Command): void {
  const command = program
    .command('serve')
    .description('serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models) with a web UI at /')
    .argument('<model>', 'model folder, GGUF file or hub id (org/name)')
    .option('--host <host>', 'interface to listen on (0.0.0.0 exposes it to the network)', '127.0.0.1')
    .option('--port <port>', 'port (0 = any free port)', parseInteger('--port'), 8080)
    .option('--model-id <id>', 'the model name clients send (default: the folder or file name, or the hub id)')
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on /v1/* (default: $OLMOE_API_KEY, else none)', process.env.OLMOE_API_KEY)
    .option('--parallel <n>', 'requests generating at once, as one continuous batch', parsePositiveInteger('--parallel'), 4)
    .option('--prefill-chunk <n>', 'prompt tokens per step (a long prompt does not stall the other streams; a disconnect lands within one chunk)', parsePositiveInteger('--prefill-chunk'), 64)
    .option('--no-warmup', 'answer at once after the load, without the warm-up batch of --parallel short generations that spares the first requests their memory faults (native backend; 1.7 s for OLMoE-1B-7B Q4_0 with --parallel 8 on 2 cores)')
    .option('--queue <n>', 'requests that may wait for a slot; more get 429', parseInteger('--queue'), 16)
    .option('--max-body <bytes>', 'largest request body accepted (413 beyond)', parsePositiveInteger('--max-body'), 4 << 20)
    .option('--max-connections <n>', 'open connections at once (503 beyond)', parsePositiveInteger('--max-connections'), 256)
    .option('--allowed-hosts <names>', 'extra Host names to answer, comma-separated ("name" or "name:port"; default: the bound address, and localhost on loopback)', list)
    .option('--cors-origins <origins>', 'browser origins allowed to call the API cross-origin, comma-separated ("https://app.example", or "*"); default none', list);
  addKVCacheOption(addAdapterOption(addModelOptions(command))).action(runServe);
}

async function runServe(spec: string, flags: ServeFlags): Promise<void> {
  const bar = createProgress('load', { bytes: true, quiet: flags.quiet });
  const server = await startServer(spec, {
    host: flags.host,
    port: flags.port,
    modelId: flags.modelId,
    apiKey: flags.apiKey || undefined,
    parallel: flags.parallel,
    queue: flags.queue,
    maxBodyBytes: flags.maxBody,
    maxConnections: flags.maxConnections,
    allowedHosts: flags.allowedHosts,
    corsOrigins: flags.corsOrigins,
    prefillChunk: flags.prefillChunk,
    warmup: flags.warmup ? undefined : 0,
    backend: flags.backend,
    threads: flags.threads,
    kvCache: flags.kvCache,
    revision: flags.revision,
    adapter: flags.adapter,
    hub: hubOptions(flags),
    onLoadProgress: (loaded, total) => bar.update(loaded, total),
    log: flags.quiet ? undefined : (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
  });
  process.stderr.write(`olmoe: listening on ${server.url} (model "${server.modelId}"); loading …\n`);
  const stop = () => {
    process.stderr.write('olmoe: shutting down\n');
    void server.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const info = await server.ready;
    bar.finish();
    const warm = info.warmupMs === undefined ? '' : ` (warmed up in ${(info.warmupMs / 1000).toFixed(1)} s)`;
    process.stderr.write(`olmoe: ready at ${server.url} — ${info.backend} backend, context ${info.maxPositionEmbeddings}${warm}; web UI at ${server.url}/\n`);
  } catch (error) {
    await server.close();
    throw error;
  }
}
