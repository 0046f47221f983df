// The tracker in a real headless Chromium against the real pipeline (eye dev: HTTP ingest,
// validator, writer, PostgreSQL): what a page sends is checked where it ends up, in `events`.
// Each test has its own browser context (its own localStorage) and its own path prefix, which
// every event's data.path starts with.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { after, before, test } from 'node:test';

import { EyeDev, MIN_JS, PageServer, freePort, launchChromium, waitUntil } from './harness.mjs';

let dev;
let site;
let browser;
let key;

// A small burst for publishable keys (the rate stays 20 events/s per key and address), so that
// the back-pressure test meets 429 with a few hundred events; the other tests stay far below.
const BURST = 50;

before(async () => {
  dev = await EyeDev.start({ EYE__INGEST__PUBLISHABLE_BURST: String(BURST) });
  site = await PageServer.start({ endpoint: dev.endpoint, key: '' });
  key = await dev.publishableKey(site.origin);
  site.options.key = key;
  browser = await launchChromium();
});

after(async () => {
  const errors = [];
  for (const close of [() => browser && browser.close(), () => site && site.close(), () => dev && dev.stop()]) {
    try {
      await close();
    } catch (error) {
      errors.push(error);
    }
  }
  if (errors.length) throw errors[0];
});

/** A path prefix of its own for a test: `/<name>-<random>/`. */
function prefix(name) {
  return `/${name}-${crypto.randomBytes(4).toString('hex')}/`;
}

const under = (path) => `data->>'path' LIKE '${path}%'`;

/** A fresh context (own localStorage), its page, and the tracker's console warnings. */
async function open() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const warnings = [];
  page.on('console', (message) => {
    if (message.type() === 'warning') warnings.push(message.text());
  });
  page.on('pageerror', (error) => warnings.push(`page error: ${error.message}`));
  return { context, page, warnings };
}

/** The events the page's tracker still holds (not yet confirmed by the server). */
const queued = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('eye:q') || '[]'));

async function waitQueueEmpty(page, timeout = 20_000) {
  await page.waitForFunction(() => JSON.parse(localStorage.getItem('eye:q') || '[]').length === 0, null, {
    timeout,
    polling: 100,
  });
}

test('the server serves the current eye.min.js at GET /v1/eye.js', async () => {
  const response = await fetch(`${dev.endpoint}/v1/eye.js`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /javascript/);
  const served = Buffer.from(await response.arrayBuffer());
  assert.ok(
    served.equals(fs.readFileSync(MIN_JS)),
    'GET /v1/eye.js is not clients/js/eye.min.js: rebuild the eye binary (it embeds the file)'
  );
});

