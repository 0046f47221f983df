// The web console that eye-query serves, in a real headless Chromium against a real `eye dev`
// (ingest, validator, writer, query and its console, PostgreSQL): what the pages show is checked
// against the database (psql), events go in over gRPC with `eye send`, and every view is
// screenshotted into docs/console/. One eye dev for the whole file; the tests run in order and
// later ones rely on what earlier ones sent (the session of the session test is screenshotted,
// the errors test fixes the pageview schema that the schemas test then shows).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import {
  ConsoleDev,
  DOCS_DIR,
  csrfToken,
  integer,
  launchChromium,
  percentile,
  postFromPage,
  q,
  screenshot,
  signIn,
  sleep,
  text,
  waitUntil,
} from './console-harness.mjs';

let dev;
let browser;
let adminKey; // application `ops`, roles read + admin
let readKey; // application `dev` (whose events the tests send), role read only
let devAppId; // the id of application `dev` (the dev key's, which `eye send` uses)
let shownSession; // the session of the session test, for its screenshot

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const TAIL_EVENTS = 100;
const TAIL_P95_LIMIT_MS = 1000;

/** A submit button (a <button> without a type is one too), within a form. */
const SUBMIT = 'button:not([type=button]):not([type=reset]), input[type=submit]';
/** The submit button(s) of the form `form` (a selector). */
const submit = (form) => SUBMIT.split(', ').map((button) => `${form} ${button}`).join(', ');

before(async () => {
  dev = await ConsoleDev.start();
  adminKey = await dev.createApp('ops', ['read', 'admin']);
  // A read key reads its own application's data: the read-only key is one of `dev`'s.
  readKey = await dev.issueKey('dev', ['read']);
  await dev.createApp('analyst', ['read']);
  devAppId = await dev.sql(`SELECT id FROM applications WHERE name = 'dev'`);
  browser = await launchChromium();
});

after(async () => {
  const errors = [];
  for (const close of [() => browser && browser.close(), () => dev && dev.stop()]) {
    try {
      await close();
    } catch (error) {
      errors.push(error);
    }
  }
  if (errors.length) throw errors[0];
});

/** A fresh, signed-out context and its page. */
async function anonymous(viewport = DESKTOP) {
  const context = await browser.newContext({ viewport });
  return { context, page: await context.newPage() };
}

const pageview = (host, pathName) => ({ host, path: pathName });

/** Waits until the event `eventId` is stored (the writer has it). */
const waitEventStored = (eventId, timeout = 30_000) => dev.waitStored(`event_id = ${q(eventId)}`, 1, timeout);

/** Waits until the event `eventId` is quarantined; returns its event_errors row id. */
async function waitQuarantined(eventId) {
  return waitUntil(async () => (await dev.sql(`SELECT id FROM event_errors WHERE event_id = ${q(eventId)}`)) || null, {
    what: `event ${eventId} in event_errors`,
  });
}

/** Waits until nothing is left in the outbox stages (everything sent is stored or quarantined). */
async function waitSettled() {
  await waitUntil(async () => (await dev.number('SELECT count(*) FROM outbox')) === 0, {
    what: 'an empty outbox (all stages drained)',
  });
}

