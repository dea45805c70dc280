// app.js: the API Keys page. Every value from the server is shown as text
// (el() builds nodes; nothing is parsed as HTML).
import { api, request, query, whenSignedOut } from './api.js';
import { el, $, openDialog, relative, when, day, parseScope, isScope, granted, badge } from './dom.js';
import { drawUsage } from './usage.js';
import { windowed } from './rows.js';

const ACCESS = ['read', 'write', 'delete'];
const SOON = 7 * 864e5;

let me = null; // who the page acts for (GET ui/session)
const list = { q: '', status: '', limit: 50, account: '', cursors: [''], page: 0, next: null, keys: [] };
let accounts = [];

// ---- sign-in and session ----

function show(section) {
  $('loading').hidden = true;
  $('signin').hidden = section !== 'signin';
  $('app').hidden = section !== 'app';
  $('signout').hidden = section !== 'app' || !me || me.operator;
}

function signedOut(err) {
  me = null;
  for (const d of document.querySelectorAll('dialog[open]')) d.close();
  $('shown-key').textContent = '';
  list.keys = [];
  setRows([], null);
  $('who').textContent = '';
  $('signin-error').textContent = err && err.message ? 'Signed out: ' + err.message : '';
  show('signin');
  $('signin-key').focus();
}
whenSignedOut(signedOut);

async function start() {
  try {
    me = await request('GET', 'session');
  } catch (err) {
    signedOut(err.code === 'signed_out' ? null : err);
    return;
  }
  enter();
}

async function enter() {
  $('who').textContent = me.operator ? 'Operator: every account' : 'Signed in as ' + me.key_name + ' (account ' + me.account + ')';
  $('operator').hidden = !me.operator;
  show('app');
  if (me.operator) await loadAccounts();
  await load();
}

$('signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('signin-key');
  const key = input.value.trim();
  input.value = ''; // the key leaves the page with this request
  if (!key) { $('signin-error').textContent = 'Paste an API key.'; return; }
  try {
    me = await request('POST', 'session', { key });
  } catch (err) {
    $('signin-error').textContent = err.message;
    input.focus();
    return;
  }
  $('signin-error').textContent = '';
  enter();
});

$('signout').addEventListener('click', async () => {
  try { await request('DELETE', 'session'); } catch { /* signed out either way */ }
  signedOut(null);
});

// ---- operator: accounts ----

const limitText = (rl) => !rl ? 'Default' : rl.unlimited ? 'Unlimited' : rl.requests + ' per ' + rl.window + (rl.burst ? ', burst ' + rl.burst : '');
const quotaText = (a) => !a.quota ? 'None' : (a.quota_used ?? 0) + ' of ' + a.quota.requests + ' per ' + a.quota.period;

async function loadAccounts() {
  const data = await api('GET', 'accounts');
  accounts = data.accounts || [];
  const sel = $('account');
  sel.replaceChildren(el('option', { value: '' }, 'All accounts'),
    ...accounts.map((a) => el('option', { value: a.id }, a.name && a.name !== a.id ? a.name + ' (' + a.id + ')' : a.id)));
  sel.value = list.account;
  $('accounts').tBodies[0].replaceChildren(...accounts.map((a) => el('tr', null,
    el('td', null, a.name && a.name !== a.id ? a.name + ' (' + a.id + ')' : a.id),
    el('td', null, a.status),
    el('td', null, limitText(a.rate_limit)),
    el('td', null, quotaText(a)),
    el('td', null, a.max_keys == null ? 'No limit' : String(a.max_keys)))));
}

$('account').addEventListener('change', (ev) => { list.account = ev.target.value; reset(); });

// ---- the table ----

function reset() { list.cursors = ['']; list.page = 0; load(); }

async function load() {
  const params = { q: list.q, status: list.status, limit: list.limit, cursor: list.cursors[list.page] };
  if (me.operator) params.account = list.account;
  let data;
  try {
    data = await api('GET', 'keys' + query(params));
  } catch (err) {
    notice(err.message);
    return;
  }
  list.keys = data.keys;
  list.next = data.next_cursor;
  render();
}

function render() {
  const t0 = performance.now();
  const now = Date.now(); // one now per render: every row's relative time from it
  const table = $('keys');
  setRows(list.keys, (k) => row(k, now)); // lays the rows out: the time counts it
  table.dataset.renderMs = (performance.now() - t0).toFixed(1);
  table.dataset.rows = String(list.keys.length);
  $('empty').hidden = list.keys.length > 0;
  $('prev').disabled = list.page === 0;
  $('next').disabled = !list.next;
  $('page-no').textContent = 'Page ' + (list.page + 1);
}

