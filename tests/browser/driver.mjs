// A JSON-lines remote control for a real headless Chromium (Debian's /usr/bin/chromium; a
// browser is never downloaded), driven by crates/herald-cli/tests/browser_client.rs.
//
//   node driver.mjs            (HERALD_CHROMIUM overrides the browser path)
//
// stdin: one command per line, {"id": N, "op": ..., ...}; stdout: one reply per command,
// {"id": N, "ok": true, "result": ...} or {"id": N, "ok": false, "error": "..."}. The first
// line printed is {"ready": true, "version": "<browser version>"}.
//
//   init       {script}                       run a script before every page's own scripts
//   open       {url}                          load a page (waits for "load")
//   eval       {expr}                         evaluate a JS expression, return its JSON value
//   wait       {expr, timeout}                wait until the expression is truthy, return it
//   element    {selector, text?, timeout}     wait until the last match (containing text) is
//                                             visible; return its text, class and attributes
//   click      {selector, text?, timeout}
//   count      {selector}                     number of matches
//   screenshot {path}                         full-page PNG
//   logs       {}                             console messages and page errors so far
//   network    {offline}                      cut or restore the page's network through the
//                                             DevTools protocol (Network.emulateNetworkConditions:
//                                             navigator.onLine and the offline/online events follow)
//   cookies    {cookies}                      add cookies ({name, value, url}) to the browser
//   websockets {}                             every WebSocket the page opened: [{url, at, closedAt}]
//                                             (at: ms since the driver started), as Chromium saw them
//   quit       {}
//
// The process exits when stdin closes (a dead test never leaves a browser behind) and, as a
// last resort, after HERALD_BROWSER_MAX_SECS (default 300).
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const executablePath = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';
const maxSecs = Number(process.env.HERALD_BROWSER_MAX_SECS || 300);
const DEFAULT_TIMEOUT = 10000;

const userDataDir = mkdtempSync(join(tmpdir(), 'herald-chromium-'));
let context = null;
let page = null;
let cdp = null;
const logs = [];
const sockets = [];
const started = Date.now();

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function shutdown(code) {
  try {
    if (context) await context.close();
  } catch (err) {
    // already gone
  }
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(code);
}

const watchdog = setTimeout(() => {
  process.stderr.write(`driver: no end after ${maxSecs}s, exiting\n`);
  shutdown(2);
}, maxSecs * 1000);
watchdog.unref();

function locator(cmd) {
  const opts = cmd.text ? { hasText: cmd.text } : {};
  return page.locator(cmd.selector, opts).last();
}

// Expressions become functions here, because Playwright evaluates a function through the
// DevTools protocol, which a page's Content-Security-Policy (no 'unsafe-eval') does not block,
// whereas a string predicate is eval()ed inside the page.
// An expression is returned; anything else (statements) runs and yields null.
function asFunction(expr) {
  try {
    return new Function(`return (${expr});`);
  } catch (err) {
    return new Function(`${expr}; return null;`);
  }
}

const ops = {
  async init(cmd) {
    await page.addInitScript({ content: cmd.script });
    return null;
  },
  async open(cmd) {
    const resp = await page.goto(cmd.url, { waitUntil: 'load', timeout: cmd.timeout || DEFAULT_TIMEOUT });
    return { status: resp ? resp.status() : null };
  },
  async eval(cmd) {
    return page.evaluate(asFunction(cmd.expr));
  },
  async wait(cmd) {
    const handle = await page.waitForFunction(asFunction(cmd.expr), null, {
      timeout: cmd.timeout || DEFAULT_TIMEOUT,
      polling: 50,
    });
    return handle.jsonValue();
  },
  async element(cmd) {
    const loc = locator(cmd);
    await loc.waitFor({ state: 'visible', timeout: cmd.timeout || DEFAULT_TIMEOUT });
    return loc.evaluate((el) => {
      const attrs = {};
      for (const a of el.attributes) attrs[a.name] = a.value;
      return { text: el.textContent, className: el.className, attrs, tag: el.tagName.toLowerCase() };
    });
  },
  async click(cmd) {
    await locator(cmd).click({ timeout: cmd.timeout || DEFAULT_TIMEOUT });
    return null;
  },
  async count(cmd) {
    return page.locator(cmd.selector).count();
  },
  async viewport(cmd) {
    await page.setViewportSize({ width: cmd.width, height: cmd.height });
    return null;
  },
  async screenshot(cmd) {
    mkdirSync(dirname(cmd.path), { recursive: true });
    await page.screenshot({ path: cmd.path, fullPage: true });
    return cmd.path;
  },
  async logs() {
    return logs;
  },
  async network(cmd) {
    if (!cdp) {
      cdp = await context.newCDPSession(page);
      await cdp.send('Network.enable');
    }
    await cdp.send('Network.emulateNetworkConditions', {
      offline: !!cmd.offline,
      latency: 0,
      downloadThroughput: -1,
      uploadThroughput: -1,
    });
    return null;
  },
  async cookies(cmd) {
    await context.addCookies(cmd.cookies);
    return null;
  },
  async websockets() {
    return sockets;
  },
  async quit() {
    setImmediate(() => shutdown(0));
    return null;
  },
};

async function main() {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: { width: 1100, height: 760 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: 30000,
  });
  page = context.pages()[0] || (await context.newPage());
  page.on('console', (msg) => logs.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => logs.push(`pageerror: ${err.message}`));
  page.on('websocket', (ws) => {
    const entry = { url: ws.url(), at: Date.now() - started, closedAt: null };
    sockets.push(entry);
    ws.on('close', () => {
      entry.closedAt = Date.now() - started;
    });
  });
  reply({ ready: true, version: context.browser() ? context.browser().version() : null });

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (err) {
      reply({ id: null, ok: false, error: `bad command: ${err.message}` });
      continue;
    }
    const op = ops[cmd.op];
    if (!op) {
      reply({ id: cmd.id, ok: false, error: `unknown op ${cmd.op}` });
      continue;
    }
    try {
      const result = await op(cmd);
      reply({ id: cmd.id, ok: true, result: result === undefined ? null : result });
    } catch (err) {
      reply({ id: cmd.id, ok: false, error: String(err && err.message ? err.message : err) });
    }
  }
  await shutdown(0);
}

main().catch((err) => {
  process.stderr.write(`driver: ${err && err.stack ? err.stack : err}\n`);
  reply({ ready: false, error: String(err && err.message ? err.message : err) });
  shutdown(1);
});