test('a page view, a click, form submits and an SPA navigation are each stored once, in one session', async () => {
  const base = prefix('visit');
  const { context, page, warnings } = await open();
  try {
    await page.goto(`${site.origin}${base}start?from=test`);
    await page.click('#cta-label'); // inside the [data-eye-click] element
    await page.click('#signup button[type=submit]');
    await page.click('form[name=preferences] button');
    await page.click('#spa');
    assert.equal(new URL(page.url()).pathname, `${base}next`);
    // Same path again: not a navigation.
    await page.evaluate(() => history.pushState({}, '', location.pathname + '?tab=2'));

    await dev.waitStored(under(base), 5);
    await waitQueueEmpty(page);
    const rows = await dev.rows(under(base));
    const byName = (category, name) => rows.filter((row) => row.category === category && row.name === name);

    assert.equal(new Set(rows.map((row) => row.session_id)).size, 1, 'one session');
    for (const row of rows) {
      assert.match(row.event_id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a UUIDv7');
      assert.equal(row.data.host, `127.0.0.1:${site.port}`);
    }

    const pageviews = byName('page interaction', 'pageview');
    assert.deepEqual(
      pageviews.map((row) => row.data.path),
      [`${base}start`, `${base}next`]
    );
    assert.equal(pageviews[0].data.title, 'Eye test page');
    assert.equal(pageviews[1].data.referrer, `${site.origin}${base}start?from=test`);

    const clicks = byName('page interaction', 'cta click');
    assert.equal(clicks.length, 1);
    assert.deepEqual(clicks[0].data, { host: `127.0.0.1:${site.port}`, path: `${base}start`, element: 'signup cta' });

    const submits = byName('form interaction', 'submit');
    assert.equal(submits.length, 2);
    const signup = submits.find((row) => row.data.form_id === 'signup');
    const preferences = submits.find((row) => row.data.form_id === 'preferences');
    // Names only, except the field that opted in; never the password, though it opted in.
    assert.deepEqual(signup.data.form, { email: 'visitor@example.com', nickname: null, password: null, newsletter: null });
    // The whole form opted in: values, but still not the password.
    assert.deepEqual(preferences.data.form, { city: 'Lisbon', plan: 'pro', pin: null });
    const stored = JSON.stringify(rows);
    assert.doesNotMatch(stored, /secret-/, 'no value that did not opt in, no password');

    assert.deepEqual(warnings, []);
  } finally {
    await context.close();
  }
});

test('an event tracked right before the tab closes is delivered (sendBeacon on pagehide)', async () => {
  const base = prefix('close');
  const { context, page } = await open();
  try {
    await page.goto(`${site.origin}${base}start`);
    await page.click('#cta');
    await page.close(); // at once: the 1 s debounce has not sent the click
    await dev.waitStored(`${under(base)} AND name = 'cta click'`, 1);
    await dev.waitStored(`${under(base)} AND name = 'pageview'`, 1);
  } finally {
    await context.close();
  }
});

test('a page offline for a while delivers everything once back online, nothing twice', async () => {
  const base = prefix('offline');
  const { context, page, warnings } = await open();
  try {
    await page.goto(`${site.origin}${base}start`);
    await dev.waitStored(under(base), 1);
    await waitQueueEmpty(page);

    await context.setOffline(true);
    let failed = 0;
    page.on('requestfailed', (request) => {
      if (request.url().includes('/v1/events')) failed++;
    });
    await page.evaluate(() => {
      for (let i = 0; i < 5; i++) eye.track('page interaction', 'cta click', { element: `offline ${i}` });
    });
    // Offline for a while: until several attempts have failed (the debounced send, then a
    // backed-off retry), watched as the browser reports them.
    await waitUntil(() => failed >= 2, { what: 'two failed sends while offline' });
    assert.equal((await queued(page)).length, 5, 'still queued while offline');
    assert.equal((await dev.count(`${under(base)} AND name = 'cta click'`))[0], 0);

    await context.setOffline(false);
    await dev.waitStored(`${under(base)} AND name = 'cta click'`, 5);
    await waitQueueEmpty(page);
    await dev.waitStored(under(base), 6);
    const sessions = await dev.sql(`SELECT count(DISTINCT session_id) FROM events WHERE ${under(base)}`);
    assert.equal(sessions, '1');
    assert.deepEqual(
      warnings.filter((text) => !/ERR_INTERNET_DISCONNECTED/.test(text)),
      []
    );
  } finally {
    await context.close();
  }
});

test('a reload or a crashed tab with a persisted queue delivers it once', async () => {
  const base = prefix('reload');
  const { context, page } = await open();
  try {
    // Events that could not be sent (the endpoint is down) stay in localStorage ...
    const down = `http://127.0.0.1:${await freePort()}`;
    await page.goto(`${site.origin}${base}start?endpoint=${encodeURIComponent(down)}`);
    await page.evaluate(() => {
      for (let i = 0; i < 3; i++) eye.track('page interaction', 'cta click', { element: `unsent ${i}` });
    });
    await waitUntil(async () => (await queued(page)).length === 4, { what: '4 queued events' });
    // ... and the next page of the origin sends them (with its own pageview).
    await page.goto(`${site.origin}${base}start`);
    await dev.waitStored(under(base), 5);
    await waitQueueEmpty(page);

    // A reload right after tracking: beaconed on pagehide, and sent again by the next page
    // from the persisted queue; stored once.
    await page.evaluate(() => {
      for (let i = 0; i < 3; i++) eye.track('page interaction', 'cta click', { element: `reloaded ${i}` });
    });
    await page.reload(); // well within the 1 s debounce
    await dev.waitStored(`${under(base)} AND data->>'element' LIKE 'reloaded %'`, 3);
    await waitQueueEmpty(page);
    await dev.waitStored(under(base), 9);

    // A crashed tab (no pagehide, no beacon): its queue is sent by the next page of the origin.
    await page.evaluate(() => {
      // Sent only once the 1 s debounce is up; the tab is gone before that.
      eye.track('page interaction', 'cta click', { element: 'crashed' });
    });
    const cdp = await context.newCDPSession(page);
    cdp.send('Page.crash').catch(() => {}); // answered by the crash itself
    await page.waitForEvent('crash');
    const next = await context.newPage();
    await next.goto(`${site.origin}${base}after-crash`);
    await dev.waitStored(`${under(base)} AND data->>'element' = 'crashed'`, 1);
    await waitQueueEmpty(next);
    await dev.waitStored(under(base), 11);
    const sessions = await dev.sql(`SELECT count(DISTINCT session_id) FROM events WHERE ${under(base)}`);
    assert.equal(sessions, '1');
  } finally {
    await context.close();
  }
});

test('a page on an origin the key does not allow is refused, and nothing of it is stored', async () => {
  const base = prefix('origin');
  const foreign = `http://localhost:${site.port}`; // the same page, another origin
  const { context, page, warnings } = await open();
  try {
    await page.goto(`${foreign}${base}start`);
    await page.click('#cta');
    // The tracker got the 403 and dropped what it was refused.
    await waitUntil(() => warnings.some((text) => /HTTP 403/.test(text)), { what: 'a warning about the 403' });
    await waitQueueEmpty(page);
    assert.ok(
      warnings.some((text) => /HTTP 403.*origin/i.test(text)),
      `the warning names the status and the server's message: ${JSON.stringify(warnings)}`
    );

    // The same key from its own origin still works; once that event is stored, the
    // pipeline is past anything the refused page could have sent.
    const control = prefix('origin-control');
    const allowed = await context.newPage();
    await allowed.goto(`${site.origin}${control}start`);
    await dev.waitStored(under(control), 1);
    assert.deepEqual(await dev.count(under(base)), [0, 0]);
    assert.deepEqual(await dev.count(`data->>'host' = 'localhost:${site.port}'`), [0, 0]);
  } finally {
    await context.close();
  }
});

test('an event the server rejects is dropped with a warning; the rest of its batch is stored', async () => {
  const base = prefix('rejected');
  const { context, page, warnings } = await open();
  try {
    await page.goto(`${site.origin}${base}start`);
    await page.evaluate(() => {
      eye.track('', 'no category'); // blank: REJECTED
      eye.track('page interaction', 'cta click', { element: 'kept' });
      eye.flush();
    });
    await waitUntil(() => warnings.some((text) => /event rejected: \S+/.test(text)), { what: 'a rejection warning' });
    await waitQueueEmpty(page);
    await dev.waitStored(under(base), 2); // the pageview and the click
    assert.equal(warnings.filter((text) => /rejected/.test(text)).length, 1, `one warning: ${JSON.stringify(warnings)}`);
    assert.deepEqual(await dev.count(`name = 'no category'`), [0, 0]);
  } finally {
    await context.close();
  }
});

test('a refused key (401) drops its events with a warning naming the status and the message', async () => {
  const base = prefix('badkey');
  const { context, page, warnings } = await open();
  try {
    await page.goto(`${site.origin}${base}start?key=eye_${'0'.repeat(64)}`);
    await waitUntil(() => warnings.some((text) => /HTTP 401 \S+/.test(text)), { what: 'a warning about the 401' });
    await waitQueueEmpty(page);
    assert.deepEqual(await dev.count(under(base)), [0, 0]);
  } finally {
    await context.close();
  }
});

test('a new session after 30 minutes without events', async () => {
  const base = prefix('session');
  const { context, page } = await open();
  try {
    await page.goto(`${site.origin}${base}start`);
    await page.evaluate(() => {
      eye.track('page interaction', 'cta click', { element: 'same session' });
      // The last event 31 minutes ago (the clock is not for us to wait on).
      const session = JSON.parse(localStorage.getItem('eye:s'));
      session.at -= 31 * 60 * 1000;
      localStorage.setItem('eye:s', JSON.stringify(session));
      eye.track('page interaction', 'cta click', { element: 'next session' });
      eye.track('page interaction', 'cta click', { element: 'next session' });
    });
    await dev.waitStored(under(base), 4);
    const rows = await dev.rows(under(base));
    const session = (element) => new Set(rows.filter((row) => (row.data.element || '') === element).map((row) => row.session_id));
    const first = [...session(''), ...session('same session')];
    const next = [...session('next session')];
    assert.equal(new Set(first).size, 1, 'the pageview and the first click share a session');
    assert.equal(next.length, 1, 'the events after the pause share a session');
    assert.notEqual(next[0], first[0], 'a new session after the pause');
  } finally {
    await context.close();
  }
});

test('the queue is bounded: past 1000 events the oldest are dropped and counted', async () => {
  const base = prefix('bound');
  const { context, page } = await open();
  try {
    const down = `http://127.0.0.1:${await freePort()}`; // nothing gets through
    await page.goto(`${site.origin}${base}start?endpoint=${encodeURIComponent(down)}`);
    const state = await page.evaluate(() => {
      for (let i = 0; i < 1005; i++) eye.track('page interaction', 'cta click', { element: `bound ${i}` });
      const queue = JSON.parse(localStorage.getItem('eye:q'));
      return { dropped: eye.dropped, length: queue.length, first: queue[0].data.element, last: queue.at(-1).data.element };
    });
    // 1006 tracked with the pageview: the pageview and bound 0..4 are gone.
    assert.deepEqual(state, { dropped: 6, length: 1000, first: 'bound 5', last: 'bound 1004' });
  } finally {
    await context.close();
  }
});

test('rate-limited (429): retried after Retry-After with the same ids, everything stored once', async () => {
  const base = prefix('limited');
  // A key of its own: a bucket of its own.
  const ownKey = await dev.publishableKey(site.origin);
  const { context, page, warnings } = await open();
  const statuses = [];
  page.on('response', (response) => {
    if (response.url().endsWith('/v1/events')) statuses.push(response.status());
  });
  try {
    await page.goto(`${site.origin}${base}start?key=${ownKey}`);
    const total = 3 * BURST + 1; // with the pageview: past the burst, and then some
    await page.evaluate((count) => {
      for (let i = 1; i < count; i++) eye.track('page interaction', 'cta click', { element: `limited ${i}` });
    }, total);
    await dev.waitStored(under(base), total, 60_000);
    await waitQueueEmpty(page);
    assert.ok(statuses.includes(429), `some requests were answered 429: ${statuses}`);
    assert.deepEqual(warnings, []);
  } finally {
    await context.close();
  }
});

test('without usable localStorage the tracker still delivers, in memory, and throws nothing', async () => {
  const base = prefix('nostorage');
  const { context, page, warnings } = await open();
  try {
    // As with storage blocked by the browser's settings: any access throws.
    await context.addInitScript(() => {
      Object.defineProperty(window, 'localStorage', {
        get() {
          throw new DOMException('storage is disabled', 'SecurityError');
        },
      });
    });
    await page.goto(`${site.origin}${base}start`);
    await page.click('#cta');
    await page.click('#spa');
    await dev.waitStored(under(base), 3);
    const sessions = await dev.sql(`SELECT count(DISTINCT session_id) FROM events WHERE ${under(base)}`);
    assert.equal(sessions, '1');
    assert.deepEqual(warnings, []);
  } finally {
    await context.close();
  }
});
