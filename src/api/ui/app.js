// ipvs-manager web UI: the services overview (a virtually scrolled table
// kept current by the services watch, with the traffic summary's rates), a
// service's detail on demand (its real servers, each node's health and
// kernel counters, a traffic chart), the cluster with each node's reconcile
// status, and forms that write through the REST API of the node that
// served this page.
//
// Modules: api.js (requests, token), dom.js (element building, formatting),
// stream.js (the services watch), traffic.js (the traffic summary),
// overview.js (the table), chart.js (the chart, drawn by the vendored
// uPlot); this file wires them and holds the detail, cluster and forms.
//
// Rules these files keep:
// - Every element is made with document.createElement and every value from
//   the API goes in as text (textContent, or a string argument of append,
//   which makes a text node) or as an attribute value; no HTML is parsed
//   from strings. The page's Content-Security-Policy enforces it: Trusted
//   Types with no policy make any innerHTML assignment throw.
// - Validation is the API's: forms send what was typed, and the API's
//   messages are shown next to the field each one names.
// - Every request goes through api.js, the one place that adds a bearer
//   token (kept in sessionStorage, asked for when the node answers 401).
// - Nothing the size of the service list is polled: the list comes from the
//   watch, the rates from the traffic summary's changes; what is polled
//   every 2 s is small (the cluster, this node, the open service).

import { api, ApiError, path } from './api.js';
import { h, $, short, hostPort, serviceTitle } from './dom.js';
import { watchServices } from './stream.js';
import { pollTraffic } from './traffic.js';
import { Overview } from './overview.js';
import { trafficChart } from './chart.js';

const POLL_MS = 2000;

/**
 * Makes `container`'s children the given items, keyed: an item whose
 * signature has not changed keeps its element (focus, hover and an open
 * <details> survive the 2 s refresh); others are built anew.
 */
function reconcileChildren(container, items) {
  const existing = new Map();
  for (const el of container.children) {
    if (el.dataset.key !== undefined) existing.set(el.dataset.key, el);
  }
  const wanted = items.map((item) => {
    const old = existing.get(item.key);
    if (old && old.dataset.sig === item.sig) return old;
    const el = item.build();
    el.dataset.key = item.key;
    el.dataset.sig = item.sig;
    return el;
  });
  wanted.forEach((el, i) => {
    if (container.children[i] !== el) container.insertBefore(el, container.children[i] ?? null);
  });
  while (container.children.length > wanted.length) container.lastElementChild.remove();
}

// ---------------------------------------------------------------- formatting

function numCell(n, suffix = '') {
  return h('td', { class: 'num', title: typeof n === 'number' ? n.toLocaleString('en') : undefined },
    short(n) + suffix);
}

function clock(rfc3339) {
  const t = new Date(rfc3339);
  return Number.isNaN(t.getTime()) ? String(rfc3339) : t.toLocaleTimeString('en-GB');
}

/** The time of day, with the date only when it is not today. */
function dateTime(rfc3339) {
  if (!rfc3339) return '–';
  const t = new Date(rfc3339);
  if (Number.isNaN(t.getTime())) return String(rfc3339);
  const time = t.toLocaleTimeString('en-GB');
  return t.toDateString() === new Date().toDateString()
    ? time : `${t.toLocaleDateString('en-GB')} ${time}`;
}

function secondsLeft(until) {
  const ms = new Date(until).getTime() - Date.now();
  return Number.isNaN(ms) ? 0 : Math.max(0, Math.ceil(ms / 1000));
}

function drainText(drain) {
  return `draining until ${clock(drain.until)} (${secondsLeft(drain.until)} s left)`;
}

const HTTP_KINDS = ['http', 'https'];
const PAYLOAD_KINDS = ['udp', 'dns'];

/** 1234 µs → "1.2 ms". */
function latencyText(us) {
  if (typeof us !== 'number') return '';
  if (us < 1000) return `${us} µs`;
  if (us < 10000) return `${(us / 1000).toFixed(1)} ms`;
  return `${Math.round(us / 1000)} ms`;
}

/** Where a check's probes go, when not to the server itself. */
function checkTarget(c) {
  if (c.address && c.port) return hostPort(c.address, c.port);
  if (c.address) return `address ${c.address}`;
  if (c.port) return `port ${c.port}`;
  return null;
}

/** A health check in a line: "tcp every 2 s (timeout 1 s, rise 2, fall 3), port 8080". */
function checkText(c) {
  if (c.kind === 'none') return 'not probed';
  const parts = [`${c.kind} every ${c.interval} s (timeout ${c.timeout} s, rise ${c.rise}, fall ${c.fall})`];
  const target = checkTarget(c);
  if (target) parts.push(target);
  if (HTTP_KINDS.includes(c.kind)) {
    parts.push(`${c.method ?? 'GET'} ${c.path ?? '/'} → ${(c.expect ?? [200]).join('/')}`);
    if (c.host) parts.push(`Host ${c.host}`);
    if (c.body) parts.push(`body contains "${c.body}"`);
  }
  if (c.kind === 'dns') parts.push(`query ${c.payload}`);
  if (c.kind === 'udp' && c.payload) parts.push(`payload "${c.payload}"`);
  return parts.join(', ');
}

function fallbackText(fb) {
  return `${hostPort(fb.address, fb.port)} (${fb.forward})`;
}

/** A health policy in a line (null: the defaults). */
function policyText(p) {
  const parts = [p?.unhealthy === 'remove' ? 'a down server leaves the kernel' : 'a down server gets weight 0'];
  if (p?.slow_start) parts.push(`slow start ${p.slow_start} s`);
  parts.push(p?.all_down === 'fallback' && p.fallback
    ? `all down: fallback ${fallbackText(p.fallback)}`
    : 'all down: fail open');
  return parts.join(', ');
}

/** The check a server is probed with (its own, else its service's), or null. */
function checkOf(s, r) {
  const c = r.health_check ?? s.health_check ?? null;
  return c && c.kind !== 'none' ? c : null;
}

/** Whether any server of the service is probed. */
function probed(s) {
  return s.servers.some((r) => checkOf(s, r));
}

/** The members whose probed servers of this service are all down. */
function allDownNodes(serviceId) {
  return memberNames().filter((name) => state.health.get(name)?.allDown.has(serviceId));
}

