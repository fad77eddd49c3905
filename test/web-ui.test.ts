/**
 * The web UI in headless Chromium (Debian's `chromium`, driven by playwright-core): send a chat message, see the
 * streamed answer and the routing heatmap, click a token, hover an expert, and save a screenshot.
 * Skips with a visible message where Chromium is not installed (`.ci/run` installs it).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { startServer, type OlmoeServer } from '../src/server/index.js';
import { tempDir, tinyModelDir } from './helpers.js';

const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const skip = existsSync(executablePath) ? false : `no Chromium at ${executablePath} (install Debian's chromium, or set CHROMIUM_PATH)`;
if (skip) console.log(`# SKIP: ${skip}`);

describe('web UI', { skip }, () => {
  let server: OlmoeServer;
  let browser: Browser;
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

    const shot = join(tempDir('olmoe-ui-'), 'web-ui.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`# screenshot: ${shot}`);
    assert.deepEqual(errors, []);
  });
});
