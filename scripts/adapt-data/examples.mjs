/**
 * Items (a question and its answer) from the sources, then the SFT, preference and KTO records built from them.
 * Every random choice comes from one seeded generator (mulberry32) in a fixed order, so a rebuild is byte-equal.
 * Items are split by group (a birth month's two facts stay together) into an SFT side and a preference side, so no
 * preference prompt is an SFT prompt.
 */
import { mulberry32 } from '../lib/mulberry32.mjs';
import { normalise } from './disjoint.mjs';

const SEED = 15;
const SFT_SHARE = 0.55;
const SFT_VALID_SHARE = 0.05;
const PREFERENCE_TEST_SHARE = 0.15;
const WORDNET_ITEMS = 500;
const SYSTEM_PROMPT = 'You are a helpful assistant.';

function shuffle(rng, list) {
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

const sentence = (text) => `${text[0].toUpperCase()}${text.slice(1)}${/[.!?]$/.test(text) ? '' : '.'}`;
const POS_NAMES = { noun: 'noun', verb: 'verb', adj: 'adjective', adv: 'adverb' };

/** WordNet items: unambiguous single-word lemmas with a short definition, none touching a benchmark item. */
function wordnetItems(synsets, index, rng, stats) {
  const senses = new Map();
  for (const s of synsets) for (const lemma of s.lemmas) senses.set(lemma, (senses.get(lemma) ?? 0) + 1);
  const candidates = synsets.filter((s) => /^[a-z]{4,14}$/.test(s.lemmas[0]) && senses.get(s.lemmas[0]) === 1 && s.definition.length >= 15 && s.definition.length <= 140);
  const kept = candidates.filter((s) => !index.wordnetOverlap(s));
  stats.wordnetCandidates = candidates.length;
  stats.wordnetRefused = candidates.length - kept.length;
  return shuffle(rng, kept)
    .slice(0, WORDNET_ITEMS)
    .map((s) => ({ id: `wordnet/${s.id}`, source: 'wordnet', question: `Give a short definition of the ${POS_NAMES[s.pos]} "${s.lemmas[0]}".`, answer: sentence(s.definition) }));
}

/** Every item of every source, before the disjointness check. */
function allItems(sources, index, rng, stats) {
  const items = [];
  for (const { id, question, answer } of sources.faq) items.push({ id, source: 'debian-faq', question, answer });
  for (const { id, question, answer } of sources.riddles) items.push({ id, source: 'riddles', question, answer: sentence(answer) });
  for (const [code, name] of sources.languages) {
    items.push({ id: `language/${code}`, source: 'iso-639-1', question: `Which language has the ISO 639-1 code "${code}"?`, followUp: `And "${code}"?`, answer: sentence(name) });
    items.push({ id: `language-code/${code}`, source: 'iso-639-1', question: `What is the ISO 639-1 code for ${name}?`, followUp: `And for ${name}?`, answer: `It is "${code}".` });
  }
  for (const [code, number, name] of sources.currencies) {
    items.push({ id: `currency/${code}`, source: 'iso-4217', question: `Which currency has the ISO 4217 code ${code}?`, followUp: `And ${code}?`, answer: sentence(name) });
    items.push({ id: `currency-number/${code}`, source: 'iso-4217', question: `What is the numeric ISO 4217 code of ${code}?`, followUp: `And of ${code}?`, answer: `${number}.` });
  }
  for (const [month, stone, flower] of sources.birthtokens) {
    items.push({ id: `birthstone/${month}`, group: month, source: 'birthtoken', question: `What is the birthstone for ${month}?`, answer: sentence(stone) });
    items.push({ id: `birth-flower/${month}`, group: month, source: 'birthtoken', question: `What is the birth flower for ${month}?`, followUp: 'And the birth flower?', answer: sentence(flower.toLowerCase()) });
  }
  items.push(...wordnetItems(sources.synsets, index, rng, stats));
  return items;
}

/** Items that state no benchmark question, fact or long answer; counted by source and reason. */
function disjointItems(items, index, stats) {
  stats.bySource = {};
  return items.filter((item) => {
    const counts = (stats.bySource[item.source] ??= { candidates: 0, kept: 0 });
    counts.candidates++;
    const reason = index.conflict(`${item.question}\n${item.answer}`);
    if (reason) counts[reason] = (counts[reason] ?? 0) + 1;
    else counts.kept++;
    return !reason;
  });
}

/** Split by group, per source: the first SFT_SHARE of each source's shuffled groups go to SFT. */
function splitItems(items, rng) {
  const sft = [];
  const preference = [];
  const sources = [...new Set(items.map((i) => i.source))];
  for (const source of sources) {
    const groups = new Map();
    for (const item of items.filter((i) => i.source === source)) groups.set(item.group ?? item.id, [...(groups.get(item.group ?? item.id) ?? []), item]);
    const order = shuffle(rng, [...groups.keys()]);
    order.forEach((key, k) => (k < Math.round(order.length * SFT_SHARE) ? sft : preference).push(...groups.get(key)));
  }
  return { sft, preference };
}

const user = (content) => ({ role: 'user', content });
const assistant = (content) => ({ role: 'assistant', content });

/** SFT conversations: chains of three for code items, stone-then-flower per month, a one-sentence follow-up for some FAQ answers. */
function sftConversations(items, rng) {
  const conversations = [];
  const chained = new Set();
  const kindOf = (i) => i.id.split('/')[0];
  const codeItems = items.filter((i) => i.followUp && i.source !== 'birthtoken');
  for (const kind of [...new Set(codeItems.map(kindOf))].sort()) {
    const ofKind = shuffle(rng, codeItems.filter((i) => kindOf(i) === kind));
    for (let k = 0; k + 3 <= ofKind.length / 3; k += 3) { // a third of each kind in chains of three
      const chain = ofKind.slice(k, k + 3);
      chain.forEach((i) => chained.add(i.id));
      conversations.push({ id: chain.map((i) => i.id).join('+'), messages: chain.flatMap((i, n) => [user(n === 0 ? i.question : i.followUp), assistant(i.answer)]) });
    }
  }
  const months = new Map();
  for (const i of items.filter((i) => i.source === 'birthtoken')) months.set(i.group, [...(months.get(i.group) ?? []), i]);
  for (const [month, [stone, flower]] of months) {
    [stone, flower].forEach((i) => chained.add(i.id));
    conversations.push({ id: `birthtoken/${month}`, messages: [user(stone.question), assistant(stone.answer), user(flower.followUp), assistant(flower.answer)] });
  }
  for (const item of items.filter((i) => !chained.has(i.id))) {
    const firstSentence = /^(.+?[.!?])\s+[A-Z]/.exec(item.answer)?.[1];
    const messages = [user(item.question), assistant(item.answer)];
    if (item.source === 'debian-faq' && firstSentence && rng() < 0.4) messages.push(user('Can you say that in one sentence?'), assistant(firstSentence));
    conversations.push({ id: item.id, messages });
  }
  return shuffle(rng, conversations).map((c) => (rng() < 0.2 ? { ...c, messages: [{ role: 'system', content: SYSTEM_PROMPT }, ...c.messages] } : c));
}

/** ELIZA's reflection: first and second person swapped, so the question can be handed back to the asker. */
const REFLECTIONS = new Map(Object.entries({ i: 'you', me: 'you', my: 'your', mine: 'yours', myself: 'yourself', am: 'are', you: 'I', your: 'my', yours: 'mine', yourself: 'myself' }));
function reflect(question) {
  const body = question.replace(/[?.!]+$/, '');
  const lowered = /^[A-Z][a-z]/.test(body) ? `${body[0].toLowerCase()}${body.slice(1)}` : body;
  return lowered.replace(/\b[A-Za-z]+\b/g, (word) => REFLECTIONS.get(word.toLowerCase()) ?? word);
}
const EVASIONS = [
  (q) => `Why do you ask ${reflect(q)}?`,
  (q) => `What makes you wonder ${reflect(q)}?`,
  () => 'Let us talk about you instead. Why does that question matter to you?',
  () => 'Tell me more about why you want to know that.',
];

/** A wrong answer of the same kind of question (another item's), a reflection, or the answer cut in half. */
function rejectedFor(item, pool, rng) {
  const words = item.answer.split(' ');
  const kinds = ['wrong', 'evasive', ...(words.length >= 6 ? ['truncated'] : [])];
  const kind = kinds[Math.floor(rng() * kinds.length)];
  if (kind === 'evasive') return { kind, text: EVASIONS[Math.floor(rng() * EVASIONS.length)](item.question) };
  if (kind === 'truncated') return { kind, text: words.slice(0, Math.ceil(words.length / 2)).join(' ') };
  const kindOf = (i) => i.id.split('/')[0];
  const others = pool.filter((i) => kindOf(i) === kindOf(item) && normalise(i.answer) !== normalise(item.answer));
  return { kind, text: others[Math.floor(rng() * others.length)].answer };
}

export function buildSets(sources, index) {
  const rng = mulberry32(SEED);
  const disjointness = { assembledDropped: 0 };
  const items = disjointItems(allItems(sources, index, rng, disjointness), index, disjointness);
  const { sft, preference } = splitItems(items, rng);
  const keep = (text) => {
    if (!index.conflict(text)) return true;
    disjointness.assembledDropped++;
    return false;
  };
  const conversations = sftConversations(sft, rng).filter((c) => keep(c.messages.map((m) => m.content).join('\n')));
  const validCount = Math.max(30, Math.round(conversations.length * SFT_VALID_SHARE));
  const pairs = shuffle(rng, preference)
    .map((item) => ({ item, rejected: rejectedFor(item, items, rng) }))
    .map(({ item, rejected }) => ({ id: item.id, prompt: item.question, chosen: item.answer, rejected: rejected.text, rejected_kind: rejected.kind }))
    .filter((p) => keep(`${p.prompt}\n${p.chosen}\n${p.rejected}`));
  const testCount = Math.round(pairs.length * PREFERENCE_TEST_SHARE);
  const preferenceTrain = pairs.slice(testCount);
  const ktoTrain = preferenceTrain.map((p) => {
    const label = rng() < 0.5;
    return { id: p.id, prompt: p.prompt, completion: label ? p.chosen : p.rejected, label };
  });
  const sftTrain = conversations.slice(validCount).map(({ id, messages }) => ({ id, messages }));
  const count = (list, key) => list.reduce((acc, x) => ((acc[key(x)] = (acc[key(x)] ?? 0) + 1), acc), {});
  const sourceOf = new Map(items.map((i) => [i.id, i.source]));
  const counts = {
    sftBySource: count(conversations, (c) => sourceOf.get(c.id.split('+')[0]) ?? 'birthtoken'),
    multiTurn: conversations.filter((c) => c.messages.filter((m) => m.role === 'assistant').length > 1).length,
    assistantTurns: conversations.reduce((n, c) => n + c.messages.filter((m) => m.role === 'assistant').length, 0),
    rejectedKinds: count(pairs, (p) => p.rejected_kind),
    kto: { desirable: ktoTrain.filter((k) => k.label).length, undesirable: ktoTrain.filter((k) => !k.label).length },
  };
  return { sftTrain, sftValid: conversations.slice(0, validCount), preferenceTrain, preferenceTest: pairs.slice(0, testCount), ktoTrain, counts, disjointness };
}
