// The demo page's glue: shows taskNotifications' connection state and every event it gets.
(function () {
  'use strict';
  var tn = window.taskNotifications;
  var state = document.getElementById('state');
  var attempt = document.getElementById('attempt');
  var events = document.getElementById('events');
  var tasks = document.getElementById('tasks');

  function show(s, extra) {
    state.textContent = s;
    state.dataset.state = s;
    attempt.textContent = extra || '';
  }

  function record(type, data) {
    var li = document.createElement('li');
    li.className = 'event event-' + type;
    var t = document.createElement('span');
    t.className = 'type';
    t.textContent = type;
    li.appendChild(t);
    li.appendChild(document.createTextNode(JSON.stringify(data)));
    events.insertBefore(li, events.firstChild);
    while (events.children.length > 200) events.removeChild(events.lastChild);
  }

  tn.on('open', function () { show('open'); });
  tn.on('close', function (e) { show('closed', '(code ' + e.code + ')'); });
  tn.on('reconnecting', function (e) {
    show('reconnecting', '(attempt ' + e.attempt + ', in ' + e.delay + ' ms)');
  });
  // Waiting states with no event of their own: no network, page frozen, refused.
  tn.on('state', function (e) {
    if (e.state === 'offline' || e.state === 'suspended' || e.state === 'unauthorized') show(e.state);
  });
  tn.on('*', function (data) { record(data.type, data); });

  document.getElementById('subscribe').addEventListener('submit', function (e) {
    e.preventDefault();
    tn.subscribeTask(document.getElementById('task-id').value);
    tasks.textContent = 'subscribed: ' + tn.subscribedTasks().join(', ');
  });
})();