// setRows renders the page's keys in a window (rows.js): the rows in view
// and a margin, so that a page of 1,000 keys renders as fast as 50.
const setRows = windowed($('keys'), 7);

const statusLabel = { active: 'Active', revoked: 'Revoked', expired: 'Expired' };

// rowTemplate is one row of the table, cloned per key (a clone is much
// cheaper than building the nodes one by one); row fills it with text.
// The cells hold as few nodes as they can: 1,000 rows are laid out at once.
const rowTemplate = (() => {
  const btn = (action, cls) => el('button', { type: 'button', class: 'small ' + cls, 'data-action': action });
  return el('tr', null,
    el('td', { 'data-label': 'Name' }, el('button', { type: 'button', class: 'link', 'data-action': 'detail' })),
    el('td', { class: 'hint', 'data-label': 'Key' }),
    el('td', { 'data-label': 'Scopes' }),
    el('td', { class: 'status', 'data-label': 'Status' }),
    el('td', { 'data-label': 'Last used' }),
    el('td', { 'data-label': 'Expires' }),
    el('td', { 'data-label': 'Actions' }, btn('edit', 'secondary'), btn('toggle', 'secondary'), btn('regenerate', 'secondary'), btn('delete', 'danger')));
})();

// Hover or focus shows a time's date in full (formatted then, not for
// every row of every render).
$('keys').tBodies[0].addEventListener('pointerover', fullTime);
$('keys').tBodies[0].addEventListener('focusin', fullTime);
function fullTime(ev) {
  const c = ev.target.closest && ev.target.closest('[data-at]');
  if (c && !c.title) c.title = (c.classList.contains('soon') ? 'Expires ' : '') + when(c.dataset.at);
}

function row(k, now) {
  const tr = rowTemplate.cloneNode(true);
  tr.dataset.id = k.id;
  const [name, hint, scopes, status, used, expires, actions] = tr.cells;
  const nb = name.firstChild;
  nb.textContent = k.name;
  nb.title = 'Details of ' + k.name;
  if (me.operator) name.append(el('div', { class: 'muted' }, k.account));
  hint.textContent = k.hint;
  for (const s of k.scopes) scopes.append(badge(s));
  status.textContent = statusLabel[k.status] || k.status;
  status.classList.add(k.status);
  if (k.status === 'active' && k.expires_at && Date.parse(k.expires_at) - now < SOON) {
    status.append(el('span', { class: 'soon', 'data-at': k.expires_at }, 'Expires soon'));
  }
  if (k.last_used_at) {
    used.textContent = relative(k.last_used_at, now);
    used.dataset.at = k.last_used_at;
  } else used.textContent = 'Never used';
  if (k.expires_at) {
    expires.textContent = day(k.expires_at);
    expires.dataset.at = k.expires_at;
  } else expires.textContent = 'Never';
  const labels = ['Edit', k.status === 'revoked' ? 'Activate' : 'Revoke', 'Regenerate', 'Delete'];
  let b = actions.firstChild;
  for (const l of labels) {
    b.textContent = l;
    b.setAttribute('aria-label', l + ' ' + k.name);
    b = b.nextSibling;
  }
  return tr;
}

// One listener for every row's buttons.
$('keys').tBodies[0].addEventListener('click', (ev) => {
  const b = ev.target.closest('button[data-action]');
  if (!b) return;
  const k = list.keys.find((x) => x.id === b.closest('tr').dataset.id);
  if (!k) return;
  switch (b.dataset.action) {
    case 'detail': return detail(k);
    case 'edit': return edit(k);
    case 'toggle': return k.status === 'revoked' ? activate(k) : revoke(k);
    case 'regenerate': return regenerate(k);
    case 'delete': return remove(k);
  }
});

function notice(text) { $('notice').textContent = text; }

let searchTimer = 0;
$('search').addEventListener('input', (ev) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => { list.q = ev.target.value; reset(); }, 250);
});
$('status').addEventListener('change', (ev) => { list.status = ev.target.value; reset(); });
$('per-page').addEventListener('change', (ev) => { list.limit = Number(ev.target.value); reset(); });
$('prev').addEventListener('click', () => { if (list.page > 0) { list.page--; load(); } });
$('next').addEventListener('click', () => {
  if (!list.next) return;
  list.cursors[list.page + 1] = list.next;
  list.page++;
  load();
});