/** "a", "a and b", "a, b and c". */
function andList(items) {
  return items.length < 2 ? items.join('') : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`;
}

// Ids as the API derives them (src/api/ids.rs), from the kernel table's
// model encoding: {"Inet":{"protocol":"Tcp","addr","port"}} or
// {"Fwmark":{"family":"Ipv6","mark"}}; addresses are already canonical.
const idAddress = (addr) => String(addr).replaceAll(':', '_');

function kernelServiceId(key) {
  if (key?.Inet) return `${key.Inet.protocol.toLowerCase()}-${idAddress(key.Inet.addr)}-${key.Inet.port}`;
  if (key?.Fwmark) return `fwmark-${key.Fwmark.family.toLowerCase()}-${key.Fwmark.mark}`;
  return JSON.stringify(key);
}

const kernelServerId = (dest) => `${idAddress(dest.addr)}-${dest.port}`;

// ---------------------------------------------------------------- state

const state = {
  cluster: null,
  node: null,
  /** member name → {table} | {error}; read only while a service's detail
   *  or the cluster view is shown (at 5,000 services a table is megabytes). */
  kernels: new Map(),
  /** member name → its health checks, from its own report (its node view,
   *  which the cluster view carries): {probes: "service server" → probe,
   *  allDown: Set of service ids, down: service id → servers down};
   *  absent when the member did not answer. */
  health: new Map(),
  /** The service whose detail is open: its id, and the service as
   *  `GET /api/v1/services/{id}` answers (with each node's health view). */
  selected: null,
  detail: null,
  /** The detail's chart: the uPlot instance and the last answer. */
  chart: null,
  watchError: null,
  watching: false,
  updated: null,
  error: null,
};
/** Services whose counters the user folded away. */
const folded = new Set();
let pollTimer = null;
let pollSeq = 0;

const overview = new Overview({
  health: overviewHealth,
  onOpen: (id) => openDetail(id),
});

/** A service as the watch last delivered it. */
function serviceById(id) {
  if (state.detail?.id === id) return state.detail;
  return overview.services.get(id);
}

/** Every service, in the overview's order of ids. */
function allServices() {
  return [...overview.services.values()];
}

/** The member names, sorted, as the cluster view lists them. */
function memberNames() {
  return (state.cluster?.members ?? []).map((m) => m.id).sort();
}

/** Servers up/total on each node for the overview, from the health checks
 *  each node reports: a server not probed counts as up. */
function overviewHealth(id, s) {
  const total = s.servers.length;
  return memberNames().map((name) => {
    const hv = state.health.get(name);
    if (!hv) return { name, up: undefined, total };
    return { name, up: total - (hv.down.get(id) ?? 0), total };
  });
}

// ---------------------------------------------------------------- the watch

watchServices({
  sync: (data) => {
    state.watching = true;
    overview.replaceAll(data.services);
    renderLive();
    if (state.selected) refresh();
  },
  change: (data) => {
    overview.applyChanges(data.changes);
    // The open service changed: read it again (with its health views).
    if (state.selected && data.changes.some((c) => c.id === state.selected)) {
      if (!overview.services.has(state.selected)) closeDetail();
      else refresh();
    }
  },
  status: (err) => {
    state.watchError = err;
    renderLive();
  },
});

pollTraffic((rows, removed, full) => overview.applyTraffic(rows, removed, full));

// ---------------------------------------------------------------- polling

/** How often the cluster view reads every member's whole kernel table for
 *  its drift column: a table is megabytes at thousands of services, and the
 *  reconcilers repair drift by themselves. */
const WHOLE_TABLES_MS = 30000;

/** What a view shows that kernel tables feed: the detail's counters, and
 *  the cluster view's drift. */
function needKernels() {
  return Boolean(state.selected) || location.hash === '#cluster';
}

async function refresh() {
  clearTimeout(pollTimer);
  const seq = ++pollSeq;
  try {
    const selected = state.selected;
    const [cluster, node, detail] = await Promise.all([
      api('GET', path.cluster()),
      api('GET', path.node()),
      selected
        ? api('GET', path.service(selected)).then((r) => r.data, (e) => (e.status === 404 ? null : Promise.reject(e)))
        : null,
    ]);
    const names = cluster.data.members.map((m) => m.id);
    // The cluster view compares whole tables (read again every 30 s); a
    // service's detail needs only that service's part of each (a few
    // hundred bytes, not megabytes), every poll.
    const whole = location.hash === '#cluster';
    const part = whole ? undefined : selected;
    const reuse = whole && Date.now() - (state.wholeTablesAt ?? 0) < WHOLE_TABLES_MS;
    const tables = needKernels() && !reuse
      ? await Promise.all(names.map((name) =>
        api('GET', path.memberKernel(name, part)).then(
          (r) => ({ table: r.data }),
          (e) => ({ error: e.message }),
        )))
      : null;
    if (seq !== pollSeq) return; // a newer refresh (after a write) won
    state.cluster = cluster.data;
    state.node = node.data;
    state.detail = selected && selected === state.selected ? detail : state.detail;
    if (!reuse) {
      state.kernels = tables ? new Map(names.map((n, i) => [n, tables[i]])) : new Map();
      state.wholeTablesAt = whole && tables ? Date.now() : 0;
    }
    const healthSig = JSON.stringify(cluster.data.members.map((m) => [m.id, m.node?.health]));
    state.health = new Map(cluster.data.members.filter((m) => m.node?.health).map((m) => {
      const down = new Map();
      for (const p of m.node.health.servers) {
        if (p.state === 'down') down.set(p.service, (down.get(p.service) ?? 0) + 1);
      }
      return [m.id, {
        probes: new Map(m.node.health.servers.map((p) => [`${p.service} ${p.server}`, p])),
        allDown: new Set(m.node.health.all_down),
        down,
      }];
    }));
    if (healthSig !== refresh.healthSig) {
      refresh.healthSig = healthSig;
      overview.healthChanged();
    }
    state.updated = new Date();
    state.error = null;
    render();
    if (state.selected) loadChart();
  } catch (e) {
    if (seq !== pollSeq) return;
    state.error = e;
    renderLive();
  } finally {
    if (seq === pollSeq && !document.hidden) pollTimer = setTimeout(refresh, POLL_MS);
  }
}

// A hidden tab stops polling; it catches up at once when shown again.
document.addEventListener('visibilitychange', () => {
  if (document.hidden) {
    clearTimeout(pollTimer);
    renderLive();
  } else {
    refresh();
  }
});

// ---------------------------------------------------------------- rendering

function render() {
  renderLive();
  renderSummary();
  renderDetail();
  if (location.hash === '#cluster') renderCluster();
}

function renderLive() {
  const live = $('live');
  live.classList.toggle('error', Boolean(state.error));
  live.classList.toggle('paused', document.hidden);
  if (state.error) {
    live.textContent = `not updating: ${state.error.message}`;
  } else if (state.watchError) {
    live.classList.add('error');
    live.textContent = `not updating: ${state.watchError.message}`;
  } else if (!state.watching) {
    live.textContent = 'loading…';
  } else if (state.updated) {
    live.textContent = `live · updated ${state.updated.toLocaleTimeString('en-GB')}`;
  } else {
    live.textContent = 'loading…';
  }
}

function renderSummary() {
  const c = state.cluster;
  const n = state.node;
  if (!c || !n) return;
  // A node that knows it has no quorum says so: its writes are refused.
  const lost = c.quorum && !c.quorum.ok && c.quorum.problem;
  $('summary').textContent =
    `${n.id} (${n.role}${lost ? ' without a quorum' : ''}) · leader ${c.leader_id ?? 'none'} · ` +
    `term ${c.term} · ${c.members.length} member${c.members.length === 1 ? '' : 's'}`;
  const quorum = $('quorum');
  quorum.hidden = !lost;
  quorum.textContent = lost ? `No quorum: ${c.quorum.problem}. Changes are refused until it is back.` : '';
}

// --- services

/** What each node's kernel holds for one service: name → entry | null | {error}. */
function kernelSlice(s) {
  const slice = [];
  for (const name of memberNames()) {
    const k = state.kernels.get(name);
    if (!k || k.error) {
      slice.push({ name, error: k?.error ?? 'no answer' });
      continue;
    }
    const entry = k.table.services.find((e) => kernelServiceId(e.service.key) === s.id) ?? null;
    slice.push({ name, entry, drift: serviceDrift(s, entry, name) });
  }
  return slice;
}

// --- a service's detail

function openDetail(id) {
  if (state.selected !== id) {
    state.chart?.plot?.destroy();
    state.chart = null;
    $('chart').replaceChildren();
  }
  state.selected = id;
  state.detail = overview.services.get(id) ?? null;
  overview.select(id);
  $('detail').hidden = false;
  renderDetail();
  refresh();
}

function closeDetail() {
  state.selected = null;
  state.detail = null;
  state.chart?.plot?.destroy();
  state.chart = null;
  $('chart').replaceChildren();
  overview.select(null);
  $('detail').hidden = true;
  $('services').replaceChildren();
}

$('detail-close').addEventListener('click', closeDetail);

function renderDetail() {
  const s = state.detail;
  if (!state.selected || !s) return;
  const slice = kernelSlice(s);
  // Countdowns change every poll; only draining services show one.
  const drains = [s.draining, ...s.servers.map((r) => r.draining)]
    .filter(Boolean).map((d) => secondsLeft(d.until));
  reconcileChildren($('services'), [{
    key: s.id,
    sig: JSON.stringify([s, slice, drains, folded.has(s.id), allDownNodes(s.id), memberNames()]),
    build: () => serviceCard(s, slice),
  }]);
}

/** The open service's chart, from `/api/v1/traffic/{service}`; nothing
 *  (a note) while the node has no traffic API. */
async function loadChart() {
  const id = state.selected;
  const box = $('chart');
  let answer = null;
  let note = null;
  try {
    answer = (await api('GET', path.serviceTraffic(id))).data;
  } catch (e) {
    note = e.status === 404 ? 'No traffic history: this node does not keep one.' : `No traffic history: ${e.message}`;
  }
  if (id !== state.selected) return;
  if (note) {
    state.chart?.plot?.destroy();
    state.chart = null;
    if (box.textContent !== note) box.replaceChildren(h('p', { class: 'note' }, note));
    return;
  }
  const sig = JSON.stringify(answer);
  if (state.chart?.sig === sig) return;
  const plot = trafficChart(box, answer, state.chart?.plot);
  state.chart = { plot, sig };
}

function serviceCard(s, slice) {
  const tags = [h('span', { class: 'tag', title: 'scheduler' }, s.scheduler)];
  for (const f of s.flags) tags.push(h('span', { class: 'tag' }, f));
  if (s.persistence) {
    tags.push(h('span', { class: 'tag' },
      `persistent ${s.persistence.timeout} s, mask ${s.persistence.netmask}`));
  }
  if (s.pe) tags.push(h('span', { class: 'tag' }, `pe ${s.pe}`));
  if (s.bind_address) tags.push(h('span', { class: 'tag' }, 'VIP bound'));
  if (s.drain_grace !== undefined) tags.push(h('span', { class: 'tag' }, `drain grace ${s.drain_grace} s`));
  if (s.health_check) {
    tags.push(h('span', { class: 'tag health', title: 'health check (each node probes each server)', dataset: { testid: 'health-check' } },
      `health: ${checkText(s.health_check)}`));
  }
  if (s.health_policy || probed(s)) {
    tags.push(h('span', { class: 'tag health', title: 'health policy: what each node does with the servers it finds down', dataset: { testid: 'health-policy' } },
      policyText(s.health_policy)));
  }
  tags.push(h('span', { class: 'tag', title: 'revision (ETag)' }, `rev ${s.revision}`));
  if (s.draining) {
    tags.push(h('span', { class: 'tag drain', dataset: { testid: 'service-draining' } }, drainText(s.draining)));
  }

  const down = allDownNodes(s.id);
  let banner = null;
  if (down.length) {
    const fb = s.health_policy?.all_down === 'fallback' ? s.health_policy.fallback : null;
    banner = h('p', { class: 'banner bad', dataset: { testid: 'all-down' } },
      h('strong', {}, `All servers down on ${andList(down)}`),
      fb
        ? `: ${down.length === 1 ? 'its' : 'their'} traffic goes to the fallback server ${fallbackText(fb)}.`
        : ': failing open, the servers keep their configured weights (there is no healthy one to send traffic to).');
  }
  return h('article', { class: `service${s.draining ? ' draining' : ''}${down.length ? ' all-down' : ''}`, dataset: { service: s.id } },
    h('header', { class: 'service-head' },
      h('h3', {}, serviceTitle(s)),
      h('code', { class: 'id' }, s.id),
      h('div', { class: 'tags' }, tags),
      h('div', { class: 'actions' },
        h('button', { type: 'button', dataset: { action: 'add-server' }, onclick: () => openServerForm(s.id) }, 'Add server'),
        h('button', { type: 'button', dataset: { action: 'edit-service' }, onclick: () => openServiceForm(s.id) }, 'Edit'),
        h('button', { type: 'button', dataset: { action: 'drain-service' }, onclick: () => openRemove(s.id, null, false) }, 'Drain'),
        h('button', { type: 'button', class: 'danger', dataset: { action: 'delete-service' }, onclick: () => openRemove(s.id, null, true) }, 'Delete'))),
    banner,
    serversTable(s),
    kernelDetails(s, slice));
}

function serversTable(s) {
  const rows = s.servers.map((r) => {
    const draining = r.draining ?? s.draining;
    const tunnel = r.tunnel
      ? ` (${r.tunnel.type}${r.tunnel.port !== null ? ` port ${r.tunnel.port}` : ''}, ${r.tunnel.checksum})`
      : '';
    const thresholds = r.upper_threshold || r.lower_threshold
      ? `${r.lower_threshold} – ${r.upper_threshold}` : '–';
    let stateCell;
    if (r.draining) {
      stateCell = h('span', { class: 'badge drain', dataset: { testid: 'draining' } }, drainText(r.draining));
    } else if (s.draining) {
      stateCell = h('span', { class: 'badge drain' }, 'draining with its service');
    } else {
      stateCell = healthState(r);
    }
    return h('tr', { class: draining ? 'draining' : '', dataset: { server: r.id } },
      h('td', { class: 'mono' }, hostPort(r.address, r.port)),
      h('td', { class: 'num' }, String(r.weight)),
      h('td', {}, r.forward + tunnel),
      h('td', { class: 'num' }, thresholds),
      h('td', {}, stateCell),
      h('td', { class: 'health' }, healthCell(s, r)),
      h('td', { class: 'actions' },
        h('button', { type: 'button', class: 'link', dataset: { action: 'edit-server' }, onclick: () => openServerForm(s.id, r.id) }, 'Edit'),
        h('button', { type: 'button', class: 'link', dataset: { action: 'drain-server' }, onclick: () => openRemove(s.id, r.id, false) }, 'Drain'),
        h('button', { type: 'button', class: 'link danger', dataset: { action: 'delete-server' }, onclick: () => openRemove(s.id, r.id, true) }, 'Delete')));
  });
  if (rows.length === 0) {
    rows.push(h('tr', {}, h('td', { class: 'none', colspan: 7 }, 'No real servers: add one.')));
  }
  return h('table', { class: 'servers' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Real server'),
      h('th', { scope: 'col', class: 'num' }, 'Weight'),
      h('th', { scope: 'col' }, 'Forwarding'),
      h('th', { scope: 'col', class: 'num' }, 'Thresholds (lower – upper)'),
      h('th', { scope: 'col' }, 'State'),
      h('th', { scope: 'col', title: 'each node\'s view: every node probes every server itself' }, 'Health by node'),
      h('th', { scope: 'col', class: 'actions' }, 'Actions'))),
    h('tbody', {}, rows));
}

/** A server's State from each node's health view: down when every node
 *  that probes it finds it down, degraded when some do, else active. */
function healthState(r) {
  const views = Object.entries(r.health ?? {});
  const down = views.filter(([, v]) => v.state === 'down').map(([name]) => name).sort();
  if (views.length && down.length === views.length) {
    return h('span', { class: 'badge bad', dataset: { testid: 'server-state' } }, 'down on every node');
  }
  if (down.length) {
    return h('span', { class: 'badge warn', dataset: { testid: 'server-state' } }, `degraded: down on ${andList(down)}`);
  }
  return h('span', { class: 'badge ok', dataset: { testid: 'server-state' } }, 'active');
}

/** One node's view of a server, for a badge's title. */
function healthTitle(name, v, configured) {
  const lines = [`${name}: ${v.state} ${v.since ? `since ${dateTime(v.since)}` : 'since probing began'}`];
  lines.push(`${v.checks} probe${v.checks === 1 ? '' : 's'}`);
  if (v.latency_us !== null && v.latency_us !== undefined) lines.push(`last successful probe: ${latencyText(v.latency_us)}`);
  if (v.error) lines.push(`error: ${v.error}`);
  lines.push(v.weight === null ? 'not in its kernel' : `weight in its kernel: ${v.weight} (configured ${configured})`);
  return lines.join('\n');
}

/** Each node's view of a server (`health` of the service response): a
 *  badge per node, and the errors of those that find it down. */
function healthCell(s, r) {
  const own = r.health_check
    ? h('div', { class: 'own-check', dataset: { testid: 'own-check' } }, `own check: ${checkText(r.health_check)}`)
    : null;
  const views = r.health ?? {};
  const check = checkOf(s, r);
  if (!check && Object.keys(views).length === 0) {
    return [own, h('span', { class: 'badge muted' }, 'not probed')];
  }
  const names = [...new Set([...memberNames(), ...Object.keys(views)])].sort();
  const errors = new Map(); // error → nodes
  const badges = names.map((name) => {
    const v = views[name];
    if (!v) {
      return h('span', { class: 'badge muted health-badge', dataset: { node: name, state: 'unknown' }, title: `${name}: no report yet` },
        `${name} ?`);
    }
    if (v.state === 'down' && v.error) errors.set(v.error, [...(errors.get(v.error) ?? []), name]);
    const up = v.state === 'up';
    const ramping = up && v.weight !== null && v.weight < r.weight && !r.draining && !s.draining;
    return h('span', {
      class: `badge health-badge ${up ? 'ok' : 'bad'}`,
      dataset: { node: name, state: v.state },
      title: healthTitle(name, v, r.weight),
    }, `${name} ${v.state}`, up && v.latency_us !== null ? h('small', {}, ` ${latencyText(v.latency_us)}`) : '',
    ramping ? h('small', {}, ` weight ${v.weight}/${r.weight}`) : '');
  });
  return [
    own,
    h('div', { class: 'health-badges' }, badges),
    [...errors].map(([error, nodes]) => h('div', { class: 'health-error' },
      `${error} (${nodes.join(', ')})`)),
  ];
}

const COUNTER_HEADS = [
  ['Weight', 'weight as programmed (0 while draining, or while this node finds the server down)'],
  ['Active', 'active connections'],
  ['Inactive', 'inactive connections'],
  ['Conns', 'connections scheduled, total'],
  ['In pkts', 'packets in, total'],
  ['Out pkts', 'packets out, total'],
  ['In bytes', 'bytes in, total'],
  ['Out bytes', 'bytes out, total'],
  ['Conn/s', 'connections per second (kernel estimate)'],
  ['In pkt/s', 'packets in per second'],
  ['Out pkt/s', 'packets out per second'],
  ['In B/s', 'bytes in per second'],
  ['Out B/s', 'bytes out per second'],
];

function statCells(stats) {
  return [
    numCell(stats.conns), numCell(stats.inpkts), numCell(stats.outpkts),
    numCell(stats.inbytes), numCell(stats.outbytes),
    numCell(stats.cps), numCell(stats.inpps), numCell(stats.outpps),
    numCell(stats.inbps), numCell(stats.outbps),
  ];
}

/** The fallback server a node sends the service's traffic to now (all its
 *  probed servers down there, with all_down: fallback), or null. */
function activeFallback(s, node) {
  const p = s.health_policy;
  return p?.all_down === 'fallback' && p.fallback && state.health.get(node)?.allDown.has(s.id)
    ? p.fallback : null;
}

/** Differences between what one node's kernel should hold for a service
 *  and what it holds. What it should hold is the node's own answer (the
 *  `target` of its kernel table: the weight it programs for each server,
 *  drains and its health checks applied), never worked out here. */
function serviceDrift(s, entry, node) {
  const out = [];
  const target = state.kernels.get(node)?.table?.target?.[s.id];
  if (!entry) {
    if (target) out.push(`${s.id} is not in the kernel`);
    return out;
  }
  const configured = new Map(s.servers.map((r) => [r.id, r]));
  const fb = s.health_policy?.fallback;
  const fallbackId = fb ? `${idAddress(fb.address)}-${fb.port}` : null;
  const name = (id) => (id === fallbackId && !configured.has(id) ? `the fallback server ${id}` : `server ${id}`);
  const probes = state.health.get(node)?.probes;
  const slowStart = (s.health_policy?.slow_start ?? 0) * 1000;
  const now = Date.now();
  const dests = new Map(entry.destinations.map((d) => [kernelServerId(d.dest), d]));
  for (const [id, want] of Object.entries(target ?? {})) {
    const d = dests.get(id);
    dests.delete(id);
    if (!d) {
      out.push(`${s.id}: ${name(id)} is not in the kernel`);
      continue;
    }
    // A recovering server's weight ramps up between the kernel's read and
    // the target's.
    const probe = probes?.get(`${s.id} ${id}`);
    const ramping = probe?.state === 'up' && slowStart > 0 && probe.since
      && now - new Date(probe.since).getTime() < slowStart + POLL_MS
      && d.dest.weight > 0 && d.dest.weight <= (configured.get(id)?.weight ?? want);
    if (d.dest.weight !== want && !ramping) {
      const why = probe ? ' with this node\'s health checks' : '';
      out.push(`${s.id}: ${name(id)} has weight ${d.dest.weight}, desired ${want}${why}`);
    }
  }
  for (const id of dests.keys()) {
    const r = configured.get(id);
    out.push(!r ? `${s.id}: server ${id} is in the kernel but not desired`
      : r.draining || s.draining ? `${s.id}: server ${id} is in the kernel after its drain ended`
        : `${s.id}: server ${id} is in the kernel, though this node's health checks take it out`);
  }
  return out;
}

