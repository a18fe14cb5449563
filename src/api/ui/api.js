// The one way the web UI talks to the node that served it: JSON requests
// with the bearer token (kept in sessionStorage, asked for on a 401), and
// the paths of the REST API it reads.

import { $ } from './dom.js';

export const TOKEN_KEY = 'ipvs-manager.token';

/** A refused or failed request: the API's error object and the status. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.error = error ?? { code: 'http', message: `HTTP ${status}` };
  }
}

let tokenPrompt = null;

/** The headers of every request: JSON, and the token if one is kept. */
export function authHeaders(extra = {}) {
  const headers = { Accept: 'application/json', ...extra };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

/** After a 401: forgets a refused token and asks for one (concurrent
 *  requests share one prompt); resolves to the new token or null. */
export function renewToken() {
  if (sessionStorage.getItem(TOKEN_KEY)) sessionStorage.removeItem(TOKEN_KEY);
  tokenPrompt ??= askToken().finally(() => { tokenPrompt = null; });
  return tokenPrompt;
}

/**
 * JSON in and out, the bearer token if one is kept, and one retry after
 * asking for a token on 401.
 */
export async function api(method, path, { body, ifMatch, retried = false } = {}) {
  const headers = authHeaders();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (ifMatch !== undefined) headers['If-Match'] = `"${ifMatch}"`;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch (e) {
    throw new ApiError(0, { code: 'network', message: `cannot reach the node: ${e.message}` });
  }
  if (resp.status === 401 && !retried) {
    if (await renewToken()) return api(method, path, { body, ifMatch, retried: true });
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) throw new ApiError(resp.status, data?.error);
  return { status: resp.status, data };
}

/** Asks for an API token; resolves to it, or null when cancelled. */
function askToken() {
  const dialog = $('token-dialog');
  const form = $('token-form');
  form.reset();
  return new Promise((resolve) => {
    const done = (value) => {
      form.removeEventListener('submit', submit);
      dialog.removeEventListener('close', cancel);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const submit = (e) => {
      e.preventDefault();
      const token = form.elements.token.value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      done(token || null);
    };
    const cancel = () => done(null);
    form.addEventListener('submit', submit);
    dialog.addEventListener('close', cancel);
    dialog.showModal();
  });
}

export const path = {
  services: () => '/api/v1/services',
  watch: () => '/api/v1/services?watch=true',
  service: (id) => `/api/v1/services/${encodeURIComponent(id)}`,
  servers: (id) => `/api/v1/services/${encodeURIComponent(id)}/servers`,
  server: (id, sid) =>
    `/api/v1/services/${encodeURIComponent(id)}/servers/${encodeURIComponent(sid)}`,
  cluster: () => '/api/v1/cluster',
  node: () => '/api/v1/node',
  memberKernel: (name, service) => `/api/v1/cluster/members/${encodeURIComponent(name)}/kernel`
    + (service ? `?service=${encodeURIComponent(service)}` : ''),
  traffic: (since) => (since === undefined ? '/api/v1/traffic' : `/api/v1/traffic?since=${encodeURIComponent(since)}`),
  serviceTraffic: (id) => `/api/v1/traffic/${encodeURIComponent(id)}`,
};
