/**
 * HTTP request mutators for `olmoe serve`: valid OpenAI requests with their JSON bodies edited (edge numbers,
 * wrong types, deep nesting, unknown and prototype keys), and raw messages broken at the HTTP level (methods,
 * targets with bad percent-escapes, versions, huge or malformed headers, Content-Length / chunked lies,
 * bare-LF line ends, pipelining, truncation, garbage). Each case is the raw bytes sent on one connection.
 */
import { caseSeed, EDGE_JSON, Entries, jsonText, nested, Random, Raw, toEntries, type JsonLike } from './random.js';

export const MODEL_ID = 'fuzz';

export interface HttpCase {
  id: string;
  mutator: string;
  request: Buffer;
  /** A whole message (the server must answer it); false when it was cut short on purpose. */
  complete: boolean;
  /** How many responses a complete request must get (2 when a second request is pipelined). */
  responses: number;
}

interface Message {
  method: string;
  target: string;
  version: string;
  headers: [string, string][];
  body: Buffer;
  eol: string;
}

function encode(m: Message): Buffer {
  const head = [`${m.method} ${m.target} ${m.version}`, ...m.headers.map(([k, v]) => `${k}: ${v}`), '', ''].join(m.eol);
  return Buffer.concat([Buffer.from(head, 'latin1'), m.body]);
}

function withBody(method: string, target: string, body: Buffer | string): Message {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return {
    method, target, version: 'HTTP/1.1', eol: '\r\n', body: bytes,
    headers: [['Host', '127.0.0.1'], ['Content-Type', 'application/json'], ['Content-Length', String(bytes.length)], ['Connection', 'close']],
  };
}

const GET_TARGETS = ['/health', '/v1/models', `/v1/models/${MODEL_ID}`, '/', '/app.js', '/style.css', '/v1/nothing'];

function templates(): { target: string; body: JsonLike }[] {
  const sampling = { model: MODEL_ID, max_tokens: 3, temperature: 0.7, seed: 1 };
  return [
    { target: '/v1/chat/completions', body: { ...sampling, messages: [{ role: 'user', content: 'hi' }] } },
    { target: '/v1/chat/completions', body: { ...sampling, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'system', content: 's' }, { role: 'user', content: [{ type: 'text', text: 'hi' }] }] } },
    { target: '/v1/completions', body: { ...sampling, prompt: 'Hello' } },
    { target: '/v1/completions', body: { ...sampling, prompt: [1, 2, 3], routing: true, top_k: 5, top_p: 0.9, min_p: 0.1, repetition_penalty: 1.1, stop: ['x'] } },
    { target: '/v1/completions', body: { ...sampling, prompt: ['Hello'], stream: true } },
  ];
}

const SAMPLING_KEYS = ['model', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'seed', 'stop', 'n', 'stream', 'stream_options', 'presence_penalty', 'frequency_penalty', 'logprobs', 'user', 'top_k', 'min_p', 'repetition_penalty', 'ignore_eos', 'routing', 'messages', 'prompt', 'echo', 'best_of'];
const HUGE_NUMBERS: JsonLike[] = [2 ** 31, 2 ** 53, 2 ** 53 + 2, 2 ** 64, 1e308, new Raw('1e999'), new Raw('-1e999'), -1, 0, new Raw('-0'), 0.5, 1e-320, new Raw('123456789012345678901234567890')];

function set(root: Entries, key: string, value: JsonLike): Entries {
  return new Entries([...root.entries.filter(([k]) => k !== key), [key, value]]);
}

type BodyEdit = (root: Entries, r: Random) => JsonLike | Raw;

