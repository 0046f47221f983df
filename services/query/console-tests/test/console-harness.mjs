// What the console tests run against, on top of the browser tracker's harness
// (clients/js/test/harness.mjs, imported, not copied): a real `eye dev` whose banner also gives the
// console's address, the gRPC ingest endpoint and the dev key, so that events can be sent with
// `eye send`; helpers to sign in to the console in headless Chromium and to post forms from a page.
//
// ConsoleDev extends the harness's EyeDev: EyeDev starts eye dev and reads its banner; ConsoleDev
// only adds the console's address and waits for it.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

import { EyeDev, launchChromium, psql, waitUntil, REPO_ROOT } from '../../../../clients/js/test/harness.mjs';

export { launchChromium, psql, waitUntil, REPO_ROOT };

const run = promisify(execFile);

const KEY_LINE = /^eye_[0-9a-f]{64}$/;

/** Where the screenshots and the latency report go. */
export const DOCS_DIR = path.join(REPO_ROOT, 'docs', 'console');

export class ConsoleDev extends EyeDev {
  /** Also waits for the console (the banner's `console:` line) to answer. */
  async ready() {
    await super.ready();
    // The console's base URL, always with one trailing slash: `${dev.console}login`.
    this.console = this.field('console').replace(/\/*$/, '/');
    this.consoleOrigin = new URL(this.console).origin;
    await waitUntil(
      async () => {
        try {
          return (await fetch(this.url('/login'))).status === 200;
        } catch {
          return false;
        }
      },
      { timeout: 60_000, what: `GET ${this.url('/login')} to answer 200` }
    );
  }

  /** The console's URL of `pathAndQuery` (which starts with `/`). */
  url(pathAndQuery) {
    return new URL(pathAndQuery.replace(/^\//, ''), this.console).toString();
  }

  /** Creates application `name` with `roles`; returns its first key (the last stdout line). */
  async createApp(name, roles) {
    const out = await this.eye(['apps', 'create', name, ...roles.flatMap((role) => ['--role', role])]);
    const key = out.trim().split('\n').pop().trim();
    if (!KEY_LINE.test(key)) throw new Error(`eye apps create ${name}: no key on the last line of:\n${out}`);
    return key;
  }

  /** Issues another key of application `name` with `roles`; returns it (the last stdout line). */
  async issueKey(name, roles) {
    const out = await this.eye(['apps', 'key', name, ...roles.flatMap((role) => ['--role', role])]);
    const key = out.trim().split('\n').pop().trim();
    if (!KEY_LINE.test(key)) throw new Error(`eye apps key ${name}: no key on the last line of:\n${out}`);
    return key;
  }

  /**
   * One event over gRPC with `eye send` and the dev key; returns {eventId, sessionId}. `data` is an
   * object or a JSON string; `session` a UUID; `timestamp` a Date or an RFC 3339 string.
   */
  async send(category, name, data, { session, timestamp, key } = {}) {
    const args = ['send', '--category', category, '--name', name, '--data', typeof data === 'string' ? data : JSON.stringify(data)];
    if (session) args.push('--session', session);
    if (timestamp) args.push('--timestamp', timestamp instanceof Date ? timestamp.toISOString() : timestamp);
    let stdout;
    try {
      ({ stdout } = await run(this.bin, args, {
        cwd: this.workdir,
        env: { ...process.env, EYE_ENDPOINT: this.ingestEndpoint, EYE_API_KEY: key || this.devKey },
        timeout: 60_000,
      }));
    } catch (error) {
      throw new Error(`eye ${args.join(' ')} failed: ${error.message}\n${error.stdout || ''}${error.stderr || ''}`);
    }
    const match = stdout.match(/ACCEPTED event ([0-9a-f-]{36}) \(session ([0-9a-f-]{36})\)/);
    if (!match) throw new Error(`eye send printed no ACCEPTED line: ${stdout}`);
    return { eventId: match[1], sessionId: match[2] };
  }

  /** A number from the database (the first column of the first row). */
  async number(query) {
    return Number(await this.sql(query));
  }
}

/** Quotes a string for SQL. */
export const q = (text) => `'${String(text).replaceAll("'", "''")}'`;

const SIGN_IN = 'form#login button:not([type=button]):not([type=reset]), form#login input[type=submit]';

/**
 * A new browser context signed in to the console with `key`: {context, page}. Fails if the sign-in
 * does not land on the overview.
 */
export async function signIn(browser, dev, key, { viewport = { width: 1280, height: 800 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  try {
    await page.goto(dev.url('/login'));
    await page.fill('form#login input[name=key]', key);
    const [answer] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/login' && r.request().method() === 'POST', { timeout: 15_000 }),
      page.waitForURL((url) => url.pathname === '/', { timeout: 15_000 }),
      page.click(SIGN_IN),
    ]);
    if (answer.status() !== 303) throw new Error(`POST /login answered ${answer.status()}, not 303`);
  } catch (error) {
    await context.close();
    throw error;
  }
  return { context, page };
}

/** The value of the first hidden `_csrf` input on the page (every POST form carries one). */
export async function csrfToken(page) {
  const token = await page.getAttribute('input[type=hidden][name=_csrf]', 'value');
  if (!token) throw new Error(`no hidden _csrf input on ${page.url()}`);
  return token;
}

/**
 * POSTs `fields` (urlencoded) to `url` from inside the page, with its cookie (same origin), not
 * following redirects. {status, redirected, text}: a redirect answers status 0, redirected true.
 */
export function postFromPage(page, url, fields) {
  return page.evaluate(
    async ({ url, fields }) => {
      const response = await fetch(url, {
        method: 'POST',
        body: new URLSearchParams(fields),
        redirect: 'manual',
        credentials: 'same-origin',
      });
      const redirected = response.type === 'opaqueredirect';
      return { status: response.status, redirected, text: redirected ? '' : await response.text() };
    },
    { url, fields }
  );
}

/** The trimmed text of `selector` (the first match), or null when there is none. */
export async function text(page, selector) {
  const locator = page.locator(selector).first();
  if ((await locator.count()) === 0) return null;
  return (await locator.innerText()).trim();
}

/** The integer a counter element shows: its whole text must be a plain integer. */
export async function integer(page, selector) {
  const shown = await text(page, selector);
  if (shown === null) throw new Error(`no ${selector} on ${page.url()}`);
  const plain = shown;
  if (!/^\d+$/.test(plain)) throw new Error(`${selector} on ${page.url()} shows ${JSON.stringify(shown)}, not an integer`);
  return Number(plain);
}

/** The nearest-rank percentile `p` (0..1) of `values`. */
export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)];
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Writes a viewport screenshot of `page` to docs/console/<name>.png. */
export async function screenshot(page, name) {
  fs.mkdirSync(DOCS_DIR, { recursive: true });
  const file = path.join(DOCS_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  return file;
}
