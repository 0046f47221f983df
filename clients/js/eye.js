/*
 * eye.js: The Eye's browser tracker. One file, no dependencies, no cookies.
 *
 *   <script src="https://EYE-HOST/v1/eye.js"></script>
 *   <script>eye.init({endpoint: 'https://EYE-HOST', key: 'eye_...'});</script>
 *
 * eye.init({endpoint, key}): start; sends a pageview now and on every SPA navigation.
 * eye.track(category, name, data): records an event; `data` gets {host, path} under it.
 * eye.flush(): sends what is queued now.
 * eye.dropped: how many events were dropped because the queue was full.
 *
 * Automatic events: `page interaction`/`pageview`; `page interaction`/`cta click` for clicks in
 * an element with data-eye-click="<name>"; `form interaction`/`submit` for form submissions,
 * with the field names only: values only where the form or the field has the attribute
 * data-eye-values, and never a password's (nor a file input's, which is a local path).
 *
 * Delivery: an event gets its id (a UUIDv7) when it is tracked and goes into a bounded queue in
 * localStorage. Batches are POSTed to {endpoint}/v1/events as text/plain JSON (a CORS simple
 * request: no preflight), and an event leaves the queue only once an answer says ACCEPTED or
 * DUPLICATE (or REJECTED, which is final). When the page is hidden or goes away, the queue is
 * also sent with navigator.sendBeacon, whose answer cannot be read: those events stay queued
 * until a later answer confirms them. Sending an event twice is harmless (the server keeps the
 * first copy of an id and answers DUPLICATE), so a reload, a closed or crashed tab or an
 * offline spell loses nothing and stores nothing twice.
 */