function kernelDetails(s, slice) {
  const bodies = slice.map(({ name, entry, error }) => {
    if (error) {
      return h('tbody', {}, h('tr', { class: 'missing' },
        h('td', { class: 'node' }, name),
        h('td', { colspan: COUNTER_HEADS.length + 1 }, `kernel table unavailable: ${error}`)));
    }
    if (!entry) {
      return h('tbody', {}, h('tr', { class: 'missing' },
        h('td', { class: 'node' }, name),
        h('td', { colspan: COUNTER_HEADS.length + 1 }, 'not in this node\'s kernel')));
    }
    const rows = [h('tr', { class: 'total' },
      h('td', { class: 'node' }, name),
      h('td', {}, 'service'),
      h('td', { class: 'num' }, ''),
      numCell(entry.destinations.reduce((a, d) => a + d.active_conns, 0)),
      numCell(entry.destinations.reduce((a, d) => a + d.inactive_conns, 0)),
      statCells(entry.stats))];
    // The servers' order in the list above; servers only the kernel has last.
    const order = new Map(s.servers.map((r, i) => [r.id, i]));
    const rank = (d) => order.get(kernelServerId(d.dest)) ?? order.size;
    const dests = [...entry.destinations].sort((a, b) => rank(a) - rank(b));
    const fallback = activeFallback(s, name);
    const fallbackId = fallback ? `${idAddress(fallback.address)}-${fallback.port}` : null;
    for (const d of dests) {
      const id = kernelServerId(d.dest);
      rows.push(h('tr', { dataset: { server: id } },
        h('td', {}, ''),
        h('td', { class: 'mono' }, hostPort(d.dest.addr, d.dest.port),
          id === fallbackId ? [' ', h('span', { class: 'badge warn fallback-mark' }, 'fallback')] : ''),
        numCell(d.dest.weight),
        numCell(d.active_conns),
        numCell(d.inactive_conns),
        statCells(d.stats)));
    }
    return h('tbody', { dataset: { node: name } }, rows);
  });
  const drift = slice.flatMap(({ drift: d, error }) => (error ? [] : d));
  const badge = drift.length === 0
    ? h('span', { class: 'badge ok' }, `in every kernel (${slice.length})`)
    : h('span', { class: 'badge warn', title: drift.join('\n') },
      `${drift.length} difference${drift.length === 1 ? '' : 's'} from the desired state`);
  return h('details', {
    class: 'kernel',
    open: !folded.has(s.id),
    ontoggle: (e) => {
      if (e.target.open) folded.delete(s.id); else folded.add(s.id);
    },
  },
  h('summary', {}, 'Kernel counters by node', badge),
  h('div', { class: 'counters-wrap' },
    h('table', { class: 'counters' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Node'),
        h('th', { scope: 'col' }, 'Entry'),
        COUNTER_HEADS.map(([label, title]) => h('th', { scope: 'col', class: 'num', title }, label)))),
      bodies)));
}

