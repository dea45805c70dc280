package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// DefaultKeyHeader is the header a key is sent in unless configured.
const DefaultKeyHeader = "X-API-Key"

// Handler verifies the API key of every request and passes only verified
// requests on, with the key's identity in X-Api-Key-Id, X-Api-Key-Name,
// X-Api-Key-Type, X-Api-Account and X-Api-Scopes. Refused requests get a
// JSON body {"error": "<code>", "message": "..."} and never reach the next
// handler.
//
// The checks, in order: the request path is one that Caddy and the
// backend route alike (400 invalid_path; see EscapedSlashes), a key is
// present (401 missing_key), matches the key format (401 malformed_key),
// is known by its SHA-256 (401 invalid_key), is not revoked (401
// key_revoked) or expired (401 key_expired), its account is open or
// pending_cancel (403 account_inactive), it has the scope the route
// requires (403 insufficient_scope), and neither the key's rate limit nor
// its account's is exceeded (429 rate_limited). Passing requests get
// RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset response
// headers.
type Handler struct {
	// Require is the scope a request needs: a full scope such as
	// contacts:read, or a bare resource such as contacts whose access
	// comes from the method (GET, HEAD, OPTIONS read; POST, PUT, PATCH
	// write; DELETE delete; any other method write, except a case variant
	// of DELETE, such as delete, which needs delete; see
	// keystore.AccessForMethod). A granted write or delete satisfies a
	// required read, and a granted *:<access> satisfies any resource.
	// Empty: any valid key passes.
	Require string `json:"require,omitempty"`

	// Header is the request header that carries the key. Default:
	// X-API-Key.
	Header string `json:"header,omitempty"`

	// Bearer also accepts the key as "Authorization: Bearer <key>".
	// Default: true.
	Bearer *bool `json:"bearer,omitempty"`

	// ForwardKey keeps the header that carried the key on the request that
	// goes to the next handler (and upstream). By default it is removed,
	// so that the backend never sees a plaintext key.
	ForwardKey bool `json:"forward_key,omitempty"`

	// EscapedSlashes is what to do with a request whose path holds an
	// encoded slash or backslash (%2F, %5C, in any case, and their
	// double encodings %252F, %255C; a backslash as is, too). Caddy's
	// matchers see the decoded path, while reverse_proxy forwards the
	// escaped one, so the backend could route the request to a path
	// that another handle block guards. reject (the default) refuses it
	// with 400 invalid_path, before the key is checked; keep passes it on
	// as sent, for backends whose ids contain encoded slashes, with that
	// risk. A dot segment (., .., also as %2E or followed by ;) is
	// refused whatever the value.
	EscapedSlashes string `json:"escaped_slashes,omitempty"`

	paths  pathGuard
	auth   authenticator
	req    keystore.Requirement
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikey",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision parses the required scope and the escaped_slashes mode and
// attaches the handler to the apikey app's store.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	paths, err := newPathGuard(h.EscapedSlashes)
	if err != nil {
		return err
	}
	h.paths = paths
	if h.Require != "" {
		req, err := keystore.ParseRequirement(h.Require)
		if err != nil {
			return fmt.Errorf("require: %v", err)
		}
		h.req = req
	}
	auth, err := newAuthenticator(ctx, h.Header, h.Bearer, "apikey")
	if err != nil {
		return err
	}
	h.auth = auth
	auth.app.resources.add(h.req.Resource)
	return nil
}

// ServeHTTP checks the request's path and key and, if both pass, forwards
// the request with the key's identity. The path is checked first: its
// refusal says nothing about the key.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	start := decisionTimer()
	if h.paths.refused(w, r.URL) {
		h.auth.decided(r, outcomeInvalidPath, nil, start)
		return nil
	}
	creds := stripIdentity(r.Header, h.auth.header, !h.ForwardKey)
	var required keystore.Scope
	if !h.req.IsZero() {
		required = h.req.For(r.Method)
	}
	res, src, ok := h.auth.authenticate(w, r, creds, required, !h.req.IsZero(), h.logger, start)
	if !ok {
		return nil
	}
	pv := new(passValues) // the one allocation of a pass
	if res.Rate.Limit > 0 {
		pv.setRate(w.Header(), res.Rate)
	}
	if !h.ForwardKey {
		removeBearer(r.Header, src) // (stripIdentity dropped the key header)
	}
	scrubTrailers(r, h.auth.header)
	pv.setIdentity(r.Header, &res)
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	setPlaceholders(repl, &res)
	return next.ServeHTTP(w, r)
}

// authenticator finds, checks and (on failure) answers for a request's key.
// The apikey and apikey_admin handlers share it, so they refuse alike.
type authenticator struct {
	app     *App   // its backend holds the verifier
	header  string // canonical, for lookups
	bearer  bool
	refuser *refuser
	metrics *metricsSlot // nil: not counted
	errs    *burstLog    // store errors of the request path
}

