// The services overview: one row per service (address, scheduler, servers
// up/total per node, conn/s, bytes/s, state markers, a conn/s sparkline),
// searched, filtered and sorted in memory, and rendered with virtual
// scrolling: only the rows in view (and a few around) are in the DOM, so
// 5,000 services cost the same DOM as 30.

import { h, $, short, hostPort, serviceTitle } from './dom.js';

const ROW_HEIGHT = 32; // px; style.css gives .overview tr the same height
const OVERSCAN = 8;
const SPARK_POINTS = 90; // 15 min at one sample every 10 s
const STATE_ORDER = ['down', 'degraded', 'drift', 'draining'];

/** Sorts IPv4 numerically and anything else as text. */
function addressKey(s) {
  if (s.fwmark !== undefined) return `~fwm ${String(s.fwmark).padStart(10, '0')}`;
  const a = String(s.address);
  const v4 = a.split('.');
  const addr = v4.length === 4 ? v4.map((o) => o.padStart(3, '0')).join('.') : `~${a}`;
  return `${addr} ${String(s.port).padStart(5, '0')} ${s.protocol}`;
}

const COLUMNS = [
  { key: 'service', label: 'Service', sort: (r) => r.addressKey },
  { key: 'scheduler', label: 'Scheduler', sort: (r) => r.s.scheduler },
  { key: 'servers', label: 'Servers up/total by node', sort: (r) => r.upRatio, title: 'servers up / servers, as each node sees them' },
  { key: 'cps', label: 'Conn/s', sort: (r) => r.cps ?? -1, num: true, title: 'new connections per second, all nodes' },
  { key: 'bps', label: 'Bytes/s', sort: (r) => r.bps ?? -1, num: true, title: 'bytes in + out per second, all nodes' },
  { key: 'state', label: 'State', sort: (r) => r.severity, title: 'down: no server up on any node; degraded: some down; drift: a node has not programmed it; draining' },
  { key: 'trend', label: 'Conn/s, 15 min', title: 'new connections per second over the last 15 minutes' },
];

export class Overview {
  /**
   * `health(id, s)`: per node `{name, up, total}` from the health checks
   * when the traffic summary has no row; `onOpen(id)`: a row was chosen.
   */
  constructor({ health, onOpen }) {
    this.health = health;
    this.onOpen = onOpen;
    this.services = new Map(); // id → service (the watch's)
    this.traffic = new Map(); // id → traffic summary row
    this.rows = new Map(); // id → derived row
    this.view = []; // the rows after filter and sort
    this.elements = new WeakMap(); // row → its <tr>, while the row is current
    this.sort = { key: 'service', dir: 1 };
    this.filter = { text: '', protocol: '', state: '' };
    this.selected = null;
    this.dirty = true;
    this.firstRows = false;
    this.scroller = $('overview-scroll');
    this.spacer = $('overview-spacer');
    this.tbody = $('overview-body');
    this.count = $('overview-count');
    this.buildHead();
    this.scroller.addEventListener('scroll', () => this.paint());
    window.addEventListener('resize', () => this.paint());
    $('search').addEventListener('input', (e) => {
      this.filter.text = e.target.value.trim().toLowerCase();
      this.update();
    });
    $('filter-protocol').addEventListener('change', (e) => { this.filter.protocol = e.target.value; this.update(); });
    $('filter-state').addEventListener('change', (e) => { this.filter.state = e.target.value; this.update(); });
    this.tbody.addEventListener('click', (e) => {
      const tr = e.target.closest('tr[data-service]');
      if (tr) this.onOpen(tr.dataset.service);
    });
    this.tbody.addEventListener('keydown', (e) => {
      const tr = e.target.closest('tr[data-service]');
      if (tr && (e.key === 'Enter' || e.key === ' ')) {
        e.preventDefault();
        this.onOpen(tr.dataset.service);
      }
    });
  }

  buildHead() {
    const tr = $('overview-head');
    tr.replaceChildren(...COLUMNS.map((c) => {
      const th = h('th', { scope: 'col', class: `col-${c.key}${c.num ? ' num' : ''}`, title: c.title });
      if (!c.sort) {
        th.append(c.label);
        return th;
      }
      const button = h('button', { type: 'button', class: 'sort', dataset: { sort: c.key } }, c.label);
      button.addEventListener('click', () => {
        this.sort = this.sort.key === c.key ? { key: c.key, dir: -this.sort.dir } : { key: c.key, dir: 1 };
        this.update();
      });
      th.append(button);
      return th;
    }));
  }

