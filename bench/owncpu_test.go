package main

import (
	"math"
	"testing"
	"time"
)

const pprofCum = `File: caddy
Type: cpu
Duration: 10s, Total samples = 12.23s (122.28%)
Showing nodes accounting for 12.23s, 100% of 12.23s total
      flat  flat%   sum%        cum   cum%
     0.02s  0.16%  0.16%     10.07s 82.34%  net/http.(*conn).serve
     0.03s  0.25% 31.07%      1.59s 13.00%  github.com/caddy-apikey/caddy-apikey/caddymodule.(*Handler).ServeHTTP
     0.04s  0.33% 36.22%      700ms  5.72%  github.com/caddyserver/caddy/v2/modules/caddyhttp.StaticResponse.ServeHTTP
         0     0% 36.22%      0.70s  5.72%  github.com/caddyserver/caddy/v2/modules/caddyhttp.StaticResponse.ServeHTTP.func1
`

func TestOwnCPUOf(t *testing.T) {
	for _, tc := range []struct {
		name, handler, next string
		own                 time.Duration
		err                 bool
	}{
		{"pass", "caddymodule.(*Handler).ServeHTTP", "caddyhttp.StaticResponse.ServeHTTP", 890 * time.Millisecond, false},
		{"refusal load: no next", "caddymodule.(*Handler).ServeHTTP", "", 1590 * time.Millisecond, false},
		{"no such handler", "caddyauth.Authentication.ServeHTTP", "caddyhttp.StaticResponse.ServeHTTP", 0, true},
		{"no such next", "caddymodule.(*Handler).ServeHTTP", "reverseproxy.(*Handler).ServeHTTP", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ownCPUOf(pprofCum, tc.handler, tc.next)
			if tc.err {
				if err == nil {
					t.Fatalf("want an error, got %+v", o)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.own != tc.own || o.all != 12230*time.Millisecond || o.total() != 1223 {
				t.Fatalf("own %v of %v (%d samples), want %v of 12.23s", o.own, o.all, o.total(), tc.own)
			}
			o.requests = 200_000
			if got, want := o.perRequestUS(), float64(tc.own.Microseconds())/200_000; math.Abs(got-want) > 1e-9 {
				t.Errorf("per request %v µs, want %v", got, want)
			}
		})
	}
	if _, err := ownCPUOf("flat flat%\n", "x", ""); err == nil {
		t.Error("a text without a total was accepted")
	}
}

func TestPprofDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "1.59s": 1590 * time.Millisecond, "40ms": 40 * time.Millisecond, "2.5mins": 150 * time.Second, "7us": 7 * time.Microsecond} {
		if got, err := pprofDuration(in); err != nil || got != want {
			t.Errorf("pprofDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := pprofDuration("12 parsecs"); err == nil {
		t.Error("an unknown unit was accepted")
	}
}

// TestOwnCPUSummary: the targets' line names apikey, basic_auth and the
// floor in that order, from the profiled loads, and nothing without them.
func TestOwnCPUSummary(t *testing.T) {
	if s := (report{}).ownCPUSummary(); s != "" {
		t.Errorf("without profiles: %q", s)
	}
	r := report{ownCPU: []ownCPU{
		{load: "floor-respond", own: 970 * time.Millisecond, requests: 1_663_313},
		{load: "apikey-unknown", own: 7 * time.Second, requests: 1_000_000},
		{load: "apikey-respond", own: 5 * time.Second, requests: 1_715_919},
		{load: "basic-auth-respond", own: 3780 * time.Millisecond, requests: 1_666_974},
	}}
	want := "`apikey` 2.91 µs (500 samples), `basic_auth` 2.27 µs (378 samples), the floor 0.58 µs (97 samples)"
	if s := r.ownCPUSummary(); s != want {
		t.Errorf("got  %q\nwant %q", s, want)
	}
}
