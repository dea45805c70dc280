// dom.js: building elements (always with text, never HTML), dialogs that
// trap and restore focus, and formatting of times and scopes.

// el creates a tag with attributes and children; strings become text nodes.
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  if (attrs) for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v == null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c != null) e.append(c); // append(string) adds a text node
  return e;
}

export const $ = (id) => document.getElementById(id);

// openDialog shows a modal dialog (the rest of the page is inert, so focus
// stays inside; Escape closes it) and gives focus back on close to what
// had it, or to fallback() if that is gone.
export function openDialog(d, focus, fallback) {
  const before = document.activeElement;
  d.addEventListener('close', () => {
    const back = before && before.isConnected && before !== document.body ? before : fallback && fallback();
    if (back) back.focus();
  }, { once: true });
  d.showModal();
  if (focus) focus.focus();
}

const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'always' });
const units = [['year', 31536e6], ['month', 2592e6], ['day', 864e5], ['hour', 36e5], ['minute', 6e4], ['second', 1e3]];

// relative is "3 minutes ago" (or "in 3 days") from now.
export function relative(iso, now = Date.now()) {
  const d = Date.parse(iso) - now;
  for (const [u, ms] of units) {
    if (Math.abs(d) >= ms || u === 'second') {
      const n = Math.round(d / ms);
      return n === 0 ? 'just now' : rtf.format(n, u);
    }
  }
  return '';
}

// when is a time for people, in their locale and time zone.
// (One formatter each: toLocaleString makes a new one on every call.)
const whenFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const dayFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
export const when = (iso) => whenFmt.format(new Date(iso));
export const day = (iso) => dayFmt.format(new Date(iso));

// parseScope splits resource:access.
export function parseScope(s) {
  const i = s.lastIndexOf(':');
  return { resource: s.slice(0, i), access: s.slice(i + 1) };
}

const validScope = /^([a-z][a-z0-9_.-]{0,63}|\*):(read|write|delete)$/;
export const isScope = (s) => validScope.test(s);

// granted mirrors keystore's rule: a scope of the same resource (or *)
// and access satisfies it; a write or delete satisfies a read.
export function granted(held, want) {
  const w = parseScope(want);
  return held.some((h) => {
    const g = parseScope(h);
    return (g.resource === '*' || g.resource === w.resource) && (g.access === w.access || w.access === 'read');
  });
}

// badge is a scope's badge: its text names the access, the colour repeats
// it. One template per access, cloned (a table of 1,000 keys has thousands).
const badges = {};
export function badge(s) {
  const { access } = parseScope(s);
  const t = badges[access] || (badges[access] = el('span', { class: 'badge ' + access, title: access + ' access' }));
  const b = t.cloneNode(false);
  b.textContent = s;
  return b;
}
