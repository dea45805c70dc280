package adminapi

import (
	"context"
	"net/http"
	"net/url"
	"slices"

	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// Body limits.
const (
	// MaxBody is the largest request body of every endpoint but import.
	MaxBody = 64 << 10
	// MaxImportBody is the largest body of POST /keys/import: 100,000
	// keys with their fields fit in it.
	MaxImportBody = 64 << 20
)

// Caller is who makes a request.
type Caller struct {
	// Operator is the admin endpoint's caller: full control of every
	// account, and the only caller of the accounts endpoints and import.
	Operator bool
	// KeyID is a key caller's key (apikey_admin).
	KeyID string
	// Account is a key caller's account: it sees and changes only the
	// keys of this account.
	Account string
	// Scopes are a key caller's granted scopes.
	Scopes []keystore.Scope
}

// OperatorCaller returns the caller of the admin endpoint.
func OperatorCaller() Caller { return Caller{Operator: true} }

// Actor is the caller as audit events name it: "admin" for the operator,
// "key:<id>" for a key caller.
func (c Caller) Actor() string {
	if c.Operator {
		return "admin"
	}
	return "key:" + c.KeyID
}

// Options configure an API.
type Options struct {
	// Store is the key store the API manages.
	Store *keystore.Store
	// Format is the format of keys created and regenerated; the zero
	// Format means keystore.DefaultFormat().
	Format keystore.Format
	// Logger receives internal errors; nil means no logging.
	Logger *zap.Logger
	// AcceptForeign allows importing plaintext keys that do not match
	// Format (the apikey app's accept_foreign_keys): without it they would
	// be stored but refused as malformed_key on every request.
	AcceptForeign bool
	// Observe, if not nil, is told of every request to a mutating
	// endpoint once it is answered: the operation (create_key,
	// update_key, revoke_key, activate_key, regenerate_key, delete_key,
	// import_keys, create_account, update_account, delete_account) and
	// the result, "ok" or the answer's error code.
	Observe func(operation, result string)
}

// API is the admin API. It is safe for concurrent use.
type API struct {
	store         *keystore.Store
	format        keystore.Format
	log           *zap.Logger
	mux           *http.ServeMux
	acceptForeign bool
	observe       func(operation, result string)
}

// New returns the API over opts.Store.
func New(opts Options) *API {
	a := &API{store: opts.Store, format: opts.Format, log: opts.Logger, acceptForeign: opts.AcceptForeign, observe: opts.Observe}
	if a.format == (keystore.Format{}) {
		a.format = keystore.DefaultFormat()
	}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	a.mux = http.NewServeMux()
	a.routes()
	return a
}

// perm is what a route requires of the caller.
type perm uint8

const (
	permRead     perm = iota // apikeys:read
	permWrite                // apikeys:write
	permDelete               // apikeys:delete
	permOperator             // the operator only
)

// handlerFunc is an endpoint. It writes the response on success and
// returns an error otherwise, which the route turns into a JSON error.
type handlerFunc func(w http.ResponseWriter, r *http.Request, c Caller) error

// route is a registered endpoint. Serve tells a match from the mux's own
// not-found, method-not-allowed and redirect handlers by this type.
type route struct {
	a     *API
	perm  perm
	query []string // the query parameters it takes
	h     handlerFunc
	op    string // the operation of a mutating endpoint, for Observe
}

type callerKey struct{}

// ServeHTTP runs the endpoint with the caller Serve put in the context.
func (rt *route) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, ok := r.Context().Value(callerKey{}).(Caller)
	if !ok {
		rt.a.fail(w, r, forbidden("the request has no caller"))
		return
	}
	result := "ok"
	if err := rt.h(w, r, c); err != nil {
		result = rt.a.fail(w, r, err)
	}
	rt.observe(result)
}

// observe tells Options.Observe of a mutating endpoint's result.
func (rt *route) observe(result string) {
	if rt.op != "" && rt.a.observe != nil {
		rt.a.observe(rt.op, result)
	}
}

func (a *API) handle(pattern string, p perm, h handlerFunc, query ...string) {
	a.mux.Handle(pattern, &route{a: a, perm: p, query: query, h: h})
}

