// What the browser tests run against: the real pipeline (`eye dev`: ingest with its HTTP
// endpoint, validator, writer, and its own PostgreSQL, in a fresh temporary directory), a page
// server (node:http) for the test pages, and headless Chromium (playwright-core, the system's
// /usr/bin/chromium). Nothing is mocked.
//
// The `eye` binary is $EYE_BIN, else <repo root>/target/debug/eye (like clients/python/tests).

import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');
const run = promisify(execFile);

export const JS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = path.resolve(JS_DIR, '..', '..');
export const MIN_JS = path.join(JS_DIR, 'eye.min.js');

const KEY_LINE = /^eye_[0-9a-f]{64}$/;
const STARTUP_TIMEOUT_MS = 120_000;

export function eyeBin() {
  const bin = process.env.EYE_BIN || path.join(REPO_ROOT, 'target', 'debug', 'eye');
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(`the eye binary ${bin} does not exist or is not executable: build it (cargo build) or point EYE_BIN at one`);
  }
  return bin;
}

/** Polls `condition` (sync or async) until it returns something truthy; returns that. */
export async function waitUntil(condition, { timeout = 30_000, interval = 200, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await condition();
    if (last) return last;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeout / 1000} s waiting for ${what} (last: ${JSON.stringify(last)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

export async function psql(databaseUrl, sql) {
  const { stdout } = await run('psql', [databaseUrl, '-At', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    timeout: 60_000,
  });
  return stdout.trim();
}

/** A TCP port nothing listens on (bound and released at once). */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function pgCtl() {
  for (const dir of (process.env.PATH || '').split(':')) {
    const candidate = path.join(dir, 'pg_ctl');
    if (fs.existsSync(candidate)) return candidate;
  }
  const base = '/usr/lib/postgresql';
  const versions = fs.existsSync(base) ? fs.readdirSync(base).sort((a, b) => Number(a) - Number(b)) : [];
  for (const version of versions.reverse()) {
    const candidate = path.join(base, version, 'bin', 'pg_ctl');
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new Error('pg_ctl not found on PATH nor under /usr/lib/postgresql/*/bin');
}

/** Stops the PostgreSQL server of `dataDir` (fast mode), as its owner when we are root. */
async function pgCtlStop(dataDir) {
  let command = [pgCtl(), '-D', dataDir, 'stop', '-m', 'fast', '-w', '-t', '60'];
  if (process.getuid && process.getuid() === 0) {
    const uid = fs.statSync(dataDir).uid;
    const { stdout } = await run('id', ['-nu', String(uid)]);
    command = ['runuser', '-u', stdout.trim(), '--', ...command];
  }
  try {
    await run(command[0], command.slice(1), { cwd: '/', timeout: 90_000 });
  } catch (error) {
    if (!String(error.stderr || '').includes('PID file')) throw error;
  }
}

/** One `eye dev` in its own directory: `await EyeDev.start()`, then `await dev.stop()`. */
export class EyeDev {
  /** `env`: more settings for eye dev, e.g. {EYE__INGEST__PUBLISHABLE_BURST: '50'}. */
  static async start(env = {}) {
    const dev = new this(); // a subclass starts as itself (see ready())
    try {
      await dev.#start(env);
    } catch (error) {
      await dev.stop().catch(() => {});
      throw error;
    }
    return dev;
  }

  async #start(extra) {
    const bin = eyeBin();
    this.bin = bin;
    this.workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'eye-js-'));
    // PostgreSQL runs as `postgres` when we are root: let it into the directory.
    fs.chmodSync(this.workdir, 0o755);
    const env = { ...process.env };
    for (const name of ['DATABASE_URL', 'EYE_ENDPOINT', 'EYE_API_KEY', 'EYE_HTTP_ENDPOINT', 'EYE_QUERY_ENDPOINT']) {
      delete env[name];
    }
    Object.assign(env, {
      EYE__INGEST__PORT: '0',
      EYE__QUERY__PORT: '0',
      EYE__QUERY__HTTP_PORT: '0',
      EYE__METRICS__PORT: '0',
      EYE__INGEST__HTTP_PORT: '0',
      EYE__TELEMETRY__LOG_FORMAT: 'json',
      ...extra,
    });
    this.stderrPath = path.join(this.workdir, 'eye-dev.stderr');
    const stderr = fs.openSync(this.stderrPath, 'w');
    this.process = spawn(bin, ['dev'], {
      cwd: this.workdir,
      env,
      stdio: ['ignore', 'pipe', stderr],
      detached: true, // its own process group, like start_new_session
    });
    fs.closeSync(stderr);
    this.exited = new Promise((resolve) => this.process.on('exit', (code, signal) => resolve({ code, signal })));
    const banner = [];
    const lines = readline.createInterface({ input: this.process.stdout });
    const keyLine = new Promise((resolve) => {
      lines.on('line', (line) => {
        if (banner.length < 10_000) banner.push(line);
        if (KEY_LINE.test(line)) resolve(line);
      });
      lines.on('close', () => resolve(null));
    });
    const timeout = new Promise((resolve) => setTimeout(resolve, STARTUP_TIMEOUT_MS, null).unref());
    const key = await Promise.race([keyLine, timeout]);
    if (!key) {
      throw new Error(
        `eye dev printed no API key within ${STARTUP_TIMEOUT_MS / 1000} s; stdout:\n${banner.join('\n')}\nstderr:\n${this.stderrTail()}`
      );
    }
    this.banner = banner;
    this.devKey = key;
    // The database first: stop() needs to know where its data lives whatever fails next.
    this.databaseUrl = this.exported('DATABASE_URL');
    // Ask the server where its data lives rather than guess (it may use a fallback dir).
    this.dataDir = await psql(this.databaseUrl, 'SHOW data_directory');
    this.ingestEndpoint = this.field('ingest endpoint');
    this.endpoint = this.field('http endpoint').replace(/\/+$/, '');
    await this.ready();
  }

  /** The value of the banner's `  label:  value` line. */
  field(label) {
    for (const line of this.banner) {
      const match = line.match(new RegExp(`^\\s+${label}:\\s+(\\S+)`));
      if (match) return match[1];
    }
    throw new Error(`no \`${label}:\` line in the eye dev banner:\n${this.banner.join('\n')}`);
  }

  /** The value of the banner's `export NAME='value'` line. */
  exported(name) {
    for (const line of this.banner) {
      const match = line.match(new RegExp(`^export ${name}='(.*)'$`));
      if (match) return match[1].replaceAll("'\\''", "'");
    }
    throw new Error(`no \`export ${name}=\` line in the eye dev banner:\n${this.banner.join('\n')}`);
  }

  /** Waits until what the tests use answers: HTTP ingest's /healthz (subclasses add theirs). */
  async ready() {
    await waitUntil(
      async () => {
        try {
          return (await fetch(`${this.endpoint}/healthz`)).status === 200;
        } catch {
          return false;
        }
      },
      { timeout: 60_000, what: `GET ${this.endpoint}/healthz to answer 200` }
    );
  }

  stderrTail(lines = 30) {
    try {
      return fs.readFileSync(this.stderrPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no stderr)';
    }
  }

  /** Runs an `eye` admin command against this pipeline's database; returns its stdout. */
  async eye(args) {
    const { stdout } = await run(this.bin, args, {
      cwd: this.workdir,
      env: { ...process.env, DATABASE_URL: this.databaseUrl },
      timeout: 120_000,
    });
    return stdout;
  }

  /** A publishable key of application `dev`, usable from `origins` only. */
  async publishableKey(...origins) {
    const out = await this.eye(['apps', 'key', 'dev', '--publishable', ...origins.flatMap((o) => ['--origin', o])]);
    const key = out.trim().split('\n').pop().trim();
    if (!key) throw new Error(`no key on the last line of: ${out}`);
    return key;
  }

  sql(query) {
    return psql(this.databaseUrl, query);
  }

  /** [rows, distinct event ids] in `events` matching the SQL condition `where`. */
  async count(where) {
    const [rows, distinct] = (await this.sql(`SELECT count(*), count(DISTINCT event_id) FROM events WHERE ${where}`)).split('|');
    return [Number(rows), Number(distinct)];
  }

  /** Waits until `expected` rows match `where`, then checks there are not more, nor an id twice. */
  async waitStored(where, expected, timeout = 30_000) {
    await waitUntil(async () => (await this.count(where))[0] >= expected, {
      timeout,
      what: `${expected} stored events where ${where}`,
    });
    const [rows, distinct] = await this.count(where);
    if (rows !== expected) throw new Error(`${rows} rows stored where ${where}, expected ${expected}`);
    if (distinct !== rows) throw new Error(`${rows - distinct} event ids stored twice where ${where}`);
  }

  /** The rows matching `where`, as objects (one JSON document per row). */
  async rows(where) {
    const out = await this.sql(
      `SELECT row_to_json(e)::text FROM (SELECT event_id, session_id, category, name, data, occurred_at FROM events WHERE ${where} ORDER BY occurred_at, event_id) e`
    );
    return out ? out.split('\n').map((line) => JSON.parse(line)) : [];
  }

  /** SIGTERM (eye dev drains), then its PostgreSQL, then the directory. */
  async stop() {
    const errors = [];
    if (this.process && this.process.exitCode === null && this.process.signalCode === null) {
      this.process.kill('SIGTERM');
      const exited = await Promise.race([this.exited, new Promise((resolve) => setTimeout(resolve, 30_000, null))]);
      if (!exited) {
        errors.push('eye dev did not exit within 30 s of SIGTERM; killed');
        this.process.kill('SIGKILL');
        await this.exited;
      } else if (exited.code !== 0 && exited.code !== null) {
        errors.push(`eye dev exited with ${exited.code} after SIGTERM; stderr:\n${this.stderrTail()}`);
      }
    }
    let dataDir = this.dataDir;
    if (!dataDir && this.workdir) {
      // It died before we asked; look where it would have put the cluster.
      const candidate = path.join(this.workdir, '.eye', 'pg', 'data');
      if (fs.existsSync(path.join(candidate, 'postmaster.pid'))) dataDir = candidate;
    }
    if (dataDir) {
      try {
        await pgCtlStop(dataDir);
      } catch (error) {
        errors.push(`could not stop postgres: ${error.message}`);
      }
      const base = path.dirname(dataDir);
      if (path.basename(base).startsWith('eye-pg-')) fs.rmSync(base, { recursive: true, force: true });
    }
    if (this.workdir) fs.rmSync(this.workdir, { recursive: true, force: true });
    if (errors.length) throw new Error(errors.join('; '));
  }
}

/** The test page: the tracker (the current eye.min.js), eye.init, a CTA button, two forms and
 *  an SPA link. `?endpoint=` and `?key=` override what the page sends to and with. */
function page({ endpoint, key }) {
  return `<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>Eye test page</title>
<link rel="icon" href="data:,">
<script src="/eye.min.js"></script>
<script>
  eye.init({
    endpoint: new URLSearchParams(location.search).get('endpoint') || ${JSON.stringify(endpoint)},
    key: new URLSearchParams(location.search).get('key') || ${JSON.stringify(key)},
  });
</script>
</head>
<body>
<button id="cta" data-eye-click="signup cta"><span id="cta-label">Sign up</span></button>
<form id="signup" onsubmit="event.preventDefault()">
  <input name="email" value="visitor@example.com" data-eye-values>
  <input name="nickname" value="secret-nickname">
  <input type="password" name="password" value="secret-password" data-eye-values>
  <input type="checkbox" name="newsletter" value="yes" checked>
  <button type="submit" name="go">Go</button>
</form>
<form name="preferences" data-eye-values onsubmit="event.preventDefault()">
  <input name="city" value="Lisbon">
  <select name="plan"><option value="free">Free</option><option value="pro" selected>Pro</option></select>
  <input type="password" name="pin" value="secret-pin">
  <button type="submit">Save</button>
</form>
<a id="spa" href="next" onclick="event.preventDefault(); history.pushState({}, '', this.getAttribute('href'))">Next</a>
</body>
</html>
`;
}

/** Serves the test page at every path (so SPA paths reload too) and the tracker at /eye.min.js,
 *  on 127.0.0.1 (reachable as `localhost` too: another origin, same server). */
export class PageServer {
  static async start(options) {
    const server = new PageServer();
    server.options = options;
    server.http = http.createServer((request, response) => {
      const url = new URL(request.url, 'http://x');
      if (url.pathname === '/eye.min.js') {
        response.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'no-store' });
        response.end(fs.readFileSync(MIN_JS));
      } else {
        response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
        response.end(page(server.options));
      }
    });
    await new Promise((resolve) => server.http.listen(0, '127.0.0.1', resolve));
    server.port = server.http.address().port;
    server.origin = `http://127.0.0.1:${server.port}`;
    return server;
  }

  close() {
    this.http.closeAllConnections();
    return new Promise((resolve) => this.http.close(resolve));
  }
}

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}