// --- cluster

/** Every difference between the desired state and one node's kernel. */
function nodeDrift(name, table) {
  const out = [];
  const byId = new Map(table.services.map((e) => [kernelServiceId(e.service.key), e]));
  for (const s of allServices()) {
    out.push(...serviceDrift(s, byId.get(s.id) ?? null, name));
    byId.delete(s.id);
  }
  const owned = new Set(table.owned.map(kernelServiceId));
  for (const id of byId.keys()) {
    if (owned.has(id)) out.push(`${id} is in the kernel but no longer desired`);
  }
  return out;
}

function renderCluster() {
  const c = state.cluster;
  if (!c) return;
  const facts = [
    ['Leader', c.leader_id ?? 'none (election or no quorum)'],
    ['Term', String(c.term)],
    ['Commit index', String(c.commit_index)],
    ['Members', String(c.members.length)],
    ['This page from', state.node?.id ?? '?'],
  ];
  const factsSig = JSON.stringify(facts);
  const dl = $('cluster-facts');
  if (dl.dataset.sig !== factsSig) {
    dl.replaceChildren(...facts.map(([k, v]) => h('div', {}, h('dt', {}, k),
      h('dd', { dataset: { fact: k.toLowerCase().replaceAll(' ', '-') } }, v))));
    dl.dataset.sig = factsSig;
  }
  const members = [...c.members].sort((a, b) => a.id.localeCompare(b.id));
  const drifts = members.map((m) => {
    const k = state.kernels.get(m.id);
    return k?.table ? nodeDrift(m.id, k.table) : null;
  });
  reconcileChildren($('members'), [{
    key: 'members',
    sig: JSON.stringify([members, drifts, c.leader_id]),
    build: () => membersTable(members, drifts, c.leader_id),
  }]);
  renderTraffic(members);
}