// mutation registers a mutating endpoint, whose results Observe counts
// as op.
func (a *API) mutation(op, pattern string, p perm, h handlerFunc) {
	a.mux.Handle(pattern, &route{a: a, perm: p, h: h, op: op})
}

func (a *API) routes() {
	a.mutation("create_key", "POST /keys", permWrite, a.createKey)
	a.handle("GET /keys", permRead, a.listKeys, "account", "status", "q", "limit", "cursor")
	a.mutation("import_keys", "POST /keys/import", permOperator, a.importKeys)
	a.handle("GET /keys/{id}", permRead, a.getKey)
	a.mutation("update_key", "PATCH /keys/{id}", permWrite, a.patchKey)
	a.mutation("delete_key", "DELETE /keys/{id}", permDelete, a.deleteKey)
	a.mutation("revoke_key", "POST /keys/{id}/revoke", permWrite, a.revokeKey)
	a.mutation("activate_key", "POST /keys/{id}/activate", permWrite, a.activateKey)
	a.mutation("regenerate_key", "POST /keys/{id}/regenerate", permWrite, a.regenerateKey)
	a.handle("GET /keys/{id}/audit", permRead, a.keyAudit)
	a.handle("GET /keys/{id}/usage", permRead, a.keyUsage, "from", "to", "interval")

	a.mutation("create_account", "POST /accounts", permOperator, a.createAccount)
	a.handle("GET /accounts", permOperator, a.listAccounts)
	a.handle("GET /accounts/{id}", permOperator, a.getAccount)
	a.mutation("update_account", "PATCH /accounts/{id}", permOperator, a.patchAccount)
	a.mutation("delete_account", "DELETE /accounts/{id}", permOperator, a.deleteAccount)
	a.handle("GET /accounts/{id}/usage", permRead, a.accountUsage, "from", "to", "interval")
}

// Serve answers a request whose path is relative to the mount point
// ("/keys", "/keys/{id}", ...) on behalf of c. Every answer, errors
// included, is JSON (204 has no body).
func (a *API) Serve(w http.ResponseWriter, r *http.Request, c Caller) {
	h, _ := a.mux.Handler(r)
	rt, ok := h.(*route)
	if !ok {
		a.unrouted(w, r, h)
		return
	}
	if err := authorize(c, rt.perm); err != nil {
		rt.observe(a.fail(w, r, err))
		return
	}
	if err := checkQuery(r.URL, rt.query); err != nil {
		rt.observe(a.fail(w, r, err))
		return
	}
	a.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
}

// unrouted answers a request no route matched. The mux's fallback handler
// h (not found, method not allowed, or a redirect to a cleaned path) runs
// against a recorder only to learn which it is and, for 405, the allowed
// methods; the answer is our JSON. A path that would be redirected (//,
// /./, /../, a missing trailing slash) is not found: the API never
// redirects.
func (a *API) unrouted(w http.ResponseWriter, r *http.Request, h http.Handler) {
	rec := &recorder{header: make(http.Header)}
	h.ServeHTTP(rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		a.fail(w, r, &apiError{
			Status:  http.StatusMethodNotAllowed,
			Code:    "method_not_allowed",
			Message: "the method " + r.Method + " is not allowed on this path; allowed: " + allow,
		})
		return
	}
	a.fail(w, r, &apiError{Status: http.StatusNotFound, Code: "not_found", Message: "there is no such endpoint"})
}

// recorder keeps the status and headers a fallback handler writes and
// discards its body.
type recorder struct {
	header http.Header
	status int
}

func (rec *recorder) Header() http.Header { return rec.header }

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return len(b), nil
}

func (rec *recorder) WriteHeader(status int) {
	if rec.status == 0 {
		rec.status = status
	}
}

// checkQuery refuses a malformed query string, a parameter the endpoint
// does not take, and a parameter given twice.
func checkQuery(u *url.URL, allowed []string) error {
	if u.RawQuery == "" {
		return nil
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return invalidRequest("", "the query string is malformed")
	}
	for name, vals := range q {
		if !slices.Contains(allowed, name) {
			return invalidRequest(name, "unknown query parameter %q", name)
		}
		if len(vals) > 1 {
			return invalidRequest(name, "the query parameter %q is given more than once", name)
		}
	}
	return nil
}
