package caddymodule

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/bench/floor"
	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// benchHandler is an apikey handler on a real store, provisioned by hand
// (no Caddy config), requiring contacts (read for GET).
func benchHandler(b *testing.B) (*Handler, string) {
	b.Helper()
	s, err := keystore.Open(keystore.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	f := keystore.DefaultFormat()
	_, plain, err := s.CreateKey(keystore.NewKey{Name: "bench", Scopes: []string{"contacts:write"}}, f, "bench")
	if err != nil {
		b.Fatal(err)
	}
	req, _ := keystore.ParseRequirement("contacts")
	rf, err := newRefuser(DefaultKeyHeader, true)
	if err != nil {
		b.Fatal(err)
	}
	lim := keystore.Limit{Requests: 1 << 30, Window: 1e9, Burst: 1 << 30}
	m, err := newAppMetrics(prometheus.NewPedanticRegistry(), &App{open: new(opening)})
	if err != nil {
		b.Fatal(err)
	}
	return &Handler{
		req:    req,
		logger: zap.NewNop(),
		auth: authenticator{
			app:     appWith(keystore.Verifier{Store: s, Format: f, DefaultLimit: &lim}),
			header:  textproto.CanonicalMIMEHeaderKey(DefaultKeyHeader),
			bearer:  true,
			refuser: rf,
			metrics: newMetricsSlot(m, "apikey"),
			errs:    newBurstLog(),
		},
	}, plain
}

// appWith is an apikey app whose store is open, with verifier v.
func appWith(v keystore.Verifier) *App {
	app := &App{open: new(opening)}
	app.open.ready.Store(&backend{verifier: v})
	return app
}

var benchNext = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	w.WriteHeader(http.StatusOK)
	return nil
})

// requestReplacer is a replacer as Caddy's server gives each request:
// NewReplacer plus the HTTP variables' provider (caddyhttp's
// PrepareRequest maps it, which leaves room for one more provider).
func requestReplacer() *caddy.Replacer {
	repl := caddy.NewReplacer()
	repl.Map(func(string) (any, bool) { return nil, false })
	return repl
}

// benchRequest is a copy of base as Caddy's server hands it to a handler:
// its own header map and a request replacer in the context.
func benchRequest(base *http.Request, template http.Header) *http.Request {
	r := base.WithContext(context.WithValue(base.Context(), caddy.ReplacerCtxKey, requestReplacer()))
	r.Header = template.Clone()
	return r
}

// benchRecorder is a response writer as Caddy's server hands it to a
// handler: its header map already holds Server (caddyhttp's Server sets it
// on every response before the first handler runs), so a handler that adds
// a response header pays for the header, not for the map's first slots.
func benchRecorder() *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	w.HeaderMap["Server"] = benchServerHeader
	return w
}

var benchServerHeader = []string{"Caddy"}

// benchServe runs the handler on a request with the given key header, as
// Caddy would: a fresh header map per request, a replacer in the context.
func benchServe(b *testing.B, h *Handler, key string, want int) {
	template := http.Header{"User-Agent": {"bench"}, "Accept": {"*/*"}}
	if key != "" {
		template["X-Api-Key"] = []string{key}
	}
	base := httptest.NewRequest("GET", "/contacts", nil)
	b.ReportAllocs()
	for b.Loop() {
		r := benchRequest(base, template)
		w := benchRecorder()
		if err := h.ServeHTTP(w, r, benchNext); err != nil || w.Code != want {
			b.Fatalf("status %d, err %v", w.Code, err)
		}
	}
}

func BenchmarkServeHTTPValid(b *testing.B) {
	h, key := benchHandler(b)
	benchServe(b, h, key, http.StatusOK)
}

func BenchmarkServeHTTPUnknown(b *testing.B) {
	h, _ := benchHandler(b)
	unknown, _ := keystore.DefaultFormat().Generate()
	benchServe(b, h, unknown, http.StatusUnauthorized)
}

func BenchmarkServeHTTPMalformed(b *testing.B) {
	h, _ := benchHandler(b)
	benchServe(b, h, "ak_this-is-not-a-key", http.StatusUnauthorized)
}

func BenchmarkServeHTTPMissing(b *testing.B) {
	h, _ := benchHandler(b)
	benchServe(b, h, "", http.StatusUnauthorized)
}

// BenchmarkServeHTTPBaseline is the same request through next alone: the
// cost of the benchmark's own setup, to subtract from the others.
func BenchmarkServeHTTPBaseline(b *testing.B) {
	template := http.Header{"User-Agent": {"bench"}, "Accept": {"*/*"}, "X-Api-Key": {"x"}}
	base := httptest.NewRequest("GET", "/contacts", nil)
	b.ReportAllocs()
	for b.Loop() {
		r := benchRequest(base, template)
		w := benchRecorder()
		if err := benchNext.ServeHTTP(w, r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServeHTTPFloor is the same request through the harness's floor
// handler (bench/floor) and next: the key header dropped, and the five
// identity headers and three RateLimit-* ones set with constant values,
// with no key check. It is the least a handler that keeps apikey's
// contract adds to the baseline; ValidSpread minus Floor is what the
// checks and the per-request copies of the values cost.
func BenchmarkServeHTTPFloor(b *testing.B) {
	template := http.Header{"User-Agent": {"bench"}, "Accept": {"*/*"}, "X-Api-Key": {"x"}}
	base := httptest.NewRequest("GET", "/contacts", nil)
	h := new(floor.Handler)
	b.ReportAllocs()
	for b.Loop() {
		r := benchRequest(base, template)
		w := benchRecorder()
		if err := h.ServeHTTP(w, r, benchNext); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServeHTTPValidSpread is BenchmarkServeHTTPValid over 10,000
// keys taken in a random order, as the load harness sends them: each
// request meets a cache entry and bucket that are likely out of the CPU's
// caches, which a benchmark of one key hides. The request itself is as
// warm as a freshly parsed one: one header template, and the key strings
// side by side in one string (520 KB, within a core's 1 MiB L2 cache).
func BenchmarkServeHTTPValidSpread(b *testing.B) {
	h, _ := benchHandler(b)
	v := &h.auth.app.open.ready.Load().verifier
	const n = 10_000
	var all strings.Builder
	for range n {
		_, plain, err := v.Store.CreateKey(keystore.NewKey{Name: "spread", Scopes: []string{"contacts:read"}}, v.Format, "bench")
		if err != nil {
			b.Fatal(err)
		}
		all.WriteString(plain)
	}
	packed, klen := all.String(), v.Format.KeyLen()
	keys := make([]string, n)
	for i, k := range rand.Perm(n) {
		keys[i] = packed[k*klen : (k+1)*klen]
	}
	template := http.Header{"User-Agent": {"bench"}, "Accept": {"*/*"}}
	base := httptest.NewRequest("GET", "/contacts", nil)
	serve := func(key string) {
		r := benchRequest(base, template)
		r.Header["X-Api-Key"] = []string{key}
		w := benchRecorder()
		if err := h.ServeHTTP(w, r, benchNext); err != nil || w.Code != http.StatusOK {
			b.Fatalf("status %d, err %v", w.Code, err)
		}
	}
	for _, k := range keys { // warm the cache: every key verified once
		serve(k)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		serve(keys[i%n])
		i++
	}
}