test('sign-in: a bad key is refused with an error, the admin key lands on an overview whose counts are the database\'s', async () => {
  // Signed out, every page sends to the sign-in page.
  const { context: outside, page: login } = await anonymous();
  try {
    for (const where of ['/', '/tail', '/events', '/errors', '/schemas', '/apps', '/sessions/' + crypto.randomUUID()]) {
      const response = await login.request.get(dev.url(where), { maxRedirects: 0 });
      assert.equal(response.status(), 303, `GET ${where} signed out`);
      assert.equal(new URL(response.headers().location, dev.console).pathname, '/login', `GET ${where} signed out: Location`);
    }
    const shown = await login.goto(dev.url('/login'));
    assert.equal(shown.status(), 200);
    assert.equal(await login.locator('form#login input[name=key]').count(), 1);
    assert.ok((await login.locator(submit('form#login')).count()) >= 1, 'form#login has a submit button');
    await screenshot(login, 'login');

    await login.fill('form#login input[name=key]', `eye_${'0'.repeat(64)}`);
    const [refused] = await Promise.all([
      login.waitForResponse((r) => new URL(r.url()).pathname === '/login' && r.request().method() === 'POST'),
      login.click(submit('form#login')),
    ]);
    assert.equal(refused.status(), 401, 'POST /login with an unknown key');
    await login.waitForSelector('.error');
    assert.ok((await text(login, '.error')).length > 0, 'the error says something');
    assert.equal((await outside.cookies()).filter((c) => c.name === 'eye_session').length, 0, 'no session cookie');
  } finally {
    await outside.close();
  }

  // A few events: stored ones (registered and unregistered types) and a quarantined one.
  for (let i = 0; i < 3; i++) await waitEventStored((await dev.send('page interaction', 'pageview', pageview('overview.example', `/o${i}`))).eventId);
  await waitEventStored((await dev.send('checkout', 'started', { cart: 3 })).eventId);
  await waitQuarantined((await dev.send('page interaction', 'pageview', { host: 'overview.example' })).eventId);
  await waitSettled();

  const { context, page } = await signIn(browser, dev, adminKey);
  try {
    const cookie = (await context.cookies()).find((c) => c.name === 'eye_session');
    assert.ok(cookie, 'an eye_session cookie');
    assert.equal(cookie.httpOnly, true, 'eye_session is HttpOnly');
    assert.equal(cookie.sameSite, 'Strict', 'eye_session is SameSite=Strict');
    assert.equal(new URL(page.url()).pathname, '/');

    for (const href of ['/', '/tail', '/events', '/errors', '/schemas', '/apps']) {
      assert.equal(await page.locator(`nav a[href="${href}"]`).count(), 1, `nav links to ${href} (admin)`);
    }
    assert.equal(await page.locator('form#logout').count(), 1);

    const database = {
      storedHour: await dev.number(`SELECT count(*) FROM events WHERE stored_at > now() - interval '1 hour'`),
      storedDay: await dev.number(`SELECT count(*) FROM events WHERE stored_at > now() - interval '24 hours'`),
      errorsHour: await dev.number(`SELECT count(*) FROM event_errors WHERE failed_at > now() - interval '1 hour'`),
      deadLetters: await dev.number('SELECT count(*) FROM outbox_dead_letters'),
      schemaViolations: await dev.number(
        `SELECT count(*) FROM event_errors WHERE reason = 'schema_violation' AND failed_at > now() - interval '1 hour'`
      ),
    };
    assert.ok(database.storedHour >= 4 && database.errorsHour >= 1, JSON.stringify(database));
    await page.reload();
    const shown = {
      storedHour: await integer(page, '#stored-hour'),
      storedDay: await integer(page, '#stored-day'),
      errorsHour: await integer(page, '#errors-hour'),
      deadLetters: await integer(page, '#dead-letters'),
      schemaViolations: await integer(page, '#errors-by-reason tr[data-reason="schema_violation"] .count'),
    };
    assert.deepEqual(shown, database, 'the overview shows what the database holds');

    assert.equal(await page.locator('svg#chart').count(), 1, 'an inline svg#chart');
    for (const stage of ['validate', 'write']) {
      const depth = await integer(page, `#stages tr[data-stage="${stage}"] .depth`);
      assert.equal(depth, await dev.number(`SELECT count(*) FROM outbox WHERE stage = ${q(stage)}`), `depth of ${stage}`);
    }
    // The numbers lead to the views they count.
    const link = (selector) =>
      page.locator(selector).evaluate((element) => (element.closest('a') || element.querySelector('a'))?.getAttribute('href') || null);
    assert.match((await link('#stored-hour')) || '', /^\/events/, '#stored-hour links to the explorer');
    assert.match((await link('#errors-hour')) || '', /^\/errors/, '#errors-hour links to the errors');
    await screenshot(page, 'overview');
  } finally {
    await context.close();
  }

  const phone = await signIn(browser, dev, adminKey, { viewport: PHONE });
  try {
    await screenshot(phone.page, 'overview-phone');
  } finally {
    await phone.context.close();
  }
});

/**
 * Records, in the page, when each li.event[data-event-id] first appears (Date.now(), the same clock
 * as the test's): window.__seen[id].
 */
async function watchTail(page) {
  await page.evaluate(() => {
    window.__seen = window.__seen || {};
    const note = (node) => {
      if (node.nodeType !== 1) return;
      const items = node.matches('li.event[data-event-id]') ? [node] : [];
      items.push(...node.querySelectorAll('li.event[data-event-id]'));
      for (const item of items) {
        const id = item.getAttribute('data-event-id');
        if (!(id in window.__seen)) window.__seen[id] = Date.now();
      }
    };
    note(document.body);
    new MutationObserver((mutations) => {
      for (const mutation of mutations) {
        for (const node of mutation.addedNodes) note(node);
        if (mutation.type === 'attributes') note(mutation.target);
      }
    }).observe(document.body, { childList: true, subtree: true, attributes: true, attributeFilter: ['data-event-id', 'class'] });
  });
}

const seenAt = (page, id) => page.evaluate((id) => window.__seen[id] ?? null, id);
const tailItem = (id) => `#tail li.event[data-event-id="${id}"]`;

/**
 * Opens /tail (with `query`) and waits until its stream delivers: an event sent now shows up. The
 * stream may start a moment after the page, so one probe is sent again until one appears.
 */
async function openTail(page, query, probe) {
  const streams = [];
  page.on('request', (request) => {
    if (new URL(request.url()).pathname === '/api/tail') streams.push(request.url());
  });
  const response = await page.goto(dev.url(`/tail${query}`));
  assert.equal(response.status(), 200, `GET /tail${query}`);
  await watchTail(page);
  await waitUntil(async () => {
    const { eventId } = await probe();
    try {
      await page.waitForSelector(tailItem(eventId), { timeout: 5_000 });
      return true;
    } catch {
      return false;
    }
  }, { timeout: 60_000, interval: 0, what: `a probe event in /tail${query}` });
  return streams;
}

