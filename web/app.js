// The olmoe web UI: a streaming chat over /v1/chat/completions and a view of the routing of the last answer.
// Plain ES module, no build step, no network beyond this server.

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';

const state = {
  model: null, // { id, meta: { layers, experts, top_k, ... } }
  messages: [], // the conversation sent to the model
  bubbles: [], // the chat bubble of each entry of `messages`
  answers: [], // routing of every answer in this conversation: [{ tokens: [{ id, text, experts, weights }] }]
  selected: null, // index of the clicked token in the last answer
  rank: 0, // which of the top-k experts colours the cells
  controller: null,
};

function apiKey() {
  return localStorage.getItem('olmoe-api-key') ?? '';
}

async function api(path, init = {}) {
  const headers = { 'Content-Type': 'application/json', ...(init.headers ?? {}) };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401) {
    const key = prompt('This server needs an API key:');
    if (key) {
      localStorage.setItem('olmoe-api-key', key);
      return api(path, init);
    }
  }
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error?.message ?? `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function connect() {
  for (;;) {
    try {
      const response = await api('/v1/models');
      if (response.ok) {
        const { data } = await response.json();
        state.model = data[0];
        if (state.model.meta) break;
      }
    } catch {
      // the server may be restarting
    }
    $('model').textContent = 'waiting for the model to load…';
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const { meta } = state.model;
  $('model').textContent = `${state.model.id} · ${meta.layers} layers · ${meta.experts} experts · top-${meta.top_k} · ${meta.backend}`;
  $('rank').replaceChildren(...Array.from({ length: meta.top_k }, (_, k) => new Option(`expert #${k + 1} of top-${meta.top_k}`, String(k))));
  drawHeatmap();
}

function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = `message ${role}`;
  div.textContent = text;
  $('messages').append(div);
  div.scrollIntoView({ block: 'end' });
  return div;
}

async function send(text) {
  if (!state.model || state.controller) return;
  state.controller = new AbortController();
  setBusy(true);
  const userBubble = addMessage('user', text);
  let bubble = null;
  let messages = null;
  let content = '';
  let usage = null;
  const answer = { tokens: [] };
  const maxTokens = Number($('max-tokens').value) || undefined;
  const started = performance.now();
  try {
    messages = await fitToContext([...state.messages, { role: 'user', content: text }], maxTokens);
    bubble = addMessage('assistant', '');
    bubble.classList.add('streaming');
    state.answers.push(answer);
    state.selected = null;
    const response = await api('/v1/chat/completions', {
      method: 'POST',
      signal: state.controller.signal,
      body: JSON.stringify({
        model: state.model.id,
        messages,
        stream: true,
        stream_options: { include_usage: true },
        routing: true,
        max_tokens: maxTokens,
        temperature: Number($('temperature').value),
      }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    for await (const event of serverEvents(response)) {
      if (event.error) throw new Error(event.error.message);
      if (event.usage) usage = event.usage;
      const choice = event.choices?.[0];
      if (!choice) continue;
      if (choice.delta?.content) {
        content += choice.delta.content;
        bubble.textContent = content;
        bubble.scrollIntoView({ block: 'end' });
      }
      if (choice.routing) {
        answer.tokens.push(...choice.routing);
        scheduleDraw();
      }
    }
    remember(messages, userBubble, bubble, content);
    if (!content) showEmpty(bubble, 'the model ended its answer without any text');
    const seconds = (performance.now() - started) / 1000;
    $('status').textContent = usage ? `${usage.completion_tokens} tokens in ${seconds.toFixed(1)} s (${(usage.completion_tokens / seconds).toFixed(1)} tok/s), prompt ${usage.prompt_tokens} tokens` : '';
  } catch (error) {
    if (error.name === 'AbortError' && bubble) {
      remember(messages, userBubble, bubble, content);
      if (!content) showEmpty(bubble, 'stopped before any text');
      $('status').textContent = 'stopped';
    } else {
      // no answer: take the message out of the conversation and put it back in the box to edit and resend
      userBubble.remove();
      bubble?.remove();
      if (bubble) state.answers.pop();
      if (!$('input').value) $('input').value = text;
      addMessage('error', error.message);
    }
  } finally {
    bubble?.classList.remove('streaming');
    state.controller = null;
    setBusy(false);
    drawHeatmap();
  }
}

/** Keep a finished turn: `messages` (what was sent, oldest turns perhaps dropped) plus the answer. */
function remember(messages, userBubble, bubble, content) {
  const dropped = state.messages.length + 1 - messages.length;
  for (const old of state.bubbles.splice(0, dropped)) old.classList.add('dropped');
  state.messages = [...messages, { role: 'assistant', content }];
  state.bubbles.push(userBubble, bubble);
}

function showEmpty(bubble, why) {
  bubble.classList.add('empty');
  bubble.textContent = `(${why})`;
}

/**
 * The conversation cut to fit the model's context: the oldest turns are dropped (and the user told so) until the
 * prompt leaves room for the answer (max tokens, at most half the context). A last message that cannot fit alone
 * is an error.
 */
async function fitToContext(messages, maxTokens) {
  const context = state.model.meta.context_length;
  const room = Math.min(maxTokens ?? Math.floor(context / 2), Math.floor(context / 2));
  let kept = messages;
  for (;;) {
    const count = await countTokens(kept);
    if (count + room <= context) break;
    const firstUser = kept.findIndex((m, i) => i > 0 && m.role === 'user');
    if (firstUser < 0) {
      if (count < context) break; // only the new message is left: send it, with less room to answer
      throw new Error(`This message is ${Number.isFinite(count) ? `${count} tokens` : 'too long'}: more than the model's context of ${context} tokens. Shorten it.`);
    }
    kept = kept.slice(firstUser);
  }
  const dropped = messages.length - kept.length;
  if (dropped > 0) {
    addMessage('note', `Dropped the ${dropped} oldest message${dropped === 1 ? '' : 's'} from the conversation to fit the model's context of ${context} tokens.`);
  }
  return kept;
}

/** Prompt tokens of `messages` (Infinity when the server says they cannot fit at all). */
async function countTokens(messages) {
  const response = await api('/tokenize', { method: 'POST', body: JSON.stringify({ model: state.model.id, messages }) });
  if (response.ok) return (await response.json()).count;
  const body = await response.json().catch(() => ({}));
  if (body.error?.code === 'context_length_exceeded') return Infinity;
  throw new Error(body.error?.message ?? `HTTP ${response.status}`);
}

/** Server-sent events of a fetch response: the JSON payload of every `data:` line up to [DONE]. */
async function* serverEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') return;
        yield JSON.parse(data);
      }
    }
  }
}

