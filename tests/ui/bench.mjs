// The web UI at scale, in headless Chromium: three nodes of the built binary
// on loopback (IPVS_KERNEL=off), 5,000 TCP services of 10 real servers each
// loaded in one PUT /api/v1/config, and a follower's UI opened in a new
// browser. Prints, as a Markdown table:
//
// - the bytes the page received to load (all of them before the idle
//   window);
// - idle traffic twice: Chromium's count, in which the tail of the
//   watch's multi-megabyte sync is still being accounted seconds after the
//   page used it (the stream's own bytes, read here outside the browser
//   from the page's revision on, are a heartbeat), and the polls plus
//   that heartbeat;
// - first paint (the browser's first-contentful-paint) and first table rows
//   (the page's own `ipvs:first-rows` mark: the list arrived by the watch's
//   `sync` and its first rows are in the DOM), both from navigation start;
// - the DOM: the overview's rows in the document, and all elements;
// - idle refresh traffic: the bytes the page receives (Chromium's own count
//   through the DevTools protocol, headers included) per 2 s, averaged over
//   20 s once the page has settled, and the worst 2 s window;
// - a filter keystroke to its result: a character added to the search box
//   (an input event, as typing sends) until the next frame is painted, the
//   median and the worst of 12 keystrokes.
//
// Run on demand, not in the test suite (it takes a minute and both cores):
//
//   cargo build --release && node tests/ui/bench.mjs [--binary PATH] [--services 5000] [--servers 10]
//
// (after tests/ui/setup.sh). The numbers are in README, "Web UI".

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const binary = opt('binary', existsSync('target/release/ipvs-manager')
  ? 'target/release/ipvs-manager' : 'target/debug/ipvs-manager');
const SERVICES = Number(opt('services', '5000'));
const SERVERS = Number(opt('servers', '10'));
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