test('live tail: 100 events over gRPC each appear within a second; filters narrow it; pause holds, resume shows', async () => {
  const { context, page } = await signIn(browser, dev, adminKey);
  try {
    const streams = await openTail(page, '', () => dev.send('page interaction', 'pageview', pageview('t.example', '/probe')));
    assert.ok(streams.length >= 1, 'the page streams from /api/tail');

    const latencies = [];
    const sent = [];
    for (let i = 0; i < TAIL_EVENTS; i++) {
      const started = Date.now();
      const event = await dev.send('page interaction', 'pageview', pageview('t.example', `/p${i}`));
      sent.push(event);
      await page.waitForFunction((id) => id in window.__seen, event.eventId, { timeout: 30_000, polling: 10 });
      latencies.push((await seenAt(page, event.eventId)) - started);
    }
    const p50 = percentile(latencies, 0.5);
    const p95 = percentile(latencies, 0.95);
    const line = `live tail latency over ${TAIL_EVENTS} events: p50 ${p50} ms, p95 ${p95} ms`;
    console.log(line);
    fs.mkdirSync(DOCS_DIR, { recursive: true });
    fs.writeFileSync(
      path.join(DOCS_DIR, 'tail-latency.txt'),
      `${line}\n` +
        `min ${Math.min(...latencies)} ms, max ${Math.max(...latencies)} ms, mean ${Math.round(latencies.reduce((a, b) => a + b, 0) / latencies.length)} ms\n` +
        `measured ${new Date().toISOString()} by services/query/console-tests (test/console.test.mjs): for each event, from just\n` +
        `before \`eye send\` starts (a new process of the debug build, over gRPC to eye dev's ingest) to its li.event\n` +
        `appearing in /tail in headless Chromium (a MutationObserver's Date.now()), one event at a time, on this\n` +
        `machine (${os.availableParallelism()} cores) with eye dev (ingest, validator, writer, query, PostgreSQL) on the same machine.\n` +
        `latencies (ms, in send order): ${latencies.join(' ')}\n`
    );
    assert.ok(p95 < TAIL_P95_LIMIT_MS, `${line}: p95 is not under ${TAIL_P95_LIMIT_MS} ms`);

    // Newest first; each item shows its type and session; a click shows the raw event.
    const ids = await page.locator('#tail li.event[data-event-id]').evaluateAll((items) => items.map((li) => li.dataset.eventId));
    assert.equal(ids[0], sent.at(-1).eventId, 'the newest event is first');
    assert.ok(ids.indexOf(sent.at(-2).eventId) > 0, 'the one before it is after it');
    const last = page.locator(tailItem(sent.at(-1).eventId));
    const shown = await last.innerText();
    for (const part of ['page interaction', 'pageview']) assert.ok(shown.includes(part), `the item shows ${part}: ${shown}`);
    assert.ok(shown.includes(sent.at(-1).sessionId) || shown.includes(sent.at(-1).sessionId.slice(0, 8)), `the item shows its session: ${shown}`);
    await last.click({ position: { x: 4, y: 4 } });
    const raw = last.locator('pre.raw');
    await raw.waitFor({ state: 'visible', timeout: 5_000 });
    const rawText = await raw.innerText();
    assert.ok(rawText.includes(sent.at(-1).eventId), `pre.raw holds the event: ${rawText}`);
    assert.ok(rawText.includes(`/p${TAIL_EVENTS - 1}`), `pre.raw holds the payload: ${rawText}`);
    await last.click({ position: { x: 4, y: 4 } });
    await raw.waitFor({ state: 'hidden', timeout: 5_000 });
    assert.equal(await integer(page, '#skipped'), 0, '#skipped');
    await screenshot(page, 'tail');

    // Filters: the form reloads /tail with them, and the stream takes them.
    const category = `tail filter ${crypto.randomBytes(3).toString('hex')}`;
    await page.fill('form#tail-filters input[name=category]', category);
    await Promise.all([
      page.waitForURL((url) => url.pathname === '/tail' && url.searchParams.get('category') === category),
      page.click(submit('form#tail-filters')),
    ]);
    assert.equal(await page.inputValue('form#tail-filters input[name=category]'), category, 'the form keeps the filter');
    const filteredStreams = await openTail(page, new URL(page.url()).search, () => dev.send(category, 'probe', { n: 0 }));
    assert.ok(
      filteredStreams.some((url) => new URL(url).searchParams.get('category') === category),
      `the stream is filtered too: ${filteredStreams.join(', ')}`
    );
    const other = await dev.send('tail other', 'probe', { n: 1 });
    const wanted = await dev.send(category, 'kept', { n: 2 });
    await page.waitForSelector(tailItem(wanted.eventId), { timeout: 10_000 });
    await waitEventStored(other.eventId);
    await sleep(1_500);
    assert.equal(await page.locator(tailItem(other.eventId)).count(), 0, 'an event of another category does not appear');
    const categories = await page.locator('#tail li.event').allInnerTexts();
    assert.ok(categories.every((item) => item.includes(category)), `only ${category} is shown: ${JSON.stringify(categories)}`);

    // Pause: new events are held, not shown; resume shows them.
    await page.click('#pause');
    await waitUntil(async () => /resume/i.test(await text(page, '#pause')), { what: '#pause to say Resume' });
    const held = [await dev.send(category, 'held', { n: 3 }), await dev.send(category, 'held', { n: 4 })];
    for (const event of held) await waitEventStored(event.eventId);
    await sleep(2_000); // well past the tail's latency: had they been shown, they would be
    for (const event of held) assert.equal(await page.locator(tailItem(event.eventId)).count(), 0, 'not shown while paused');
    await page.click('#pause');
    for (const event of held) await page.waitForSelector(tailItem(event.eventId), { timeout: 10_000 });
    assert.doesNotMatch(await text(page, '#pause'), /resume/i, '#pause no longer says Resume');
    const order = await page.locator('#tail li.event[data-event-id]').evaluateAll((items) => items.map((li) => li.dataset.eventId));
    assert.ok(order.indexOf(held[1].eventId) < order.indexOf(held[0].eventId), 'the held events are newest first too');
    assert.ok(order.indexOf(held[0].eventId) < order.indexOf(wanted.eventId), 'the held events come before the earlier one');
  } finally {
    await context.close();
  }
});

