package floor

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-apikey/caddy-apikey/caddymodule"
)

// TestFloorSetsTheHeaders: the floor drops the key header and sets the
// five identity headers on the request and the three RateLimit-* headers
// on the response, under the names apikey uses (caddymodule's), as apikey
// does on a pass.
func TestFloorSetsTheHeaders(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set(caddymodule.DefaultKeyHeader, "ak_secret")
	w := httptest.NewRecorder()
	var seen http.Header
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		seen = r.Header.Clone()
		w.WriteHeader(http.StatusOK)
		return nil
	})
	if err := new(Handler).ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	if v := seen.Get(caddymodule.DefaultKeyHeader); v != "" {
		t.Errorf("key header forwarded: %q", v)
	}
	for _, h := range []string{caddymodule.HeaderKeyID, caddymodule.HeaderKeyName, caddymodule.HeaderKeyType, caddymodule.HeaderAccount, caddymodule.HeaderScopes} {
		if seen.Get(h) == "" {
			t.Errorf("request header %s not set", h)
		}
	}
	for _, h := range []string{"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} {
		if w.Header().Get(h) == "" {
			t.Errorf("response header %s not set", h)
		}
	}
}

func TestFloorCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"bench_floor", true},
		{"bench_floor extra", false},
		{"bench_floor {\n\tx\n}", false},
	} {
		err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

// FuzzFloorCaddyfile: the directive's parser takes only its name, and no
// input makes it panic or accept arguments.
func FuzzFloorCaddyfile(f *testing.F) {
	for _, s := range []string{"bench_floor", "bench_floor x", "bench_floor {\n}", "bench_floor {\n\tx\n}", "bench_floor \"\"", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		d := caddyfile.NewTestDispenser(in)
		err := new(Handler).UnmarshalCaddyfile(d)
		if err != nil {
			return
		}
		// Accepted: the directive had no argument and no non-empty block.
		d = caddyfile.NewTestDispenser(in)
		d.Next()
		if d.NextArg() {
			t.Fatalf("%q accepted with an argument", in)
		}
	})
}