(function (window, document, location) {
  'use strict';
  if (window.eye) return; // loaded twice: the first one stays

  var QUEUE = 'eye:q'; // localStorage: the queue, shared by the origin's tabs
  var SESSION = 'eye:s'; // localStorage: {id, at}, the session and the time of its last event
  var MAX_QUEUE = 1000; // past it, the oldest events are dropped (and counted)
  var BATCH = 20; // this many queued events are sent at once ...
  var DEBOUNCE = 1000; // ... fewer, 1 s after the first of them
  var SEND_EVENTS = 100; // events in one request at most
  var BODY_BYTES = 60000; // one body at most: keepalive fetch and sendBeacon have 64 KiB in flight
  var SESSION_IDLE = 18e5; // 30 minutes without events: a new session

  var config; // {url, key}, from init
  var storage = 0; // localStorage, or 0 when it cannot be used (then all is in memory)
  var memory = []; // the queue, when there is no storage
  var memorySession; // the session, when there is no storage
  var timer = 0; // the pending flush
  var busy = 0; // the request in flight (its promise), or 0
  var until = 0; // no fetch before this time (Retry-After, or the backoff after a network error)
  var backoff = 0; // the current network backoff, ms
  var beaconed = {}; // the ids this page has beaconed already
  var lastPath = location.pathname; // the path and URL of the last pageview (SPA navigation)
  var lastHref = location.href;

  var eye = (window.eye = { dropped: 0, init: guard(init), track: guard(track), flush: flush });

  try {
    storage = window.localStorage;
  } catch (error) {}

  /** `fn`, unable to throw into the page. */
  function guard(fn) {
    return function (a, b, c) {
      try {
        return fn(a, b, c);
      } catch (error) {
        warn(error);
      }
    };
  }

  function warn(message, detail) {
    try {
      console.warn('eye:', message, detail || '');
    } catch (error) {}
  }

  var now = Date.now;
  var iso = () => new Date().toISOString();

  /** A UUIDv7: 48 bits of Unix time in ms, version 7, variant 0b10, the rest random. */
  function uuid7() {
    var bytes = crypto.getRandomValues(new Uint8Array(16));
    var time = now();
    var hex = '';
    for (var i = 5; i >= 0; i--) {
      bytes[i] = time % 256;
      time = Math.floor(time / 256);
    }
    bytes[6] = (bytes[6] & 15) | 112;
    bytes[8] = (bytes[8] & 63) | 128;
    for (i = 0; i < 16; i++) hex += (i == 4 || i == 6 || i == 8 || i == 10 ? '-' : '') + (bytes[i] + 256).toString(16).slice(1);
    return hex;
  }

  // The queue and the session live in localStorage, read afresh each time (other tabs of the
  // origin use them too); without storage (disabled, full), in memory.

  function read(name) {
    try {
      return JSON.parse(storage.getItem(name));
    } catch (error) {}
  }

  /** Stores `value` as JSON; when storage fails (full, disabled), goes on in memory. */
  function write(name, value) {
    try {
      storage && storage.setItem(name, JSON.stringify(value));
    } catch (error) {
      storage = 0;
    }
  }

  function load() {
    var queue = storage && read(QUEUE);
    return Array.isArray(queue) ? queue : storage ? [] : memory;
  }

  function save(queue) {
    var over = queue.length - MAX_QUEUE;
    if (over > 0) eye.dropped += queue.splice(0, over).length;
    write(QUEUE, (memory = queue));
  }

  /** The session id, kept while there are events at least every 30 minutes. */
  function session() {
    var at = now();
    var current = (storage && read(SESSION)) || memorySession;
    if (!(current && current.id && at - current.at < SESSION_IDLE)) current = { id: uuid7() };
    current.at = at;
    write(SESSION, (memorySession = current));
    return current.id;
  }

  function init(options) {
    if (config) return;
    if (!options || !options.endpoint || !options.key) return warn('init needs {endpoint, key}');
    config = { url: String(options.endpoint).replace(/\/+$/, '') + '/v1/events', key: options.key };
    pageview(document.referrer);

    // SPA navigation: a pageview when the path changes.
    var push = history.pushState;
    var afterPush = guard(navigated);
    history.pushState = function () {
      var result = push.apply(this, arguments);
      afterPush();
      return result;
    };
    listen(window, 'popstate', navigated);
    listen(document, 'click', clicked);
    listen(document, 'submit', submitted);
    // Leaving, or hidden (the last moment a mobile page is sure to get): beacon the queue.
    listen(window, 'pagehide', beacon);
    listen(document, 'visibilitychange', () => (document.visibilityState == 'hidden' ? beacon() : flush()));
    listen(window, 'online', () => {
      until = backoff = 0;
      flush();
    });
    // What an earlier page left unconfirmed (a reload, a closed or crashed tab) goes now.
    flush();
  }

  /** A capturing listener (the page's stopPropagation cannot hide its events), guarded. */
  function listen(target, type, handler) {
    target.addEventListener(type, guard(handler), true);
  }

  function pageview(referrer) {
    var data = {};
    if (document.title) data.title = document.title;
    if (referrer) data.referrer = referrer;
    track('page interaction', 'pageview', data);
  }

  /** After pushState or popstate: a pageview if the path changed, the last URL as referrer. */
  function navigated() {
    var referrer = lastHref;
    lastHref = location.href;
    if (location.pathname != lastPath) {
      lastPath = location.pathname;
      pageview(referrer);
    }
  }

  function clicked(event) {
    var target = event.target;
    var element = target.closest?.('[data-eye-click]');
    if (element) {
      track('page interaction', 'cta click', {
        element: element.getAttribute('data-eye-click') || element.id || element.tagName,
      });
    }
  }

  function submitted(event) {
    var form = event.target;
    var fields = {};
    var all = form.hasAttribute('data-eye-values');
    var id = form.getAttribute('id') || form.getAttribute('name');
    for (var field of form.elements) {
      var name = field.name;
      var type = field.type;
      if (!name || /^(submit|button|reset|image|fieldset)$/.test(type)) continue;
      if (!(name in fields)) fields[name] = null;
      // A value only where asked for; a checkbox or radio button's only when checked.
      if (
        (all || field.hasAttribute('data-eye-values')) &&
        !/^(password|file)$/.test(type) &&
        (!/^(checkbox|radio)$/.test(type) || field.checked)
      ) {
        fields[name] = field.value;
      }
    }
    var data = { form: fields };
    if (id) data.form_id = id;
    track('form interaction', 'submit', data);
  }

  function track(category, name, data) {
    var merged = { host: location.host, path: location.pathname };
    Object.assign(merged, data && typeof data == 'object' ? data : {});
    var event = {
      event_id: uuid7(),
      session_id: session(),
      category: category,
      name: name,
      // A copy, as JSON now: later changes to `data` do not leak in, and what cannot be
      // encoded (a cycle) fails here, not in every later save.
      data: JSON.parse(JSON.stringify(merged)),
      timestamp: iso(),
    };
    var queue = load();
    queue.push(event);
    save(queue);
    if (queue.length >= BATCH) flush();
    else timer = timer || setTimeout(flush, DEBOUNCE);
    return event.event_id;
  }

  var body = (events) => JSON.stringify({ key: config.key, sent_at: iso(), events: events });
  var bytes = (text) => new Blob([text]).size;

  /** `queue` cut into lists of events whose bodies are within SEND_EVENTS and BODY_BYTES (an
   *  event larger than that, alone). */
  function batches(queue) {
    var out = [];
    var events = [];
    var size = 0;
    queue.forEach((event) => {
      var cost = bytes(JSON.stringify(event)) + 1;
      if (events.length && (events.length == SEND_EVENTS || size + cost > BODY_BYTES)) {
        out.push(events);
        events = [];
        size = 0;
      }
      events.push(event);
      size += cost;
    });
    if (events.length) out.push(events);
    return out;
  }

  /** Sends the first batch of the queue, then the next, until it is empty or a retry waits. */
  function flush() {
    // Guarded itself: timers and promise callbacks call it too.
    try {
      clearTimeout(timer);
      timer = 0;
      if (until > now()) return (timer = setTimeout(flush, until - now()));
      var events = !busy && config && batches(load().slice(0, SEND_EVENTS))[0];
      if (!events) return;
      var text = body(events);
      // Final answers: the events they are for leave the queue.
      var done = (final) => save(load().filter((event) => !final.some((other) => other.event_id == event.event_id)));
      busy = fetch(config.url, {
        method: 'POST',
        body: text,
        keepalive: bytes(text) < 65536, // the request outlives the page
        credentials: 'omit',
        headers: { 'Content-Type': 'text/plain' },
      })
        .then((response) => {
          var status = response.status;
          if (response.ok) {
            return response.json().then((answer) => {
              var final = events.filter((event, i) => {
                var result = answer.results[i] || {};
                if (result.status == 'REJECTED') warn('event rejected: ' + result.reason, event);
                return /^(ACCEPTED|DUPLICATE|REJECTED)$/.test(result.status);
              });
              done(final);
              // An answer that settles nothing is retried later, not at once (no busy loop).
              final.length ? (backoff = 0) : retry();
            });
          }
          if (status == 429 || status == 503) {
            // Later, as the server says; the same events, the same ids.
            until = now() + (parseFloat(response.headers.get('Retry-After')) || 5) * 1e3;
            return;
          }
          if (status >= 500) return retry();
          // Any other refusal (400, 401, 403, 413, ...) is final for these events.
          return response
            .json()
            .catch(() => 0)
            .then((answer) => {
              warn('events refused: HTTP ' + status, answer?.error?.message);
              done(events);
            });
        })
        .catch(retry) // the network failed (or the answer was garbled): retry with a backoff
        .then(() => {
          busy = 0;
          if (load().length) flush(); // the rest, now or when `until` comes
        });
    } catch (error) {
      warn(error);
    }
  }

  /** Backs the next attempt off: about 1 s, doubling up to 30 s, with jitter. */
  function retry() {
    backoff = Math.min(3e4, backoff * 2 || 1e3);
    until = now() + backoff * (0.5 + Math.random() / 2);
  }

  /** What this page has not beaconed yet, by navigator.sendBeacon, within the keep-alive budget.
   *  The events stay queued until a fetch answer confirms them. */
  function beacon() {
    if (config && navigator.sendBeacon) {
      batches(load().filter((event) => !beaconed[event.event_id])).some((events) => {
        // false: over the budget; the rest waits for the next page.
        if (!navigator.sendBeacon(config.url, new Blob([body(events)], { type: 'text/plain' }))) return 1;
        events.forEach((event) => (beaconed[event.event_id] = 1));
      });
    }
  }
})(window, document, location);