test('a session page lists its events in time order, with the gaps and its application; the explorer lists and links them', async () => {
  const session = crypto.randomUUID();
  shownSession = session;
  const base = Date.now() - 10 * 60_000;
  const at = [base, base + 4_000, base + 65_000];
  // Sent out of order: the page orders by when they happened.
  const order = [2, 0, 1];
  const ids = [];
  for (const i of order) {
    const { eventId, sessionId } = await dev.send('page interaction', 'pageview', pageview('session.example', `/s${i + 1}`), {
      session,
      timestamp: new Date(at[i]),
    });
    assert.equal(sessionId, session);
    ids[i] = eventId;
  }
  for (const id of ids) await waitEventStored(id);

  const { context, page } = await signIn(browser, dev, readKey);
  try {
    const response = await page.goto(dev.url(`/sessions/${session}`));
    assert.equal(response.status(), 200);
    const count = await text(page, '#session-summary .event-count');
    assert.equal(Number((count || '').match(/\d+/)?.[0]), 3, `.event-count: ${count}`);
    const listed = await page.locator('ol#timeline li[data-event-id]').evaluateAll((items) => items.map((li) => li.dataset.eventId));
    assert.deepEqual(listed, ids, 'the timeline is in time order');
    assert.equal(await page.locator('.gap').count(), 2, 'a gap between each two events');
    const applications = await text(page, '#applications');
    assert.ok(applications && (applications.includes(devAppId) || applications.includes('dev')), `#applications: ${applications}`);
    await screenshot(page, 'session');

    const unknown = await page.goto(dev.url(`/sessions/${crypto.randomUUID()}`));
    assert.equal(unknown.status(), 404, 'an unknown session');
    assert.ok(await text(page, '.error'), 'the 404 says so in .error');

    // The explorer: filtered by the session through its form, oldest first, linked to the session.
    await page.goto(dev.url('/events'));
    await page.fill('form#filters input[name=session]', session);
    await Promise.all([
      page.waitForURL((url) => url.pathname === '/events' && url.searchParams.get('session') === session),
      page.click(submit('form#filters')),
    ]);
    const rows = await page.locator('#events tr[data-event-id]').evaluateAll((items) => items.map((tr) => tr.dataset.eventId));
    assert.deepEqual(rows, ids, 'the explorer lists the session oldest first');
    const first = page.locator(`#events tr[data-event-id="${ids[0]}"]`);
    assert.equal(await first.locator('a.session').getAttribute('href'), `/sessions/${session}`);
    const detail = first.locator('details.detail');
    await detail.locator('summary').click();
    const detailText = await detail.innerText();
    const occurred = new Date(at[0]).toISOString(); // shown in some format with its date and hh:mm
    for (const part of ['/s1', 'session.example', occurred.slice(0, 10), occurred.slice(11, 16)]) {
      assert.ok(detailText.includes(part), `the detail shows ${part}: ${detailText}`);
    }
    assert.ok(detailText.includes(devAppId) || detailText.includes('dev'), `the detail shows the application: ${detailText}`);
    assert.match(detailText, /\b1\b/, 'the detail shows the schema version (1)');
    assert.equal(await page.locator('a#next-page').count(), 0, 'three events: one page');
    await Promise.all([page.waitForURL((url) => url.pathname === `/sessions/${session}`), first.locator('a.session').click()]);

    // Pages: the 101 events of t.example (the tail test's), followed through a#next-page.
    const contains = JSON.stringify({ host: 't.example' });
    const expected = await dev.number(`SELECT count(*) FROM events WHERE data @> ${q(contains)}::jsonb`);
    let url = `/events?contains=${encodeURIComponent(contains)}`;
    const seen = [];
    for (let pages = 0; url && pages < 20; pages++) {
      const answer = await page.goto(dev.url(url));
      assert.equal(answer.status(), 200, `GET ${url}`);
      seen.push(...(await page.locator('#events tr[data-event-id]').evaluateAll((items) => items.map((tr) => tr.dataset.eventId))));
      url = (await page.locator('a#next-page').count()) ? await page.getAttribute('a#next-page', 'href') : null;
    }
    assert.equal(seen.length, expected, `the pages list the ${expected} events once each`);
    assert.equal(new Set(seen).size, expected, 'no event on two pages');
    const inOrder = (await dev.sql(`SELECT event_id FROM events WHERE data @> ${q(contains)}::jsonb ORDER BY occurred_at, event_id`)).split('\n');
    assert.deepEqual(seen, inOrder, 'oldest first across the pages');
  } finally {
    await context.close();
  }
});

