package caddymodule

import (
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/adminapi"
)

func init() {
	caddy.RegisterModule(AdminRoutes{})
}

// AdminRoutes serves the admin API on Caddy's admin endpoint, under
// /apikey/: the operator's full control over every account's keys, and
// the API Keys web page at /apikey/ui/ (every account, their status and
// limits). It relies on the admin endpoint's own protection (localhost by
// default). Requests go to the store of the running config's apikey app.
type AdminRoutes struct{}

// CaddyModule returns the Caddy module information.
func (AdminRoutes) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.apikey",
		New: func() caddy.Module { return new(AdminRoutes) },
	}
}

// Routes returns the admin routes under /apikey/.
func (AdminRoutes) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: "/apikey/",
		Handler: caddy.AdminHandlerFunc(serveAdmin),
	}}
}

func serveAdmin(w http.ResponseWriter, r *http.Request) error {
	appIface, err := caddy.ActiveContext().AppIfConfigured("apikey")
	if err != nil {
		adminapi.WriteError(w, http.StatusServiceUnavailable, "unavailable",
			"the running config does not use the apikey app: add an apikey handler or global option")
		return nil
	}
	b, err := appIface.(*App).backend()
	if err != nil {
		caddy.Log().Named("admin.api.apikey").Error("opening the key store", zap.Error(err))
		adminapi.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the key store could not be opened; see Caddy's log")
		return nil
	}
	if r.URL.Path == "/apikey/ui" {
		http.Redirect(w, r, "/apikey/ui/", http.StatusMovedPermanently)
		return nil
	}
	if page, ok := strings.CutPrefix(r.URL.Path, "/apikey/ui/"); ok {
		appIface.(*App).page.Serve(w, stripTo(r, "/"+page), "/apikey/ui")
		return nil
	}
	if r.URL.Path == "/apikey/status" {
		serveStatus(w, r, appIface.(*App), b.verifier.Store)
		return nil
	}
	http.StripPrefix("/apikey", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.api.Serve(w, r, adminapi.OperatorCaller())
	})).ServeHTTP(w, r)
	return nil
}

// stripTo returns r with its path replaced by p (a suffix of it).
func stripTo(r *http.Request, p string) *http.Request {
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.Path, u.RawPath = p, ""
	r2.URL = &u
	return r2
}

// Interface guards.
var _ caddy.AdminRouter = (*AdminRoutes)(nil)