// ---- create and edit panel ----

let editing = null; // the key being edited; null: creating

function resources(k) {
  const rs = new Set(me.resources || []);
  rs.add('apikeys');
  const add = (s) => { const r = parseScope(s).resource; if (r !== '*') rs.add(r); };
  if (!me.operator) me.scopes.forEach(add);
  if (k) k.scopes.forEach(add);
  return [...rs].sort();
}

function fillGrid(k) {
  const have = new Set(k ? k.scopes : []);
  const rows = resources(k).map((r) => el('tr', null, el('th', { scope: 'row' }, r), ...ACCESS.map((a) => {
    const s = r + ':' + a;
    const allowed = me.operator || granted(me.scopes, s);
    return el('td', null, el('input', { type: 'checkbox', value: s, 'aria-label': s, checked: have.has(s), disabled: !allowed, title: allowed ? '' : 'Your key does not hold ' + s }));
  })));
  $('f-grid').replaceChildren(...rows);
  const inGrid = new Set(rows.flatMap((tr) => [...tr.querySelectorAll('input')].map((i) => i.value)));
  $('f-extra').value = k ? k.scopes.filter((s) => !inGrid.has(s)).join(' ') : '';
}

function fillExpires(k) {
  const sel = $('f-expires');
  sel.replaceChildren();
  const opt = (v, t) => sel.append(el('option', { value: v }, t));
  const cap = !me.operator && me.expires_at ? Date.parse(me.expires_at) : null;
  if (k) opt('keep', k.expires_at ? 'Unchanged (' + day(k.expires_at) + ')' : 'Unchanged (never)');
  if (cap) opt('mine', 'With my key (' + day(me.expires_at) + ')');
  else opt('never', 'Never');
  for (const d of [30, 90]) if (!cap || Date.now() + d * 864e5 <= cap) opt(String(d), d + ' days');
  opt('custom', 'Custom date');
  sel.value = k ? 'keep' : cap ? 'mine' : 'never';
  $('f-date').value = '';
  $('f-date').max = cap ? new Date(cap).toISOString().slice(0, 10) : '';
  $('f-date').min = new Date().toISOString().slice(0, 10);
  $('f-date-wrap').hidden = true;
  $('f-expires-note').textContent = cap ? 'Your key expires ' + when(me.expires_at) + '; keys you create or change cannot outlive it.' : '';
}
$('f-expires').addEventListener('change', (ev) => { $('f-date-wrap').hidden = ev.target.value !== 'custom'; });

function clearErrors() {
  for (const id of ['panel-error', 'err-name', 'err-scopes', 'err-expires_at', 'err-type']) $(id).textContent = '';
}

function openPanel(k) {
  editing = k;
  clearErrors();
  $('panel-title').textContent = k ? 'Edit ' + k.name : 'Create API key';
  $('panel-submit').textContent = k ? 'Save' : 'Create';
  $('f-name').value = k ? k.name : '';
  fillGrid(k);
  fillExpires(k);
  $('f-type').value = k ? k.type : me.operator ? '' : me.type;
  $('f-type').readOnly = !me.operator;
  $('f-active-wrap').hidden = !k;
  $('f-active').checked = k ? k.status !== 'revoked' : true;
  $('f-account-wrap').hidden = !(me.operator && !k);
  if (me.operator && !k) {
    $('f-account').replaceChildren(...accounts.map((a) => el('option', { value: a.id }, a.id)));
    $('f-account').value = list.account || 'default';
  }
  openDialog($('panel'), $('f-name'), () => $('create'));
}

function expiresValue() {
  const v = $('f-expires').value;
  switch (v) {
    case 'keep': return undefined;
    case 'never': return null;
    case 'mine': return me.expires_at;
    case 'custom': {
      const d = $('f-date').value;
      if (!d) throw fieldError('expires_at', 'Choose a date.');
      return new Date(d + 'T23:59:59').toISOString();
    }
    default: return new Date(Date.now() + Number(v) * 864e5).toISOString();
  }
}

function fieldError(field, message) { return Object.assign(new Error(message), { field }); }