test('errors: a pageview that breaks its schema shows in /errors; after a schema fix, a replay by reason stores it', async () => {
  const { eventId } = await dev.send('page interaction', 'pageview', { host: 'errors.example' });
  const errorId = await waitQuarantined(eventId);
  await waitSettled();

  const { context, page } = await signIn(browser, dev, adminKey);
  try {
    const response = await page.goto(dev.url('/errors'));
    assert.equal(response.status(), 200);
    const reasons = await dev.number(`SELECT count(*) FROM event_errors WHERE reason = 'schema_violation'`);
    assert.equal(await integer(page, '#reasons tr[data-reason="schema_violation"] .count'), reasons, '#reasons count');
    const ofType = await dev.number(`SELECT count(*) FROM event_errors WHERE category = 'page interaction' AND name = 'pageview'`);
    assert.equal(await integer(page, '#types tr[data-type="page interaction/pageview"] .count'), ofType, '#types count');
    const sample = page.locator(`#samples tr[data-error-id="${errorId}"]`);
    assert.equal(await sample.count(), 1, `the sample row of error ${errorId}`);
    assert.match(await sample.locator('.message').innerText(), /path/, 'the message names the missing field');
    assert.equal(await page.locator('form#replay').count(), 1, 'an admin has the replay form');
    assert.ok((await page.locator('#samples input[type=checkbox][name=id]').count()) >= 1, 'checkboxes in the samples');
    assert.equal(await page.locator('button#replay-reason').count(), 1);
    assert.equal(await page.locator('button#replay-selected').count(), 1);
    await screenshot(page, 'errors');

    // A schema that no longer requires the path (version 2), then a replay by reason.
    const fixed = path.join(dev.workdir, 'pageview-v2.json');
    fs.writeFileSync(
      fixed,
      JSON.stringify({
        $schema: 'https://json-schema.org/draft/2020-12/schema',
        title: 'page interaction / pageview',
        type: 'object',
        properties: { host: { type: 'string', minLength: 1 }, path: { type: 'string', pattern: '^/' } },
        required: ['host'],
      })
    );
    await dev.eye(['schemas', 'put', '--category', 'page interaction', '--name', 'pageview', fixed]);
    const pending = await dev.number(`SELECT count(*) FROM event_errors WHERE reason = 'schema_violation' AND replayed_at IS NULL`);
    await page.reload();
    const reason = page.locator('form#replay [name=reason]');
    if ((await reason.evaluate((element) => element.tagName)) === 'SELECT') await reason.selectOption('schema_violation');
    else await reason.fill('schema_violation');
    await Promise.all([
      page.waitForURL((url) => url.pathname === '/errors' && url.searchParams.has('replayed')),
      page.click('button#replay-reason'),
    ]);
    const replayed = Number(new URL(page.url()).searchParams.get('replayed'));
    assert.equal(replayed, pending, `replayed=${replayed}: every schema_violation not replayed yet`);
    const outcome = await text(page, '#replay-outcome');
    assert.ok(outcome && outcome.includes(String(replayed)), `#replay-outcome says how many: ${outcome}`);
    await waitEventStored(eventId);
    const [row] = await dev.rows(`event_id = ${q(eventId)}`);
    assert.deepEqual(row.data, { host: 'errors.example' });
    assert.equal(await dev.sql(`SELECT schema_version FROM events WHERE event_id = ${q(eventId)}`), '2');
  } finally {
    await context.close();
  }
});