// newAuthenticator sets up the authenticator of a handler of kind apikey
// or apikey_admin (its metrics' handler label).
func newAuthenticator(ctx caddy.Context, header string, bearer *bool, kind string) (authenticator, error) {
	appIface, err := ctx.App("apikey")
	if err != nil {
		return authenticator{}, fmt.Errorf("loading apikey app: %v", err)
	}
	app := appIface.(*App)
	if header == "" {
		header = DefaultKeyHeader
	}
	if err := validKeyHeader(header); err != nil {
		return authenticator{}, err
	}
	useBearer := bearer == nil || *bearer
	rf, err := newRefuser(header, useBearer)
	if err != nil {
		return authenticator{}, err
	}
	return authenticator{
		app:     app,
		header:  textproto.CanonicalMIMEHeaderKey(header),
		bearer:  useBearer,
		refuser: rf,
		metrics: newMetricsSlot(app.metrics, kind),
		errs:    newBurstLog(),
	}, nil
}

// validKeyHeader refuses key header names that would lock every request
// out: not a valid header name, an identity header (stripped before the
// key is looked for), Authorization (use bearer instead), or a header that
// never reaches a handler as sent: Host, which Go's server moves out of the
// header map, and the hop-by-hop headers, which Go's server consumes
// (Transfer-Encoding) or proxies in front drop (RFC 9110, section 7.6.1).
func validKeyHeader(name string) error {
	switch {
	case !httpguts.ValidHeaderFieldName(name):
		return fmt.Errorf("header %q is not a valid HTTP header name", name)
	case isIdentityName(name):
		return fmt.Errorf("header %s is one of the identity headers the handler sets; choose another name", name)
	case strings.EqualFold(name, "Authorization"):
		return fmt.Errorf("header Authorization: keys in Authorization are accepted with bearer on; choose another header name")
	}
	for _, h := range unusableKeyHeaders {
		if strings.EqualFold(name, h) {
			return fmt.Errorf("header %s does not reach a handler as the client sent it; choose another header name", name)
		}
	}
	return nil
}

var unusableKeyHeaders = [...]string{"Host", "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "TE", "Trailer", "Content-Length"}

// authenticate verifies the request's key, found in creds (the values of
// r's key header and Authorization). On any refusal it writes the
// response and returns ok=false. It counts the decision (metrics, and the
// request's span when traced), timed from start if start is not zero.
func (a *authenticator) authenticate(w http.ResponseWriter, r *http.Request, creds credHeaders, required keystore.Scope, needScope bool, log *zap.Logger, start time.Time) (keystore.Result, credentialSource, bool) {
	cred, src, unambiguous := credentialFrom(creds, a.bearer)
	if !unambiguous {
		a.refuser.refuseAmbiguous(w)
		a.decided(r, keystore.MalformedKey, nil, start)
		return keystore.Result{Outcome: keystore.MalformedKey}, src, false
	}
	b, err := a.app.backend()
	if err != nil {
		a.errs.error(log, "opening the key store", err)
		storeUnavailable(w)
		a.decided(r, outcomeUnavailable, nil, start)
		return keystore.Result{}, src, false
	}
	res, err := b.verifier.Verify(cred, required, needScope)
	if err != nil {
		// A stale shared store is logged once by the store, not per
		// request; other errors once per burst.
		if !errors.Is(err, keystore.ErrStale) {
			a.errs.error(log, "verifying API key", err)
		}
		storeUnavailable(w)
		a.decided(r, outcomeUnavailable, nil, start)
		return res, src, false
	}
	a.decided(r, res.Outcome, res.Key, start)
	if res.Outcome != keystore.OK {
		if res.Key != nil {
			repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			setPlaceholders(repl, &res)
		}
		a.refuser.refuse(w, res)
		return res, src, false
	}
	return res, src, true
}

// decided counts a decision of outcome o about key k (nil if it names
// none): the metrics, and the attributes of the request's span.
func (a *authenticator) decided(r *http.Request, o keystore.Outcome, k *keystore.Key, start time.Time) {
	a.metrics.record(r, o, start)
	if a.app.traced() {
		traceDecision(r, o, k)
	}
}

// removeBearer deletes the Bearer value of Authorization if it carried the
// key (an Authorization value of another scheme is not ours and stays).
func removeBearer(h http.Header, src credentialSource) {
	if src == fromBearer || src == fromBoth {
		kept := slices.DeleteFunc(h["Authorization"], func(v string) bool {
			_, isBearer := bearerToken(v)
			return isBearer
		})
		if len(kept) == 0 {
			delete(h, "Authorization")
		} else {
			h["Authorization"] = kept
		}
	}
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
