// The Eye console: the live tail's stream (server-sent events), pause, and raw JSON on click.
// No framework, nothing fetched from elsewhere.
(function () {
  'use strict';
  var list = document.getElementById('tail');
  if (!list) return;
  var pause = document.getElementById('pause');
  var held = document.getElementById('held');
  var skipped = document.getElementById('skipped');
  var paused = false;
  var waiting = [];
  var shown = new Set();
  var MAX_SHOWN = 2000;

  function render(event) {
    if (shown.has(event.event_id)) return; // a reconnect re-sends a few
    shown.add(event.event_id);
    var item = document.createElement('li');
    item.className = 'event';
    item.dataset.eventId = event.event_id;
    var line = document.createElement('span');
    line.textContent = event.stored_at + '  ' + event.category + ' / ' + event.name + '  session ' + event.session_id;
    item.appendChild(line);
    var raw = document.createElement('pre');
    raw.className = 'raw';
    raw.hidden = true;
    raw.textContent = JSON.stringify(event, null, 2);
    item.appendChild(raw);
    item.addEventListener('click', function () { raw.hidden = !raw.hidden; });
    list.insertBefore(item, list.firstChild);
    while (list.children.length > MAX_SHOWN) list.removeChild(list.lastChild);
  }

  pause.addEventListener('click', function () {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    if (!paused) {
      waiting.forEach(render);
      waiting = [];
    }
    held.textContent = '';
  });

  var source = new EventSource(list.dataset.src);
  source.addEventListener('stored', function (message) {
    var event = JSON.parse(message.data);
    if (paused) {
      waiting.push(event);
      held.textContent = waiting.length + ' new while paused';
    } else {
      render(event);
    }
  });
  source.addEventListener('skipped', function (message) {
    skipped.textContent = String((parseInt(skipped.textContent, 10) || 0) + (parseInt(message.data, 10) || 0)) + (message.data.endsWith('+') ? '+' : '');
  });
})();
