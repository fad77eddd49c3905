/**
 * The chat-template sandbox: templates that loop forever or build huge strings stop with an OlmoeError naming
 * the template and the limit, quickly and without growing memory; ordinary templates render exactly as the
 * library's own (unbounded) Template.render does.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Template } from '@huggingface/jinja';
import { cpSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { OlmoeError } from '../src/core/errors.js';
import { renderChatTemplate, TEMPLATE_LIMITS, type ChatMessage } from '../src/tokenizer/chat-template.js';
import { OlmoeTokenizer } from '../src/tokenizer/tokenizer.js';
import { tempDir, tinyModelDir } from './helpers.js';

const CONTEXT = { bosToken: '<|endoftext|>', eosToken: '<|endoftext|>', padToken: '<pad>' };
const MESSAGES: ChatMessage[] = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'What is 2+2?' },
  { role: 'assistant', content: '4' },
  { role: 'user', content: 'And 3+3?' },
];
const SOURCE = 'models/evil/tokenizer_config.json: chat_template';

/** 0125 Tülu (spec §4.3) and templates using loop variables, namespace, range, filters and macros. */
const ORDINARY = [
  String.raw`{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'assistant' %}{% if not loop.last %}{{ '<|assistant|>\n'  + message['content'] + eos_token + '\n' }}{% else %}{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% endif %}{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}`,
  "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}[{{ loop.index }}/{{ messages | length }} {{ m.role | upper }}] {{ m.content | trim }}\n{% endfor %}{{ ns.n }}{% for i in range(3) %}{{ i }}{% endfor %}{{ range(2, 9, 3) | list | tojson }}",
  "{% macro turn(m) %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endmacro %}{% for m in messages | reverse %}{{ turn(m) }}{% endfor %}{{ pad_token }}{% if add_generation_prompt %}<assistant>{% endif %}",
];

const vars = { messages: MESSAGES.map((m) => ({ ...m })), bos_token: CONTEXT.bosToken, eos_token: CONTEXT.eosToken, pad_token: CONTEXT.padToken };

test('chat template: ordinary templates render as the library renders them without a budget', () => {
  for (const template of ORDINARY) {
    for (const addGenerationPrompt of [true, false]) {
      const expected = new Template(template).render({ ...vars, add_generation_prompt: addGenerationPrompt });
      assert.equal(renderChatTemplate(template, MESSAGES, CONTEXT, addGenerationPrompt), expected);
    }
  }
});

/** Runs `template` and checks it stops within a second, with an OlmoeError naming the template and `limit`. */
function assertStops(template: string, limit: RegExp): void {
  const started = performance.now();
  const heapBefore = process.memoryUsage().heapUsed;
  assert.throws(
    () => renderChatTemplate(template, MESSAGES, CONTEXT, true, SOURCE),
    (error: unknown) => {
      assert.ok(error instanceof OlmoeError, `not an OlmoeError: ${String(error)}`);
      assert.match(error.message, /^models\/evil\/tokenizer_config\.json: chat_template/);
      assert.match(error.message, limit);
      return true;
    },
  );
  const seconds = (performance.now() - started) / 1000;
  assert.ok(seconds < 5, `took ${seconds.toFixed(1)} s`);
  const grownMiB = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20;
  assert.ok(grownMiB < 200, `heap grew by ${grownMiB.toFixed(0)} MiB`);
}

test('chat template: range(100000000) stops at once, naming the template and the range limit', () => {
  assertStops('{% for i in range(100000000) %}x{% endfor %}', new RegExp(`range\\(\\) of 100000000 items, over the limit of ${TEMPLATE_LIMITS.maxItems}`));
  assertStops('{{ range(5, 100000000, 2) | length }}', /range\(\) of 49999998 items/);
});

test('chat template: nested loops within the range limit stop at the step limit', () => {
  assertStops('{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}', new RegExp(`more than ${TEMPLATE_LIMITS.maxSteps} evaluation steps`));
});

test('chat template: a string or list that keeps doubling stops at the size limit', () => {
  assertStops('{% set ns = namespace(s="ab") %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}', /a string of \d+ characters, over the limit/);
  assertStops('{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = ns.l + ns.l %}{% endfor %}', /a list of \d+ items, over the limit/);
  // Output built by a loop is measured too.
  assertStops('{% set s = range(10000) | join(",") %}{% for i in range(1000) %}{{ s }}{% endfor %}', /a string of \d+ characters/);
});

test('chat template: a long conversation still renders (limits grow with the input)', () => {
  const long: ChatMessage[] = Array.from({ length: 2000 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: 'word '.repeat(500) }));
  const rendered = renderChatTemplate(ORDINARY[0]!, long, CONTEXT, true);
  assert.equal(rendered, new Template(ORDINARY[0]!).render({ ...vars, messages: long, add_generation_prompt: true }));
  assert.ok(rendered.length > TEMPLATE_LIMITS.maxChars);
});

test('chat template: work inside single steps (sorting a long list in a loop) stops at the time limit', () => {
  const template = '{% set ns = namespace(l=range(30000) | list) %}{% for i in range(1000) %}{{ ns.l | sort | length }}{% endfor %}';
  const limits = { ...TEMPLATE_LIMITS, maxMilliseconds: 200 };
  const started = performance.now();
  assert.throws(() => renderChatTemplate(template, MESSAGES, CONTEXT, true, SOURCE, limits), /chat_template: rendering stopped: more than 200 ms/);
  assert.ok(performance.now() - started < 3000);
});

test('chat template: a model folder\'s runaway template is an OlmoeError naming its tokenizer_config.json', () => {
  const dir = tempDir();
  cpSync(join(tinyModelDir, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: '{% for i in range(100000000) %}{{ i }}{% endfor %}' }));
  const tokenizer = OlmoeTokenizer.fromFolder(dir);
  const expected = `${join(dir, 'tokenizer_config.json')}: chat_template: rendering stopped: range() of 100000000 items`;
  assert.throws(() => tokenizer.encodeChat(MESSAGES), (error: unknown) => error instanceof OlmoeError && error.message.startsWith(expected));
});