  // --- data in

  /** The whole list (a watch's `sync`). */
  replaceAll(services) {
    this.services = new Map(services.map((s) => [s.id, s]));
    this.rows = new Map();
    for (const s of services) this.derive(s.id);
    this.update();
  }

  /** One `change` event of the watch. */
  applyChanges(changes) {
    for (const c of changes) {
      if (c.type === 'delete') {
        this.services.delete(c.id);
        this.rows.delete(c.id);
      } else {
        this.services.set(c.id, c.service);
        this.derive(c.id);
      }
    }
    this.update();
  }

  /** Rows of the traffic summary (all of them when `full`). */
  applyTraffic(rows, removed, full) {
    if (full) this.traffic = new Map();
    for (const id of removed) this.traffic.delete(id);
    for (const r of rows) this.traffic.set(r.service, r);
    const ids = full ? [...this.services.keys()] : [...rows.map((r) => r.service), ...removed];
    for (const id of ids) if (this.services.has(id)) this.derive(id);
    this.update();
  }

  /** The health checks' views changed (the cluster's report). */
  healthChanged() {
    for (const id of this.services.keys()) this.derive(id);
    this.update();
  }

  /** Recomputes a service's row from its service, traffic and health. */
  derive(id) {
    const s = this.services.get(id);
    if (!s) return;
    const t = this.traffic.get(id);
    // Servers up/total from the health views every member reports (fresh
    // every 2 s); the traffic summary, sampled every 10 s, would show a new
    // service as 0/0 for a round. From the summary only whether a member's
    // kernel lacks a service it sampled with servers (drift).
    const nodes = this.health(id, s).map((n) => {
      const tn = t?.nodes?.[n.name];
      const sampled = tn && tn.reported !== false && tn.servers_total > 0;
      return sampled ? { ...n, programmed: tn.programmed } : n;
    });
    const markers = [];
    const counted = nodes.filter((n) => typeof n.total === 'number' && n.total > 0);
    if (counted.length && counted.every((n) => n.up === 0)) markers.push('down');
    else if (counted.some((n) => n.up < n.total)) markers.push('degraded');
    if (nodes.some((n) => n.programmed === false)) markers.push('drift');
    if (s.draining || s.servers.some((r) => r.draining)) markers.push('draining');
    const ratios = counted.map((n) => n.up / n.total);
    const total = t?.total;
    const title = serviceTitle(s);
    this.rows.set(id, {
      id,
      s,
      title,
      nodes,
      markers,
      severity: markers.length ? STATE_ORDER.indexOf(markers[0]) : STATE_ORDER.length,
      upRatio: ratios.length ? Math.min(...ratios) : 2,
      cps: typeof total?.cps === 'number' ? total.cps : null,
      bps: typeof total?.inbps === 'number' ? total.inbps + (total.outbps ?? 0) : null,
      spark: Array.isArray(t?.cps) ? sparkPoints(t.cps) : null,
      addressKey: addressKey(s),
      protocol: s.fwmark !== undefined ? 'fwmark' : s.protocol,
      // What the search box matches: the id, "addr:port" and the title.
      haystack: `${id} ${s.address !== undefined ? hostPort(s.address, s.port) : ''} ${title}`.toLowerCase(),
    });
  }

  // --- filter, sort, render

  /** Filters and sorts again, then renders what is in view. */
  update() {
    const { text, protocol, state } = this.filter;
    let rows = [...this.rows.values()];
    if (text) rows = rows.filter((r) => r.haystack.includes(text));
    if (protocol) rows = rows.filter((r) => r.protocol === protocol);
    if (state === 'ok') rows = rows.filter((r) => r.markers.length === 0);
    else if (state) rows = rows.filter((r) => r.markers.includes(state));
    const col = COLUMNS.find((c) => c.key === this.sort.key) ?? COLUMNS[0];
    const { dir } = this.sort;
    rows.sort((a, b) => {
      const x = col.sort(a);
      const y = col.sort(b);
      const c = x < y ? -1 : x > y ? 1 : 0;
      return c === 0 ? (a.addressKey < b.addressKey ? -1 : 1) : c * dir;
    });
    this.view = rows;
    for (const th of $('overview-head').children) {
      const b = th.querySelector('button.sort');
      if (!b) continue;
      const on = b.dataset.sort === this.sort.key;
      th.setAttribute('aria-sort', on ? (dir > 0 ? 'ascending' : 'descending') : 'none');
    }
    const all = this.rows.size;
    this.count.textContent = rows.length === all
      ? `${all} service${all === 1 ? '' : 's'}`
      : `${rows.length} of ${all} services`;
    this.spacer.style.height = `${rows.length * ROW_HEIGHT}px`;
    $('overview-empty').hidden = rows.length !== 0;
    $('overview-empty').textContent = all === 0
      ? 'No virtual services yet. Add one with “Add service”.'
      : 'No service matches the search and filters.';
    this.paint();
  }