const log = (m) => console.error(`bench: ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), 'ipvs-ui-bench-'));
const nodes = [];
for (let i = 1; i <= 3; i += 1) {
  nodes.push({ name: `node${i}`, http: await freePort(), raft: await freePort(), child: null });
}

function start(node, join) {
  const env = {
    ...process.env,
    SERVER_PORT: String(node.http),
    RAFT_PORT: String(node.raft),
    RAFT_NODE_ID: node.name,
    RAFT_VOL_DIR: `${dir}/${node.name}`,
    IPVS_KERNEL: 'off',
    RUST_LOG: 'warn',
  };
  if (join) env.RAFT_LEADER = `127.0.0.1:${join}`;
  node.child = spawn(binary, [], { env, stdio: ['ignore', 'ignore', 'inherit'] });
}

async function json(port, path, init) {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, init);
  return { status: r.status, body: await r.json().catch(() => null) };
}

async function waitFor(what, check, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const voters = (n) => waitFor(`${n} voters`, async () => {
  const c = (await json(nodes[0].http, '/api/v1/cluster')).body;
  return c.leader_id && c.members.filter((m) => m.voter).length === n ? c : null;
});

let browser = null;
try {
  log(`${binary}: starting 3 nodes`);
  start(nodes[0], null);
  await voters(1);
  for (const n of nodes.slice(1)) start(n, nodes[0].http);
  const cluster = await voters(3);

  log(`loading ${SERVICES} services × ${SERVERS} servers`);
  const services = Array.from({ length: SERVICES }, (_, i) => ({
    protocol: 'tcp',
    address: `10.0.${Math.floor(i / 250)}.${(i % 250) + 1}`,
    port: 80,
    servers: Array.from({ length: SERVERS }, (__, s) => ({
      address: `10.${1 + Math.floor(s / 250)}.${s % 250}.${(i % 250) + 1}`, port: 8080 + Math.floor(i / 250),
    })),
  }));
  const body = JSON.stringify({ services });
  // Right after the joins an election may still be under way (503): retry.
  let put;
  for (let tries = 0; tries < 30; tries += 1) {
    put = await json(nodes[0].http, '/api/v1/config', {
      method: 'PUT', headers: { 'Content-Type': 'application/json' }, body,
    });
    if (put.status !== 503) break;
    await sleep(1000);
  }
  if (put.status >= 300) throw new Error(`PUT /api/v1/config: ${put.status} ${JSON.stringify(put.body)}`);
  const follower = nodes.find((n) => n.name !== cluster.leader_id);
  await waitFor('every node applied the load', async () => {
    const c = (await json(follower.http, '/api/v1/cluster')).body;
    const applied = c.members.map((m) => m.last_applied);
    return applied.every((a) => a !== null && a === applied[0]) && c.commit_index <= applied[0];
  });

  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  // Bytes as received (encoded, headers included), with when.
  // [when (the browser's clock, s), bytes, request]: the events' own
  // timestamps, since the events of a multi-megabyte answer reach this
  // script seconds after the bytes reached the browser.
  const received = [];
  const urls = new Map(); // requestId → method, path and query
  let marker = null; // the request that starts the idle window
  cdp.on('Network.requestWillBeSent', (e) => {
    const u = new URL(e.request.url);
    urls.set(e.requestId, `${e.request.method} ${u.pathname}${u.search}`);
    if (u.pathname === '/readyz' && marker === 'waiting') marker = e.timestamp;
  });
  cdp.on('Network.dataReceived', (e) => received.push([e.timestamp, e.encodedDataLength, urls.get(e.requestId)]));
  cdp.on('Network.responseReceived', (e) => received.push([e.timestamp, e.response.encodedDataLength ?? 0, urls.get(e.requestId)]));

  log(`opening ${follower.name}'s UI`);
  await page.goto(`http://127.0.0.1:${follower.http}/`);
  await page.waitForFunction(() => performance.getEntriesByName('ipvs:first-rows').length > 0, null, { timeout: 60000 });
  const timing = await page.evaluate(() => ({
    firstRows: performance.getEntriesByName('ipvs:first-rows')[0].startTime,
    fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null,
    rows: document.querySelectorAll('#overview-body tr').length,
    elements: document.getElementsByTagName('*').length,
    count: document.getElementById('overview-count').textContent,
  }));

  // Settled: past two of the nodes' 10 s traffic rounds (sampling, then
  // the members' polls), in which every new service's row of the traffic
  // summary appears, changes once, and is sent again with `?since`.
  log('settling 25 s, then counting idle traffic for 20 s');
  await sleep(25000);
  // The window starts when the browser sends a marker request (the page
  // never asks for /readyz itself; its bytes are left out).
  marker = 'waiting';
  await page.evaluate(() => fetch('/readyz').then((r) => r.text()));
  await waitFor('the marker request', () => typeof marker === 'number');
  const t0 = marker;
  await sleep(21000);
  const idle = received.filter(([, , u]) => u !== 'GET /readyz');
  const loadBytes = received.filter(([t]) => t < t0).reduce((a, [, b]) => a + b, 0);
  const windows = Array.from({ length: 10 }, (_, k) => idle
    .filter(([t]) => t >= t0 + k * 2 && t < t0 + (k + 1) * 2)
    .reduce((a, [, b]) => a + b, 0));
  const idleAvg = windows.reduce((a, b) => a + b, 0) / windows.length;
  const idleMax = Math.max(...windows);
  // What the idle bytes were, by request.
  const byUrl = new Map();
  for (const [t, b, u] of idle) {
    if (t >= t0 && t < t0 + 20) byUrl.set(u, (byUrl.get(u) ?? 0) + b);
  }

  // The server's side of the same watch, read here for 10 s from the
  // revision the page synced at: what the stream carries when idle.
  const syncRev = await page.evaluate(() => performance.getEntriesByName('ipvs:watch-sync')[0]?.detail);
  const raw = { bytes: 0, events: {} };
  {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 10000);
    try {
      const r = await fetch(`http://127.0.0.1:${follower.http}/api/v1/services?watch=true&since=${syncRev}`, { signal: ac.signal });
      const dec = new TextDecoder();
      for await (const chunk of r.body) {
        raw.bytes += chunk.length;
        for (const m of dec.decode(chunk, { stream: true }).matchAll(/^event: (\w+)$/gm)) {
          raw.events[m[1]] = (raw.events[m[1]] ?? 0) + 1;
        }
      }
    } catch {
      // aborted after 10 s
    }
    clearTimeout(timer);
  }

  log('12 keystrokes in the search box');
  const keys = '10.0.1.11005';
  const times = [];
  for (const ch of keys) {
    times.push(await page.evaluate(async (c) => {
      const el = document.getElementById('search');
      const t = performance.now();
      el.value += c;
      el.dispatchEvent(new Event('input', { bubbles: true }));
      await new Promise((r) => { requestAnimationFrame(() => setTimeout(r, 0)); });
      return performance.now() - t;
    }, ch));
    await sleep(100);
  }
  const after = await page.evaluate(() => document.getElementById('overview-count').textContent);
  const watch = await page.evaluate(() => [...performance.getEntriesByName('ipvs:watch-sync'),
    ...performance.getEntriesByName('ipvs:watch-retry')]
    .sort((a, b) => a.startTime - b.startTime)
    .map((m) => `${Math.round(m.startTime)} ms ${m.name} ${m.detail}`));
  times.sort((a, b) => a - b);

  const kb = (b) => `${(b / 1024).toFixed(1)} KB`;
  const ms = (v) => (v === null ? '–' : `${Math.round(v)} ms`);
  console.log(`${SERVICES} services × ${SERVERS} servers, 3 nodes, ${binary}, UI of ${follower.name}\n`);
  console.log('| measure | value |');
  console.log('|---|---|');
  console.log(`| first paint (first-contentful-paint) | ${ms(timing.fcp)} |`);
  console.log(`| first table rows (${timing.count}) | ${ms(timing.firstRows)} |`);
  console.log(`| bytes received to load the page (all before the idle window) | ${kb(loadBytes)} |`);
  console.log(`| overview rows in the DOM / elements in the page | ${timing.rows} / ${timing.elements} |`);
  console.log(`| idle refresh traffic per 2 s (mean of 10 windows) | ${kb(idleAvg)} |`);
  console.log(`| idle refresh traffic, worst 2 s | ${kb(idleMax)} |`);
  const polls = [...byUrl].filter(([u]) => !u.startsWith('GET /api/v1/services?watch=true')).reduce((a, [, b]) => a + b, 0);
  console.log(`| idle refresh traffic per 2 s: the polls, and the watch as read outside the browser | ${kb(polls / 10 + raw.bytes / 5)} |`);
  console.log(`| filter keystroke to result painted (median of ${times.length}) | ${times[Math.floor(times.length / 2)].toFixed(1)} ms |`);
  console.log(`| filter keystroke to result painted (worst) | ${times.at(-1).toFixed(1)} ms |`);
  console.log(`\nsearch "${keys}": ${after}`);
  console.log(`\nthe watch: ${watch.join('; ')}`);
  console.log(`the watch from revision ${syncRev}, read for 10 s outside the browser: ${raw.bytes} bytes, events ${JSON.stringify(raw.events)}`);
  console.log('\nidle bytes in 20 s by request:');
  for (const [u, b] of [...byUrl].sort((x, y) => y[1] - x[1])) console.log(`  ${kb(b)}  ${u}`);
  if (errors.length) {
    console.log(`page errors: ${errors.join('; ')}`);
    process.exitCode = 1;
  }
} catch (e) {
  console.error(`bench: failed: ${e.stack ?? e}`);
  process.exitCode = 1;
} finally {
  await browser?.close();
  for (const n of nodes) n.child?.kill('SIGKILL');
  await sleep(200);
  rmSync(dir, { recursive: true, force: true });
}
