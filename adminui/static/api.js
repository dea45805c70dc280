// api.js: the page's requests. Every request goes to this page's own
// origin, under ui/ beside the page; changes carry a JSON body type (the
// server refuses anything else) and the session cookie, never a key.
const base = new URL('.', import.meta.url); // .../ui/

// ApiError is a JSON error answer: {error, message, field?}.
export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || 'request failed (' + status + ')');
    this.status = status;
    this.code = body.error || 'unknown';
    this.field = body.field || '';
  }
}

let onSignedOut = () => {};

// whenSignedOut sets what runs when an answer says the session ended.
export function whenSignedOut(fn) { onSignedOut = fn; }

// request sends method path (relative to ui/) with an optional JSON body.
export async function request(method, path, body) {
  const init = { method, credentials: 'same-origin', cache: 'no-store', headers: {} };
  if (method !== 'GET') {
    init.headers['Content-Type'] = 'application/json';
    if (body !== undefined) init.body = JSON.stringify(body);
  }
  const res = await fetch(new URL(path, base), init);
  if (res.status === 204) return null;
  let data = {};
  try { data = await res.json(); } catch { data = { error: 'bad_answer', message: 'the server answered ' + res.status }; }
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    // A refusal may mean the session ended (its key was revoked, say):
    // ask the session, which answers 401 once it has.
    if ((res.status === 401 || res.status === 403) && path !== 'session') {
      fetch(new URL('session', base), { credentials: 'same-origin', cache: 'no-store' })
        .then((r) => { if (r.status === 401 || r.status === 403) onSignedOut(err); }, () => {});
    }
    throw err;
  }
  return data;
}

// api sends a request to the admin API on behalf of the session.
export const api = (method, path, body) => request(method, 'api/' + path, body);

// query builds a query string from the set members of params.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v != null) q.set(k, v);
  const s = q.toString();
  return s ? '?' + s : '';
}
