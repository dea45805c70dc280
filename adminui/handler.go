package adminui

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/adminapi"
	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// Backend is what the page drives: the admin API, and the verifier that
// checks a manager's key (unused on the operator's page).
type Backend struct {
	// API is the admin API the page's requests go to.
	API *adminapi.API
	// Verifier checks a signed-in manager's key on every request.
	Verifier *keystore.Verifier
}

// Options configure a Handler.
type Options struct {
	// Operator serves the operator's page: no sign-in, every account,
	// the accounts' status and limits. Only for a listener that is
	// trusted as Caddy's admin endpoint is.
	Operator bool
	// Backend returns the API and verifier to use for a request; it
	// may fail while the key store cannot be opened (503).
	Backend func() (Backend, error)
	// Resources, if not nil, returns the resources the running config
	// requires scopes of, which the create panel offers.
	Resources func() []string
	// IdleTimeout ends a session unused for this long; 0 means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// AbsoluteTimeout ends a session this long after sign-in; 0 means
	// DefaultAbsoluteTimeout.
	AbsoluteTimeout time.Duration
	// Logger receives internal errors; nil means no logging. Nothing
	// logged ever holds a key or a session token.
	Logger *zap.Logger
	// Checked, if not nil, is told of every check of a manager's key
	// (sign-in and each request of a session), for metrics.
	Checked func(r *http.Request, res keystore.Result)
}

// Handler serves the page. It is safe for concurrent use. It keeps no
// state of its own: its sessions live in the key store (the backend's
// Verifier.Store), so that they outlive a config reload or a restart and,
// on a store shared by several Caddy processes, are known to all of them.
// The store's clock is the sessions' clock.
type Handler struct {
	opts   Options
	limits keystore.SessionLimits
	cop    *http.CrossOriginProtection
}

// New returns the page's handler.
func New(opts Options) *Handler {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.AbsoluteTimeout <= 0 {
		opts.AbsoluteTimeout = DefaultAbsoluteTimeout
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	return &Handler{
		opts:   opts,
		limits: keystore.SessionLimits{Idle: opts.IdleTimeout, Absolute: opts.AbsoluteTimeout, PerKey: MaxSessionsPerKey},
		cop:    http.NewCrossOriginProtection(),
	}
}

// IsPagePath reports whether a path relative to a mount is the page's
// (/ or under /ui/) rather than the admin API's.
func IsPagePath(p string) bool {
	return p == "/" || strings.HasPrefix(p, "/ui/")
}

// maxSignInBody bounds the sign-in body: {"key": "..."} with the longest
// key (foreign keys are at most 256 characters).
const maxSignInBody = 4 << 10

// Serve answers r, whose path is relative to the page's mount. mount is
// the path the page is served under ("/manage"; "" for the site's root),
// which the session cookie is limited to.
func (h *Handler) Serve(w http.ResponseWriter, r *http.Request, mount string) {
	setSecurityHeaders(w.Header(), h.opts.Operator)
	if !safeMethod(r.Method) {
		if err := h.cop.Check(r); err != nil {
			writeError(w, http.StatusForbidden, "cross_origin", "cross-origin requests cannot change anything")
			return
		}
		if !jsonType(r.Header.Get("Content-Type")) {
			writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "the page's requests carry Content-Type: application/json")
			return
		}
	}
	p := r.URL.Path
	switch {
	case p == "/":
		h.servePage(w, r)
	case p == "/ui/session":
		h.serveSession(w, r, cookiePath(mount))
	case p == "/ui/api" || strings.HasPrefix(p, "/ui/api/"):
		h.serveAPI(w, r, cookiePath(mount))
	default:
		h.serveAsset(w, r)
	}
}

// cookiePath is the session cookie's Path for a mount.
func cookiePath(mount string) string {
	return strings.TrimSuffix(mount, "/") + "/"
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func jsonType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

// writeError writes the admin API's error shape.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	adminapi.WriteError(w, status, code, msg)
}

func (h *Handler) servePage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "the page answers GET")
		return
	}
	serveIndex(w, r)
}

// whoAmI is the answer of GET and POST /ui/session: who the page acts
// for, what the create panel offers and how long the session lasts.
type whoAmI struct {
	Operator  bool       `json:"operator"`
	KeyID     string     `json:"key_id,omitempty"`
	KeyName   string     `json:"key_name,omitempty"`
	Account   string     `json:"account,omitempty"`
	Type      string     `json:"type,omitempty"`
	Scopes    []string   `json:"scopes"`
	ExpiresAt *time.Time `json:"expires_at"`
	Resources []string   `json:"resources"`
	// IdleTimeout is the session's idle timeout in seconds (0 for the
	// operator).
	IdleTimeout int `json:"idle_timeout"`
}

