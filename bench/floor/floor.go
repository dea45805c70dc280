// Package floor is a Caddy handler for the load harness (bench/) only: the
// floor of issue 22's targets. On every request it does what the apikey
// handler's contract makes any implementation do to a request it lets
// through, and nothing else: it removes the key header (a plaintext key is
// never forwarded), sets the five identity headers on the request and the
// three RateLimit-* headers on the response (issue 4: "every response that
// passed the check carries" them), all with constant values, then calls
// the next handler. It checks no key, counts nothing and allocates
// nothing.
//
// Measured against respond in the same run as apikey, it is the least
// that a handler with apikey's headers adds to a request: what net/http
// and Caddy then do with eight more header values (clone, sort and write
// the response's, carry the request's). What apikey adds beyond the floor
// is what its checks cost.
package floor

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(new(Handler))
	httpcaddyfile.RegisterHandlerDirective("bench_floor", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		f := new(Handler)
		return f, f.UnmarshalCaddyfile(h.Dispenser)
	})
}

// Handler is the floor handler (bench_floor in a Caddyfile, in a route).
type Handler struct{}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.bench_floor",
		New: func() caddy.Module { return new(Handler) },
	}
}

// UnmarshalCaddyfile takes the directive's name and no arguments.
func (*Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() || d.NextBlock(0) {
		return d.ArgErr()
	}
	return nil
}

// The values are shaped like a bench key's identity (bench/Caddyfile.tmpl's
// headers site uses the same) and the harness's default limit. They are
// shared by every request: the floor's lower bound. (apikey gives each
// request its own copy, since a later handler may rewrite a value in
// place.)
var (
	identity = [...]struct {
		name string
		val  []string
	}{
		{"X-Api-Key-Id", []string{"01a205ed-343e-7d71-ac0f-83d6ef63f8de"}},
		{"X-Api-Key-Name", []string{"bench-12345"}},
		{"X-Api-Key-Type", []string{"api"}},
		{"X-Api-Account", []string{"default"}},
		{"X-Api-Scopes", []string{"contacts:write orders:read"}},
	}
	rateLimit     = []string{"1000000"}
	rateRemaining = []string{"999999"}
	rateReset     = []string{"0"}
)

// ServeHTTP sets the headers and calls next.
func (*Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	delete(r.Header, "X-Api-Key")
	for _, h := range identity {
		r.Header[h.name] = h.val
	}
	rh := w.Header()
	rh["Ratelimit-Limit"] = rateLimit
	rh["Ratelimit-Remaining"] = rateRemaining
	rh["Ratelimit-Reset"] = rateReset
	return next.ServeHTTP(w, r)
}

// Interface guards.
var (
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
