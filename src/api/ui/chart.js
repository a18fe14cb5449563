// A service's traffic chart: conn/s over the last 15 minutes, one line per
// node, from `GET /api/v1/traffic/{service}`, drawn by uPlot (vendored as
// uplot.min.js, MIT; it draws on a canvas and builds its legend with
// createElement, so it runs under the page's CSP and Trusted Types).

import { h, short } from './dom.js';

const COLORS = ['#2563eb', '#16a34a', '#dc2626', '#9333ea', '#ea580c', '#0891b2'];

/** The history of one node in the answer as `{t: [unix s], cps: [...]}`:
 *  `history: {at_ms: [unix ms], cps: [...]}` as branch traffic has it
 *  (`timestamps` in the first draft of the contract, and a list of points,
 *  are read too until the API is merged). A member that did not answer
 *  (`reported: false`) has none. */
function nodeHistory(n) {
  const hist = n?.history;
  if (!hist || n.reported === false) return null;
  if (Array.isArray(hist)) {
    return {
      t: hist.map((p) => toSeconds(p.t ?? p.at ?? p.timestamp)),
      cps: hist.map((p) => p.cps ?? null),
    };
  }
  const ts = hist.at_ms ?? hist.timestamps ?? hist.t;
  if (!Array.isArray(ts)) return null;
  return { t: ts.map(toSeconds), cps: hist.cps ?? hist.series?.cps ?? [] };
}

function toSeconds(t) {
  if (typeof t === 'number') return t > 1e11 ? t / 1000 : t; // ms or s
  const ms = new Date(t).getTime();
  return Number.isNaN(ms) ? null : ms / 1000;
}

/**
 * Draws (or redraws) the chart of a `/api/v1/traffic/{service}` answer in
 * `box`; returns the uPlot instance (destroyed by the caller on close).
 */
export function trafficChart(box, answer, old) {
  const nodes = Object.entries(answer?.nodes ?? {})
    .map(([name, n]) => [name, nodeHistory(n)])
    .filter(([, hist]) => hist && hist.t.length)
    .sort(([a], [b]) => a.localeCompare(b));
  if (nodes.length === 0 || typeof window.uPlot !== 'function') {
    old?.destroy();
    box.replaceChildren(h('p', { class: 'note' }, nodes.length ? 'The chart library did not load.' : 'No traffic history yet.'));
    return null;
  }
  // One x axis: every timestamp any node has, each node's value or a gap.
  const xs = [...new Set(nodes.flatMap(([, hist]) => hist.t))].filter((t) => t !== null).sort((a, b) => a - b);
  const series = nodes.map(([, hist]) => {
    const at = new Map(hist.t.map((t, i) => [t, hist.cps[i] ?? null]));
    return xs.map((t) => (at.has(t) ? at.get(t) : null));
  });
  const data = [xs, ...series];
  const width = Math.max(320, box.clientWidth || 800);
  if (old && old.series.length === nodes.length + 1) {
    old.setData(data);
    return old;
  }
  old?.destroy();
  box.replaceChildren();
  return new window.uPlot({
    width,
    height: 220,
    title: 'Connections per second by node, last 15 minutes',
    scales: { x: { time: true } },
    axes: [{}, { values: (u, ticks) => ticks.map((v) => short(v)), size: 60 }],
    series: [
      {},
      ...nodes.map(([name], i) => ({
        label: name, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false,
      })),
    ],
  }, data, box);
}