/** A member's announcement in a cell: its mode and state, and how many of
 *  the service addresses it announces (bgp) or holds (l2). */
function memberAnnounce(a) {
  if (!a) return '–';
  if (a.mode === 'none') return h('span', { class: 'badge muted', dataset: { testid: 'announce' }, title: 'ANNOUNCE=none: the network brings the traffic' }, 'off');
  const announced = a.vips.filter((v) => v.announced).length;
  const cls = a.state === 'failed' ? 'bad' : a.state === 'announcing' ? 'ok' : 'warn';
  return h('span', {
    class: `badge ${cls}`,
    dataset: { testid: 'announce' },
    title: a.problem ?? `since ${dateTime(a.since)}`,
  }, `${a.mode} ${a.state} ${announced}/${a.vips.length}`);
}

/** Which member brings each service address's traffic: one row per
 *  address, one column per member; each cell says whether that member
 *  announces (bgp) or holds (l2) it, and why not when it does not. Below,
 *  each member's BGP sessions, lease, sync daemons and wrong sysctls. */
function renderTraffic(members) {
  const answered = members.filter((m) => m.node?.announce);
  const modes = [...new Set(answered.map((m) => m.node.announce.mode))];
  $('traffic-note').textContent = modes.length === 0 ? 'No member answered.'
    : modes.join(', ') === 'none'
      ? 'ANNOUNCE=none on every member: the network brings the traffic to the service addresses.'
      : `Announcement: ${modes.join(', ')}. A green cell announces the address (bgp: its route is offered; l2: it holds the address and answers ARP/ND).`;
  const addresses = [...new Set(answered.flatMap((m) => m.node.announce.vips.map((v) => v.address)))].sort();
  const cell = (m, address) => {
    const v = m.node?.announce?.vips.find((x) => x.address === address);
    if (!v) return h('td', {}, '–');
    const mode = m.node.announce.mode;
    let badge;
    if (v.announced) badge = h('span', { class: 'badge ok' }, mode === 'l2' ? 'holds' : 'announced');
    else if (mode === 'none') badge = h('span', { class: 'badge muted' }, v.can_serve ? 'can serve' : 'cannot serve');
    else if (!v.can_serve) badge = h('span', { class: 'badge bad' }, 'cannot serve');
    else badge = h('span', { class: 'badge muted' }, mode === 'l2' ? 'standby' : 'withdrawn');
    return h('td', { dataset: { member: m.id }, title: [v.why_not, v.since && `since ${dateTime(v.since)}`].filter(Boolean).join('\n') },
      badge, v.owner && !v.announced ? h('small', {}, ` owner ${v.owner}`) : '');
  };
  const table = h('table', { class: 'members traffic' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Address'), h('th', { scope: 'col' }, 'Services'),
      members.map((m) => h('th', { scope: 'col' }, m.id)))),
    h('tbody', {}, addresses.map((address) => {
      const services = answered.flatMap((m) => m.node.announce.vips.filter((v) => v.address === address).flatMap((v) => v.services));
      return h('tr', { dataset: { vip: address } },
        h('td', { class: 'mono' }, address),
        h('td', { class: 'mono' }, [...new Set(services)].join(' ')),
        members.map((m) => cell(m, address)));
    })));
  const details = [];
  for (const m of answered) {
    const a = m.node.announce;
    if (a.problem) details.push(h('li', { class: 'bad' }, `${m.id}: ${a.state}: ${a.problem}`));
    for (const p of a.bgp?.peers ?? []) {
      details.push(h('li', {}, `${m.id}: BGP peer ${p.address} AS${p.as}: ${p.state}` +
        (p.bfd ? `, BFD ${p.bfd}` : '') + (p.exported !== null && p.exported !== undefined ? `, ${p.exported} routes exported` : '')));
    }
    if (a.l2) {
      details.push(h('li', {}, a.l2.lease_held
        ? `${m.id}: lease held on ${a.l2.interface} (${((a.l2.lease_left_ms ?? 0) / 1000).toFixed(1)} s left)`
        : `${m.id}: no lease on ${a.l2.interface}: it holds no address`));
    }
    if (a.sync) {
      const roles = [a.sync.master && 'master', a.sync.backup && 'backup'].filter(Boolean);
      details.push(h('li', {}, `${m.id}: sync daemon on ${a.sync.interface} (id ${a.sync.sync_id}): ${roles.length ? roles.join(' and ') : 'not running'}${a.sync.problem ? `: ${a.sync.problem}` : ''}`));
    }
    for (const s of a.sysctls.filter((x) => !x.ok)) {
      details.push(h('li', { class: 'bad' }, `${m.id}: ${s.name} is ${s.value ?? 'unreadable'}, wants ${s.wanted} (${s.why})${s.problem ? `: ${s.problem}` : ''}`));
    }
  }
  reconcileChildren($('traffic'), [{
    key: 'traffic',
    sig: JSON.stringify(answered.map((m) => [m.id, m.node.announce])),
    build: () => h('div', { class: 'members-table' },
      addresses.length ? table : h('p', { class: 'note' }, 'No service binds its address (bind_address): nothing to announce.'),
      details.length ? h('ul', { class: 'member-problems', dataset: { testid: 'traffic-details' } }, details) : ''),
  }]);
}

/** A member's health checks in a cell: how many of the servers it probes
 *  are down, and the services all down on it (loud). */
function memberHealth(health) {
  if (!health) return '–';
  const { servers, all_down: allDown } = health;
  if (servers.length === 0) return h('span', { class: 'badge muted' }, 'no checks');
  const down = servers.filter((p) => p.state === 'down');
  const out = [];
  if (down.length === 0) {
    out.push(h('span', { class: 'badge ok', dataset: { testid: 'probes' } }, `${servers.length} up`));
  } else {
    out.push(h('span', {
      class: 'badge warn',
      dataset: { testid: 'probes' },
      title: down.map((p) => `${p.service} ${p.server}: ${p.error ?? 'down'}`).join('\n'),
    }, `${down.length} of ${servers.length} down`));
  }
  if (allDown.length) {
    out.push(' ', h('span', { class: 'badge bad', dataset: { testid: 'all-down' } }, `all down: ${allDown.join(', ')}`));
  }
  return out;
}