function scopesValue() {
  const checked = [...$('f-grid').querySelectorAll('input:checked')].map((i) => i.value);
  const extra = $('f-extra').value.split(/[\s,]+/).filter(Boolean);
  const bad = extra.find((s) => !isScope(s));
  if (bad) throw fieldError('scopes', bad + ' is not a scope: write resource:access, access read, write or delete.');
  const all = [...new Set([...checked, ...extra])];
  if (all.length === 0) throw fieldError('scopes', 'Choose at least one scope.');
  return all;
}

function showError(err) {
  const field = err.field || (err.code === 'insufficient_scope' ? 'scopes' : '');
  const target = field && $('err-' + field.split('.')[0].replace(/\[.*$/, ''));
  (target || $('panel-error')).textContent = err.message;
}

$('panel-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearErrors();
  let body;
  try {
    const name = $('f-name').value;
    if (!name.trim()) throw fieldError('name', 'Name is required.');
    if ([...name].length > 255) throw fieldError('name', 'Name is at most 255 characters.');
    body = { name, scopes: scopesValue() };
    const exp = expiresValue();
    if (exp !== undefined) body.expires_at = exp;
    const type = $('f-type').value.trim();
    if (editing) {
      if (type && type !== editing.type) body.type = type;
      const active = $('f-active').checked;
      if (active !== (editing.status !== 'revoked')) body.active = active;
    } else {
      if (type) body.type = type;
      if (me.operator) body.account = $('f-account').value;
    }
  } catch (err) { showError(err); return; }
  $('panel-submit').disabled = true;
  try {
    if (editing) {
      const k = await api('PATCH', 'keys/' + encodeURIComponent(editing.id), body);
      $('panel').close();
      notice('Saved ' + k.name + '.');
    } else {
      const k = await api('POST', 'keys', body);
      $('panel').close();
      notice('Created ' + k.name + '.');
      showKey(k);
    }
    await load();
  } catch (err) {
    showError(err);
  } finally {
    $('panel-submit').disabled = false;
  }
});
$('panel-cancel').addEventListener('click', () => $('panel').close());
$('create').addEventListener('click', () => openPanel(null));

function edit(k) { openPanel(k); }

// ---- the key, shown once ----

let copied = false;
let warned = false;

function showKey(k) {
  copied = false;
  warned = false;
  $('shown-title').textContent = 'Your new API key: ' + k.name;
  $('shown-key').textContent = k.key;
  $('shown-warn').hidden = true;
  openDialog($('shown'), $('shown-copy'), () => $('create'));
}

async function copyKey() {
  const text = $('shown-key').textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const range = document.createRange();
    range.selectNodeContents($('shown-key'));
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    document.execCommand('copy');
  }
  copied = true;
  $('shown-warn').hidden = true;
  $('shown-copy').textContent = 'Copied';
}

function closeKey() {
  if (!copied && !warned) { // ask once more
    warned = true;
    $('shown-warn').hidden = false;
    $('shown-close').focus();
    return;
  }
  $('shown').close();
}

$('shown-copy').addEventListener('click', copyKey);
$('shown-close').addEventListener('click', closeKey);
$('shown').addEventListener('cancel', (ev) => { ev.preventDefault(); closeKey(); });
$('shown').addEventListener('close', () => {
  $('shown-key').textContent = ''; // the key is kept nowhere once closed
  $('shown-copy').textContent = 'Copy';
  getSelection().removeAllRanges();
});

// ---- row actions ----

let confirmResolve = null;

function confirmAction({ title, text, ok, grace }) {
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = ok;
  $('confirm-grace-wrap').hidden = !grace;
  $('confirm-grace').value = '';
  $('confirm-error').textContent = '';
  openDialog($('confirm'), $('confirm-cancel'), () => $('create'));
  return new Promise((resolve) => { confirmResolve = resolve; });
}

$('confirm-ok').addEventListener('click', () => { const r = confirmResolve; confirmResolve = null; if (r) r({ grace: $('confirm-grace').value }); });
$('confirm-cancel').addEventListener('click', () => $('confirm').close());
$('confirm').addEventListener('close', () => { const r = confirmResolve; confirmResolve = null; if (r) r(null); });

async function act(fn, done) {
  try {
    await fn();
    notice(done);
  } catch (err) {
    notice(err.message);
  }
  await load();
}

const path = (k, tail) => 'keys/' + encodeURIComponent(k.id) + (tail || '');

