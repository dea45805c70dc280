// usage.js: a key's requests per hour or day, passed and refused, as an
// SVG bar chart built node by node, with a text summary beside it.
import { el } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const svg = (tag, attrs, text) => {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
};

// series checks an answer of GET /keys/{id}/usage (docs/usage.md):
// {key, account, interval, from, to, points: [{start, passed, refused:
// {code: n}, refused_total}], totals: {passed, refused, refused_total}}.
// It returns null for anything else.
const count = (n) => Number.isSafeInteger(n) && n >= 0;
const counts = (c) => c && count(c.passed) && count(c.refused_total) && c.refused && typeof c.refused === 'object';
export function series(data, interval) {
  if (!data || data.interval !== interval || !Array.isArray(data.points) || !counts(data.totals)) return null;
  if (!data.points.every((p) => p && typeof p.start === 'string' && !Number.isNaN(Date.parse(p.start)) && counts(p))) return null;
  return data;
}

// byCode is "rate_limited 57, insufficient_scope 3": the codes that
// refused requests, most first.
function byCode(refused) {
  return Object.entries(refused).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]).map(([c, n]) => c + ' ' + n).join(', ');
}

const plural = (n, unit) => n + ' ' + unit + (n === 1 ? '' : 's');

// drawUsage returns the nodes of the chart of an answer (null: the server
// has no usage history for the key, "Usage history unavailable").
export function drawUsage(data, interval) {
  if (!data) return [el('p', { class: 'muted' }, 'Usage history unavailable')];
  const u = series(data, interval);
  if (!u) return [el('p', { class: 'error' }, 'The usage history could not be read (an unexpected answer).')];
  const ps = u.points;
  const max = Math.max(1, ...ps.map((p) => p.passed + p.refused_total));
  const W = 480, H = 140, pad = 18;
  const bw = ps.length ? (W - pad) / ps.length : 0;
  const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H + 16}`, role: 'img', 'aria-label': 'Requests per ' + interval + ', passed and refused' });
  const label = (iso) => new Date(iso).toLocaleString(undefined, interval === 'hour' ? { dateStyle: 'short', timeStyle: 'short' } : { dateStyle: 'medium' });
  ps.forEach((p, i) => {
    const x = pad + i * bw;
    const hp = (p.passed / max) * H, hr = (p.refused_total / max) * H;
    const codes = byCode(p.refused);
    const g = svg('g');
    g.append(svg('title', null, label(p.start) + ': ' + p.passed + ' passed, ' + p.refused_total + ' refused' + (codes ? ' (' + codes + ')' : '')));
    g.append(svg('rect', { class: 'passed', x: x + 0.5, y: H - hp, width: Math.max(bw - 1, 0.5), height: hp }));
    g.append(svg('rect', { class: 'refused', x: x + 0.5, y: H - hp - hr, width: Math.max(bw - 1, 0.5), height: hr }));
    chart.append(g);
  });
  chart.append(svg('text', { x: 0, y: 10 }, String(max)));
  if (ps.length) {
    chart.append(svg('text', { x: pad, y: H + 14 }, label(ps[0].start)));
    chart.append(svg('text', { x: W, y: H + 14, 'text-anchor': 'end' }, label(ps[ps.length - 1].start)));
  }
  const t = u.totals, codes = byCode(t.refused);
  return [
    chart,
    el('p', { class: 'legend' }, el('span', null, el('span', { class: 'sw passed' }), 'Passed'), el('span', null, el('span', { class: 'sw refused' }), 'Refused')),
    el('p', { class: 'usage-summary' }, t.passed + ' passed and ' + t.refused_total + ' refused' + (codes ? ' (' + codes + ')' : '') + ' over ' + plural(ps.length, interval) + '.'),
  ];
}
