// The services watch (`GET /api/v1/services?watch=true`, server-sent
// events) read with fetch rather than EventSource: EventSource cannot send
// the bearer token. One `sync` (the whole list), then a `change` per
// revision; on a lost connection it resumes after the last revision seen
// (`Last-Event-ID`, as EventSource would), and after a 410
// `revision_compacted` (or an `error` event saying so) it lists again.

import { authHeaders, path, renewToken } from './api.js';

const RETRY_MS = [500, 1000, 2000, 5000];

/**
 * Starts watching. `on.sync({revision, services})`, `on.change({revision,
 * changes})`, `on.status(null | Error)` (connected / why not). Returns a
 * function that stops the watch.
 */
export function watchServices(on) {
  let revision = null; // the last revision seen: where a reconnect resumes
  let stopped = false;
  let controller = null;
  let failures = 0;

  async function connect() {
    controller = new AbortController();
    const headers = authHeaders({ Accept: 'text/event-stream' });
    if (revision !== null) headers['Last-Event-ID'] = String(revision);
    let resp;
    try {
      resp = await fetch(path.watch(), {
        headers, cache: 'no-store', credentials: 'same-origin', signal: controller.signal,
      });
    } catch (e) {
      return retry(new Error(`cannot reach the node: ${e.message}`));
    }
    if (resp.status === 401) {
      if (await renewToken()) return connect();
      return retry(new Error('the node asks for an API token'));
    }
    if (resp.status === 410) {
      // Too far behind the node's history: list again.
      revision = null;
      return connect();
    }
    if (!resp.ok || !resp.body) return retry(new Error(`watch refused: HTTP ${resp.status}`));
    failures = 0;
    on.status(null);
    try {
      await read(resp.body);
    } catch (e) {
      if (stopped) return undefined;
      return retry(new Error(`watch interrupted: ${e.message}`));
    }
    return retry(new Error('the node closed the watch'));
  }

  function retry(err) {
    if (stopped) return;
    // Marks the benchmark (tests/ui/bench.mjs) reads: a reconnect and why.
    performance.mark('ipvs:watch-retry', { detail: err.message });
    on.status(err);
    const wait = RETRY_MS[Math.min(failures, RETRY_MS.length - 1)];
    failures += 1;
    setTimeout(() => { if (!stopped) connect(); }, wait);
  }

  /** Reads the event stream; a line is collected from its pieces once its
   *  end comes (a 5,000-service sync is one line of megabytes). */
  async function read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let pieces = [];
    let event = { kind: 'message', id: null, data: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      let start = 0;
      for (;;) {
        const nl = value.indexOf('\n', start);
        if (nl < 0) {
          if (start < value.length) pieces.push(value.slice(start));
          break;
        }
        let line = value.slice(start, nl);
        if (pieces.length) {
          pieces.push(line);
          line = pieces.join('');
          pieces = [];
        }
        if (line.endsWith('\r')) line = line.slice(0, -1);
        start = nl + 1;
        if (line === '') {
          if (event.data !== null) dispatch(event);
          event = { kind: 'message', id: null, data: null };
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? '' : line.slice(colon + 1);
        if (v.startsWith(' ')) v = v.slice(1);
        if (field === 'event') event.kind = v;
        else if (field === 'id') event.id = v;
        else if (field === 'data') event.data = event.data === null ? v : `${event.data}\n${v}`;
      }
    }
  }

  function dispatch(event) {
    const data = JSON.parse(event.data);
    if (event.kind === 'sync') {
      performance.mark('ipvs:watch-sync', { detail: data.revision });
      revision = data.revision;
      on.sync(data);
    } else if (event.kind === 'change') {
      revision = data.revision;
      on.change(data);
    } else if (event.kind === 'progress') {
      revision = data.revision;
    } else if (event.kind === 'error') {
      if (data.error?.code === 'revision_compacted') revision = null;
      throw new Error(data.error?.message ?? 'the watch ended with an error');
    }
  }

  connect();
  return () => {
    stopped = true;
    controller?.abort();
  };
}
