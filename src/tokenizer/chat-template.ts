/**
 * Chat prompts: the checkpoint's Jinja `chat_template` rendered with @huggingface/jinja (which, like HF's
 * apply_chat_template, trims blocks), or OLMoE's own format when the checkpoint has none (spec §4.3):
 *   {bos}<|system|>\n{s}\n<|user|>\n{u}\n<|assistant|>\n{a}{eos}\n<|user|>\n…<|assistant|>\n
 *
 * A template is code from a downloaded file, so it renders under a budget: no list (a `range()` included, checked
 * before it is built) may hold more items than Jinja's own sandbox allows a range (MAX_RANGE = 100000), every
 * evaluation step and loop iteration counts against a step limit, no string may outgrow a size limit, and a clock
 * stops what single steps still make slow. Without these, `{% for i in range(100000000) %}` hangs and grows to GBs.
 */
import * as jinja from '@huggingface/jinja';
import { InputError, OlmoeError } from '../core/errors.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ChatTemplateContext {
  bosToken: string | null;
  eosToken: string | null;
  padToken: string | null;
}

/** What one render may use. Strings may also grow by twice the input (template and messages) beyond `maxChars`. */
export interface TemplateLimits {
  /** Items of any list, one `range()` included (Jinja's SandboxedEnvironment.MAX_RANGE). */
  maxItems: number;
  /** Expression and statement evaluations plus loop iterations in one render. */
  maxSteps: number;
  /** Wall-clock time of one render: a backstop for single steps that do much work (sorting a long list in a loop). */
  maxMilliseconds: number;
  /** Length of any string, the output included. */
  maxChars: number;
}

export const TEMPLATE_LIMITS: TemplateLimits = { maxItems: 100_000, maxSteps: 200_000, maxMilliseconds: 5000, maxChars: 1 << 20 };

export function checkMessages(messages: readonly ChatMessage[]): void {
  if (messages.length === 0) throw new InputError('chat needs at least one message');
  messages.forEach((m, i) => {
    if (!['system', 'user', 'assistant'].includes(m.role)) throw new InputError(`message ${i}: unknown role ${JSON.stringify(m.role)}`);
    if (typeof m.content !== 'string') throw new InputError(`message ${i}: content must be a string`);
  });
}

/** The budget ran out; caught and reported with the template's name by renderChatTemplate. */
class TemplateBudgetError extends Error {}

/** The parts of the library's runtime used here (its .d.ts files do not resolve under NodeNext, so they read as any). */
interface RuntimeValue {
  type: string;
  value: unknown;
}
interface JinjaEnvironment {
  set(name: string, value: unknown): RuntimeValue;
}
interface JinjaInterpreter {
  evaluate(statement: unknown, environment: JinjaEnvironment): RuntimeValue;
  run(program: unknown): RuntimeValue;
}
const Environment = jinja.Environment as new () => JinjaEnvironment;
const Interpreter = jinja.Interpreter as new (env: JinjaEnvironment) => JinjaInterpreter;

interface ForNode {
  type: 'For';
  iterable: { type: string; lhs?: unknown };
}

/**
 * The library's interpreter, counting every evaluation and measuring every string and list it produces. A loop's
 * iterations are charged when its iterable is known, since an empty body evaluates nothing per iteration.
 */
class BudgetedInterpreter extends Interpreter {
  private steps = 0;
  private nextClockCheck = 1024;
  private readonly deadline: number;
  private readonly loopIterables = new Set<unknown>();
  constructor(env: JinjaEnvironment, private readonly limits: TemplateLimits) {
    super(env);
    this.deadline = performance.now() + limits.maxMilliseconds;
  }

  private charge(steps: number): void {
    this.steps += steps;
    if (this.steps > this.limits.maxSteps) throw new TemplateBudgetError(`more than ${this.limits.maxSteps} evaluation steps (a loop that does not end?)`);
    if (this.steps < this.nextClockCheck) return;
    this.nextClockCheck = this.steps + 1024;
    if (performance.now() > this.deadline) throw new TemplateBudgetError(`more than ${this.limits.maxMilliseconds} ms (${this.steps} evaluation steps)`);
  }

  override evaluate(...args: Parameters<JinjaInterpreter['evaluate']>): RuntimeValue {
    const [statement] = args;
    this.charge(1);
    if ((statement as ForNode | undefined)?.type === 'For') {
      const { iterable } = statement as ForNode;
      this.loopIterables.add(iterable.type === 'SelectExpression' ? iterable.lhs : iterable);
    }
    const value = super.evaluate(...args);
    if (this.loopIterables.delete(statement)) this.charge(iterationCount(value));
    if (typeof value.value === 'string' && value.value.length > this.limits.maxChars) {
      throw new TemplateBudgetError(`a string of ${value.value.length} characters, over the limit of ${this.limits.maxChars}`);
    }
    if (Array.isArray(value.value) && value.value.length > this.limits.maxItems) {
      throw new TemplateBudgetError(`a list of ${value.value.length} items, over the limit of ${this.limits.maxItems}`);
    }
    return value;
  }
}