func (h *Handler) resources() []string {
	if h.opts.Resources == nil {
		return []string{}
	}
	if rs := h.opts.Resources(); rs != nil {
		return rs
	}
	return []string{}
}

func (h *Handler) serveSession(w http.ResponseWriter, r *http.Request, path string) {
	secure := r.TLS != nil
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if h.opts.Operator {
			adminapi.WriteJSON(w, http.StatusOK, whoAmI{Operator: true, Scopes: []string{}, Resources: h.resources()})
			return
		}
		_, res, ok := h.check(w, r, path)
		if !ok {
			return
		}
		adminapi.WriteJSON(w, http.StatusOK, h.managerView(res))
	case http.MethodPost:
		if h.opts.Operator {
			writeError(w, http.StatusNotFound, "not_found", "the operator's page has no sign-in")
			return
		}
		h.signIn(w, r, path, secure)
	case http.MethodDelete:
		if c, err := r.Cookie(cookieName); err == nil && c.Value != "" {
			// Ended in the store: on every process of a shared store at
			// once. A store that cannot be written keeps the cookie, so
			// that the sign-out can be tried again.
			b, err := h.opts.Backend()
			if err == nil {
				err = b.Verifier.Store.EndSession(c.Value)
			}
			if err != nil {
				h.unavailable(w, err)
				return
			}
		}
		http.SetCookie(w, clearCookie(path, secure))
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST, DELETE")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "the method "+r.Method+" is not allowed on this path")
	}
}

func (h *Handler) managerView(res keystore.Result) whoAmI {
	return whoAmI{
		KeyID:       res.Key.ID,
		KeyName:     res.Key.Name,
		Account:     res.Key.Account,
		Type:        res.Key.Type,
		Scopes:      keystore.ScopeStrings(res.Scopes),
		ExpiresAt:   res.Key.ExpiresAt,
		Resources:   h.resources(),
		IdleTimeout: int(h.opts.IdleTimeout / time.Second),
	}
}

// signInBody is the body of POST /ui/session.
type signInBody struct {
	Key string `json:"key"`
}

// needScope is what a key needs to sign in, and keeps needing on every
// request: any apikeys scope (a write or delete satisfies a read).
var needScope = keystore.Scope{Resource: "apikeys", Access: keystore.AccessRead}

// signIn checks a pasted key as the admin API checks a key sent with a
// request, for an apikeys scope, and starts a session that keeps its
// SHA-256. The plaintext is dropped when the request ends.
func (h *Handler) signIn(w http.ResponseWriter, r *http.Request, path string, secure bool) {
	var body signInBody
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxSignInBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || dec.Decode(&struct{}{}) != io.EOF {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "payload_too_large", "the sign-in body is at most 4 KiB")
			return
		}
		writeError(w, http.StatusBadRequest, "invalid_request", `the body must be {"key": "<an API key>"}`)
		return
	}
	if body.Key == "" {
		writeError(w, http.StatusBadRequest, "invalid_request", "paste an API key that holds an apikeys scope")
		return
	}
	b, err := h.opts.Backend()
	if err != nil {
		h.unavailable(w, err)
		return
	}
	res, err := b.Verifier.Verify(body.Key, needScope, true)
	if err != nil {
		h.unavailable(w, err)
		return
	}
	if h.opts.Checked != nil {
		h.opts.Checked(r, res)
	}
	if res.Outcome != keystore.OK {
		refuse(w, res, "sign-in refused: ")
		return
	}
	token, err := b.Verifier.Store.CreateSession(keystore.HashKey(body.Key), res.Key.ID, pageID(h.opts.Operator, path), h.limits)
	if err != nil {
		h.unavailable(w, err)
		return
	}
	http.SetCookie(w, sessionCookie(token, path, secure, h.opts.AbsoluteTimeout))
	adminapi.WriteJSON(w, http.StatusOK, h.managerView(res))
}

