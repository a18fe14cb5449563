// DOM helpers of the web UI. Every element is made with createElement and
// every value goes in as text or as an attribute value: no HTML is parsed
// from strings (the Content-Security-Policy's Trusted Types forbid it).

/** An element with properties and children; strings become text nodes. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export const $ = (id) => document.getElementById(id);

const SI = ['', 'k', 'M', 'G', 'T', 'P', 'E'];

/** 1234567 → "1.23M" (the exact value goes in the title). */
export function short(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 10000 && i < SI.length - 1) {
    v /= 1000;
    i += 1;
  }
  if (i === 0) return String(n);
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)}${SI[i]}`;
}

export const isV6 = (addr) => String(addr).includes(':');
export const hostPort = (addr, port) => (isV6(addr) ? `[${addr}]:${port}` : `${addr}:${port}`);

export function serviceTitle(s) {
  if (s.fwmark !== undefined) return `FWM ${s.fwmark} ${s.family === 'ipv6' ? 'IPv6' : 'IPv4'}`;
  return `${String(s.protocol).toUpperCase()} ${hostPort(s.address, s.port)}`;
}