function iterationCount(value: RuntimeValue): number {
  if (Array.isArray(value.value)) return value.value.length;
  return value.value instanceof Map ? value.value.size : 0;
}

/** range(stop) / range(start, stop[, step]) as Python's, refusing more than `maxItems` items before allocating any. */
function boundedRange(maxItems: number) {
  return (...args: number[]): number[] => {
    const [start, stop, step = 1] = args.length === 1 ? [0, args[0]!] : args;
    if (![start, stop, step].every(Number.isInteger)) throw new Error('range() arguments must be integers');
    if (step === 0) throw new Error('range() step must not be zero');
    const count = Math.max(0, Math.ceil((stop! - start!) / step));
    if (count > maxItems) throw new TemplateBudgetError(`range() of ${count} items, over the limit of ${maxItems}`);
    return Array.from({ length: count }, (_, i) => start! + i * step);
  };
}

/** Python's strftime for the fields chat templates use (%Y %m %d %b %B %H %M %%), local time. */
function strftimeNow(format: string): string {
  const now = new Date();
  const two = (n: number) => String(n).padStart(2, '0');
  const month = (style: 'long' | 'short') => new Intl.DateTimeFormat('en-US', { month: style }).format(now);
  const fields: Record<string, () => string> = {
    Y: () => String(now.getFullYear()), m: () => two(now.getMonth() + 1), d: () => two(now.getDate()),
    b: () => month('short'), B: () => month('long'), H: () => two(now.getHours()), M: () => two(now.getMinutes()), '%': () => '%',
  };
  return format.replace(/%([YmdbBHM%])/g, (_, field: string) => fields[field]!());
}

/** The globals @huggingface/jinja's Template.render declares, with a bounded range. */
function templateEnvironment(limits: TemplateLimits, variables: Record<string, unknown>): JinjaEnvironment {
  const env = new Environment();
  const globals: Record<string, unknown> = {
    true: true, false: false, none: null, True: true, False: false, None: null,
    raise_exception: (message: string) => {
      throw new Error(message);
    },
    range: boundedRange(limits.maxItems),
    strftime_now: strftimeNow,
  };
  for (const [name, value] of Object.entries({ ...globals, ...variables })) env.set(name, value);
  return env;
}

/**
 * Render `template` (named `source` in errors: the file and key it came from). Throws an OlmoeError when the
 * template does not parse, raises, or exceeds `limits`.
 */
export function renderChatTemplate(
  template: string,
  messages: readonly ChatMessage[],
  context: ChatTemplateContext,
  addGenerationPrompt: boolean,
  source = 'tokenizer_config.json: chat_template',
  limits: TemplateLimits = TEMPLATE_LIMITS,
): string {
  let compiled: { parsed: unknown };
  try {
    compiled = new jinja.Template(template);
  } catch (error) {
    throw new OlmoeError('format', `${source} does not parse: ${(error as Error).message}`, { cause: error });
  }
  const variables = {
    messages: messages.map((m) => ({ ...m })),
    bos_token: context.bosToken ?? '',
    eos_token: context.eosToken ?? '',
    pad_token: context.padToken ?? '',
    add_generation_prompt: addGenerationPrompt,
  };
  const inputChars = messages.reduce((sum, m) => sum + m.content.length, 0) + template.length;
  const budget = { ...limits, maxChars: limits.maxChars + 2 * inputChars };
  try {
    const output = new BudgetedInterpreter(templateEnvironment(budget, variables), budget).run(compiled.parsed);
    return String(output.value);
  } catch (error) {
    if (error instanceof TemplateBudgetError) {
      throw new OlmoeError('format', `${source}: rendering stopped: ${error.message}; a chat template should only format the messages`, { cause: error });
    }
    throw new OlmoeError('format', `${source} failed to render: ${(error as Error).message}`, { cause: error });
  }
}

/** OLMoE-Instruct's format, used when the checkpoint carries no chat_template. */
export function renderOlmoeChat(messages: readonly ChatMessage[], context: ChatTemplateContext, addGenerationPrompt: boolean): string {
  const eos = context.eosToken ?? '';
  let text = context.bosToken ?? eos;
  messages.forEach((message, i) => {
    const separator = i < messages.length - 1 ? '\n' : '';
    if (message.role === 'assistant') text += `<|assistant|>\n${message.content}${eos}${separator}`;
    else text += `<|${message.role}|>\n${message.content}\n`;
  });
  if (addGenerationPrompt) text += '<|assistant|>\n';
  return text;
}