test('schemas: each type with its latest version and counts; a type page shows its versions and their diff', async () => {
  await waitSettled();
  const { context, page } = await signIn(browser, dev, readKey);
  try {
    await page.goto(dev.url('/schemas'));
    const row = page.locator('#schemas tr[data-type="page interaction/pageview"]');
    assert.equal(await row.count(), 1);
    assert.equal(await integer(page, '#schemas tr[data-type="page interaction/pageview"] .version'), 2);
    assert.equal(await integer(page, '#schemas tr[data-type="page interaction/cta click"] .version'), 1);
    const stored = await dev.number(`SELECT count(*) FROM events WHERE category = 'page interaction' AND name = 'pageview'`);
    assert.equal(await integer(page, '#schemas tr[data-type="page interaction/pageview"] .stored'), stored, '.stored');
    for (const cell of ['.first-seen', '.last-seen', '.error-share']) {
      assert.ok(await text(page, `#schemas tr[data-type="page interaction/pageview"] ${cell}`), `${cell} is filled`);
    }
    await screenshot(page, 'schemas');
    const href = await row.locator('a').first().getAttribute('href');
    assert.equal(href, '/schemas/page%20interaction/pageview');
    await Promise.all([page.waitForURL((url) => url.pathname === href), row.locator('a').first().click()]);
    const body = await page.locator('main').innerText();
    assert.match(body, /\b1\b/);
    assert.match(body, /\b2\b/);
    assert.equal(await page.locator('pre.diff').count(), 1, 'one diff between the two versions');
    const diff = await page.locator('pre.diff').innerText();
    assert.match(diff, /required/, `the diff shows the change of "required": ${diff}`);
    assert.match(diff, /path/, diff);
    await screenshot(page, 'schema-versions');
  } finally {
    await context.close();
  }
});

