/** `olmoe prune MODEL --domain-trace TRACE --keep N --out DIR`: drop the experts a domain does not use. */
import type { Command } from 'commander';
import { createBackend, expertsForDomain, InputError, loadPretrained, modelFingerprint, openTrace, perplexity, readDocuments, writePrunedCheckpoint } from '../../index.js';
import { addModelOptions, modelDir, parsePositiveInteger, printJson, type ModelFlags } from '../common.js';

interface PruneFlags extends ModelFlags {
  domainTrace: string;
  keep: number;
  out: string;
  domain?: string;
  eval?: string[];
  maxLength: number;
}

export function registerPrune(program: Command): void {
  const command = program
    .command('prune')
    .description('keep, per layer, the N experts a domain uses most (from a trace of that domain) and write the smaller checkpoint; with --eval, the perplexity before and after on held-out text')
    .argument('<model>', 'HF model folder (or hub id) the trace was recorded with')
    .requiredOption('--domain-trace <dir>', 'trace of the domain (`olmoe trace MODEL --data ... --domain NAME`)')
    .requiredOption('--keep <n>', 'experts to keep per layer (at least top-k)', parsePositiveInteger('--keep'))
    .requiredOption('--out <dir>', 'folder for the pruned checkpoint')
    .option('--domain <name>', 'which domain of the trace (needed when it holds several)')
    .option('--eval <files...>', 'held-out text of the domain (documents as for `olmoe trace`): report perplexity before and after')
    .option('--max-length <n>', 'tokens per evaluation window', parsePositiveInteger('--max-length'), 512);
  addModelOptions(command).action(runPrune);
}

async function runPrune(spec: string, flags: PruneFlags): Promise<void> {
  const path = await modelDir(spec, flags);
  const trace = openTrace(flags.domainTrace);
  const fingerprint = modelFingerprint(path);
  if (trace.header.model.fingerprint !== fingerprint) {
    throw new InputError(`${flags.domainTrace} was recorded with another model (${trace.header.model.name}, fingerprint ${trace.header.model.fingerprint}); ${spec} has fingerprint ${fingerprint}`);
  }
  const domains = trace.header.domains;
  const domain = flags.domain ?? (domains.length === 1 ? domains[0]! : undefined);
  if (domain === undefined) throw new InputError(`the trace holds domains ${domains.join(', ')}: choose one with --domain`);
  const keep = expertsForDomain(trace, domain, flags.keep);
  writePrunedCheckpoint(path, flags.out, keep);
  const report: Record<string, unknown> = { domain, keep: flags.keep, experts: trace.header.model.experts, out: flags.out, kept: keep };
  if (flags.eval) {
    const documents: number[][] = [];
    const backend = createBackend(flags.backend, { threads: flags.threads });
    const before = await loadPretrained(path, { backend });
    for await (const doc of readDocuments(flags.eval, { domain })) documents.push(before.tokenizer.encode(doc.text ?? ''));
    const original = perplexity(before.model, documents, flags.maxLength);
    const pruned = perplexity((await loadPretrained(flags.out, { backend })).model, documents, flags.maxLength);
    report.perplexity = { tokens: original.tokens, before: original.perplexity, after: pruned.perplexity, change: pruned.perplexity / original.perplexity - 1 };
    process.stderr.write(
      `${domain}: ${flags.keep} of ${trace.header.model.experts} experts per layer; perplexity on ${original.tokens} held-out tokens ` +
        `${original.perplexity.toFixed(3)} → ${pruned.perplexity.toFixed(3)} (${((pruned.perplexity / original.perplexity - 1) * 100).toFixed(1)}%)\n`,
    );
  }
  printJson(report);
}