function membersTable(members, drifts, leader) {
  const rows = members.map((m, i) => {
    const n = m.node;
    const r = n?.reconcile;
    const drift = drifts[i];
    let status;
    if (!m.reachable) status = h('span', { class: 'badge bad' }, 'unreachable');
    else if (r?.error) status = h('span', { class: 'badge bad' }, 'kernel unreadable');
    else if (r && r.failed.length > 0) status = h('span', { class: 'badge bad' }, `${r.failed.length} failing`);
    else if (r && r.programmed_index < n.last_applied) status = h('span', { class: 'badge warn' }, 'programming');
    else status = h('span', { class: 'badge ok' }, 'in sync');
    let driftCell;
    if (drift === null) driftCell = h('span', { class: 'badge muted' }, 'unknown');
    else if (drift.length === 0) driftCell = h('span', { class: 'badge ok' }, 'none');
    else driftCell = h('span', { class: 'badge warn', title: drift.join('\n') }, `${drift.length} difference${drift.length === 1 ? '' : 's'}`);

    const problems = [];
    if (r?.error) problems.push(h('li', {}, `kernel: ${r.error}`));
    for (const f of r?.failed ?? []) {
      problems.push(h('li', {}, `${f.change}: ${f.error} (${f.attempts} attempt${f.attempts === 1 ? '' : 's'})`));
    }
    for (const d of drift ?? []) problems.push(h('li', {}, d));
    if (r && r.foreign.length > 0) {
      problems.push(h('li', { class: 'note' }, `foreign services left alone: ${r.foreign.join(', ')}`));
    }
    return h('tr', { dataset: { member: m.id } },
      h('td', {}, h('strong', {}, m.id), m.id === leader ? ' ' : '', m.id === leader ? h('span', { class: 'badge ok' }, 'leader') : '',
        problems.length ? h('ul', { class: 'member-problems' }, problems) : ''),
      h('td', { dataset: { col: 'role' } }, n?.role ?? '–'),
      h('td', {}, m.voter ? 'voter' : 'learner'),
      h('td', {}, status),
      h('td', { dataset: { col: 'health' } }, memberHealth(n?.health)),
      h('td', { dataset: { col: 'announce' } }, memberAnnounce(n?.announce)),
      h('td', { class: 'mono' }, m.api_addr),
      h('td', { class: 'num' }, m.last_applied ?? '–'),
      h('td', { class: 'num' }, r ? String(r.programmed_index) : '–'),
      h('td', {}, r ? r.kernel : '–'),
      h('td', { class: 'num' }, r ? String(r.passes) : '–'),
      h('td', { class: 'num' }, r ? String(r.changes) : '–'),
      h('td', { class: 'num' }, r ? String(r.drift_repaired) : '–'),
      h('td', { class: 'num' }, r ? String(r.pending) : '–'),
      h('td', {}, driftCell),
      h('td', {}, r ? dateTime(r.last_success) : '–'),
      h('td', {}, r ? dateTime(r.last_resync) : '–'),
      h('td', { class: 'mono' }, r && r.vips.length ? r.vips.join(' ') : '–'));
  });
  const heads = [
    ['Member'], ['Role'], ['Vote'], ['Reconcile'],
    ['Health', 'the servers this node probes, as it sees them, and the services whose probed servers are all down on it'],
    ['Announce', 'ANNOUNCE mode and state, and how many service addresses this node announces or holds'],
    ['API'],
    ['Applied', 'last applied log index'],
    ['Programmed', 'highest index whose whole state is in the kernel'],
    ['Kernel', 'on, memory or off'],
    ['Passes'], ['Changes', 'kernel changes made since start'],
    ['Drift repaired', 'changes made by resyncs: hand edits or a lost table'],
    ['Pending', 'changes awaiting a retry'],
    ['Kernel vs desired', 'differences between this node\'s kernel, read now, and the desired state'],
    ['Last success'], ['Last resync'], ['VIPs'],
  ];
  return h('div', { class: 'members-table' },
    h('table', { class: 'members' },
      h('thead', {}, h('tr', {}, heads.map(([label, title]) => h('th', { scope: 'col', title }, label)))),
      h('tbody', {}, rows)));
}

// ---------------------------------------------------------------- forms

/** A number as typed: an integer becomes a number, anything else is sent
 *  as typed so that the API names the problem; empty is undefined. */
function num(text) {
  const t = String(text).trim();
  if (t === '') return undefined;
  return /^-?\d+$/.test(t) ? Number(t) : t;
}

/** Seconds as typed: a decimal number becomes a number, anything else is
 *  sent as typed (the API names the problem); empty is undefined. */
function seconds(text) {
  const t = String(text).trim();
  if (t === '') return undefined;
  return /^(\d+\.?\d*|\.\d+)$/.test(t) ? Number(t) : t;
}

/** "200, 204" → [200, 204]; empty is null (the API's default). */
function statuses(text) {
  const items = String(text).split(/[\s,]+/).filter(Boolean);
  return items.length ? items.map(num) : null;
}

// --- health check and policy fields (both forms name them hc_*, hp_*)

/** Shows the check's fields that its kind uses. */
function syncCheckFields(f) {
  const kind = f.elements.hc_kind.value;
  f.querySelector('.check-params').hidden = kind === '' || kind === 'none';
  f.querySelector('.check-http').hidden = !HTTP_KINDS.includes(kind);
  f.querySelector('.check-payload').hidden = !PAYLOAD_KINDS.includes(kind);
  f.querySelector('.payload-label').textContent =
    kind === 'dns' ? 'Name to query (type A)' : 'Payload (the datagram sent; empty: none)';
}

/** Fills the check's fields from a `health_check` (null: `emptyKind`). */
function fillCheck(f, check, emptyKind) {
  const e = f.elements;
  e.hc_kind.value = check?.kind ?? emptyKind;
  e.hc_interval.value = check?.interval ?? '';
  e.hc_timeout.value = check?.timeout ?? '';
  e.hc_rise.value = check?.rise ?? '';
  e.hc_fall.value = check?.fall ?? '';
  e.hc_port.value = check?.port ?? '';
  e.hc_path.value = check?.path ?? '';
  e.hc_expect.value = check?.expect?.join(', ') ?? '';
  e.hc_payload.value = check?.payload ?? '';
}

/** The `health_check` the fields describe: null for no check of its own
 *  (kind "" on a server: the service's; "none" on a service). A field left
 *  empty is sent as null: absent on create, and removed (back to the
 *  default) by an edit's merge patch; so are the fields the kind does not
 *  use. `address`, `method`, `body` and `host` have no field here: an edit
 *  leaves them as they are, except the http ones when the kind is not http. */
function checkBody(f, noneIsNull) {
  const e = f.elements;
  const kind = e.hc_kind.value;
  if (kind === '' || (kind === 'none' && noneIsNull)) return null;
  const probed = kind !== 'none';
  const http = HTTP_KINDS.includes(kind);
  const body = {
    kind,
    interval: (probed ? seconds(e.hc_interval.value) : undefined) ?? null,
    timeout: (probed ? seconds(e.hc_timeout.value) : undefined) ?? null,
    rise: (probed ? num(e.hc_rise.value) : undefined) ?? null,
    fall: (probed ? num(e.hc_fall.value) : undefined) ?? null,
    port: (probed ? num(e.hc_port.value) : undefined) ?? null,
    path: http ? e.hc_path.value.trim() || null : null,
    expect: http ? statuses(e.hc_expect.value) : null,
    payload: PAYLOAD_KINDS.includes(kind) ? e.hc_payload.value || null : null,
  };
  if (!http) Object.assign(body, { method: null, body: null, host: null });
  return body;
}

function syncPolicyFields(f) {
  f.querySelector('.fallback').hidden = f.elements.hp_all_down.value !== 'fallback';
}

function fillPolicy(f, policy) {
  const e = f.elements;
  e.hp_unhealthy.value = policy?.unhealthy ?? 'zero';
  e.hp_slow_start.value = policy?.slow_start ? policy.slow_start : '';
  e.hp_all_down.value = policy?.all_down ?? 'fail-open';
  const fb = policy?.fallback;
  e.hp_fb_address.value = fb?.address ?? '';
  e.hp_fb_port.value = fb?.port ?? '';
  e.hp_fb_forward.value = fb?.forward ?? 'masq';
}

/** The `health_policy` the fields describe; null when it is the default.
 *  The fallback is a real server: its other fields (weight, thresholds,
 *  tunnel options) stay as they are on an edit. */
function policyBody(f) {
  const e = f.elements;
  const slowStart = seconds(e.hp_slow_start.value);
  const fallback = e.hp_all_down.value === 'fallback';
  if (e.hp_unhealthy.value === 'zero' && slowStart === undefined && !fallback) return null;
  const forward = e.hp_fb_forward.value;
  return {
    unhealthy: e.hp_unhealthy.value,
    slow_start: slowStart ?? null,
    all_down: e.hp_all_down.value,
    fallback: fallback
      ? {
        address: e.hp_fb_address.value.trim() || null,
        port: num(e.hp_fb_port.value) ?? null,
        forward,
        ...(forward === 'tunnel' ? {} : { tunnel: null }),
      }
      : null,
  };
}

function clearErrors(form) {
  for (const el of form.querySelectorAll('.field-error')) {
    el.replaceChildren();
    el.hidden = true;
  }
  for (const el of form.querySelectorAll('.invalid')) el.classList.remove('invalid');
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const top = form.querySelector('.form-error');
  top.replaceChildren();
  top.hidden = true;
}

/** The visible element of the form that stands for a JSON path the API
 *  named: `persistence.timeout` exactly, `flags[0]` as `flags`, else the
 *  nearest enclosing path (`tunnel.x` → `tunnel`). */