test('applications: an admin issues a key (shown once) and revokes an application; every POST form needs its _csrf', async () => {
  const doomedKey = await dev.createApp('doomed', ['read']);
  const { context, page } = await signIn(browser, dev, adminKey);
  try {
    const response = await page.goto(dev.url('/apps'));
    assert.equal(response.status(), 200);
    for (const name of ['dev', 'ops', 'analyst', 'doomed']) {
      assert.equal(await page.locator(`#apps tr[data-app="${name}"]`).count(), 1, `a row for ${name}`);
    }
    for (const form of await page.locator('form[method=post i]').all()) {
      assert.equal(await form.locator('input[type=hidden][name=_csrf]').count(), 1, 'each POST form carries _csrf');
    }
    await screenshot(page, 'apps');

    // A read key for analyst.
    const keysBefore = await dev.number(`SELECT count(*) FROM api_keys k JOIN applications a ON a.id = k.application_id WHERE a.name = 'analyst'`);
    const issue = page.locator('#apps tr[data-app="analyst"] form.issue-key');
    for (const role of ['ingest', 'read', 'admin']) {
      await issue.locator(`input[name=role][value=${role}]`).setChecked(role === 'read');
    }
    await Promise.all([page.waitForSelector('#new-key'), issue.locator(SUBMIT).first().click()]);
    const newKey = (await text(page, '#new-key')).match(/eye_[0-9a-f]{64}/)?.[0];
    assert.ok(newKey, `#new-key shows a key: ${await text(page, '#new-key')}`);
    assert.equal(
      await dev.sql(
        `SELECT array_to_string(k.roles, ',') FROM api_keys k JOIN applications a ON a.id = k.application_id WHERE a.name = 'analyst' ORDER BY k.created_at DESC LIMIT 1`
      ),
      'read'
    );
    assert.equal(await dev.number(`SELECT count(*) FROM api_keys k JOIN applications a ON a.id = k.application_id WHERE a.name = 'analyst'`), keysBefore + 1);
    await page.goto(dev.url('/apps'));
    assert.ok(!(await page.content()).includes(newKey), 'the key is shown only once');
    const analyst = await signIn(browser, dev, newKey);
    assert.equal(await analyst.page.locator('nav a[href="/apps"]').count(), 0, 'the new read key is no admin');
    await analyst.context.close();

    // Revoke `doomed` (signed in meanwhile): its key no longer signs in, its session is over.
    const doomed = await signIn(browser, dev, doomedKey);
    await page.reload();
    const revoke = page.locator('#apps tr[data-app="doomed"] form.revoke');
    page.once('dialog', (dialog) => dialog.accept());
    const [revoked] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/apps/doomed/revoke'),
      revoke.locator(SUBMIT).first().click(),
    ]);
    assert.equal(revoked.status(), 303, 'POST /apps/doomed/revoke redirects');
    await page.waitForLoadState();
    assert.equal(new URL(page.url()).pathname, '/apps', 'back on /apps');
    await waitUntil(async () => (await dev.sql(`SELECT revoked_at IS NOT NULL FROM applications WHERE name = 'doomed'`)) === 't', {
      what: 'doomed revoked in the database',
    });
    try {
      const ended = await doomed.page.request.get(dev.url('/'), { maxRedirects: 0 });
      assert.equal(ended.status(), 303, 'GET / in the session of a revoked key sends to the sign-in page');
    } finally {
      await doomed.context.close();
    }
    // Key lookups are cached for auth.cache_ttl_ms (5 s in dev), so the sign-in form may take a
    // revoked key for that long; the session it gets is refused at once (sessions are checked
    // against the key on every request, uncached), and past the TTL the form refuses it (401).
    const { context: late, page: latePage } = await anonymous();
    try {
      const attempts = [];
      await waitUntil(
        async () => {
          await latePage.goto(dev.url('/login'));
          await latePage.fill('form#login input[name=key]', doomedKey);
          const [answer] = await Promise.all([
            latePage.waitForResponse((r) => new URL(r.url()).pathname === '/login' && r.request().method() === 'POST'),
            latePage.click(submit('form#login')),
          ]);
          await latePage.waitForLoadState();
          attempts.push(answer.status());
          if (answer.status() === 303) {
            await latePage.waitForURL((url) => url.pathname === '/login', { timeout: 5_000 });
            assert.equal(await latePage.locator('nav').count(), 0, 'a revoked key gets no signed-in page');
          }
          return answer.status() === 401;
        },
        { timeout: 15_000, interval: 1_000, what: 'POST /login with the revoked key to answer 401' }
      );
      assert.ok(attempts.every((status) => status === 303 || status === 401), `sign-in answers: ${attempts}`);
    } finally {
      await late.close();
    }

    // CSRF: the same posts without the token, or with another, are refused and change nothing.
    await page.goto(dev.url('/apps'));
    const token = await csrfToken(page);
    const keys = () => dev.number('SELECT count(*) FROM api_keys');
    const before = await keys();
    for (const fields of [{ role: 'read' }, { role: 'read', _csrf: 'x' + token.slice(1) }, { role: 'read', _csrf: '' }]) {
      const answer = await postFromPage(page, '/apps/analyst/keys', fields);
      assert.equal(answer.status, 403, `POST /apps/analyst/keys with ${JSON.stringify(fields)}`);
    }
    const bad = await dev.send('page interaction', 'cta click', { host: 'csrf.example', path: '/' }); // no element
    await waitQuarantined(bad.eventId);
    for (const fields of [{ reason: 'schema_violation' }, { reason: 'schema_violation', _csrf: token + 'x' }]) {
      const answer = await postFromPage(page, '/errors/replay', fields);
      assert.equal(answer.status, 403, `POST /errors/replay with ${JSON.stringify(fields)}`);
    }
    for (const fields of [{}, { _csrf: 'nope' }]) {
      const answer = await postFromPage(page, '/logout', fields);
      assert.equal(answer.status, 403, `POST /logout with ${JSON.stringify(fields)}`);
    }
    assert.equal(await keys(), before, 'no key was issued');
    assert.equal(await dev.sql(`SELECT replayed_at IS NULL FROM event_errors WHERE event_id = ${q(bad.eventId)}`), 't', 'nothing was replayed');
    const still = await page.goto(dev.url('/'));
    assert.equal(new URL(page.url()).pathname, '/', 'still signed in');
    assert.equal(still.status(), 200);
    // And with the token, the same replay goes through (so the 403s above were the token's).
    const ok = await postFromPage(page, '/errors/replay', { reason: 'schema_violation', _csrf: token });
    assert.ok(ok.redirected, `POST /errors/replay with the token redirects: ${JSON.stringify(ok)}`);
  } finally {
    await context.close();
  }
});

