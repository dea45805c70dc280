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

// refusedCount sums the refusals of a point, kept by outcome.
function refusedCount(r) {
  if (typeof r === 'number') return r;
  return Object.values(r || {}).reduce((a, b) => a + (Number(b) || 0), 0);
}

// points finds the series in an answer of GET /keys/{id}/usage.
function points(data) {
  if (!data) return null;
  const p = Array.isArray(data) ? data : data.points || data.series || data.buckets;
  return Array.isArray(p) ? p : null;
}

// drawUsage returns the nodes of the chart, or "Usage history unavailable"
// when the server has no usage endpoint (or it failed).
export function drawUsage(data, interval) {
  const ps = points(data);
  if (!ps) return [el('p', { class: 'muted' }, 'Usage history unavailable')];
  const rows = ps.map((p) => ({ start: p.start, passed: Number(p.passed) || 0, refused: refusedCount(p.refused) }));
  const max = Math.max(1, ...rows.map((r) => r.passed + r.refused));
  const W = 480, H = 140, pad = 18;
  const bw = rows.length ? (W - pad) / rows.length : 0;
  const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H + 16}`, role: 'img', 'aria-label': 'Requests per ' + interval });
  rows.forEach((r, i) => {
    const x = pad + i * bw;
    const hp = (r.passed / max) * H, hr = (r.refused / max) * H;
    const g = svg('g');
    g.append(svg('title', null, new Date(r.start).toLocaleString() + ': ' + r.passed + ' passed, ' + r.refused + ' refused'));
    g.append(svg('rect', { class: 'passed', x: x + 0.5, y: H - hp, width: Math.max(bw - 1, 0.5), height: hp }));
    g.append(svg('rect', { class: 'refused', x: x + 0.5, y: H - hp - hr, width: Math.max(bw - 1, 0.5), height: hr }));
    chart.append(g);
  });
  chart.append(svg('text', { x: 0, y: 10 }, String(max)));
  if (rows.length) {
    chart.append(svg('text', { x: pad, y: H + 14 }, new Date(rows[0].start).toLocaleString()));
    chart.append(svg('text', { x: W, y: H + 14, 'text-anchor': 'end' }, new Date(rows[rows.length - 1].start).toLocaleString()));
  }
  const passed = rows.reduce((a, r) => a + r.passed, 0), refused = rows.reduce((a, r) => a + r.refused, 0);
  return [
    chart,
    el('p', { class: 'legend' }, el('span', null, el('span', { class: 'sw passed' }), 'Passed'), el('span', null, el('span', { class: 'sw refused' }), 'Refused')),
    el('p', { class: 'usage-summary' }, passed + ' passed and ' + refused + ' refused over ' + rows.length + ' ' + interval + (rows.length === 1 ? '' : 's') + '.'),
  ];
}
