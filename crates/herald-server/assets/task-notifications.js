/*!
 * task-notifications.js — Herald's browser client for the /ws/tasks/ WebSocket route.
 *
 * A plain script (ES2017, no build step, no dependencies). Include it on every page:
 *
 *   <script src="/static/herald/task-notifications.js"></script>
 *
 * or import it as an ES module (task-notifications.mjs next to this file re-exports the same
 * object; a page may do both and still gets one client and one socket):
 *
 *   import taskNotifications from '/static/herald/task-notifications.mjs';
 *
 * It defines one global, `taskNotifications`, which connects to /ws/tasks/ on page load
 * (ws:// or wss:// from the page's location), reconnects with capped exponential backoff and
 * jitter, resubscribes the page's tasks after every reconnect, and shows the user guide's UI:
 *
 *   user_message       -> info toast
 *   user_notification  -> success / error / warning / info toast (by notification_type)
 *   user_file          -> modal with file name, size, Download (new tab) and Close
 *   task_complete      -> success toast, task_error -> error toast (subscribed tasks only)
 *
 * Keeping the link honest (see CLOSE_POLICY below and the guide's "Connection lifecycle"):
 *   - heartbeat: after `heartbeatInterval` ms without a frame it sends {"action": "ping"}
 *     (Herald answers {"type": "pong"}); no frame within `heartbeatTimeout` ms means the link
 *     is dead (NAT timeout, suspended laptop): it drops the socket and reconnects;
 *   - close codes: each has a retry meaning (retry / keep backing off / stop until re-login);
 *   - a refused handshake (HTTP 403: no valid session, foreign Origin) reaches scripts as a
 *     plain 1006. After each failed handshake while the browser is online the client asks
 *     Herald for this script (HEAD `probeUrl`): a 2xx means the server is up and refused
 *     the socket. `maxRefusals` such refusals in a row -> 'unauthorized' event, no more tries
 *     until connect(), or the user coming back to the tab (focus / visible / online);
 *   - page lifecycle: offline -> close and wait; online / visible / focus / pageshow / resume
 *     -> reconnect now (or check an open link with a ping); freeze / pagehide -> close.
 *
 * Behind a proxy that breaks WebSockets (option `transport`, 'auto' by default): after
 * `sseAfter` failed WebSocket handshakes in a row, the client asks for the same stream as
 * Server-Sent Events (`ssePath`, /sse/tasks/); if that answers, it switches to an EventSource
 * for the rest of the page's life and emits 'transport'. The page gets the same events; the
 * stream is one-way, so task (un)subscriptions reopen it with the tasks in its URL, `send()`
 * returns false, and there is no heartbeat ping (the server's keep-alive comments keep proxies
 * from cutting it). 'sse' uses the event stream only, 'websocket' never falls back.
 *
 * Nothing missed (see RECOVERY below; option `recover`, on by default): Herald (run with
 * `herald serve --history on`) records the
 * user's and the tasks' messages with a position; the client keeps the last position per group
 * (in sessionStorage too, so a reload or the next page in the tab resumes) and, on every
 * connect, asks Herald to replay what came in between, in send order and never twice. When
 * the history no longer covers the gap (Redis restarted) it emits 'resync': refetch the state.
 *
 * API
 *   taskNotifications.on(type | '*', fn)      listen ('*' = every server message)
 *   taskNotifications.off(type | '*', fn)     (without fn: remove every handler of type)
 *   taskNotifications.on('open' | 'close' | 'reconnecting' | 'unauthorized' | 'state', fn)
 *                                             connection lifecycle, not sent to '*'; 'close'
 *                                             fires for every socket that closes, failed
 *                                             reconnect attempts included
 *   taskNotifications.on('resync', fn)        {group, recovered: false, epoch, offset}: messages
 *                                             of `group` were missed for good; refetch state
 *   taskNotifications.on('resumed', fn)       {group, recovered, epoch, offset}: Herald's answer
 *                                             per group to a resume (not sent to '*')
 *   taskNotifications.subscribeTask(id) / unsubscribeTask(id)    task_{id} progress
 *   taskNotifications.send(obj)               send a JSON frame if open; returns true if sent
 *   taskNotifications.connect() / close()     manual control (close() stops reconnecting)
 *   taskNotifications.ws                      the current WebSocket (readyState 1 = open), or
 *                                             an object shaped like one over an EventSource
 *   taskNotifications.transport               'websocket' | 'sse' (the current or next link)
 *   taskNotifications.on('transport', fn)     {transport: 'sse'}: the client fell back
 *   taskNotifications.state                   'idle' | 'connecting' | 'open' | 'reconnecting' |
 *                                             'closed' | 'offline' | 'suspended' | 'unauthorized'
 *   taskNotifications.configure(options)      see DEFAULTS below
 *   taskNotifications.closePolicy(code)       'retry' | 'backoff' | 'reauth' | 'stop'
 *   taskNotifications.formatFileSize(bytes)   "153.1 KB"
 *
 * Options can also be set before the script loads: `window.taskNotificationsConfig = {...}`.
 * Map the UI onto the host app's own functions, e.g.
 *
 *   taskNotifications.configure({ui: {
 *     info: (msg, title) => UiB.MsgInfo(msg, title),
 *     success: (msg, title) => UiB.MsgSuccess(msg, title),
 *     error: (msg, title) => UiB.MsgError(msg, title),
 *     warning: (msg, title) => UiB.MsgWarning(msg, title),
 *     file: (f) => UiB.MsgSwall(f.message, f.fileName + ' (' + f.sizeText + ')', f.url),
 *   }});
 *
 * or turn it off with `configure({ui: false})`. Message text is only ever inserted with
 * textContent, and a file URL is only linked if it is http(s) or relative.
 *
 * Types: task-notifications.d.ts. Package: package.json in this directory.
 */
