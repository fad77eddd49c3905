/**
 * The web UI in headless Chromium (Debian's `chromium`, driven by playwright-core): send a chat message, see the
 * streamed answer and the routing heatmap, click a token, hover an expert, and save a screenshot.
 * Skips with a visible message where Chromium is not installed (`.ci/run` installs it).
 */
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startServer, type OlmoeServer } from '../src/server/index.js';
import { tempDir, tinyModelDir } from './helpers.js';

const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const skip = existsSync(executablePath) ? false : `no Chromium at ${executablePath} (install Debian's chromium, or set CHROMIUM_PATH)`;
if (skip) console.log(`# SKIP: ${skip}`);

describe('web UI', { skip }, () => {
  let server: OlmoeServer;
  let browser: Browser;
  const shots = tempDir('olmoe-ui-');
  before(async () => {
    server = await startServer(tinyModelDir, { port: 0, modelId: 'tiny', backend: 'reference' });
    await server.ready;
    browser = await chromium.launch({
      executablePath,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  after(async () => {
    await browser?.close();
    await server?.close();
    rmSync(shots, { recursive: true, force: true });
  });

  it('streams a chat answer, draws the token × layer heatmap, and explains tokens and experts', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(server.url);
    await page.waitForSelector('#model:has-text("3 layers")');
    await page.fill('#max-tokens', '20');
    await page.fill('#input', 'Tell me about experts.');
    await page.press('#input', 'Enter');
    await page.waitForSelector('.message.user:has-text("Tell me about experts.")');
    await page.waitForSelector('#status:has-text("20 tokens")', { timeout: 30_000 });
    const answer = await page.textContent('.message.assistant');
    assert.ok(answer && answer.length > 0, 'the answer streamed in');

    // the heatmap: one column per generated token, one cell per layer
    assert.equal(await page.locator('#heatmap g.col').count(), 20);
    assert.equal(await page.locator('#heatmap rect.cell').count(), 20 * 3);

    // click a token: its top-k experts in every layer
    await page.locator('#heatmap g.col').nth(4).click();
    await page.waitForSelector('#token-panel h3:has-text("Token 5")');
    assert.equal(await page.locator('#token-panel tbody tr').count(), 3);
    assert.equal(await page.locator('#token-panel tbody tr').first().locator('.expert').count(), 4);

    // hover an expert: the tokens it took in this conversation, lit in the heatmap
    const chip = page.locator('#token-panel tbody tr').first().locator('.expert').first();
    const expert = ((await chip.textContent()) ?? '').split(' ')[0];
    await chip.hover();
    await page.waitForSelector(`#expert-panel h3:has-text("Layer 0, expert ${expert}")`);
    const taken = await page.locator('#expert-panel .tok').count();
    assert.ok(taken >= 1, 'the clicked token itself went to this expert');
    assert.equal(await page.locator('#heatmap rect.cell.lit').count(), taken);

    const shot = join(shots, 'web-ui.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`# screenshot: ${shot}`);
    assert.deepEqual(errors, []);
  });

  it('a conversation longer than the context drops its oldest turns and says so; no bubble is left empty; a failed message goes back in the box', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(server.url);
    await page.waitForSelector('#model:has-text("3 layers")');
    await page.fill('#max-tokens', '64');
    const long = (turn: number) => `Turn ${turn}: tell me how the experts of a sparse mixture share the work of every token, and why.`;
    for (let turn = 1; turn <= 4; turn++) await chat(page, long(turn));
    assert.equal(await page.locator('.message.error').count(), 0, (await page.locator('.message.error').allTextContents()).join('\n'));
    const notes = await page.locator('.message.note').allTextContents();
    assert.ok(notes.length >= 1, 'the user is told that old turns were dropped');
    assert.match(notes[0]!, /Dropped the \d+ oldest messages? from the conversation to fit the model's context of 256 tokens/);
    assert.ok((await page.locator('.message.dropped').count()) >= 2, 'the dropped turns are greyed');
    assert.equal(await page.locator('.message.assistant').count(), 4, 'every turn was answered');
    for (const text of await page.locator('.message.assistant').allTextContents()) assert.ok(text.trim().length > 0, 'no empty assistant bubble');

    // a message that cannot fit even alone: an error, back in the box, no bubbles left behind
    const users = await page.locator('.message.user').count();
    const huge = 'experts '.repeat(300).trim();
    await chat(page, huge);
    assert.match((await page.locator('.message.error').last().textContent()) ?? '', /more than the model's context of 256 tokens/);
    assert.equal(await page.inputValue('#input'), huge, 'the failed message is back in the box');
    assert.equal(await page.locator('.message.user').count(), users, 'no bubble for the failed message');
    assert.equal(await page.locator('.message.assistant').count(), 4, 'no empty assistant bubble');
    assert.deepEqual(errors, []);
  });
});

/** Send `text` through the composer and wait until the answer (or the error) is complete. */
async function chat(page: Page, text: string): Promise<void> {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
  await page.waitForFunction("!document.getElementById('input').disabled && !document.querySelector('.streaming')", undefined, { timeout: 60_000 });
}
