/**
 * The property, applied to one case's result: each input either loads and gives finite logits (identical to
 * the clean seed's when the mutation kept the content), or fails with an OlmoeError whose message names the
 * file (load errors; an OlmoeError from using a loaded tokenizer, like a chat template that raises, may
 * name only its cause), and never anything else. A failure is reported as a class `mutator/outcome`, e.g.
 * `gguf.tensor_count/exception:RangeError@load`; the known-failures list and the regression files use it.
 */
import type { FuzzCase } from './cases.js';
import type { PoolResult } from './pool.js';
import type { CaseResult } from './worker.js';

export interface Failure {
  /** `mutator/outcome`. */
  readonly class: string;
  readonly outcome: string;
  readonly detail: string;
}

/** What went wrong, or undefined when the property holds. */
export function judgeOutcome(fuzzCase: Pick<FuzzCase, 'oracle' | 'file'>, result: PoolResult): { outcome: string; detail: string } | undefined {
  if (result.outcome === 'timeout' || result.outcome === 'memory' || result.outcome === 'crash') return { outcome: result.outcome, detail: result.message };
  if (result.outcome === 'loaded') {
    if (fuzzCase.oracle === 'error') return { outcome: 'accepted', detail: 'loaded a file the strict readers must refuse' };
    if (fuzzCase.oracle !== 'finite-or-error' && !result.identical) return { outcome: 'mismatch', detail: 'loaded, but the logits differ from the clean load of the same content' };
    if (!result.finite) return { outcome: 'nonfinite', detail: 'loaded, but the logits are not all finite' };
    return undefined;
  }
  const error = result as CaseResult;
  const what = `${error.errorName}@${error.phase}`;
  const detail = `${error.errorName}: ${error.message}`;
  if (!error.olmoeError) return { outcome: `exception:${what}`, detail };
  if (fuzzCase.oracle === 'identical') return { outcome: `rejected:${what}`, detail: `refused an input whose content is unchanged: ${detail}` };
  if (error.phase === 'load' && !namesFile(error.message!, fuzzCase)) return { outcome: `unnamed:${what}`, detail: `the error does not name ${fuzzCase.file}: ${detail}` };
  return undefined;
}

/**
 * A load error must say which file is wrong: the mutated one, or for an HF folder another file of it (a
 * config/weights mismatch has two sides, and naming model.safetensors when config.json asks for more is fair).
 */
function namesFile(message: string, fuzzCase: Pick<FuzzCase, 'file'>): boolean {
  if (message.includes(fuzzCase.file)) return true;
  return !fuzzCase.file.endsWith('.gguf') && /config\.json|\.safetensors|tokenizer(_config)?\.json|index\.json/.test(message);
}

export function judge(fuzzCase: FuzzCase, result: PoolResult): Failure | undefined {
  const verdict = judgeOutcome(fuzzCase, result);
  if (!verdict) return undefined;
  const mutators = [...new Set(fuzzCase.steps.map((s) => s.mutator))].join('+');
  return { class: `${mutators}/${verdict.outcome}`, ...verdict };
}
