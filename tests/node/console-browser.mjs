// console-browser.mjs — drives the Gatehouse admin console in Debian's chromium with
// playwright-core, one step at a time, for tests/e2e/test_console_browser.py.
//
// Run: node console-browser.mjs STEP JSON_ARGS
// Every step starts a fresh headless browser, signs in at the test IdP (the account is the
// `login_hint`; the IdP's login is headless, so the browser just follows redirects), does its
// work, saves full-page screenshots to args.shots, and prints one JSON line of results on stdout.
// A failure prints the reason on stderr and exits 1.
//
// Steps:
//   register   Catalog -> fx -> "Register and scan now", then approve the whole upstream
//   rescan     Catalog -> fx -> "Register and scan now"
//   review     keyboard only: Catalog -> fx -> the quarantined definition -> Reason -> Approve
//   audit      Audit: Tool = args.tool -> Search; returns the table's text
//   keys       Access: create a key for agent-1 on /keyed (shown once)
//   revoke     Access: revoke agent-1's key
//   reader     as args.account: returns whether any action button is on the catalog pages,
//              and the status of a forged decision POST
//   signout    Sign out, then /admin/ again

import { chromium } from 'playwright-core';

const [step, raw] = process.argv.slice(2);
const args = JSON.parse(raw);
const base = args.base;

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const page = await context.newPage();
let shot = 0;
const snap = async (name) => {
  shot += 1;
  await page.screenshot({ path: `${args.shots}/${step}-${String(shot).padStart(2, '0')}-${name}.png`, fullPage: true });
};
const fail = (why) => {
  throw new Error(`${why} (at ${page.url()})`);
};

async function signIn(account) {
  await page.goto(`${base}/admin/login?login_hint=${encodeURIComponent(account)}`);
  await page.waitForURL((u) => u.pathname.startsWith('/admin/'), { timeout: 15000 });
}

// Presses Tab until the focused element satisfies `test` (keyboard-only navigation).
async function tabTo(description, test) {
  for (let i = 0; i < 80; i += 1) {
    await page.keyboard.press('Tab');
    const hit = await page.evaluate(test);
    if (hit) return;
  }
  fail(`Tab never reached ${description}`);
}

const out = {};
try {
  await signIn(args.account ?? 'alice');
  if (step === 'register') {
    out.heading = await page.getByRole('heading', { level: 1 }).textContent();
    const cookies = await context.cookies();
    out.cookie = cookies.find((c) => c.name === '__Host-gatehouse-console') ?? null;
    await snap('overview');
    await page.getByRole('link', { name: 'Catalog' }).click();
    await snap('catalog-unregistered');
    await page.getByRole('link', { name: 'fx', exact: true }).click();
    await page.getByRole('button', { name: 'Register and scan now' }).click();
    await page.getByText('Registered:').waitFor();
    await snap('upstream-registered');
    await page.getByLabel('Reason for the whole upstream').fill('reviewed the fixture for the e2e test');
    await page.getByRole('button', { name: 'Approve upstream' }).click();
    await page.getByText('fx is now approved').waitFor();
    await snap('upstream-approved');
    out.text = await page.locator('main').innerText();
  } else if (step === 'rescan') {
    await page.getByRole('link', { name: 'Catalog' }).click();
    await page.getByRole('link', { name: 'fx', exact: true }).click();
    await page.getByRole('button', { name: 'Register and scan now' }).click();
    await page.getByText('Registered:').waitFor();
    await snap('upstream-rescanned');
    out.text = await page.locator('main').innerText();
  } else if (step === 'review') {
    await page.goto(`${base}/admin/upstreams`);
    await tabTo('the fx link', () => document.activeElement?.textContent === 'fx');
    await page.keyboard.press('Enter');
    await page.waitForURL(/\/admin\/upstreams\/fx$/);
    await snap('upstream-drifted');
    await tabTo('the echo link', () => document.activeElement?.textContent === 'echo');
    await page.keyboard.press('Enter');
    await page.waitForURL(/review\?definition=/);
    out.diff = await page.getByLabel('Changes since approval').innerText();
    await snap('review');
    await tabTo('the Reason field', () => document.activeElement?.getAttribute('name') === 'reason');
    await page.keyboard.type('the new description was read and is fine');
    await tabTo('the Approve button', () => document.activeElement?.textContent === 'Approve');
    await page.keyboard.press('Enter');
    await page.getByText('is now approved').waitFor();
    await snap('review-approved');
    out.text = await page.locator('main').innerText();
  } else if (step === 'audit') {
    await page.getByRole('link', { name: 'Audit' }).click();
    await page.getByLabel('Tool').fill(args.tool);
    await page.getByRole('button', { name: 'Search' }).click();
    await page.waitForURL(/tool=/);
    await snap('audit-search');
    out.table = await page.getByRole('table', { name: 'Audit records' }).innerText();
    const csv = await page.request.get(`${base}/admin/audit/export?tool=${encodeURIComponent(args.tool)}&format=csv`);
    out.csv = await csv.text();
  } else if (step === 'keys') {
    await page.getByRole('link', { name: 'Access' }).click();
    await snap('access');
    await page.getByLabel('Subject').fill('agent-1');
    await page.getByLabel('Servers').fill('/keyed');
    await page.getByRole('button', { name: 'Create key' }).click();
    out.key = await page.locator('#new-key').innerText();
    await snap('key-created');
    await page.reload();
    await page.reload();
    out.shownAgain = (await page.content()).includes(out.key);
    out.rows = await page.getByRole('row').filter({ hasText: 'agent-1' }).count();
  } else if (step === 'revoke') {
    await page.goto(`${base}/admin/access`);
    const row = page.getByRole('row').filter({ hasText: 'agent-1' });
    await row.getByRole('button', { name: 'Revoke' }).click();
    await page.getByText('revoked.').waitFor();
    await snap('key-revoked');
    out.rowAfter = await page.getByRole('row').filter({ hasText: 'agent-1' }).innerText();
  } else if (step === 'reader') {
    await page.goto(`${base}/admin/upstreams/fx`);
    await snap('reader-upstream');
    out.buttons = await page.getByRole('button').allInnerTexts();
    const csrf = await page.locator('input[name=csrf]').first().getAttribute('value');
    const forged = await page.request.post(`${base}/admin/upstreams/fx/decide`, {
      form: { csrf, decision: 'reject', reason: 'a reader should not be able to' },
      headers: { origin: base },
    });
    out.forgedStatus = forged.status();
  } else if (step === 'signout') {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Signed out' }).waitFor();
    await snap('signed-out');
    const again = await page.request.get(`${base}/admin/`, { maxRedirects: 0 });
    out.afterStatus = again.status();
    out.afterLocation = again.headers().location ?? null;
  } else {
    fail(`unknown step ${step}`);
  }
  console.log(JSON.stringify(out));
  await browser.close();
} catch (e) {
  await snap('failure').catch(() => {});
  console.error(String(e?.stack ?? e));
  await browser.close();
  process.exit(1);
}