function fieldFor(form, field) {
  const byPath = new Map([...form.querySelectorAll('[data-field]')].map((el) => [el.dataset.field, el]));
  let p = field.replace(/\[\d+\]/g, '');
  for (;;) {
    const el = byPath.get(p);
    if (el && !el.closest('[hidden]') && el.querySelector(':scope > .field-error')) return el;
    const cut = p.lastIndexOf('.');
    if (cut < 0) return null;
    p = p.slice(0, cut);
  }
}

/** Shows an API error: each problem next to the field it names, the rest
 *  (and problems about the request as a whole) at the top of the form. */
function showErrors(form, err) {
  clearErrors(form);
  const e = err instanceof ApiError ? err.error : { message: String(err?.message ?? err) };
  const problems = e.details?.length ? e.details : [e];
  const top = form.querySelector('.form-error');
  let first = null;
  for (const p of problems) {
    const el = p.field ? fieldFor(form, p.field) : null;
    if (!el) {
      top.append(h('span', { class: 'line' }, p.field ? `${p.field}: ${p.message}` : p.message));
      top.hidden = false;
      continue;
    }
    el.classList.add('invalid');
    const msg = el.querySelector(':scope > .field-error');
    if (msg.childNodes.length) msg.append(h('br'));
    msg.append(p.message);
    msg.hidden = false;
    for (const input of el.querySelectorAll('input, select')) input.setAttribute('aria-invalid', 'true');
    first ??= el.querySelector('input:not([type=checkbox]):not([type=radio]), select, input');
  }
  if (err instanceof ApiError && err.status === 412) {
    top.append(h('span', { class: 'line' },
      'It changed since this form was opened: cancel and open the form again to edit the current values.'));
  }
  first?.focus();
}

function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}

/** Wires a dialog's form: submit runs `send`, errors land on the fields. */
function wireForm(dialogId, formId, send) {
  const dialog = $(dialogId);
  const form = $(formId);
  form.querySelector('.cancel').addEventListener('click', () => dialog.close());
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    try {
      const done = await send(form);
      const { message, open } = typeof done === 'string' ? { message: done } : done;
      dialog.close();
      toast(message);
      if (open) openDetail(open);
      await refresh();
    } catch (err) {
      showErrors(form, err);
    } finally {
      submit.disabled = false;
    }
  });
}

// --- the service form

let serviceEditing = null; // {id, revision, servers} while editing

// The schedulers mainline Linux ships (the model's `Scheduler::KNOWN`; no
// API reports which modules a node's kernel has loaded, and the kernel
// loads a scheduler's module on first use), and the flags each takes by
// name: sh and mh name the first two scheduler flag bits (the model's
// `SCHED_FLAGS`); one-packet is not a scheduler flag and goes with any.
const SCHEDULERS = [
  ['rr', 'round robin'], ['wrr', 'weighted round robin'], ['lc', 'least connections'],
  ['wlc', 'weighted least connections (default)'], ['lblc', 'locality-based least connections'],
  ['lblcr', 'lblc with replication'], ['dh', 'destination hashing'], ['sh', 'source hashing'],
  ['sed', 'shortest expected delay'], ['nq', 'never queue'], ['fo', 'weighted failover'],
  ['ovf', 'weighted overflow'], ['mh', 'Maglev hashing'], ['twos', 'weighted random twos choice'],
];

function fillSchedulers(current) {
  const select = $('svc-scheduler');
  const known = SCHEDULERS.map(([name]) => name);
  const options = SCHEDULERS.map(([name, what]) => h('option', { value: name }, `${name} — ${what}`));
  // A service may use a scheduler module outside the list: keep it.
  if (current && !known.includes(current)) options.push(h('option', { value: current }, current));
  select.replaceChildren(...options);
  select.value = current ?? 'wlc';
}

/** Shows the flags the chosen scheduler takes; a hidden flag is unchecked. */
function syncFlags(f) {
  const scheduler = f.elements.scheduler.value;
  for (const label of f.querySelectorAll('[data-field="flags"] label[data-scheduler]')) {
    const shown = label.dataset.scheduler === scheduler;
    label.hidden = !shown;
    if (!shown) label.querySelector('input').checked = false;
  }
}

/** One real server's row in the service form: an existing one (`r`, the
 *  server as the API has it) or a new one. */
function serverRow(r) {
  const forward = h('select', { class: 'srv-forward', 'aria-label': 'Forwarding' },
    ['masq', 'dr', 'tunnel'].map((m) => h('option', { value: m }, m)));
  forward.value = r?.forward ?? 'masq';
  const row = h('tr', { dataset: { existing: r ? r.id : '' } },
    h('td', {}, h('input', { class: 'srv-address', 'aria-label': 'Server address', autocomplete: 'off', spellcheck: 'false', placeholder: '198.51.100.11', value: r?.address ?? '', disabled: Boolean(r) })),
    h('td', {}, h('input', { class: 'srv-port', 'aria-label': 'Server port', inputmode: 'numeric', autocomplete: 'off', size: '6', value: r?.port ?? '', disabled: Boolean(r) })),
    h('td', {}, h('input', { class: 'srv-weight', 'aria-label': 'Server weight', inputmode: 'numeric', autocomplete: 'off', size: '6', placeholder: '1', value: r?.weight ?? '' })),
    h('td', {}, forward),
    h('td', {}, h('button', { type: 'button', class: 'link danger', 'aria-label': 'Remove this server', onclick: () => row.remove() }, 'Remove')));
  return row;
}

/** What the server rows say: on create, the `servers` of the new service
 *  (undefined: none); on an edit, the writes to make after the service's
 *  own patch, since the API takes a service's servers only through their
 *  own routes: `{add: [body], change: [[id, patch]], remove: [id]}`. */
function serversFromRows(f) {
  const rows = [...f.querySelectorAll('#svc-servers tr')];
  const before = new Map((serviceEditing?.servers ?? []).map((r) => [r.id, r]));
  const add = [];
  const change = [];
  const kept = new Set();
  for (const row of rows) {
    const q = (c) => row.querySelector(c).value;
    const weight = num(q('.srv-weight'));
    const forward = q('.srv-forward');
    const old = before.get(row.dataset.existing);
    if (old) {
      kept.add(old.id);
      const patch = {};
      if (weight !== undefined && weight !== old.weight) patch.weight = weight;
      if (forward !== old.forward) {
        patch.forward = forward;
        if (forward !== 'tunnel') patch.tunnel = null;
      }
      if (Object.keys(patch).length) change.push([old.id, patch]);
      continue;
    }
    const body = { address: q('.srv-address').trim(), port: num(q('.srv-port')), forward };
    if (weight !== undefined) body.weight = weight;
    add.push(body);
  }
  const remove = [...before.keys()].filter((id) => !kept.has(id));
  return { add, change, remove };
}

$('svc-add-server').addEventListener('click', () => {
  const f = $('service-form');
  const row = serverRow(null);
  const port = f.elements.port.value.trim();
  if (port) row.querySelector('.srv-port').value = port;
  $('svc-servers').append(row);
  row.querySelector('.srv-address').focus();
});

function syncServiceForm() {
  const f = $('service-form');
  syncFlags(f);
  const fw = f.elements.kind.value === 'fwmark';
  f.querySelector('.row.inet').hidden = fw;
  f.querySelector('.row.fwmark').hidden = !fw;
  f.querySelector('.row.persistence').hidden = !f.elements.persistent.checked;
  syncCheckFields(f);
  syncPolicyFields(f);
}