  /** Renders the rows in view. */
  paint() {
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(this.view.length, Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN);
    this.tbody.parentElement.style.transform = `translateY(${first * ROW_HEIGHT}px)`;
    // A row's element is kept while its row is unchanged (rows are derived
    // anew only when their service, traffic or health changes), and only
    // the rows that left the window are removed: focus and hover survive
    // a refresh.
    const rows = this.view.slice(first, last).map((r) => {
      let el = this.elements.get(r);
      if (!el) {
        el = this.rowElement(r);
        this.elements.set(r, el);
      }
      const selected = r.id === this.selected;
      el.classList.toggle('selected', selected);
      el.setAttribute('aria-selected', String(selected));
      return el;
    });
    const wanted = new Set(rows);
    for (const el of [...this.tbody.children]) if (!wanted.has(el)) el.remove();
    rows.forEach((el, i) => {
      if (this.tbody.children[i] !== el) this.tbody.insertBefore(el, this.tbody.children[i] ?? null);
    });
    if (!this.firstRows && rows.length) {
      this.firstRows = true;
      performance.mark('ipvs:first-rows');
    }
  }

  select(id) {
    this.selected = id;
    this.paint();
  }

  rowElement(r) {
    const { s } = r;
    const nodes = r.nodes.length
      ? r.nodes.map((n) => h('span', {
        class: `node-count${typeof n.total === 'number' && n.up < n.total ? (n.up === 0 ? ' bad' : ' warn') : ''}`,
        dataset: { node: n.name },
        title: `${n.name}: ${n.up ?? '?'} of ${n.total ?? '?'} servers up${n.programmed === false ? ', not programmed yet' : ''}`,
      }, `${n.name} ${n.up ?? '?'}/${n.total ?? '?'}`))
      : '–';
    const markers = r.markers.length
      ? r.markers.map((m) => h('span', { class: `badge ${m === 'down' ? 'bad' : m === 'draining' ? 'drain' : 'warn'}`, dataset: { marker: m } }, m))
      : h('span', { class: 'badge ok' }, 'ok');
    return h('tr', { dataset: { service: r.id }, tabindex: '0' },
    h('td', { class: 'col-service mono', title: r.id }, r.title),
    h('td', { class: 'col-scheduler' }, s.scheduler),
    h('td', { class: 'col-servers' }, nodes),
    h('td', { class: 'col-cps num', title: r.cps === null ? 'no traffic summary' : String(r.cps) }, r.cps === null ? '' : short(r.cps)),
    h('td', { class: 'col-bps num', title: r.bps === null ? 'no traffic summary' : String(r.bps) }, r.bps === null ? '' : short(r.bps)),
    h('td', { class: 'col-state' }, markers),
    h('td', { class: 'col-trend' }, r.spark ? sparkline(r.spark) : ''));
  }
}

/** The summary leaves an idle stretch's leading zeros out (an idle
 *  service has `[]`): put them back, so that the line's right end is now. */
function sparkPoints(cps) {
  return cps.length >= SPARK_POINTS ? cps.slice(-SPARK_POINTS)
    : [...new Array(SPARK_POINTS - cps.length).fill(0), ...cps];
}

/** A 90×20 canvas line of `values` (oldest first), scaled to its maximum. */
export function sparkline(values) {
  const w = 90;
  const hgt = 20;
  const ratio = window.devicePixelRatio || 1;
  const canvas = h('canvas', { class: 'spark', width: Math.round(w * ratio), height: Math.round(hgt * ratio), 'aria-hidden': 'true' });
  canvas.dataset.points = String(values.length);
  const ctx = canvas.getContext('2d');
  if (!ctx || values.length === 0) return canvas;
  ctx.scale(ratio, ratio);
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? (w - 2) / (values.length - 1) : 0;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = 1 + i * step;
    const y = hgt - 1 - (Math.max(0, v) / max) * (hgt - 2);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.strokeStyle = '#2563eb';
  ctx.lineWidth = 1.25;
  ctx.stroke();
  return canvas;
}
