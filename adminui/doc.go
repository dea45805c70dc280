// Package adminui is the API Keys web page: a table of an account's keys
// (every account's, for the operator), a panel to create and edit them, the
// dialog that shows a new key once, row actions and a key's audit log. It
// is plain HTML, CSS and JavaScript modules embedded in the binary, served
// by a net/http handler that drives the JSON admin API (package adminapi)
// with the same rules: the page adds no power.
//
// A manager signs in by pasting, once, a key that holds an apikeys scope;
// the handler keeps a server-side session that holds the key's SHA-256 and
// never its plaintext, and checks the key again on every request (revoked,
// expired, its account, its scopes, its rate limit), as the admin API
// checks a key sent with each request. The operator's page (on Caddy's
// admin endpoint) has no sign-in: it trusts its listener, as the admin API
// does there.
//
// Paths, relative to the page's mount: / is the page; /ui/ holds its
// assets, /ui/session (GET who is signed in, POST sign in, DELETE sign
// out) and /ui/api/, the admin API on behalf of the session's caller.
// Every state-changing request must be same-origin
// (http.CrossOriginProtection) and carry a JSON body type.
package adminui