function openServiceForm(id) {
  const f = $('service-form');
  f.reset();
  clearErrors(f);
  const s = id ? serviceById(id) : null;
  serviceEditing = s ? { id: s.id, revision: s.revision, servers: s.servers } : null;
  fillSchedulers(s?.scheduler ?? 'wlc');
  $('svc-servers').replaceChildren(...(s?.servers ?? []).map(serverRow));
  $('service-dialog-title').textContent = s ? `Edit ${serviceTitle(s)}` : 'Add service';
  for (const el of f.querySelectorAll('.identity input, .identity select')) el.disabled = Boolean(s);
  if (s) {
    const e = f.elements;
    e.kind.value = s.fwmark !== undefined ? 'fwmark' : 'inet';
    if (s.fwmark !== undefined) {
      e.fwmark.value = s.fwmark;
      e.family.value = s.family;
    } else {
      e.protocol.value = s.protocol;
      e.address.value = s.address;
      e.port.value = s.port;
    }
    e.scheduler.value = s.scheduler;
    e.pe.value = s.pe ?? '';
    for (const box of f.querySelectorAll('input[name=flags]')) box.checked = s.flags.includes(box.value);
    e.persistent.checked = Boolean(s.persistence);
    e.timeout.value = s.persistence?.timeout ?? '';
    e.netmask.value = s.persistence?.netmask ?? '';
    e.drain_grace.value = s.drain_grace ?? '';
    e.bind_address.checked = Boolean(s.bind_address);
  }
  fillCheck(f, s?.health_check ?? null, 'none');
  fillPolicy(f, s?.health_policy ?? null);
  syncServiceForm();
  $('service-dialog').showModal();
  (s ? f.elements.scheduler : f.elements.address).focus();
}

function serviceBody(f) {
  const e = f.elements;
  const editing = Boolean(serviceEditing);
  const body = {};
  if (!editing) {
    if (e.kind.value === 'fwmark') {
      body.fwmark = num(e.fwmark.value);
      body.family = e.family.value;
    } else {
      body.protocol = e.protocol.value;
      body.address = e.address.value.trim();
      body.port = num(e.port.value);
    }
  }
  const scheduler = e.scheduler.value.trim();
  if (scheduler || editing) body.scheduler = scheduler;
  body.flags = [...f.querySelectorAll('input[name=flags]:checked')].map((b) => b.value);
  if (e.persistent.checked) {
    const netmask = e.netmask.value.trim();
    body.persistence = {
      timeout: num(e.timeout.value),
      netmask: /^\d+$/.test(netmask) ? Number(netmask) : netmask || undefined,
    };
  } else {
    body.persistence = null;
  }
  body.pe = e.pe.value || null;
  body.bind_address = e.bind_address.checked;
  const grace = num(e.drain_grace.value);
  if (grace !== undefined) body.drain_grace = grace;
  else if (editing) body.drain_grace = null; // a merge patch: back to the node's default
  body.health_check = checkBody(f, true);
  body.health_policy = policyBody(f);
  if (!editing) {
    const { add } = serversFromRows(f);
    if (add.length) body.servers = add;
  }
  return body;
}

wireForm('service-dialog', 'service-form', async (f) => {
  const body = serviceBody(f);
  if (serviceEditing) {
    const { id, revision } = serviceEditing;
    const { add, change, remove } = serversFromRows(f);
    await api('PATCH', path.service(id), { body, ifMatch: revision });
    // Then each server's own write; a refused one leaves the form open with
    // the API's message, the writes before it done.
    for (const sid of remove) await api('DELETE', `${path.server(id, sid)}?grace=0`);
    for (const [sid, patch] of change) await api('PATCH', path.server(id, sid), { body: patch });
    for (const server of add) await api('POST', path.servers(id), { body: server });
    return `Service ${id} updated`;
  }
  const r = await api('POST', path.services(), { body });
  return { message: `Service ${r.data.id} created`, open: r.data.id };
});
$('service-form').addEventListener('change', syncServiceForm);
$('add-service').addEventListener('click', () => openServiceForm(null));

// --- the real-server form

let serverTarget = null; // {service, server?, revision}

function syncServerForm() {
  const f = $('server-form');
  f.querySelector('fieldset.tunnel').hidden = f.elements.forward.value !== 'tunnel';
  syncCheckFields(f);
}

function openServerForm(serviceId, serverId) {
  const f = $('server-form');
  const s = serviceById(serviceId);
  if (!s) return;
  const r = serverId ? s.servers.find((x) => x.id === serverId) : null;
  f.reset();
  clearErrors(f);
  serverTarget = { service: s.id, server: r?.id ?? null, revision: s.revision };
  $('server-dialog-title').textContent = r ? `Edit real server ${hostPort(r.address, r.port)}` : 'Add real server';
  $('server-dialog-service').textContent = `of ${serviceTitle(s)} (${s.id})`;
  const e = f.elements;
  e.address.disabled = Boolean(r);
  e.port.disabled = Boolean(r);
  if (r) {
    e.address.value = r.address;
    e.port.value = r.port;
    e.weight.value = r.weight;
    e.forward.value = r.forward;
    e.upper_threshold.value = r.upper_threshold;
    e.lower_threshold.value = r.lower_threshold;
    if (r.tunnel) {
      e.tunnel_type.value = r.tunnel.type;
      e.tunnel_port.value = r.tunnel.port ?? '';
      e.tunnel_checksum.value = r.tunnel.checksum;
    }
  } else if (s.port !== undefined) {
    e.port.value = s.port;
  }
  fillCheck(f, r?.health_check ?? null, '');
  syncServerForm();
  $('server-dialog').showModal();
  (r ? e.weight : e.address).focus();
}

function serverBody(f) {
  const e = f.elements;
  const editing = Boolean(serverTarget.server);
  const body = {};
  if (!editing) {
    body.address = e.address.value.trim();
    body.port = num(e.port.value);
  }
  body.weight = num(e.weight.value);
  body.forward = e.forward.value;
  body.upper_threshold = num(e.upper_threshold.value);
  body.lower_threshold = num(e.lower_threshold.value);
  if (e.forward.value === 'tunnel') {
    body.tunnel = {
      type: e.tunnel_type.value,
      port: num(e.tunnel_port.value),
      checksum: e.tunnel_checksum.value,
    };
  } else if (editing) {
    body.tunnel = null;
  }
  body.health_check = checkBody(f, false);
  return body;
}

wireForm('server-dialog', 'server-form', async (f) => {
  const body = serverBody(f);
  const { service, server, revision } = serverTarget;
  if (server) {
    await api('PATCH', path.server(service, server), { body, ifMatch: revision });
    return `Real server ${server} of ${service} updated`;
  }
  const r = await api('POST', path.servers(service), { body });
  return `Real server ${r.data.id} added to ${service}`;
});
$('server-form').addEventListener('change', syncServerForm);

// --- drain and delete

let removeTarget = null; // {service, server, now}

function openRemove(serviceId, serverId, now) {
  const s = serviceById(serviceId);
  if (!s) return;
  const f = $('remove-form');
  f.reset();
  clearErrors(f);
  removeTarget = { service: serviceId, server: serverId, now };
  const what = serverId
    ? `real server ${serverId} of ${serviceTitle(s)}`
    : `${serviceTitle(s)} and its ${s.servers.length} real server${s.servers.length === 1 ? '' : 's'}`;
  $('remove-dialog-title').textContent = now ? 'Delete now' : 'Drain';
  $('remove-explain').textContent = now
    ? `Delete ${what} at once, on every node: its connections are cut.`
    : `Drain ${what}: on every node its weight becomes 0, so established connections go on ` +
      'and new ones go elsewhere; when the grace period ends it is deleted. Leave the grace ' +
      'period empty for the service\'s drain grace (else the node\'s DRAIN_GRACE).';
  f.querySelector('.grace').hidden = now;
  $('remove-submit').textContent = now ? 'Delete' : 'Drain';
  $('remove-dialog').showModal();
  (now ? $('remove-submit') : f.elements.grace).focus();
}

wireForm('remove-dialog', 'remove-form', async (f) => {
  const { service, server, now } = removeTarget;
  const grace = now ? '0' : f.elements.grace.value.trim();
  const base = server ? path.server(service, server) : path.service(service);
  const url = grace === '' ? base : `${base}?grace=${encodeURIComponent(grace)}`;
  const r = await api('DELETE', url);
  const name = server ? `Real server ${server}` : `Service ${service}`;
  return r.status === 202 && r.data?.draining
    ? `${name} draining until ${clock(r.data.draining.until)}`
    : `${name} deleted`;
});

// ---------------------------------------------------------------- views

function showView() {
  const view = location.hash === '#cluster' ? 'cluster' : 'services';
  $('view-services').hidden = view !== 'services';
  $('view-cluster').hidden = view !== 'cluster';
  for (const v of ['services', 'cluster']) {
    const link = $(`nav-${v}`);
    if (v === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

window.addEventListener('hashchange', () => {
  showView();
  refresh();
});
showView();
renderLive();
refresh();
