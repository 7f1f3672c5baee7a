/*!
 * task-notifications.js — Herald's browser client for the /ws/tasks/ WebSocket route.
 *
 * A plain script (ES2017, no build step, no dependencies). Include it on every page:
 *
 *   <script src="/static/herald/task-notifications.js"></script>
 *
 * It defines one global, `taskNotifications`, which connects to /ws/tasks/ on page load
 * (ws:// or wss:// from the page's location), reconnects with capped exponential backoff and
 * jitter (also after a 1013 "try again later" close from a server whose Redis is down),
 * resubscribes the page's tasks after every reconnect, and shows the user guide's UI:
 *
 *   user_message       -> info toast
 *   user_notification  -> success / error / warning / info toast (by notification_type)
 *   user_file          -> modal with file name, size, Download (new tab) and Close
 *   task_complete      -> success toast, task_error -> error toast (subscribed tasks only)
 *
 * API
 *   taskNotifications.on(type | '*', fn)      listen ('*' = every server message)
 *   taskNotifications.off(type | '*', fn)     (without fn: remove every handler of type)
 *   taskNotifications.on('open' | 'close' | 'reconnecting', fn)   connection lifecycle, not
 *                                             sent to '*'; 'close' fires for every socket that
 *                                             closes, failed reconnect attempts included
 *   taskNotifications.subscribeTask(id) / unsubscribeTask(id)    task_{id} progress
 *   taskNotifications.send(obj)               send a JSON frame if open; returns true if sent
 *   taskNotifications.connect() / close()     manual control (close() stops reconnecting)
 *   taskNotifications.ws                      the current WebSocket (readyState 1 = open)
 *   taskNotifications.state                   'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'
 *   taskNotifications.configure(options)      see DEFAULTS below
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
 */
(function (global) {
  'use strict';

  if (global.taskNotifications && global.taskNotifications.__herald) {
    return; // included twice: keep the first instance (and its socket)
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
    // Toasts disappear after this many milliseconds (0 = stay until clicked).
    toastDuration: 5000,
    // Built-in UI, or an object of replacements ({info, success, error, warning, file}), or false.
    ui: {},
    // Nonce for the injected <style> element under a strict Content-Security-Policy.
    styleNonce: null,
    // console.log connection changes ("WebSocket connected"), as the guide's troubleshooting expects.
    log: true,
  };

  var LIFECYCLE = { open: true, close: true, reconnecting: true };
  // Close code of a server that is up but cannot serve yet (its Redis is down): retry later,
  // with the same growing backoff as a failed connect.
  var TRY_AGAIN_LATER = 1013;
  var TOAST_KINDS = ['success', 'error', 'warning', 'info'];

  var options = Object.assign({}, DEFAULTS, global.taskNotificationsConfig || {});
  var handlers = Object.create(null);
  var tasks = new Set();
  var attempt = 0;
  var timer = null;
  var stopped = false;

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
    api.state = state;
  }

  function sendRaw(obj) {
    var ws = api.ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(obj));
    return true;
  }

  function scheduleReconnect() {
    if (stopped || !options.reconnect || timer !== null) return;
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

  function open() {
    var current = api.ws;
    if (current && (current.readyState === 0 || current.readyState === 1)) return;
    var ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (err) {
      if (global.console) global.console.error('[herald] cannot open WebSocket', err);
      scheduleReconnect();
      return;
    }
    api.ws = ws;
    setState('connecting');
    var opened = false;
    ws.onopen = function () {
      if (api.ws !== ws) return;
      // `attempt` is reset when this socket closes after a real session, not here: a server
      // whose Redis is down accepts and at once closes with 1013, and that must keep backing off.
      opened = true;
      setState('open');
      log('WebSocket connected');
      // The server forgets task subscriptions with the socket: restore them.
      tasks.forEach(function (id) {
        sendRaw({ action: 'subscribe', task_id: id });
      });
      emit('open', { url: ws.url });
    };
    ws.onmessage = function (event) {
      if (api.ws !== ws) return;
      var data;
      try {
        data = JSON.parse(event.data);
      } catch (err) {
        return; // not ours: the server only sends JSON objects
      }
      if (!data || typeof data !== 'object' || typeof data.type !== 'string') return;
      emit(data.type, data);
      showDefaultUi(data);
    };
    ws.onclose = function (event) {
      if (api.ws !== ws) return;
      setState('closed');
      if (event.code === TRY_AGAIN_LATER) {
        log('WebSocket closed: server not ready (1013 ' + event.reason + '), backing off');
      } else {
        log('WebSocket closed (code ' + event.code + ')');
        if (opened) attempt = 0;
      }
      emit('close', { code: event.code, reason: event.reason, wasClean: event.wasClean });
      scheduleReconnect();
    };
    // onerror is always followed by onclose, which does the work.
    ws.onerror = function () {};
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
    version: '0.1.0',
    ws: null,
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
      sendRaw({ action: 'subscribe', task_id: id });
      return api;
    },

    unsubscribeTask: function (taskId) {
      var id = String(taskId);
      tasks.delete(id);
      sendRaw({ action: 'unsubscribe', task_id: id });
      return api;
    },

    /** The task ids this page is subscribed to (restored after every reconnect). */
    subscribedTasks: function () {
      return Array.from(tasks);
    },

    send: sendRaw,

    connect: function () {
      stopped = false;
      if (timer !== null) {
        clearTimeout(timer);
        timer = null;
      }
      open();
      return api;
    },

    close: function () {
      stopped = true;
      if (timer !== null) {
        clearTimeout(timer);
        timer = null;
      }
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

    formatFileSize: formatFileSize,
    toast: showToast,
    showFile: function (data) {
      return showFileModal(fileInfo(data));
    },
  };

  global.taskNotifications = api;

  if (global.addEventListener) {
    // Back online: try now instead of waiting out the backoff.
    global.addEventListener('online', function () {
      if (!stopped && api.state === 'reconnecting') api.connect();
    });
  }

  function autoStart() {
    if (options.autoConnect && !stopped && api.ws === null) open();
  }
  // Deferred so a host script right after this one can still configure({autoConnect: false}).
  if (global.document && global.document.readyState === 'loading') {
    global.document.addEventListener('DOMContentLoaded', autoStart);
  } else {
    setTimeout(autoStart, 0);
  }
})(typeof window !== 'undefined' ? window : this);