function revoke(k) { return act(() => api('POST', path(k, '/revoke'), {}), 'Revoked ' + k.name + '.'); }
function activate(k) { return act(() => api('POST', path(k, '/activate'), {}), 'Activated ' + k.name + '.'); }

async function regenerate(k) {
  const answer = await confirmAction({ title: 'Regenerate ' + k.name + '?', ok: 'Regenerate',
    text: 'A new key string replaces the current one. With a grace period the current string keeps working until it ends; without one it stops at once.', grace: true });
  if (!answer) return;
  try {
    const body = answer.grace ? { grace_period: answer.grace } : {};
    const nk = await api('POST', path(k, '/regenerate'), body);
    $('confirm').close();
    notice('Regenerated ' + k.name + '.');
    showKey(nk);
  } catch (err) {
    $('confirm-error').textContent = err.message;
    return;
  }
  await load();
}

async function remove(k) {
  const answer = await confirmAction({ title: 'Delete ' + k.name + '?', ok: 'Delete key',
    text: 'This cannot be undone: the key stops working at once, and its audit log is removed with it.' });
  if (!answer) return;
  try {
    await api('DELETE', path(k));
    $('confirm').close();
  } catch (err) {
    $('confirm-error').textContent = err.message;
    return;
  }
  notice('Deleted ' + k.name + '.');
  await load();
}

// ---- key detail ----

let detailKey = null;

function describe(c) {
  const v = (x) => x == null ? 'none' : typeof x === 'object' ? JSON.stringify(x) : String(x);
  return Object.entries(c || {}).map(([f, ch]) => f + ': ' + v(ch.from) + ' → ' + v(ch.to)).join('; ');
}

async function detail(k) {
  detailKey = k;
  $('detail-title').textContent = k.name;
  const f = $('detail-fields');
  const item = (t, d) => [el('dt', null, t), el('dd', null, d)];
  f.replaceChildren(...[
    item('Id', k.id), item('Account', k.account), item('Type', k.type), item('Key', k.hint),
    item('Scopes', k.scopes.join(' ')), item('Status', statusLabel[k.status] || k.status),
    item('Created', when(k.created_at)), item('Updated', when(k.updated_at)),
    item('Expires', k.expires_at ? when(k.expires_at) : 'Never'),
    item('Last used', k.last_used_at ? when(k.last_used_at) : 'Never used'),
    item('Rate limit', limitText(k.rate_limit)),
    item('Quota', k.quota ? (k.quota_used ?? 0) + ' of ' + k.quota.requests + ' per ' + k.quota.period : 'None'),
  ].flat());
  $('audit').replaceChildren(el('tr', null, el('td', { colspan: '3' }, 'Loading…')));
  $('usage').replaceChildren();
  openDialog($('detail'), $('detail-close'), () => $('create'));
  try {
    const data = await api('GET', path(k, '/audit'));
    $('audit').replaceChildren(...data.events.slice().reverse().map((e) => el('tr', null,
      el('td', { title: e.at }, when(e.at)), el('td', null, e.actor || 'unknown'),
      el('td', null, e.action, e.changes && Object.keys(e.changes).length ? el('div', { class: 'muted' }, describe(e.changes)) : null))));
    if (!data.events.length) $('audit').replaceChildren(el('tr', null, el('td', { colspan: '3' }, 'No events.')));
  } catch (err) {
    $('audit').replaceChildren(el('tr', null, el('td', { colspan: '3' }, err.message)));
  }
  usage();
}

async function usage() {
  const k = detailKey;
  const interval = $('usage-interval').value;
  const step = interval === 'hour' ? 36e5 : 864e5;
  const to = Math.floor(Date.now() / step) * step + step;
  const from = to - (interval === 'hour' ? 48 : 30) * step;
  const iso = (ms) => new Date(ms).toISOString().replace(/\.000Z$/, 'Z');
  let nodes;
  try {
    const data = await api('GET', path(k, '/usage') + query({ from: iso(from), to: iso(to), interval }));
    nodes = drawUsage(data, interval);
  } catch (err) {
    // 404: a server without usage history (or the key is gone).
    nodes = err.status === 404 ? drawUsage(null, interval) : [el('p', { class: 'error' }, 'Usage history: ' + err.message)];
  }
  if (k !== detailKey || interval !== $('usage-interval').value) return;
  $('usage').replaceChildren(...nodes);
}
$('usage-interval').addEventListener('change', usage);
$('detail-close').addEventListener('click', () => $('detail').close());

start();
