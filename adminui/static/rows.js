// rows.js: a long table rendered in a window. Only the rows near the
// viewport (MARGIN beyond each edge) and around the focused row are in the
// document, between two spacer rows that keep the table's full height, so
// a page of 1,000 keys lays out as fast as one of 50. Rows keep their
// place for assistive technology (aria-rowcount on the table,
// aria-rowindex on each row), and a row that holds the focus is never
// removed; moving the focus to a row renders its neighbours at once, so
// Tab and Shift+Tab walk every row.
import { el } from './dom.js';

const MARGIN = 800; // px rendered beyond each edge of the viewport
const AROUND = 8; // rows rendered on each side of the focused row

// windowed renders items into table's first tBody with build(item, index),
// which returns a tr. It returns set(items, build), which replaces the rows.
export function windowed(table, cols) {
  const body = table.tBodies[0];
  const spacer = () => el('tr', { class: 'spacer', 'aria-hidden': 'true' }, el('td', { colspan: String(cols) }));
  const top = spacer(), bottom = spacer();
  let items = [], build = null, heights = [], est = 48;
  let first = 0, last = 0; // rows [first, last) are in the document
  let focused = -1; // the row holding the focus
  let frame = 0;

  const height = (i) => heights[i] || est;
  const sum = (a, b) => { let s = 0; for (let i = a; i < b; i++) s += height(i); return s; };
  const rowAt = (i) => first <= i && i < last ? body.children[1 + i - first] : null;

  function rowOf(node) {
    const tr = node.closest && node.closest('tr[aria-rowindex]');
    return tr && tr.parentNode === body ? Number(tr.getAttribute('aria-rowindex')) - 2 : -1;
  }

  // range is the rows to render: those within MARGIN of the viewport,
  // and those around the focused row.
  function range() {
    const y0 = -body.getBoundingClientRect().top - MARGIN, y1 = y0 + innerHeight + 2 * MARGIN;
    let a = 0, y = 0;
    while (a < items.length && y + height(a) < y0) y += height(a++);
    let b = a;
    while (b < items.length && y < y1) y += height(b++);
    if (b === a && a > 0) a = Math.max(0, b - 1); // scrolled past the end
    if (focused >= 0) {
      a = Math.max(0, Math.min(a, focused - AROUND));
      b = Math.min(items.length, Math.max(b, focused + AROUND + 1));
    }
    return [a, b];
  }

  function make(a, b) {
    const frag = document.createDocumentFragment();
    for (let i = a; i < b; i++) {
      const tr = build(items[i], i);
      tr.setAttribute('aria-rowindex', String(i + 2));
      frag.append(tr);
    }
    return frag;
  }

  // update renders range(), keeping the rows already there.
  function update() {
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
    const [a, b] = range();
    if (a === first && b === last) return;
    if (b <= first || a >= last) { // no row in common
      body.replaceChildren(top, make(a, b), bottom);
    } else {
      for (let i = first; i < a; i++) body.children[1].remove();
      for (let i = b; i < last; i++) bottom.previousSibling.remove();
      if (a < first) top.after(make(a, first));
      if (last < b) bottom.before(make(last, b));
    }
    first = a;
    last = b;
    measure();
  }

  // measure learns the rendered rows' heights and sizes the spacers; rows
  // taller or shorter than estimated ask for another update.
  function measure() {
    let changed = false, n = 0, total = 0;
    for (let i = first; i < last; i++) {
      const h = rowAt(i).offsetHeight;
      if (h !== heights[i]) changed = changed || Math.abs(h - height(i)) > 1;
      heights[i] = h;
      n++;
      total += h;
    }
    if (n) est = total / n;
    size(top, sum(0, first));
    size(bottom, sum(last, items.length));
    if (changed) schedule();
  }

  function size(sp, h) {
    sp.hidden = h === 0;
    sp.firstChild.style.height = h + 'px'; // CSSOM, allowed by the page's CSP
  }

  function schedule() { if (!frame && items.length) frame = requestAnimationFrame(update); }

  addEventListener('scroll', schedule, { passive: true });
  addEventListener('resize', () => { heights = []; schedule(); });
  body.addEventListener('focusin', (ev) => {
    focused = rowOf(ev.target);
    if (focused >= 0) update(); // now: the next Tab finds the next row
  });
  body.addEventListener('focusout', (ev) => {
    if (!ev.relatedTarget || rowOf(ev.relatedTarget) < 0) focused = -1;
  });

  return function set(list, fn) {
    items = list;
    build = fn;
    heights = new Array(list.length);
    first = last = 0;
    focused = -1;
    table.setAttribute('aria-rowcount', String(list.length + 1));
    body.replaceChildren(top, bottom);
    size(top, 0);
    size(bottom, 0);
    update();
  };
}