test('a read-only key: no replay, no applications (403), and signing out ends the session', async () => {
  await waitSettled(); // the replay at the end of the test before: through validation first
  const { context, page } = await signIn(browser, dev, readKey);
  try {
    for (const href of ['/', '/tail', '/events', '/errors', '/schemas']) {
      assert.equal(await page.locator(`nav a[href="${href}"]`).count(), 1, `nav links to ${href}`);
    }
    assert.equal(await page.locator('nav a[href="/apps"]').count(), 0, 'no Applications link');

    await page.goto(dev.url('/errors'));
    assert.ok((await page.locator('#samples tr[data-error-id]').count()) >= 1, 'the samples are listed');
    assert.equal(await page.locator('form#replay').count(), 0, 'no replay form');
    assert.equal(await page.locator('input[name=id]').count(), 0, 'no checkboxes');
    assert.equal(await page.locator('#replay-reason, #replay-selected').count(), 0, 'no replay buttons');

    const token = await csrfToken(page); // the logout form's: a valid token, so a 403 is the role's
    const replayedBefore = await dev.number('SELECT count(*) FROM event_errors WHERE replayed_at IS NOT NULL');
    const keysBefore = await dev.number('SELECT count(*) FROM api_keys');
    const replay = await postFromPage(page, '/errors/replay', { _csrf: token, reason: 'schema_violation' });
    assert.equal(replay.status, 403, 'POST /errors/replay with a read-only key');
    const selected = await postFromPage(page, '/errors/replay', {
      _csrf: token,
      mode: 'selected',
      id: await dev.sql('SELECT min(id) FROM event_errors'),
    });
    assert.equal(selected.status, 403, 'POST /errors/replay (selected) with a read-only key');
    const issue = await postFromPage(page, '/apps/analyst/keys', { _csrf: token, role: 'admin' });
    assert.equal(issue.status, 403, 'POST /apps/analyst/keys with a read-only key');
    const revoke = await postFromPage(page, '/apps/ops/revoke', { _csrf: token });
    assert.equal(revoke.status, 403, 'POST /apps/ops/revoke with a read-only key');
    // Through the browser's own request API too (the context's cookie).
    const viaRequest = await page.request.post(dev.url('/errors/replay'), {
      form: { _csrf: token, reason: 'schema_violation' },
      maxRedirects: 0,
    });
    assert.equal(viaRequest.status(), 403, 'page.request.post /errors/replay');
    assert.equal(await dev.number('SELECT count(*) FROM event_errors WHERE replayed_at IS NOT NULL'), replayedBefore, 'nothing replayed');
    assert.equal(await dev.number('SELECT count(*) FROM api_keys'), keysBefore, 'no key issued');
    assert.equal(await dev.sql(`SELECT revoked_at IS NULL FROM applications WHERE name = 'ops'`), 't', 'ops not revoked');

    const apps = await page.goto(dev.url('/apps'));
    assert.equal(apps.status(), 403, 'GET /apps with a read-only key');
    assert.ok(await text(page, '.error'), 'the 403 page says why in .error');

    await page.goto(dev.url('/'));
    await Promise.all([page.waitForURL((url) => url.pathname === '/login'), page.click(submit('form#logout'))]);
    const afterwards = await page.request.get(dev.url('/'), { maxRedirects: 0 });
    assert.equal(afterwards.status(), 303, 'GET / after signing out');
    assert.equal(new URL(afterwards.headers().location, dev.console).pathname, '/login');
    await page.goto(dev.url('/events'));
    assert.equal(new URL(page.url()).pathname, '/login', 'the explorer sends to the sign-in page');
  } finally {
    await context.close();
  }
});

test('bad input: an unknown page is a 404, a malformed filter a 400 naming the field, never internals', async () => {
  const { context, page } = await signIn(browser, dev, readKey);
  const internals = /SELECT|panicked|sqlx|stack backtrace|RUST_BACKTRACE|src\/\w+\.rs/;
  try {
    const missing = await page.goto(dev.url('/nope'));
    assert.equal(missing.status(), 404, 'GET /nope');
    assert.ok(await text(page, '.error'), '.error on the 404 page');

    for (const [query, field] of [
      ['session=bad', 'session'],
      ['session=not-a-uuid', 'session'],
      [`contains=${encodeURIComponent('{bad')}`, 'contains'],
      ['from=yesterday-ish', 'from'],
    ]) {
      const answer = await page.goto(dev.url(`/events?${query}`));
      assert.equal(answer.status(), 400, `GET /events?${query}`);
      const error = await text(page, '.error');
      assert.ok(error && error.includes(field), `.error names ${field}: ${error}`);
      const body = await page.locator('body').innerText();
      assert.doesNotMatch(body, internals, `GET /events?${query} shows internals: ${body}`);
    }
  } finally {
    await context.close();
  }
});

test('screenshots: the tail and the explorer with events, the session and errors views', async () => {
  // The views not taken along the way (or worth taking with content): tail with a few events,
  // the explorer with one detail open, the session of the session test.
  const { context, page } = await signIn(browser, dev, adminKey);
  try {
    await openTail(page, '', () => dev.send('page interaction', 'pageview', pageview('shop.example', '/')));
    const paths = ['/products', '/products/42', '/cart', '/checkout'];
    const session = crypto.randomUUID();
    for (const p of paths) await dev.send('page interaction', 'pageview', pageview('shop.example', p), { session });
    const click = await dev.send('page interaction', 'cta click', { host: 'shop.example', path: '/checkout', element: 'pay now' }, { session });
    await page.waitForSelector(tailItem(click.eventId), { timeout: 10_000 });
    await page.locator(tailItem(click.eventId)).click({ position: { x: 4, y: 4 } });
    await screenshot(page, 'tail');

    await page.goto(dev.url(`/events?session=${session}`));
    await page.locator('#events details.detail').first().evaluate((details) => {
      details.open = true;
    });
    await screenshot(page, 'explorer');

    await page.goto(dev.url(`/sessions/${shownSession || session}`));
    await screenshot(page, 'session');

    await page.goto(dev.url('/errors'));
    await screenshot(page, 'errors');

    for (const name of ['login', 'overview', 'overview-phone', 'tail', 'explorer', 'session', 'errors', 'schemas', 'apps']) {
      const file = path.join(DOCS_DIR, `${name}.png`);
      assert.ok(fs.existsSync(file) && fs.statSync(file).size > 1000, `${file} was written`);
    }
  } finally {
    await context.close();
  }
});
