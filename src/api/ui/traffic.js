// The traffic summary (`GET /api/v1/traffic`): every service's servers up
// per node, rates and a 15-minute conn/s sparkline, fetched in full once and
// then only what changed (`?since=`) every 2 s. While the node answers 404
// (a version without the traffic API) the overview leaves those columns
// blank and asks again every 30 s.

import { api, path } from './api.js';

const POLL_MS = 2000;
const ABSENT_POLL_MS = 30000;

/**
 * Polls while the page is visible; `onUpdate(rows, removedIds, full)` gets
 * the rows (each `{service, nodes, total, cps}`) of each answer.
 */
export function pollTraffic(onUpdate) {
  let sample = null; // the last answer's `sample`: where `since` starts
  let timer = null;
  let available = true;

  async function poll() {
    clearTimeout(timer);
    let wait = POLL_MS;
    try {
      const { data } = await api('GET', path.traffic(sample ?? undefined));
      available = true;
      // `full`: the whole table (no since, or one the node no longer
      // knows); else the changed rows, after removing `removed`.
      const full = sample === null || data.full !== false;
      sample = data.sample ?? null;
      const removed = data.removed ?? [];
      onUpdate(data.services ?? [], removed, full, data);
    } catch (e) {
      if (e.status === 404) {
        if (available) onUpdate([], [], true, null);
        available = false;
        sample = null;
        wait = ABSENT_POLL_MS;
      } else if (e.status === 410 || e.status === 400) {
        sample = null; // `since` too old or refused: ask for everything
        wait = 0;
      }
    } finally {
      if (!document.hidden) timer = setTimeout(poll, wait);
    }
  }

  document.addEventListener('visibilitychange', () => {
    if (document.hidden) clearTimeout(timer);
    else poll();
  });
  poll();
  return { available: () => available };
}