function setBusy(busy) {
  $('send').hidden = busy;
  $('stop').hidden = !busy;
  $('input').disabled = busy;
  if (!busy) $('input').focus();
}

// --- routing view -------------------------------------------------------------------------------

const CELL_W = 26;
const CELL_H = 18;
const LABEL_H = 64;
const AXIS_W = 34;

function expertColour(expert, weight) {
  const hue = (expert * 137.508) % 360; // golden angle: neighbouring ids get distant hues
  const light = 94 - 52 * Math.min(1, Math.max(0, weight));
  return `hsl(${hue.toFixed(0)} 70% ${light.toFixed(0)}%)`;
}

let drawPending = false;
function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    drawHeatmap();
  });
}

function lastAnswer() {
  return state.answers.at(-1)?.tokens ?? [];
}

function drawHeatmap() {
  const svg = $('heatmap');
  const tokens = lastAnswer();
  const layers = state.model?.meta.layers ?? 0;
  const width = AXIS_W + Math.max(1, tokens.length) * CELL_W + 8;
  const height = LABEL_H + layers * CELL_H + 6;
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.replaceChildren();
  $('routing-legend').textContent = tokens.length ? `(${tokens.length} tokens × ${layers} layers)` : '';
  for (let layer = 0; layer < layers; layer++) {
    const label = node('text', { x: AXIS_W - 4, y: LABEL_H + layer * CELL_H + 12, 'text-anchor': 'end' });
    label.textContent = `L${layer}`;
    svg.append(label);
  }
  tokens.forEach((token, t) => {
    const x = AXIS_W + t * CELL_W;
    const column = node('g', { class: `col${state.selected === t ? ' selected' : ''}`, 'data-token': t });
    const label = node('text', { class: 'token-label', transform: `translate(${x + CELL_W / 2 + 3},${LABEL_H - 4}) rotate(-60)` });
    label.textContent = visible(token.text);
    column.append(label);
    for (let layer = 0; layer < layers; layer++) {
      const expert = token.experts[layer]?.[state.rank];
      const weight = token.weights[layer]?.[state.rank] ?? 0;
      if (expert === undefined) continue;
      const cell = node('rect', {
        class: 'cell', x, y: LABEL_H + layer * CELL_H, width: CELL_W - 1, height: CELL_H - 1, rx: 2,
        fill: expertColour(expert, weight), 'data-layer': layer, 'data-expert': expert,
      });
      const tip = node('title');
      tip.textContent = `${visible(token.text)} · layer ${layer}: expert ${expert}, weight ${weight.toFixed(3)}`;
      cell.append(tip);
      cell.addEventListener('mouseenter', () => showExpert(layer, expert));
      const text = node('text', { x: x + CELL_W / 2 - 0.5, y: LABEL_H + layer * CELL_H + 12, 'text-anchor': 'middle' });
      text.textContent = expert;
      column.append(cell, text);
    }
    column.addEventListener('click', () => selectToken(t));
    svg.append(column);
  });
}