const BODY_EDITS: [string, BodyEdit][] = [
  ['body_value', (root, r) => set(root, r.pick(SAMPLING_KEYS), r.pick([...EDGE_JSON, ...HUGE_NUMBERS]))],
  ['body_number', (root, r) => set(root, r.pick(['max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'seed', 'top_k', 'min_p', 'repetition_penalty']), r.pick(HUGE_NUMBERS))],
  ['body_drop', (root, r) => new Entries(root.entries.filter(([k]) => k !== r.pick(root.entries)[0]))],
  ['body_proto_key', (root, r) => new Entries([...root.entries, [r.pick(['__proto__', 'constructor', 'toString', 'hasOwnProperty']), r.pick<JsonLike>([new Entries([['max_tokens', 100000]]), 1, null, 'x'])]])],
  ['body_duplicate_key', (root, r) => new Entries([...root.entries, [r.pick(['model', 'max_tokens', 'stream', 'prompt', 'messages']), r.pick(EDGE_JSON)]])],
  ['body_deep', (root, r) => (r.chance(0.3) ? nested(r.pick([1000, 100000, 1000000]), 1, r.chance(0.5)) : set(root, r.pick(SAMPLING_KEYS), nested(r.pick([100, 10000, 1000000]), 1, r.chance(0.5))))],
  ['body_messages', (root, r) =>
    set(root, 'messages', r.pick<JsonLike>([
      [], [{ role: 'tool', content: 'x' }], [{ role: 'user' }], [{ role: 'user', content: [{ type: 'image_url', image_url: 'x' }] }], [{ role: 'user', content: 5 }],
      Array.from({ length: 2000 }, () => ({ role: 'user', content: 'a' })), [{ role: 'user', content: 'x'.repeat(200000) }], [{ role: 'user', content: '\uD800<|endoftext|>\u0000' }],
      [{ role: 'user', content: 'hi', name: r.pick(['', '__proto__']) }], [{ role: 'assistant', content: '{{ raise_exception("x") }}' }],
    ]))],
  ['body_prompt', (root, r) =>
    set(root, 'prompt', r.pick<JsonLike>([[600], [2 ** 31], [-1], [1.5], [], [[1]], ['a', 'b'], [''], '', 'x'.repeat(200000), Array.from({ length: 100 }, (_, i) => i), [599], [0], '\uDC00', '<|endoftext|>'.repeat(50)]))],
  ['body_stop', (root, r) => set(root, 'stop', r.pick<JsonLike>(['', [''], ['a', 'b', 'c', 'd', 'e'], 'x'.repeat(100000), ['\uD800'], [5], 'e']))],
];

function jsonBody(r: Random): { target: string; body: string } {
  const template = r.pick(templates());
  return { target: template.target, body: jsonText(toEntries(template.body)) };
}

type RawEdit = (m: Message, r: Random) => Partial<HttpCase> | void;

const RAW_EDITS: [string, RawEdit][] = [
  ['method', (m, r) => void (m.method = r.pick(['PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'HEAD', 'get', 'G ET', 'GETX', 'CONNECT', 'PRI', '']))],
  ['target', (m, r) => {
    if (r.chance(0.5)) Object.assign(m, { method: 'GET', body: Buffer.alloc(0), headers: m.headers.filter(([k]) => k !== 'Content-Length') });
    m.target = r.pick([
    '/v1/models/%E0%A4%A', '/v1/models/%zz', '/v1/models/%', '/v1/models/%00', '/%', '/v1/%2e%2e/v1/models', '//v1/models', '/v1/../v1/models', '/v1/models?x=%zz#f',
    'http://example.com/v1/models', '*', '', 'v1/models', `/v1/models/${'a'.repeat(12000)}`, '/v1/chat/completions?stream=true', '/v1/models/\u00ff', '/health%20',
    ]);
  }],
  ['version', (m, r) => void (m.version = r.pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/1.2', 'HTTP/0.9', 'HTTP/1', 'FOO/1.1', '']))],
  ['huge_header', (m, r) => void m.headers.push([r.pick(['X-Fuzz', 'Cookie', 'Authorization']), 'x'.repeat(r.pick([9000, 20000, 100000]))])],
  ['many_headers', (m, r) => void m.headers.push(...Array.from({ length: r.pick([100, 2500]) }, (_, i): [string, string] => [`X-H${i}`, 'v']))],
  ['bad_header', (m, r) => {
    const bad = r.pick<[string, string]>([['NoColon', ''], ['Bad Name', 'x'], ['X-Nul', 'a\u0000b'], ['X-Fold', 'a\r\n b'], ['', 'empty'], ['X-Ctl', '\u0001'], ['Host', ''], ['Authorization', 'Bearer \u00ff']]);
    m.headers.splice(r.int(m.headers.length + 1), 0, bad);
  }],
  ['content_length', (m, r) => {
    const value = r.pick(['-1', 'abc', '1e3', '99999999999999999999', '0x10', ' 5', `${m.body.length}, ${m.body.length}`, String(m.body.length + 10), String(Math.max(0, m.body.length - 5)), '5000000', '']);
    m.headers = m.headers.map(([k, v]): [string, string] => (k === 'Content-Length' ? [k, value] : [k, v]));
    if (Number(value) > m.body.length) return { complete: false }; // the server is still waiting for the rest
  }],
  ['duplicate_content_length', (m) => void m.headers.push(['Content-Length', String(m.body.length + 1)])],
  ['chunked', (m, r) => {
    m.headers = m.headers.filter(([k]) => r.chance(0.3) || k !== 'Content-Length');
    m.headers.push(['Transfer-Encoding', r.pick(['chunked', 'gzip, chunked', 'chunked, gzip', 'identity', 'CHUNKED'])]);
    const size = r.pick([m.body.length.toString(16), 'zz', '-1', 'ffffffffffffffff', `${m.body.length.toString(16)};ext=1`, '0']);
    const declared = Number.parseInt(size, 16);
    const end = r.pick(['\r\n0\r\n\r\n', '\r\n', '0\r\n\r\n', '\r\n0\r\nX-Trailer: 1\r\n\r\n']);
    const whole = declared <= m.body.length && end !== '\r\n'; // else the server is rightly still waiting for the rest
    m.body = Buffer.concat([Buffer.from(`${size}\r\n`), m.body, Buffer.from(end)]);
    if (!whole) return { complete: false };
  }],
  ['content_type', (m, r) => void (m.headers = m.headers.map(([k, v]): [string, string] => (k === 'Content-Type' ? [k, r.pick(['text/plain', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', '', 'application/json; charset=latin1'])] : [k, v])))],
  ['expect_continue', (m) => void m.headers.push(['Expect', '100-continue'])],
  ['line_ends', (m, r) => void (m.eol = r.pick(['\n', '\r', '\r\r\n', '\n\r']))],
  ['pipelined', (m) => {
    m.headers = m.headers.filter(([k]) => k !== 'Connection');
    const second = encode({ ...withBody('GET', '/health', ''), headers: [['Host', '127.0.0.1'], ['Connection', 'close']] });
    m.body = Buffer.concat([m.body, second]);
    return { responses: 2 };
  }],
  ['body_bytes', (m, r) => {
    m.body = r.pick([Buffer.from([0xef, 0xbb, 0xbf, ...m.body]), Buffer.from([0xff, 0xfe, 0x00]), Buffer.alloc(0), Buffer.from('{"model":'), Buffer.from('null'), Buffer.from('[]'), Buffer.from('"x"'), r.bytes(64)]);
    m.headers = m.headers.map(([k, v]): [string, string] => (k === 'Content-Length' ? [k, String(m.body.length)] : [k, v]));
  }],
];

/** One request: a valid one with 1–2 edits of its body or of the message around it. */
export function generateHttpCase(runSeed: number, index: number): HttpCase {
  const r = new Random(caseSeed(runSeed, index, 1000));
  const id = `http:${runSeed}:${index}`;
  if (r.chance(0.04)) return { id, mutator: 'http.garbage', request: r.bytes(r.range(1, 300)), complete: false, responses: 1 };
  const useBody = r.chance(0.85);
  let message: Message;
  let mutator: string;
  if (useBody) {
    const { target, body } = jsonBody(r);
    let text = body;
    const edits = r.chance(0.5) ? [r.pick(BODY_EDITS)] : [];
    for (const [, edit] of edits) text = jsonText(edit(toEntries(JSON.parse(text)) as Entries, r));
    message = withBody('POST', target, text);
    mutator = edits.map(([name]) => `http.${name}`).join('+');
  } else {
    message = withBody('GET', r.pick(GET_TARGETS), '');
    message.headers = message.headers.filter(([k]) => k !== 'Content-Type' && k !== 'Content-Length');
    mutator = '';
  }
  let extra: Partial<HttpCase> = {};
  if (!mutator || r.chance(0.4)) {
    const [name, edit] = r.pick(RAW_EDITS);
    extra = edit(message, r) ?? {};
    mutator = mutator ? `${mutator}+http.${name}` : `http.${name}`;
  }
  const request = encode(message);
  if (r.chance(0.05)) return { id, mutator: `${mutator}+http.truncate`, request: request.subarray(0, r.int(request.length)), complete: false, responses: 1 };
  return { id, mutator, request, complete: true, responses: 1, ...extra };
}