// refuse answers a key that failed its check with the outcome's code, as
// the admin API's authentication refusals do.
func refuse(w http.ResponseWriter, res keystore.Result, prefix string) {
	status, msg := http.StatusUnauthorized, ""
	switch res.Outcome {
	case keystore.MalformedKey, keystore.InvalidKey:
		msg = "the key is not valid"
	case keystore.KeyRevoked:
		msg = "the key is revoked"
	case keystore.KeyExpired:
		msg = "the key has expired"
	case keystore.AccountInactive:
		status, msg = http.StatusForbidden, "the key's account is "+res.AccountStatus
	case keystore.InsufficientScope:
		status, msg = http.StatusForbidden, "the key holds no apikeys scope (apikeys:read at least)"
	case keystore.RateLimited:
		status, msg = http.StatusTooManyRequests, "the key's rate limit is exhausted; try again shortly"
	case keystore.QuotaExceeded:
		status, msg = http.StatusTooManyRequests, "the key's quota is used up"
	default:
		msg = "the key is not valid"
	}
	writeError(w, status, res.Outcome.Code(), prefix+msg)
}

func (h *Handler) unavailable(w http.ResponseWriter, err error) {
	h.opts.Logger.Error("the key store is unavailable", zap.Error(err))
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, "unavailable", "the key store could not be read; try again shortly")
}

// check finds r's session and checks its key again, as if it were sent
// with the request: a session whose key is no longer valid for an apikeys
// scope ends (the cookie is cleared), one whose key is rate limited stays.
func (h *Handler) check(w http.ResponseWriter, r *http.Request, path string) (Backend, keystore.Result, bool) {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		writeError(w, http.StatusUnauthorized, "signed_out", "sign in with an API key that holds an apikeys scope")
		return Backend{}, keystore.Result{}, false
	}
	b, err := h.opts.Backend()
	if err != nil {
		h.unavailable(w, err)
		return Backend{}, keystore.Result{}, false
	}
	store := b.Verifier.Store
	ss, err := store.Session(c.Value, pageID(h.opts.Operator, path), h.limits)
	if errors.Is(err, keystore.ErrSessionEnded) {
		http.SetCookie(w, clearCookie(path, r.TLS != nil))
		writeError(w, http.StatusUnauthorized, "signed_out", "the session has ended; sign in again")
		return Backend{}, keystore.Result{}, false
	}
	if err != nil {
		h.unavailable(w, err)
		return Backend{}, keystore.Result{}, false
	}
	res, err := b.Verifier.VerifyHash(ss.KeyHash, needScope, true)
	if err != nil {
		h.unavailable(w, err)
		return Backend{}, keystore.Result{}, false
	}
	if h.opts.Checked != nil {
		h.opts.Checked(r, res)
	}
	switch res.Outcome {
	case keystore.OK:
		// The last use is written at most once a minute (the idle
		// timeout allows for it). A session ended meanwhile, as by a
		// sign-out on another replica, is not brought back.
		if _, err := store.TouchSession(c.Value, ss, h.limits); errors.Is(err, keystore.ErrSessionEnded) {
			http.SetCookie(w, clearCookie(path, r.TLS != nil))
			writeError(w, http.StatusUnauthorized, "signed_out", "the session has ended; sign in again")
			return Backend{}, keystore.Result{}, false
		} else if err != nil {
			h.unavailable(w, err)
			return Backend{}, keystore.Result{}, false
		}
		return b, res, true
	case keystore.RateLimited, keystore.QuotaExceeded:
	default:
		if err := store.EndSession(c.Value); err != nil {
			h.opts.Logger.Error("ending the session of a refused key", zap.Error(err))
		}
		http.SetCookie(w, clearCookie(path, r.TLS != nil))
	}
	refuse(w, res, "the session's key was refused: ")
	return Backend{}, keystore.Result{}, false
}

// serveAPI serves the admin API under /ui/api/ on behalf of the session's
// caller (the operator on the operator's page).
func (h *Handler) serveAPI(w http.ResponseWriter, r *http.Request, path string) {
	var b Backend
	caller := adminapi.OperatorCaller()
	if h.opts.Operator {
		var err error
		if b, err = h.opts.Backend(); err != nil {
			h.unavailable(w, err)
			return
		}
	} else {
		var res keystore.Result
		var ok bool
		if b, res, ok = h.check(w, r, path); !ok {
			return
		}
		caller = adminapi.Caller{KeyID: res.Key.ID, Account: res.Key.Account, Scopes: res.Scopes}
	}
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.Path = strings.TrimPrefix(r.URL.Path, "/ui/api")
	u.RawPath = strings.TrimPrefix(r.URL.RawPath, "/ui/api")
	r2.URL = &u
	b.API.Serve(w, r2, caller)
}
