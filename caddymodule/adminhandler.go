package caddymodule

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/adminapi"
	"github.com/caddy-apikey/caddy-apikey/adminui"
	"github.com/caddy-apikey/caddy-apikey/keystore"
)

func init() {
	caddy.RegisterModule(AdminHandler{})
	httpcaddyfile.RegisterHandlerDirective("apikey_admin", parseAdminHandler)
	httpcaddyfile.RegisterDirectiveOrder("apikey_admin", httpcaddyfile.After, "forward_auth")
}

// AdminHandler serves the admin API on a site, for an account's own
// managers: the caller authenticates with an API key of the same store
// (sent as for the apikey handler), and sees and changes only its own
// account's keys. Reading needs apikeys:read, creating, editing, revoking,
// activating and regenerating apikeys:write, deleting apikeys:delete; a
// caller can never grant a scope it does not hold. Accounts and import are
// only on the admin endpoint. Mount it under a path with handle_path:
//
//	handle_path /manage/* {
//		apikey_admin
//	}
//
// It also serves the API Keys web page (package adminui) to browsers at
// its mount (/manage/ above), and the page's files and session under
// /ui/ (/manage/ui/...): a manager signs in by pasting a key that holds an
// apikeys scope, and the page drives the same API with the same rules.
//
// As the apikey handler does by default, it refuses a path with an encoded
// slash or backslash or a dot segment (400 invalid_path) before the key is
// checked: no path of the API has one, and so the API routes exactly the
// path that Caddy's matchers chose this handler for.
type AdminHandler struct {
	// Header is the request header that carries the caller's key.
	// Default: X-API-Key.
	Header string `json:"header,omitempty"`

	// Bearer also accepts the key as "Authorization: Bearer <key>".
	// Default: true.
	Bearer *bool `json:"bearer,omitempty"`

	paths  pathGuard
	auth   authenticator
	page   *adminui.Handler
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (AdminHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikey_admin",
		New: func() caddy.Module { return new(AdminHandler) },
	}
}

// Provision attaches the handler to the apikey app.
func (h *AdminHandler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	paths, err := newPathGuard(EscapedSlashesReject)
	if err != nil {
		return err
	}
	h.paths = paths
	auth, err := newAuthenticator(ctx, h.Header, h.Bearer, "apikey_admin")
	if err != nil {
		return err
	}
	h.auth = auth
	h.page = adminui.New(adminui.Options{
		Backend:   auth.app.pageBackend,
		Resources: auth.app.resources.list,
		Logger:    h.logger,
		Checked: func(r *http.Request, res keystore.Result) {
			h.auth.decided(r, res.Outcome, res.Key, time.Time{})
		},
	})
	return nil
}

// ServeHTTP checks the path and authenticates the caller, refusing
// exactly as the apikey handler does, and serves the admin API for its account. It is a
// terminal handler: it never calls next.
func (h *AdminHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	start := decisionTimer()
	if h.paths.refused(w, r.URL) {
		h.auth.decided(r, outcomeInvalidPath, nil, start)
		return nil
	}
	if adminui.IsPagePath(r.URL.Path) {
		h.page.Serve(w, r, mountOf(r))
		return nil
	}
	res, _, ok := h.auth.authenticate(w, r, credHeadersOf(r.Header, h.auth.header), keystore.Scope{}, false, h.logger, start)
	if !ok {
		return nil
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl != nil {
		repl.Set("http.auth.user.id", res.Key.ID)
		repl.Set("http.auth.user.account", res.Key.Account)
	}
	b, err := h.auth.app.backend() // open: authenticate used it
	if err != nil {
		storeUnavailable(w)
		return nil
	}
	b.api.Serve(w, r, adminapi.Caller{
		KeyID:   res.Key.ID,
		Account: res.Key.Account,
		Scopes:  res.Scopes,
	})
	return nil
}

// parseAdminHandler sets up the apikey_admin handler. Syntax:
//
//	apikey_admin {
//		header <name>
//		bearer on|off
//	}
func parseAdminHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(AdminHandler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens (see
// parseAdminHandler for the syntax).
func (h *AdminHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "header", "bearer":
			if err := keySourceOption(d, &h.Header, &h.Bearer); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized apikey_admin subdirective: %s", d.Val())
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*AdminHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*AdminHandler)(nil)
	_ caddyfile.Unmarshaler       = (*AdminHandler)(nil)
)