function node(name, attributes = {}) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

/** Token text with spaces and newlines made visible. */
function visible(text) {
  return text.replaceAll(' ', '␣').replaceAll('\n', '⏎').replaceAll('\t', '⇥') || '∅';
}

function expertChip(layer, expert, weight) {
  const chip = document.createElement('span');
  chip.className = 'expert';
  chip.style.background = expertColour(expert, weight);
  chip.textContent = `${expert} · ${weight.toFixed(2)}`;
  chip.addEventListener('mouseenter', () => showExpert(layer, expert));
  return chip;
}

function selectToken(t) {
  state.selected = t;
  const token = lastAnswer()[t];
  const panel = $('token-panel');
  const heading = document.createElement('h3');
  heading.textContent = `Token ${t + 1}: ${visible(token.text)} (id ${token.id})`;
  const table = document.createElement('table');
  table.innerHTML = '<thead><tr><th>layer</th><th>top-k experts · weight</th></tr></thead>';
  const body = document.createElement('tbody');
  token.experts.forEach((experts, layer) => {
    const row = body.insertRow();
    row.insertCell().textContent = `L${layer}`;
    row.insertCell().append(...experts.map((expert, k) => expertChip(layer, expert, token.weights[layer][k])));
  });
  table.append(body);
  panel.replaceChildren(heading, table);
  drawHeatmap();
}

/** Every token of this conversation's answers that went to `expert` in `layer` (at any rank), and light it up. */
function showExpert(layer, expert) {
  const taken = [];
  state.answers.forEach((answer) =>
    answer.tokens.forEach((token) => {
      const k = token.experts[layer]?.indexOf(expert) ?? -1;
      if (k >= 0) taken.push({ text: token.text, weight: token.weights[layer][k], rank: k });
    }),
  );
  const panel = $('expert-panel');
  const heading = document.createElement('h3');
  heading.textContent = `Layer ${layer}, expert ${expert}: ${taken.length} token${taken.length === 1 ? '' : 's'} in this conversation`;
  const list = document.createElement('div');
  for (const item of taken.sort((a, b) => b.weight - a.weight)) {
    const tok = document.createElement('span');
    tok.className = 'tok';
    tok.title = `weight ${item.weight.toFixed(3)}, rank ${item.rank + 1}`;
    tok.textContent = `${visible(item.text)} ${item.weight.toFixed(2)}`;
    list.append(tok);
  }
  const note = document.createElement('p');
  note.className = 'muted';
  note.textContent = 'Outlined in the heatmap: tokens of the last answer that sent this expert any of their top-k slots in this layer.';
  panel.replaceChildren(heading, list, note);
  const svg = $('heatmap');
  svg.classList.add('dim');
  lastAnswer().forEach((token, t) => {
    const routed = token.experts[layer]?.includes(expert);
    for (const cell of svg.querySelectorAll(`g[data-token="${t}"] rect.cell`)) cell.classList.toggle('lit', routed && cell.dataset.layer === String(layer));
  });
}

$('heatmap').addEventListener('mouseleave', () => {
  $('heatmap').classList.remove('dim');
  for (const cell of $('heatmap').querySelectorAll('rect.lit')) cell.classList.remove('lit');
});

$('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('input').value.trim();
  if (!text) return;
  $('input').value = '';
  void send(text);
});
$('input').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey) {
    event.preventDefault();
    $('composer').requestSubmit();
  }
});
$('stop').addEventListener('click', () => state.controller?.abort());
$('reset').addEventListener('click', () => {
  state.controller?.abort();
  state.messages = [];
  state.bubbles = [];
  state.answers = [];
  state.selected = null;
  $('messages').replaceChildren();
  $('status').textContent = '';
  $('token-panel').innerHTML = '<p class="muted">Click a token (column) to see its top-k experts in every layer.</p>';
  $('expert-panel').innerHTML = '<p class="muted">Hover an expert to see the tokens it took in this conversation.</p>';
  drawHeatmap();
});
$('rank').addEventListener('change', (event) => {
  state.rank = Number(event.target.value);
  drawHeatmap();
});

void connect();
