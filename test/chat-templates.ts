/** The OLMoE Instruct chat templates (spec §4.3), shared by the tokenizer and adaptation-data tests. */

/**
 * OLMoE-1B-7B-0924-Instruct's chat_template: `{% %}` blocks on their own lines; `\n` inside Jinja strings are
 * escapes (the same bytes appear in llama.cpp's and llama-cpp-python users' template tables).
 */
export const TEMPLATE_0924 = String.raw`{{ bos_token }}{% for message in messages %}
{% if message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] }}
{% elif message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}`;

/** OLMoE-1B-7B-0125-Instruct's Tülu-3 chat_template, one line. */
export const TEMPLATE_0125 = String.raw`{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'assistant' %}{% if not loop.last %}{{ '<|assistant|>\n'  + message['content'] + eos_token + '\n' }}{% else %}{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% endif %}{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}`;

/** The Instruct models' special tokens (tokenizer_config.json): BOS and EOS are both <|endoftext|>. */
export const INSTRUCT_TOKENS = { bos_token: '<|endoftext|>', eos_token: '<|endoftext|>' };
