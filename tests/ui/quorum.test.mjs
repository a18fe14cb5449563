// The web UI of a node that has lost its quorum (tests/ui.rs stops the other
// two nodes of a three-node cluster first): the page says so in a banner,
// the summary names no leader, and the page raises no error.
//
//   node tests/ui/quorum.test.mjs UI_URL
//
// CHROMIUM overrides /usr/bin/chromium; UI_SCREENSHOTS=DIR saves the page.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { join } from 'node:path';

const [uiUrl] = process.argv.slice(2);
if (!uiUrl) {
  console.error('usage: node quorum.test.mjs UI_URL');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const pageErrors = [];
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.setDefaultTimeout(20000);
  page.on('pageerror', (e) => pageErrors.push(`page error: ${e.message}`));
  const resp = await page.goto(uiUrl);
  assert.equal(resp.status(), 200);
  const banner = page.locator('[data-testid="no-quorum"]');
  await banner.waitFor({ state: 'visible' });
  const said = await banner.textContent();
  assert.match(said, /^No quorum: no contact with a quorum for \d+\.\d s/);
  assert.match(said, /Changes are refused until it is back\.$/);
  assert.match(await page.locator('#summary').textContent(), /\(leader without a quorum\) · leader none/);
  if (process.env.UI_SCREENSHOTS) {
    await page.screenshot({ path: join(process.env.UI_SCREENSHOTS, 'ui-no-quorum.png') });
  }
  assert.deepEqual(pageErrors, []);
  console.log('quorum ui test: the banner says so');
} catch (e) {
  failed = true;
  console.error(`quorum ui test: FAILED: ${e.stack ?? e}`);
  if (pageErrors.length) console.error(`page errors:\n  ${pageErrors.join('\n  ')}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
