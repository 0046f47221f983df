// The shipped build: eye.min.js is exactly what build.sh makes from eye.js now (so it cannot go
// stale), and it stays within 2 KiB gzipped (gzip -9).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { fileURLToPath } from 'node:url';

const JS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MIN_JS = path.join(JS_DIR, 'eye.min.js');
const GZIP_BUDGET = 2048;

test('eye.min.js is what build.sh makes from eye.js now', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eye-js-build-'));
  try {
    const fresh = path.join(dir, 'eye.min.js');
    execFileSync('bash', [path.join(JS_DIR, 'build.sh'), fresh], { stdio: ['ignore', 'inherit', 'inherit'] });
    assert.ok(
      fs.readFileSync(fresh).equals(fs.readFileSync(MIN_JS)),
      'clients/js/eye.min.js is stale: run clients/js/build.sh (and rebuild the eye binary, which embeds it)'
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test(`eye.min.js is at most ${GZIP_BUDGET} bytes with gzip -9`, () => {
  // From standard input: no file name in the gzip header, as a server would send it.
  const gzipped = execFileSync('gzip', ['-9'], { input: fs.readFileSync(MIN_JS) });
  const raw = fs.statSync(MIN_JS).size;
  console.log(`eye.min.js: ${raw} bytes, ${gzipped.length} bytes gzip -9 (budget ${GZIP_BUDGET})`);
  assert.ok(gzipped.length <= GZIP_BUDGET, `eye.min.js is ${gzipped.length} bytes gzipped, over ${GZIP_BUDGET}`);
});

test('eye.js is one dependency-free script that defines window.eye', () => {
  const source = fs.readFileSync(path.join(JS_DIR, 'eye.js'), 'utf8');
  assert.doesNotMatch(source, /\b(require|import)\s*\(|^\s*import\s/m, 'eye.js must not load anything');
  assert.doesNotMatch(source, /document\.cookie/, 'eye.js must not use cookies');
  // Runs in a bare global with just what it touches at load time, and throws nothing.
  const window = {};
  new Function('window', 'document', 'location', 'history', fs.readFileSync(MIN_JS, 'utf8'))(
    window,
    {},
    { pathname: '/', href: 'http://example.test/', host: 'example.test' },
    {}
  );
  assert.deepEqual(Object.keys(window.eye).sort(), ['dropped', 'flush', 'init', 'track']);
});
