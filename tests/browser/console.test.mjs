// The operator console in a real browser: Debian's chromium, driven by playwright-core
// (no browser download). Starts its own Postgres database, a recording sink standing in
// for n8n, and the real `n8n-relay run`; saves a screenshot of every page.
//
//   cd tests/browser && npm ci && npm test
//
// Needs: chromium on PATH (apt-get install chromium), psql against the test server
// (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres), and a built
// n8n-relay (N8N_RELAY_BIN, default ../../target/debug/n8n-relay: `cargo build`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const SHOTS = join(here, 'screenshots');
const OPERATOR = 'browser-test-operator-token-0123456789';
const READER = 'browser-test-read-only-token-0123456789';
const SERVER = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const DB = `console_browser_${process.pid}`;
const DB_URL = SERVER.replace(/\/[^/?]*(\?|$)/, `/${DB}$1`);
const BIN = process.env.N8N_RELAY_BIN || join(here, '../../target/debug/n8n-relay');

let relay, sink, browser, consoleUrl, sinkUrl;
let relayLog = '';
const received = [];

function psql(sql, url = DB_URL) {
  return execFileSync('psql', [url, '-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
  }).trim();
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

async function until(what, check, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${relayLog.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function chromiumPath() {
  try {
    return execFileSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('chromium not found: apt-get install chromium (the tests drive Debian\'s browser)');
  }
}

before(async () => {
  assert.ok(existsSync(BIN), `${BIN} not found: run cargo build first, or set N8N_RELAY_BIN`);
  mkdirSync(SHOTS, { recursive: true });
  psql(`DROP DATABASE IF EXISTS ${DB}`, SERVER);
  psql(`CREATE DATABASE ${DB}`, SERVER);
  execFileSync(BIN, ['migrate', '--example-tables'], { env: { ...process.env, DATABASE_URL: DB_URL, PATH: process.env.PATH } });

  // n8n's stand-in: answers 200 and records what it got.
  sink = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => { received.push({ path: req.url, body }); res.end('ok'); });
  });
  await new Promise((r) => sink.listen(0, '127.0.0.1', r));
  sinkUrl = `http://127.0.0.1:${sink.address().port}`;

  // What the console will show: twelve sent, one failed with hostile text.
  psql(`INSERT INTO webhook_queue (webhook_id, event_id, event_type, entity_type, entity_id, webhook_url,
          payload, status, retry_count, max_retries, sent_at)
        SELECT gen_random_uuid(), g, 'lead_scraped', 'lead', g, '${sinkUrl}/webhook/lead-scraped',
               jsonb_build_object('business_name', 'Acme ' || g), 'sent', 0, 3, now()
        FROM generate_series(1, 12) g`);
  psql(`INSERT INTO webhook_queue (webhook_id, event_id, event_type, entity_type, entity_id, webhook_url,
          payload, status, retry_count, max_retries, last_error)
        VALUES (gen_random_uuid(), 1000, 'lead_qualified', 'lead', 99, '${sinkUrl}/webhook/lead-qualified',
          jsonb_build_object('business_name', '<script>alert("xss")</script><img src=x onerror=alert(1)>'),
          'failed', 3, 3, 'HTTP 502 Bad Gateway from the upstream <b>proxy</b>')`);

  // An hour of deliveries for the chart and the failure rates.
  psql(`INSERT INTO webhook_logs (direction, event_type, webhook_url, attempt, response_status,
          duration_ms, outcome, created_at)
        SELECT 'outgoing', e, '${sinkUrl}/webhook/' || replace(e, '_', '-'), 1,
               CASE WHEN g % 23 = 0 THEN 500 WHEN g % 11 = 0 THEN 502 ELSE 200 END, 20 + g % 40,
               CASE WHEN g % 23 = 0 THEN 'failed' WHEN g % 11 = 0 THEN 'retry' ELSE 'sent' END,
               now() - make_interval(secs => (g * 7) % 3540 + (g % 5) * 30)
        FROM generate_series(1, 4000) g,
             LATERAL (SELECT (ARRAY['lead_scraped', 'lead_qualified', 'demo_completed'])[1 + g % 3] AS e) ev`);

  const port = await freePort();
  consoleUrl = `http://127.0.0.1:${port}`;
  relay = spawn(BIN, ['run'], {
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: DB_URL,
      N8N_BASE_URL: sinkUrl,
      N8N_WEBHOOK_BASE_URL: sinkUrl,
      WEBHOOK_SECRET: 'browser-test-outgoing-secret',
      N8N_WEBHOOK_SECRET: 'browser-test-callback-secret',
      RELAY_CONSOLE__LISTEN: `127.0.0.1:${port}`,
      RELAY_CONSOLE__TOKEN: OPERATOR,
      RELAY_CONSOLE__READ_ONLY_TOKEN: READER,
      RELAY_CALLBACKS__LISTEN: `127.0.0.1:${await freePort()}`,
      RELAY_METRICS__LISTEN: `127.0.0.1:${await freePort()}`,
      RUST_LOG: 'info',
      NO_COLOR: '1',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  relay.stdout.on('data', (d) => { relayLog += d; });
  relay.stderr.on('data', (d) => { relayLog += d; });
  await until('the console to listen', async () => {
    try { return (await fetch(`${consoleUrl}/login`)).ok; } catch { return false; }
  });

  browser = await chromium.launch({
    executablePath: chromiumPath(),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
});

after(async () => {
  await browser?.close();
  relay?.kill('SIGTERM');
  await new Promise((r) => (relay ? relay.on('exit', r) : r()));
  sink?.close();
  try { psql(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, SERVER); } catch { /* best effort */ }
});

/// A fresh browser context logged in with `token`; no dialog (alert) may ever open,
/// unless the test answers the console's own confirmations (`confirms`).
async function loggedIn(token, { confirms = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  if (!confirms) {
    page.on('dialog', (d) => { throw new Error(`a dialog opened: ${d.message()} (script ran)`); });
  }
  await page.goto(`${consoleUrl}/`);
  assert.match(page.url(), /\/login$/, 'sent to the login page');
  await page.fill('#token', token);
  await Promise.all([page.waitForURL(`${consoleUrl}/`), page.click('button[type=submit]')]);
  return { context, page };
}

test('log in; the overview shows the counts the database holds', async () => {
  const { context, page } = await loggedIn(OPERATOR);
  const sent = Number(psql("SELECT count(*) FROM webhook_queue WHERE status = 'sent'"));
  const failed = Number(psql("SELECT count(*) FROM webhook_queue WHERE status = 'failed'"));
  await until('the sampled counts', async () => {
    await page.reload();
    return (await page.textContent('#count-sent')) === String(sent);
  });
  assert.equal(await page.textContent('#count-failed'), String(failed));
  assert.ok(await page.locator('svg.chart').isVisible(), 'the deliveries chart');
  await page.screenshot({ path: join(SHOTS, 'overview.png'), fullPage: true });
  await context.close();
});

test('a failed delivery is found by its error text, retried from its page, and turns sent', async () => {
  const { context, page } = await loggedIn(OPERATOR);
  await page.goto(`${consoleUrl}/queue`);
  await page.selectOption('select[name=status]', 'failed');
  await page.fill('input[name=q]', 'bad gateway');
  await Promise.all([page.waitForURL(/\/queue\?/), page.click('form.filters button[type=submit]')]);
  const links = page.locator('table.queue a[href^="/row/"]');
  assert.equal(await links.count(), 1, 'found by its error text');
  await page.screenshot({ path: join(SHOTS, 'queue.png'), fullPage: true });
  await Promise.all([page.waitForURL(/\/row\/\d+$/), links.first().click()]);
  // The hostile payload is shown as text; no script ran (a dialog would fail the test).
  const payload = await page.textContent('#payload');
  assert.ok(payload.includes('<script>alert(') && payload.includes('</script><img src=x'), payload);
  assert.equal(await page.locator('#payload script, #payload img').count(), 0);
  await page.screenshot({ path: join(SHOTS, 'row-failed.png'), fullPage: true });

  await Promise.all([page.waitForURL(/done=retried/), page.click('#retry')]);
  await until('the retried row to be delivered', async () => {
    await page.reload();
    return (await page.textContent('h1')).includes('sent');
  });
  assert.ok(received.some((r) => r.path === '/webhook/lead-qualified'), 'n8n got it');
  const history = await page.textContent('table');
  assert.match(history, /manual retry \(console, operator from 127\.0\.0\.1\)/);
  await page.screenshot({ path: join(SHOTS, 'row-sent.png'), fullPage: true });
  await page.goto(`${consoleUrl}/callbacks`);
  await page.screenshot({ path: join(SHOTS, 'callbacks.png'), fullPage: true });
  await context.close();
});

test('cancelling a delivery asks first: dismissed, the row stays pending; confirmed, it is cancelled', async () => {
  const { context, page } = await loggedIn(OPERATOR, { confirms: true });
  const id = psql(`INSERT INTO webhook_queue (event_type, webhook_url, status, next_attempt_at)
                   VALUES ('lead_scraped', 'http://127.0.0.1:9/hook', 'pending', now() + interval '1 hour')
                   RETURNING id`);
  await page.goto(`${consoleUrl}/row/${id}`);
  assert.equal((await page.textContent('#cancel')).trim(), 'Cancel delivery');
  let asked = null;
  page.once('dialog', (d) => { asked = d.message(); d.dismiss(); });
  await page.click('#cancel');
  assert.match(asked ?? '', new RegExp(`^Cancel the delivery of row ${id}\\?`));
  assert.equal(psql(`SELECT status FROM webhook_queue WHERE id = ${id}`), 'pending', 'dismissed: nothing sent');
  page.once('dialog', (d) => d.accept());
  await Promise.all([page.waitForURL(/done=cancelled/), page.click('#cancel')]);
  assert.equal(psql(`SELECT status FROM webhook_queue WHERE id = ${id}`), 'cancelled');
  await context.close();
});

test('a link to a row from another site (an alert) opens it in the session already there', async () => {
  const { context, page } = await loggedIn(OPERATOR);
  const id = psql("SELECT id FROM webhook_queue WHERE status = 'sent' ORDER BY id LIMIT 1");
  // A page of another origin with a plain link, as a chat message or an email has.
  const html = `<a id="alert" href="${consoleUrl}/row/${id}">row ${id}</a>`;
  await page.goto(`data:text/html,${encodeURIComponent(html)}`);
  await Promise.all([page.waitForURL(new RegExp(`/row/${id}$`)), page.click('#alert')]);
  assert.match(await page.textContent('h1'), new RegExp(`Row ${id}`), 'not the login page');
  await context.close();
});

test('a read-only login sees no action, and a forged POST with its session gets 403', async () => {
  const { context, page } = await loggedIn(READER);
  const id = psql("SELECT id FROM webhook_queue WHERE status = 'sent' ORDER BY id LIMIT 1");
  await page.goto(`${consoleUrl}/row/${id}`);
  assert.equal(await page.locator('#retry, #cancel').count(), 0);
  await page.goto(`${consoleUrl}/`);
  assert.equal(await page.locator('form[action="/pause"], form[action="/cleanup"]').count(), 0);
  // Its own CSRF token (from the log-out form), an action it may not take.
  const csrf = await page.getAttribute('input[name=csrf]', 'value');
  const status = await page.evaluate(async ([id, csrf]) => {
    const r = await fetch(`/row/${id}/cancel`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: `csrf=${csrf}`,
    });
    return r.status;
  }, [id, csrf]);
  assert.equal(status, 403);
  assert.equal(psql(`SELECT status FROM webhook_queue WHERE id = ${id}`), 'sent');
  await context.close();
});

test('an action without the CSRF token is refused', async () => {
  const { context, page } = await loggedIn(OPERATOR);
  const id = psql("SELECT id FROM webhook_queue WHERE status = 'sent' ORDER BY id LIMIT 1");
  const status = await page.evaluate(async (id) => {
    const r = await fetch(`/row/${id}/cancel`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'confirm=yes',
    });
    return r.status;
  }, id);
  assert.equal(status, 403);
  assert.equal(psql(`SELECT status FROM webhook_queue WHERE id = ${id}`), 'sent');
  await context.close();
});

test('an overview whose session ended elsewhere loads the login page instead of stale numbers', async () => {
  const { context, page } = await loggedIn(OPERATOR);
  assert.equal(await page.locator('#live').count(), 1, 'the overview refreshes itself');
  // The same browser logs out in another tab: the first tab's session is gone.
  const other = await context.newPage();
  await other.goto(`${consoleUrl}/queue`);
  await Promise.all([other.waitForURL(/\/login$/), other.click('form[action="/logout"] button')]);
  // Its next refresh (every 5 s) finds no session: the whole page goes to the login,
  // where it used to put the login form inside the overview and stay at /.
  await page.waitForURL(/\/login$/, { timeout: 15000 });
  assert.equal(await page.locator('#live').count(), 0);
  await context.close();
});