(function (global) {
  'use strict';

  if (!global || (global.taskNotifications && global.taskNotifications.__herald)) {
    return; // included twice (script tag and module import): keep the first instance
  }

  var DEFAULTS = {
    // Full ws:// or wss:// URL; default: same host as the page, `path` below.
    url: null,
    path: '/ws/tasks/',
    // Connect on DOMContentLoaded. Set false (before load) to call connect() yourself.
    autoConnect: true,
    // Reconnect delays: min(maxDelay, initialDelay * 2^attempt), then "equal jitter":
    // half fixed, half random, so a restarted server is not hit by every tab at once.
    reconnect: true,
    initialDelay: 1000,
    maxDelay: 30000,
    // A handshake still pending after this many ms is given up (a server that accepts TCP
    // but never answers, e.g. a stopped process) and retried with backoff. 0 = never.
    connectTimeout: 10000,
    // Ping after this many ms without any frame from the server (0 = no heartbeat), and drop
    // the link if no frame arrives within heartbeatTimeout ms of the ping. A dead link is
    // noticed within heartbeatInterval + heartbeatTimeout (30 s) instead of TCP's minutes.
    heartbeatInterval: 20000,
    heartbeatTimeout: 10000,
    // Refused-handshake detection: after a failed handshake while online, HEAD this URL
    // (default: this script on the socket's host, which Herald always serves, with CORS). A
    // 2xx answer means the server is up and refused the socket; `maxRefusals` in a row ->
    // 'unauthorized'. It must be same-origin or allow CORS. false = never conclude that,
    // retry with backoff forever.
    probeUrl: null,
    maxRefusals: 3,
    // Toasts disappear after this many milliseconds (0 = stay until clicked).
    toastDuration: 5000,
    // Built-in UI, or an object of replacements ({info, success, error, warning, file}), or false.
    ui: {},
    // Nonce for the injected <style> element under a strict Content-Security-Policy.
    styleNonce: null,
    // console.log connection changes ("WebSocket connected"), as the guide's troubleshooting expects.
    log: true,
    // Missed-message recovery (see RECOVERY below): connect with ?recover=1 and resume from the
    // last position of each group. false = the plain protocol (nothing replayed after a drop).
    recover: true,
    // sessionStorage key for the positions, so a reload or the next page of the site in the
    // same tab resumes too. null = derived from the socket URL; false = memory only.
    storageKey: null,
    // 'auto': WebSocket, and Server-Sent Events after `sseAfter` WebSocket handshakes failed in
    // a row while the event stream answers. 'websocket': never fall back. 'sse': event stream only.
    transport: 'auto',
    // Full http(s):// URL of the event stream; default: the socket's host, `ssePath` below.
    sseUrl: null,
    ssePath: '/sse/tasks/',
    sseAfter: 2,
  };

  // What each close code means for reconnecting. Codes Herald sends:
  //   1000 normal (a consumer closed; websocket_timeout)      retry
  //   1001 going away (server shutdown or restart)            retry
  //   1006 abnormal (network drop, missed protocol ping, or   retry; before open it is a
  //        a handshake refused with an HTTP status)           failed handshake (see probeUrl)
  //   1008 inbound rate limit exceeded                        backoff
  //   1009 frame or message too big                           backoff
  //   1011 server or consumer error                           backoff
  //   1013 try again later (Redis or the session DB down)     backoff
  //   4008 slow consumer (its outbound queue overflowed)      backoff
  // Codes an application consumer may send after accept (Channels: self.close(code=4401)):
  //   4401 the session ended: stop, 'unauthorized', retry after re-login   reauth
  //   4403 forbidden: stop for good (until connect())                      stop
  // The client's own code for a link it gave up on (CLOSE_STALE, 4000): retry.
  // 'retry': reconnect with backoff; the backoff restarts if the socket had been open at least
  // STABLE_MS. 'backoff': reconnect, and the backoff keeps growing (the server asked for
  // fewer attempts). Any other code: 'backoff'.
  var CLOSE_POLICY = {
    1000: 'retry',
    1001: 'retry',
    1006: 'retry',
    1008: 'backoff',
    1009: 'backoff',
    1011: 'backoff',
    1013: 'backoff',
    4008: 'backoff',
    4401: 'reauth',
    4403: 'stop',
    4000: 'retry', // CLOSE_STALE: the client gave up on a silent link
  };
  // Code the client closes a silent link with (heartbeat or connect timeout) and reports in
  // its 'close' event; browsers only let scripts send 1000 or 3000-4999.
  var CLOSE_STALE = 4000;
  // A socket closed after being open this long was really served: the backoff restarts.
  var STABLE_MS = 5000;
  // How long the refusal probe may take before it counts as "server unreachable".
  var PROBE_TIMEOUT_MS = 5000;
  var LIFECYCLE = {
    open: true,
    close: true,
    reconnecting: true,
    unauthorized: true,
    state: true,
    resumed: true,
    resync: true,
    transport: true,
  };
  var TOAST_KINDS = ['success', 'error', 'warning', 'info'];

  var options = Object.assign({}, DEFAULTS, global.taskNotificationsConfig || {});
  var handlers = Object.create(null);
  var tasks = new Set();
  var attempt = 0;
  var timer = null;
  // close() was called: nothing reconnects until connect().
  var stopped = false;
  // connect() or the automatic start ran: lifecycle events may reconnect.
  var started = false;
  // Why the client waits without a timer: null, 'offline', 'suspended' or 'unauthorized'.
  var paused = null;
  // Policy of the last close: a wake-up does not cut short a wait the server asked for.
  var lastPolicy = 'retry';
  // Consecutive handshakes refused by a reachable server.
  var refusals = 0;
  // Bumped by every open(): a probe answer for an older attempt is ignored.
  var generation = 0;
  // Per-socket timers: connect timeout, next heartbeat ping, heartbeat deadline.
  var connectTimer = null;
  var pingTimer = null;
  var deadlineTimer = null;
  // Pings this client sent whose pong has not come back: those pongs are not emitted.
  var pendingPings = 0;
  // WebSocket handshakes that failed in a row, and whether the client fell back to SSE.
  var wsFailures = 0;
  var fellBack = false;
  // The event stream answered the fallback's probe with a refusal: not asked again until
  // connect() (a refused login or Origin would refuse it on every attempt).
  var sseRefused = false;
  // A reopen of the event stream is due (its URL carries the subscriptions).
  var reopenTimer = null;

  // --- RECOVERY ----------------------------------------------------------------------------
  // With `recover` on, the client connects to /ws/tasks/?recover=1. Herald then tags every
  // message of a recorded group (user_* and task_*) with a last key
  //   "herald": {"group": "user_alice", "epoch": "...", "offset": "1764489000123-0"}
  // which the client strips before any handler sees the message, keeping the last {epoch,
  // offset} per group. On every open it sends one
  //   {"action": "resume", "groups": {"user_alice": {epoch, offset}, "task_42": {...}, ...}}
  // naming the user group (learnt from earlier frames) and the tasks the page is subscribed to.
  // Herald joins the groups (the user group only now), replays what each missed in send order,
  // then answers each group with {"type": "herald.resumed", group, recovered, epoch, offset}.
  // recovered: false means the gap is lost (Redis restarted, history trimmed): the client
  // emits 'resync' so the page refetches its state. A task subscribed while open is sent as
  // {"action": "subscribe", task_id, since} (since: the task's position, if the tab has one).
  // Positions live in sessionStorage (per origin and per tab) under a key made of the socket
  // URL: every page of the site in one tab shares them, so a reload or the next page shows what
  // came in between; another tab has its own socket and its own positions.
  var positions = Object.create(null);
  // Groups whose position went out in the current socket's resume or subscribe: only a gap
  // the client asked to fill can be lost ('resync'); a fresh page has nothing to refetch.
  var asked = Object.create(null);
  // The socket sent `resume` and no herald.resumed has come yet (its first is the user group's).
  var resumePending = false;
  // The current socket resumes (false after a server answered resume with an error).
  var resuming = false;
  var resumeRetried = false;
  var userGroup = null;
  // sessionStorage is read at the first connect, after the page's configure() calls.
  var positionsLoaded = false;
  // Task group names Herald accepts in a resume (others go as subscribe frames and get the
  // server's error reply there, as before).
  var GROUP_NAME = /^task_[A-Za-z0-9_.\-]{1,94}$/;
  // Task positions kept beyond the subscribed ones, so the storage stays small.
  var MAX_KEPT_POSITIONS = 50;

  function log() {
    if (options.log && global.console) {
      global.console.log.apply(global.console, ['[herald]'].concat(Array.prototype.slice.call(arguments)));
    }
  }

  function socketUrl() {
    if (options.url) return options.url;
    var loc = global.location;
    var scheme = loc.protocol === 'https:' ? 'wss://' : 'ws://';
    return scheme + loc.host + options.path;
  }

  /** The socket URL with `recover=1` added when recovery is on. */
  function connectUrl() {
    var url = socketUrl();
    if (!options.recover) return url;
    return url + (url.indexOf('?') >= 0 ? '&' : '?') + 'recover=1';
  }

  function useSse() {
    return options.transport === 'sse' || (options.transport !== 'websocket' && fellBack);
  }

  /** The event stream's URL without parameters. */
  function sseUrl() {
    if (options.sseUrl) return options.sseUrl;
    var u = new URL(socketUrl(), global.location ? global.location.href : undefined);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    u.pathname = options.ssePath;
    u.search = '';
    u.hash = '';
    return u.href;
  }

  /**
   * The event stream's URL: what a WebSocket would send after opening goes in its parameters.
   * Recovering: `recover=1` and the positions as `last_event_id` (the resume's `groups`);
   * otherwise one `task=` per subscribed task.
   */
  function sseConnectUrl() {
    var params = [];
    if (options.recover) {
      params.push('recover=1');
      params.push('last_event_id=' + encodeURIComponent(JSON.stringify(resumeGroups(false))));
    } else {
      tasks.forEach(function (id) {
        params.push('task=' + encodeURIComponent(id));
      });
    }
    var url = sseUrl();
    return params.length ? url + (url.indexOf('?') >= 0 ? '&' : '?') + params.join('&') : url;
  }

  /**
   * An EventSource dressed as a WebSocket (readyState, onopen/onmessage/onclose, close()), so
   * the rest of the client runs unchanged. Herald ends the stream with an `event: close`
   * carrying the WebSocket close code; the client, not EventSource, then reconnects, with
   * its backoff and the positions in the new URL.
   */
  function SseSocket(url) {
    var self = this;
    self.url = url;
    self.readyState = 0;
    self.__sse = true;
    self.onopen = self.onmessage = self.onclose = self.onerror = null;
    var closeCode = null;
    var es = new global.EventSource(url, { withCredentials: true });
    self._es = es;
    es.onopen = function () {
      if (self.readyState !== 0) return;
      self.readyState = 1;
      if (self.onopen) self.onopen({});
    };
    es.onmessage = function (event) {
      if (self.readyState === 1 && self.onmessage) self.onmessage({ data: event.data });
    };
    es.addEventListener('close', function (event) {
      try {
        closeCode = JSON.parse(event.data).code;
      } catch (err) {
        closeCode = null;
      }
    });
    es.onerror = function () {
      // The stream ended (after Herald's close event) or failed (an error status, a cut).
      self._finish(closeCode || 1006, closeCode ? '' : 'event stream failed', !!closeCode);
    };
  }
  SseSocket.prototype.send = function () {
    return false;
  };
  SseSocket.prototype.close = function (code, reason) {
    this._finish(code || 1000, reason || '', true);
  };
  SseSocket.prototype._finish = function (code, reason, wasClean) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this._es.close();
    var self = this;
    // Asynchronous, as a WebSocket's close event.
    setTimeout(function () {
      if (self.onclose) self.onclose({ code: code, reason: reason, wasClean: wasClean });
    }, 0);
  };

  /** Reopens an event stream soon, with the current subscriptions in its URL. */
  function reopenStream() {
    var ws = api.ws;
    if (!ws || !ws.__sse || reopenTimer !== null) return;
    reopenTimer = setTimeout(function () {
      reopenTimer = null;
      var current = api.ws;
      if (!current || !current.__sse || current.readyState > 1) return;
      current.__herald = null;
      current.onopen = current.onmessage = current.onclose = current.onerror = null;
      current.close(1000);
      api.ws = null;
      clearSocketTimers();
      open();
    }, 0);
  }

  /**
   * Resolves true if the event stream answers (200, text/event-stream): the server would take
   * this page over SSE, so the failing WebSockets are the network's doing.
   */
  function sseAnswers() {
    if (typeof global.fetch !== 'function' || typeof global.EventSource !== 'function') {
      return Promise.resolve(false);
    }
    var abort = typeof AbortController === 'function' ? new AbortController() : null;
    var timeout = setTimeout(function () {
      if (abort) abort.abort();
    }, PROBE_TIMEOUT_MS);
    return global
      .fetch(sseUrl(), {
        cache: 'no-store',
        credentials: 'include',
        signal: abort ? abort.signal : undefined,
      })
      .then(
        function (resp) {
          var type = resp.headers.get('content-type') || '';
          // Only the headers were needed: end the stream now.
          if (abort) abort.abort();
          if (!resp.ok) sseRefused = true;
          return resp.ok && type.indexOf('text/event-stream') === 0;
        },
        function () {
          return false;
        }
      )
      .then(function (ok) {
        clearTimeout(timeout);
        return ok;
      });
  }

  function storage() {
    if (options.storageKey === false) return null;
    try {
      return global.sessionStorage || null;
    } catch (err) {
      return null; // storage disabled (sandboxed frame, privacy settings): memory only
    }
  }

  function storageKey() {
    return options.storageKey || 'herald.positions ' + socketUrl();
  }

  function isPosition(p) {
    return !!p && typeof p.epoch === 'string' && typeof p.offset === 'string';
  }

  function loadPositions() {
    var store = storage();
    if (!store) return;
    try {
      var saved = JSON.parse(store.getItem(storageKey()) || 'null');
      if (!saved || typeof saved !== 'object') return;
      if (typeof saved.user === 'string') userGroup = saved.user;
      var groups = saved.groups || {};
      Object.keys(groups).forEach(function (group) {
        if (isPosition(groups[group]) && !positions[group]) {
          positions[group] = { epoch: groups[group].epoch, offset: groups[group].offset };
        }
      });
    } catch (err) {
      // unreadable: start without positions
    }
  }

  function savePositions() {
    var store = storage();
    if (!store) return;
    var groups = Object.keys(positions);
    var spare = groups.filter(function (g) {
      return g !== userGroup && !tasks.has(g.slice(5));
    });
    // Oldest first (insertion order): drop unsubscribed tasks beyond the bound.
    for (var i = 0; i < spare.length - MAX_KEPT_POSITIONS; i++) delete positions[spare[i]];
    try {
      store.setItem(storageKey(), JSON.stringify({ user: userGroup, groups: positions }));
    } catch (err) {
      // quota or disabled: memory only
    }
  }

  function keepPosition(group, epoch, offset) {
    if (typeof group !== 'string') return;
    delete positions[group]; // re-inserted last: the newest stays longest
    if (typeof epoch === 'string' && typeof offset === 'string') {
      positions[group] = { epoch: epoch, offset: offset };
    }
    savePositions();
  }

  function taskGroup(id) {
    return 'task_' + id;
  }

  /**
   * The `groups` of a resume: the user group and the subscribed tasks Herald can resume, with
   * their positions. `ask` marks the groups with a position as asked (see `asked`).
   */
  function resumeGroups(ask) {
    var groups = {};
    if (ask) asked = Object.create(null);
    if (userGroup && positions[userGroup]) {
      groups[userGroup] = positions[userGroup];
      if (ask) asked[userGroup] = true;
    }
    tasks.forEach(function (id) {
      var group = taskGroup(id);
      if (!GROUP_NAME.test(group)) return;
      groups[group] = positions[group] || null;
      if (positions[group] && ask) asked[group] = true;
    });
    return groups;
  }

  /** Sends `resume` (over an event stream its URL already did: see sseConnectUrl). */
  function sendResume() {
    var groups = resumeGroups(true);
    resumePending = true;
    sendRaw({ action: 'resume', groups: groups });
  }

  function sendSubscribe(id) {
    var frame = { action: 'subscribe', task_id: id };
    var group = taskGroup(id);
    if (resuming && positions[group]) {
      frame.since = positions[group];
      asked[group] = true;
    }
    return sendRaw(frame);
  }

  /**
   * Handles Herald's recovery frames; returns true if `data` was one and is not for the page.
   * Strips the `herald` tag of a recorded message and keeps its position.
   */
  function recoveryFrame(data) {
    if (!resuming) return false;
    var tag = data.herald;
    if (tag && typeof tag === 'object' && typeof tag.group === 'string') {
      delete data.herald;
      keepPosition(tag.group, tag.epoch, tag.offset);
      return false;
    }
    if (data.type === 'herald.resumed') {
      if (resumePending && typeof data.group === 'string' && data.group.indexOf('user_') === 0) {
        resumePending = false;
        userGroup = data.group;
      }
      keepPosition(data.group, data.epoch, data.offset);
      var event = {
        group: data.group,
        recovered: data.recovered === true,
        epoch: data.epoch,
        offset: data.offset,
      };
      emit('resumed', event);
      if (!event.recovered && asked[data.group]) {
        log('missed messages of ' + data.group + ' are no longer available: resync');
        emit('resync', event);
      }
      delete asked[data.group];
      return true;
    }
    if (data.type === 'error' && resumePending) {
      // The reply to our resume: a stored user group another login left behind, or a server
      // that does not know resume.
      resumePending = false;
      var message = String(data.message || '');
      if (message.indexOf('cannot resume group') === 0 && !resumeRetried) {
        resumeRetried = true;
        userGroup = null;
        Object.keys(positions).forEach(function (g) {
          if (g.indexOf('user_') === 0) delete positions[g];
        });
        savePositions();
        // An event stream's resume is its URL: open it again without the stale group.
        if (api.ws && api.ws.__sse) reopenStream();
        else sendResume();
      } else {
        log('server cannot resume (' + message + '): plain protocol on this socket');
        resuming = false;
        tasks.forEach(function (id) {
          sendRaw({ action: 'subscribe', task_id: id });
        });
      }
      return true;
    }
    return false;
  }

  function emit(type, payload) {
    var list = handlers[type] ? handlers[type].slice() : [];
    if (!LIFECYCLE[type] && handlers['*']) list = list.concat(handlers['*']);
    for (var i = 0; i < list.length; i++) {
      try {
        list[i].call(api, payload);
      } catch (err) {
        // One broken handler must not stop the others or the built-in UI.
        if (global.console) global.console.error('[herald] handler for ' + type + ' failed', err);
      }
    }
  }

  function setState(state) {
    var previous = api.state;
    api.state = state;
    if (previous !== state) emit('state', { state: state, previous: previous });
  }

  function sendRaw(obj) {
    var ws = api.ws;
    if (!ws || ws.readyState !== 1 || ws.__sse) return false;
    ws.send(JSON.stringify(obj));
    return true;
  }

  function closePolicy(code) {
    return CLOSE_POLICY[code] || 'backoff';
  }

  function isOnline() {
    return !global.navigator || global.navigator.onLine !== false;
  }

  function isHidden() {
    return !!global.document && global.document.visibilityState === 'hidden';
  }

  function clearTimer() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
  }

  function clearSocketTimers() {
    clearTimeout(connectTimer);
    clearTimeout(pingTimer);
    clearTimeout(deadlineTimer);
    connectTimer = pingTimer = deadlineTimer = null;
    pendingPings = 0;
  }

  /** Waits without a timer until a lifecycle event (or connect()) resumes. */
  function pause(why) {
    clearTimer();
    paused = why;
    setState(why);
  }

  function scheduleReconnect() {
    if (stopped || paused || !options.reconnect || timer !== null) return;
    var cap = Math.min(options.maxDelay, options.initialDelay * Math.pow(2, attempt));
    var delay = Math.round(cap / 2 + Math.random() * (cap / 2));
    attempt += 1;
    setState('reconnecting');
    log('WebSocket reconnecting in ' + delay + ' ms (attempt ' + attempt + ')');
    emit('reconnecting', { attempt: attempt, delay: delay });
    timer = setTimeout(function () {
      timer = null;
      open();
    }, delay);
  }

  // --- heartbeat -------------------------------------------------------------------------

  /** (Re)starts the idle countdown to the next ping; any frame from the server calls this. */
  function armHeartbeat(ws) {
    clearTimeout(pingTimer);
    pingTimer = null;
    if (options.heartbeatInterval > 0) {
      pingTimer = setTimeout(function () {
        pingTimer = null;
        checkLink(ws);
      }, options.heartbeatInterval);
    }
  }

  /** Sends a ping and drops the socket unless some frame arrives within heartbeatTimeout. */
  function checkLink(ws) {
    if (api.ws !== ws || ws.readyState !== 1 || deadlineTimer !== null) return;
    // An event stream cannot carry a ping; Herald's keep-alive comments keep proxies awake.
    if (ws.__sse) return;
    // heartbeatInterval 0 is for servers that do not answer pings: never ping them.
    if (!(options.heartbeatInterval > 0) || !(options.heartbeatTimeout > 0)) return;
    try {
      ws.send('{"action": "ping"}');
    } catch (err) {
      return; // closing under us: onclose follows
    }
    pendingPings += 1;
    deadlineTimer = setTimeout(function () {
      deadlineTimer = null;
      log('WebSocket silent for ' + options.heartbeatTimeout + ' ms after a ping: reconnecting');
      drop(ws, CLOSE_STALE, 'heartbeat timeout');
    }, options.heartbeatTimeout);
  }

  // --- sockets ---------------------------------------------------------------------------

  /**
   * Gives up on `ws` now, without waiting for the browser's close handshake (which a dead
   * link never completes): detaches it, closes it, and handles the close as if it had come.
   */
  function drop(ws, code, reason) {
    if (api.ws !== ws || !ws.__herald) return;
    var session = ws.__herald;
    ws.__herald = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch (err) {
      // already closed
    }
    closed(ws, session, { code: code, reason: reason, wasClean: false });
  }

  function open() {
    started = true;
    var current = api.ws;
    if (current && (current.readyState === 0 || current.readyState === 1)) return;
    if (stopped) return;
    if (!isOnline()) {
      pause('offline');
      return;
    }
    clearTimer();
    paused = null;
    generation += 1;
    if (options.recover && !positionsLoaded) {
      positionsLoaded = true;
      loadPositions();
    }
    var ws;
    var sse = useSse();
    api.transport = sse ? 'sse' : 'websocket';
    try {
      ws = sse ? new SseSocket(sseConnectUrl()) : new WebSocket(connectUrl());
    } catch (err) {
      if (global.console) global.console.error('[herald] cannot open ' + (sse ? 'event stream' : 'WebSocket'), err);
      scheduleReconnect();
      return;
    }
    var session = { openedAt: 0, generation: generation };
    ws.__herald = session;
    api.ws = ws;
    setState('connecting');
    clearSocketTimers();
    if (options.connectTimeout > 0) {
      connectTimer = setTimeout(function () {
        connectTimer = null;
        if (ws.readyState !== 0) return;
        log('WebSocket handshake took over ' + options.connectTimeout + ' ms: giving up on it');
        drop(ws, CLOSE_STALE, 'connect timeout');
      }, options.connectTimeout);
    }
    ws.onopen = function () {
      if (api.ws !== ws) return;
      // `attempt` is reset when this socket closes after a real session, not here: a server
      // whose Redis is down accepts and at once closes with 1013, and that must keep backing off.
      session.openedAt = Date.now();
      refusals = 0;
      if (!ws.__sse) wsFailures = 0;
      clearTimeout(connectTimer);
      connectTimer = null;
      setState('open');
      log(ws.__sse ? 'event stream connected (Server-Sent Events)' : 'WebSocket connected');
      armHeartbeat(ws);
      // The server forgets task subscriptions with the socket: restore them, in the resume
      // (which also joins the user group) when recovering, else one subscribe frame each.
      resuming = !!options.recover;
      resumeRetried = false;
      resumePending = false;
      if (resuming) {
        sendResume();
        tasks.forEach(function (id) {
          if (GROUP_NAME.test(taskGroup(id))) {
            // The resume re-subscribes it: tell the page as the subscribe reply used to.
            emit('subscribed', { type: 'subscribed', task_id: id });
          } else {
            sendSubscribe(id);
          }
        });
      } else {
        tasks.forEach(function (id) {
          sendRaw({ action: 'subscribe', task_id: id });
        });
      }
      emit('open', { url: ws.url });
    };
    ws.onmessage = function (event) {
      if (api.ws !== ws) return;
      // Any frame proves the link is alive.
      clearTimeout(deadlineTimer);
      deadlineTimer = null;
      armHeartbeat(ws);
      var data;
      try {
        data = JSON.parse(event.data);
      } catch (err) {
        return; // not ours: the server only sends JSON objects
      }
      if (!data || typeof data !== 'object' || typeof data.type !== 'string') return;
      if (data.type === 'pong' && pendingPings > 0) {
        pendingPings -= 1; // our heartbeat's answer; a page's own ping still gets its 'pong'
        return;
      }
      if (recoveryFrame(data)) return;
      emit(data.type, data);
      showDefaultUi(data);
    };
    ws.onclose = function (event) {
      if (api.ws !== ws || !ws.__herald) return;
      ws.__herald = null;
      closed(ws, session, { code: event.code, reason: event.reason, wasClean: event.wasClean });
    };
    // onerror is always followed by onclose, which does the work.
    ws.onerror = function () {};
  }

  /** Everything after a socket closed (or was dropped): report it, then decide what's next. */
  function closed(ws, session, info) {
    clearSocketTimers();
    var code = info.code;
    var policy = closePolicy(code);
    var opened = session.openedAt > 0;
    setState('closed');
    if (code === 1013) {
      log('WebSocket closed: server not ready (1013 ' + info.reason + '), backing off');
    } else {
      log('WebSocket closed (code ' + code + (info.reason ? ' ' + info.reason : '') + ')');
    }
    emit('close', info);
    if (stopped) return;
    if (paused) {
      setState(paused); // offline / suspended: dropped on purpose, a lifecycle event resumes
      return;
    }
    if (!isOnline()) {
      pause('offline');
      return;
    }
    lastPolicy = policy;
    if (policy === 'reauth') {
      unauthorized(code, info.reason);
      return;
    }
    if (policy === 'stop') {
      stopped = true;
      log('WebSocket closed with ' + code + ': not reconnecting until connect()');
      return;
    }
    if (opened) {
      if (policy === 'retry' && Date.now() - session.openedAt >= STABLE_MS) attempt = 0;
      scheduleReconnect();
    } else if (!ws.__sse && options.transport === 'auto' && ++wsFailures >= options.sseAfter && !sseRefused) {
      tryFallback(session, code);
    } else if (code === CLOSE_STALE) {
      scheduleReconnect(); // a handshake that hung: the server is not answering, not refusing
    } else {
      handshakeFailed(session);
    }
  }

  /**
   * WebSocket handshakes keep failing: if the event stream answers, switch to it now;
   * otherwise carry on as after any failed handshake.
   */
  function tryFallback(session, code) {
    sseAnswers().then(function (ok) {
      if (session.generation !== generation || stopped || paused || timer !== null) return;
      var current = api.ws;
      if (current && (current.readyState === 0 || current.readyState === 1)) return;
      if (ok) {
        fellBack = true;
        attempt = 0;
        log('WebSocket failed ' + wsFailures + ' times while the event stream answers: using Server-Sent Events');
        emit('transport', { transport: 'sse' });
        open();
      } else if (code === CLOSE_STALE) {
        scheduleReconnect();
      } else {
        handshakeFailed(session);
      }
    });
  }

  /** Stops until connect() or the user coming back; tells the page (e.g. to log in again). */
  function unauthorized(code, reason) {
    pause('unauthorized');
    log('WebSocket refused (' + (reason || code) + '): not reconnecting until the page is used again');
    emit('unauthorized', { code: code, reason: reason, refusals: refusals });
  }

  function defaultProbeUrl() {
    var u = new URL(socketUrl(), global.location ? global.location.href : undefined);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    u.pathname = '/static/herald/task-notifications.js';
    u.search = '';
    u.hash = '';
    return u.href;
  }

  /**
   * Resolves true if the server answered the probe with a 2xx (so it is up and refused the
   * handshake), false if not (down, unreachable, a proxy's error page, a timeout).
   */
  function probe() {
    if (options.probeUrl === false || typeof global.fetch !== 'function') return Promise.resolve(false);
    var url;
    try {
      url = new URL(options.probeUrl || defaultProbeUrl(), global.location ? global.location.href : undefined);
    } catch (err) {
      return Promise.resolve(false);
    }
    var abort = typeof AbortController === 'function' ? new AbortController() : null;
    var timeout = setTimeout(function () {
      if (abort) abort.abort();
    }, PROBE_TIMEOUT_MS);
    // CORS mode, so the status is readable on another origin too (Herald allows any origin to
    // read its client files); a URL that does not allow it reads as "down": retry, never stop.
    return global
      .fetch(url.href, {
        method: 'HEAD',
        cache: 'no-store',
        credentials: 'omit',
        mode: 'cors',
        signal: abort ? abort.signal : undefined,
      })
      .then(
        function (resp) {
          return resp.ok;
        },
        function () {
          return false;
        }
      )
      .then(function (up) {
        clearTimeout(timeout);
        return up;
      });
  }

  /** A socket closed before it opened: the network, a down server, or a refusal. */
  function handshakeFailed(session) {
    if (options.probeUrl === false || !(options.maxRefusals > 0)) {
      scheduleReconnect();
      return;
    }
    probe().then(function (up) {
      // Something else happened meanwhile (connect(), close(), offline, a newer attempt).
      if (session.generation !== generation || stopped || paused || timer !== null) return;
      var current = api.ws;
      if (current && (current.readyState === 0 || current.readyState === 1)) return;
      if (!up) {
        refusals = 0; // not a refusal: the server is down or out of reach
        scheduleReconnect();
        return;
      }
      refusals += 1;
      log('WebSocket handshake refused by a reachable server (' + refusals + ' in a row)');
      if (refusals >= options.maxRefusals) {
        unauthorized(1006, 'handshake refused');
      } else {
        scheduleReconnect();
      }
    });
  }

  // --- page lifecycle --------------------------------------------------------------------

  /**
   * The page or the network came back (online, visible, focus, pageshow, resume): reconnect
   * now, or check an open link at once (a laptop waking up keeps sockets that are long dead).
   */
  function wake(why) {
    if (!started || stopped) return;
    var ws = api.ws;
    if (ws && ws.readyState === 1) {
      checkLink(ws);
      return;
    }
    if (ws && ws.readyState === 0) return;
    if (!isOnline()) return;
    if (paused !== 'offline' && paused !== 'suspended') {
      // A hidden tab is not being used: it keeps its backoff and does not retry a refusal
      // (the network coming back still ends a wait, as it always did).
      if (isHidden() && why !== 'online') return;
      // Being back online says nothing about the session.
      if (paused === 'unauthorized' && why === 'online') return;
      // The server asked for fewer attempts (1013, 1008, ...): let that wait run out.
      if (timer !== null && lastPolicy === 'backoff') return;
    }
    log('WebSocket reconnecting now (' + why + ')');
    paused = null;
    open();
  }

  /** The page goes away or is frozen (freeze, pagehide), or the network is gone (offline). */
  function sleep(why) {
    if (!started || stopped) return;
    pause(why === 'offline' ? 'offline' : 'suspended');
    var ws = api.ws;
    if (ws && (ws.readyState === 0 || ws.readyState === 1)) {
      drop(ws, 1000, why);
    }
  }


  // ---------------------------------------------------------------------------------------
  // Built-in UI
  // ---------------------------------------------------------------------------------------

  var CSS = [
    '.herald-toasts{position:fixed;top:1rem;right:1rem;z-index:2147483000;display:flex;flex-direction:column;gap:.5rem;max-width:24rem;font:14px/1.4 system-ui,sans-serif}',
    '.herald-toast{color:#fff;padding:.75rem 2rem .75rem 1rem;border-radius:6px;box-shadow:0 4px 12px rgba(0,0,0,.2);position:relative;cursor:pointer;word-wrap:break-word;animation:herald-in .2s ease-out}',
    '.herald-toast-success{background:#2e7d32}.herald-toast-error{background:#c62828}',
    '.herald-toast-warning{background:#ef6c00}.herald-toast-info{background:#1565c0}',
    '.herald-toast-title{display:block;font-weight:600;margin-bottom:.15rem}',
    '.herald-toast-close{position:absolute;top:.35rem;right:.5rem;background:none;border:0;color:inherit;font-size:1.1rem;cursor:pointer;opacity:.8}',
    '.herald-modal-backdrop{position:fixed;inset:0;background:rgba(0,0,0,.45);z-index:2147483001;display:flex;align-items:center;justify-content:center;font:14px/1.4 system-ui,sans-serif}',
    '.herald-modal{background:#fff;color:#222;border-radius:8px;padding:1.5rem;min-width:18rem;max-width:90vw;box-shadow:0 10px 30px rgba(0,0,0,.3);text-align:center}',
    '.herald-modal h2{margin:0 0 .5rem;font-size:1.15rem}',
    '.herald-file-name{font-weight:600;margin:.5rem 0 .15rem;word-break:break-all}.herald-file-size{color:#666;margin:0 0 1rem}',
    '.herald-modal-actions{display:flex;gap:.5rem;justify-content:center}',
    '.herald-download,.herald-close{padding:.5rem 1.1rem;border-radius:5px;border:1px solid #1565c0;font:inherit;cursor:pointer;text-decoration:none}',
    '.herald-download{background:#1565c0;color:#fff}.herald-close{background:#fff;color:#1565c0}',
    // Phones: toasts along the bottom, full width, so they never cover the page's heading.
    '@media (max-width:600px){.herald-toasts{top:auto;bottom:.75rem;left:.75rem;right:.75rem;max-width:none}}',
    '@keyframes herald-in{from{opacity:0;transform:translateY(-6px)}to{opacity:1;transform:none}}',
  ].join('\n');

  function injectCss() {
    var doc = global.document;
    if (!doc || doc.getElementById('herald-task-notifications-css')) return;
    var style = doc.createElement('style');
    style.id = 'herald-task-notifications-css';
    if (options.styleNonce) style.nonce = options.styleNonce;
    style.textContent = CSS;
    (doc.head || doc.documentElement).appendChild(style);
  }

  function el(tag, className, text) {
    var node = global.document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null && text !== '') node.textContent = String(text);
    return node;
  }

  function toastContainer() {
    var doc = global.document;
    var box = doc.querySelector('.herald-toasts');
    if (!box) {
      box = el('div', 'herald-toasts');
      box.setAttribute('aria-live', 'polite');
      doc.body.appendChild(box);
    }
    return box;
  }

  function showToast(kind, message, title) {
    if (!global.document || !global.document.body) return null;
    injectCss();
    var toast = el('div', 'herald-toast herald-toast-' + kind);
    toast.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    if (title) toast.appendChild(el('strong', 'herald-toast-title', title));
    toast.appendChild(el('div', 'herald-toast-message', message));
    var close = el('button', 'herald-toast-close', '\u00d7');
    close.type = 'button';
    close.setAttribute('aria-label', 'Dismiss');
    toast.appendChild(close);
    var remove = function () {
      if (toast.parentNode) toast.parentNode.removeChild(toast);
    };
    toast.addEventListener('click', remove);
    if (options.toastDuration > 0) setTimeout(remove, options.toastDuration);
    toastContainer().appendChild(toast);
    return toast;
  }

  /** "153.1 KB" for 156789; "" for a missing or invalid size. */
  function formatFileSize(bytes) {
    var n = Number(bytes);
    if (bytes === null || bytes === undefined || bytes === '' || !isFinite(n) || n < 0) return '';
    if (n < 1024) return Math.round(n) + ' B';
    var units = ['KB', 'MB', 'GB', 'TB', 'PB'];
    var i = -1;
    do {
      n /= 1024;
      i += 1;
    } while (n >= 1024 && i < units.length - 1);
    return n.toFixed(1) + ' ' + units[i];
  }

  /** The URL to link, or null for anything but http(s) (no javascript:, data: ...). */
  function safeUrl(url) {
    if (typeof url !== 'string' || url === '') return null;
    try {
      var parsed = new URL(url, global.location.href);
      return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
    } catch (err) {
      return null;
    }
  }

  function fileNameFrom(data) {
    if (data.file_name) return String(data.file_name);
    var url = String(data.file_url || '');
    var last = url.split(/[?#]/)[0].split('/').pop() || url;
    try {
      return decodeURIComponent(last);
    } catch (err) {
      return last;
    }
  }

  /** The file notice in the shape handed to a custom `ui.file`. */
  function fileInfo(data) {
    return {
      message: data.message || 'File ready for download',
      fileName: fileNameFrom(data),
      size: typeof data.file_size === 'number' ? data.file_size : null,
      sizeText: formatFileSize(data.file_size),
      url: safeUrl(data.file_url),
      data: data,
    };
  }

  function showFileModal(file) {
    var doc = global.document;
    if (!doc || !doc.body) return null;
    injectCss();
    var backdrop = el('div', 'herald-modal-backdrop');
    var modal = el('div', 'herald-modal');
    modal.setAttribute('role', 'dialog');
    modal.setAttribute('aria-modal', 'true');
    var heading = el('h2', 'herald-modal-title', file.message);
    heading.id = 'herald-modal-title-' + Date.now() + '-' + Math.floor(Math.random() * 1e6);
    modal.setAttribute('aria-labelledby', heading.id);
    modal.appendChild(heading);
    modal.appendChild(el('p', 'herald-file-name', file.fileName));
    if (file.sizeText) modal.appendChild(el('p', 'herald-file-size', file.sizeText));
    var actions = el('div', 'herald-modal-actions');
    var dismiss = function () {
      if (backdrop.parentNode) backdrop.parentNode.removeChild(backdrop);
      doc.removeEventListener('keydown', onKey);
    };
    var onKey = function (e) {
      if (e.key === 'Escape') dismiss();
    };
    var download = null;
    if (file.url) {
      download = el('a', 'herald-download', 'Download');
      download.href = file.url;
      download.target = '_blank';
      download.rel = 'noopener noreferrer';
      download.addEventListener('click', function () {
        setTimeout(dismiss, 0);
      });
      actions.appendChild(download);
    }
    var close = el('button', 'herald-close', 'Close');
    close.type = 'button';
    close.addEventListener('click', dismiss);
    actions.appendChild(close);
    modal.appendChild(actions);
    backdrop.appendChild(modal);
    backdrop.addEventListener('click', function (e) {
      if (e.target === backdrop) dismiss();
    });
    doc.addEventListener('keydown', onKey);
    doc.body.appendChild(backdrop);
    (download || close).focus();
    return backdrop;
  }

  var builtinUi = {
    info: function (message, title) {
      return showToast('info', message, title);
    },
    success: function (message, title) {
      return showToast('success', message, title);
    },
    error: function (message, title) {
      return showToast('error', message, title);
    },
    warning: function (message, title) {
      return showToast('warning', message, title);
    },
    file: showFileModal,
  };

  function uiFn(kind) {
    if (options.ui === false || options.ui === null) return null;
    var custom = options.ui && options.ui[kind];
    if (typeof custom === 'function') return custom;
    if (custom === false) return null;
    return builtinUi[kind];
  }

  function callUi(kind) {
    var fn = uiFn(kind);
    if (!fn) return;
    try {
      fn.apply(null, Array.prototype.slice.call(arguments, 1));
    } catch (err) {
      if (global.console) global.console.error('[herald] ui.' + kind + ' failed', err);
    }
  }

  function showDefaultUi(data) {
    switch (data.type) {
      case 'user_message':
        callUi('info', data.message, data.title || '', data);
        break;
      case 'user_notification': {
        var kind = TOAST_KINDS.indexOf(data.notification_type) >= 0 ? data.notification_type : 'info';
        callUi(kind, data.message, data.title || '', data);
        break;
      }
      case 'user_file':
        callUi('file', fileInfo(data));
        break;
      case 'task_complete':
        callUi('success', data.message || 'Task complete', '', data);
        break;
      case 'task_error':
        callUi('error', data.message || 'Task failed', '', data);
        break;
      case 'error':
        if (global.console) global.console.warn('[herald] server error:', data.message);
        break;
      default:
        break;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Public API
  // ---------------------------------------------------------------------------------------

  var api = {
    __herald: true,
    version: '0.3.0',
    ws: null,
    transport: 'websocket',
    state: 'idle',

    on: function (type, fn) {
      if (typeof fn !== 'function') throw new TypeError('taskNotifications.on needs a function');
      (handlers[type] = handlers[type] || []).push(fn);
      return api;
    },

    off: function (type, fn) {
      var list = handlers[type];
      if (!list) return api;
      if (fn === undefined) {
        delete handlers[type];
      } else {
        var i = list.indexOf(fn);
        if (i >= 0) list.splice(i, 1);
      }
      return api;
    },

    subscribeTask: function (taskId) {
      var id = String(taskId);
      tasks.add(id);
      if (api.ws && api.ws.__sse) reopenStream();
      else sendSubscribe(id);
      return api;
    },

    unsubscribeTask: function (taskId) {
      var id = String(taskId);
      tasks.delete(id);
      // Its position stays (bounded): subscribing again later replays only what is new.
      if (api.ws && api.ws.__sse) reopenStream();
      else sendRaw({ action: 'unsubscribe', task_id: id });
      return api;
    },

    /** The task ids this page is subscribed to (restored after every reconnect). */
    subscribedTasks: function () {
      return Array.from(tasks);
    },

    send: sendRaw,

    /** Connects now (also after close(), a 4403, or 'unauthorized', e.g. after a new login). */
    connect: function () {
      stopped = false;
      paused = null;
      refusals = 0;
      wsFailures = 0;
      sseRefused = false;
      clearTimer();
      open();
      return api;
    },

    close: function () {
      stopped = true;
      paused = null;
      clearTimer();
      if (api.ws) api.ws.close(1000);
      return api;
    },

    configure: function (opts) {
      opts = opts || {};
      var ui = opts.ui;
      if (ui && typeof ui === 'object' && options.ui && typeof options.ui === 'object') {
        ui = Object.assign({}, options.ui, ui);
      }
      options = Object.assign({}, options, opts);
      if ('ui' in opts) options.ui = ui;
      return api;
    },

    /** The options in effect (a copy). */
    options: function () {
      return Object.assign({}, options);
    },

    /** What the client does after a close with `code`: 'retry', 'backoff', 'reauth' or 'stop'. */
    closePolicy: closePolicy,

    formatFileSize: formatFileSize,
    toast: showToast,
    showFile: function (data) {
      return showFileModal(fileInfo(data));
    },
  };

  global.taskNotifications = api;

  if (global.addEventListener && global.document) {
    var doc = global.document;
    global.addEventListener('offline', function () {
      sleep('offline');
    });
    global.addEventListener('online', function () {
      wake('online');
    });
    global.addEventListener('focus', function () {
      wake('focus');
    });
    global.addEventListener('pageshow', function (event) {
      // Also fired on the first load: only a page back from the back/forward cache matters.
      if (event.persisted || paused === 'suspended') wake('pageshow');
    });
    global.addEventListener('pagehide', function () {
      sleep('pagehide');
    });
    doc.addEventListener('visibilitychange', function () {
      if (doc.visibilityState === 'visible') wake('visible');
    });
    // Page Lifecycle API (Chromium): a frozen page runs no timers; close cleanly instead of
    // leaving the server a socket nobody reads.
    doc.addEventListener('freeze', function () {
      sleep('freeze');
    });
    doc.addEventListener('resume', function () {
      wake('resume');
    });
  }

  function autoStart() {
    if (options.autoConnect && !stopped && api.ws === null) open();
  }
  // Deferred so a host script right after this one can still configure({autoConnect: false}).
  // No document (a server-side import): nothing to connect.
  if (global.document && global.document.readyState === 'loading') {
    global.document.addEventListener('DOMContentLoaded', autoStart);
  } else if (global.document) {
    setTimeout(autoStart, 0);
  }
})(typeof window !== 'undefined' ? window : typeof globalThis !== 'undefined' ? globalThis : this);
