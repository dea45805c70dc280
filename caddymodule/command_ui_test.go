package caddymodule

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"testing"
)

// TestUIProxy checks what caddy apikey ui forwards to the admin endpoint
// (a real HTTP server that records what it received) and what it refuses.
func TestUIProxy(t *testing.T) {
	var mu sync.Mutex
	var got []*http.Request
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Clone(r.Context()))
		mu.Unlock()
		w.Header().Set("Access-Control-Allow-Origin", "http://"+r.Host)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("admin"))
	}))
	defer admin.Close()
	adminHost := strings.TrimPrefix(admin.URL, "http://")
	self := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 43210}
	p, err := newUIProxy(adminHost, self)
	if err != nil {
		t.Fatal(err)
	}
	const me = "127.0.0.1:43210"

	tests := []struct {
		name     string
		method   string
		target   string
		host     string
		remote   string
		headers  map[string]string
		status   int
		code     string // the JSON error's code, if refused
		location string
	}{
		{name: "typed URL", target: "/apikey/ui/", headers: map[string]string{"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Cookie": "other=1"}, status: 200},
		{name: "localhost", target: "/apikey/ui/ui/app.css", host: "localhost:43210", headers: map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors", "Referer": "http://localhost:43210/apikey/ui/"}, status: 200},
		{name: "the page's POST", method: "POST", target: "/apikey/ui/ui/api/keys", headers: map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://" + me, "Content-Type": "application/json"}, status: 200},
		{name: "curl", target: "/apikey/ui/ui/api/accounts", status: 200},
		{name: "root", target: "/", status: http.StatusFound, location: "/apikey/ui/"},
		{name: "no slash", target: "/apikey/ui", status: http.StatusFound, location: "/apikey/ui/"},
		{name: "DNS rebinding", target: "/apikey/ui/", host: "evil.example:43210", status: 403, code: "host_not_allowed"},
		{name: "another port", target: "/apikey/ui/", host: "127.0.0.1:2019", status: 403, code: "host_not_allowed"},
		{name: "not loopback", target: "/apikey/ui/", remote: "192.0.2.7:5555", status: 403, code: "forbidden"},
		{name: "cross-site read", target: "/apikey/ui/ui/api/keys", headers: map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}, status: 403, code: "cross_origin"},
		{name: "same-site POST", method: "POST", target: "/apikey/ui/ui/api/keys", headers: map[string]string{"Sec-Fetch-Site": "same-site", "Content-Type": "application/json"}, status: 403, code: "cross_origin"},
		{name: "foreign origin", target: "/apikey/ui/ui/api/keys", headers: map[string]string{"Origin": "http://evil.example"}, status: 403, code: "cross_origin"},
		{name: "null origin", method: "POST", target: "/apikey/ui/ui/api/keys", headers: map[string]string{"Origin": "null"}, status: 403, code: "cross_origin"},
		{name: "foreign referer", target: "/apikey/ui/", headers: map[string]string{"Referer": "http://evil.example/x"}, status: 403, code: "cross_origin"},
		{name: "old browser POST", method: "POST", target: "/apikey/ui/ui/api/keys", headers: map[string]string{"Origin": "http://127.0.0.1:18000"}, status: 403, code: "cross_origin"},
		{name: "config", target: "/config/", status: 404, code: "not_found"},
		{name: "stop", method: "POST", target: "/stop", status: 404, code: "not_found"},
		{name: "the admin API", target: "/apikey/keys", status: 404, code: "not_found"},
		{name: "dot segments", target: "/apikey/ui/../../config/", status: 404, code: "not_found"},
		{name: "encoded dot segments", target: "/apikey/ui/%2e%2e/%2e%2e/config/", status: 404, code: "not_found"},
		{name: "encoded slash", target: "/apikey/ui/a%2F..%2F..%2Fconfig", status: 404, code: "not_found"},
		{name: "websocket", target: "/apikey/ui/", headers: map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}, status: 400, code: "bad_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			var body *strings.Reader
			if method == http.MethodPost {
				body = strings.NewReader(`{}`)
			} else {
				body = strings.NewReader("")
			}
			r := httptest.NewRequest(method, tc.target, body)
			r.Host = me
			if tc.host != "" {
				r.Host = tc.host
			}
			r.RemoteAddr = "127.0.0.1:5555"
			if tc.remote != "" {
				r.RemoteAddr = tc.remote
			}
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			p.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d (%s)", w.Code, tc.status, w.Body)
			}
			mu.Lock()
			forwarded := got
			mu.Unlock()
			if tc.status != 200 {
				if len(forwarded) != 0 {
					t.Errorf("forwarded %s to the admin endpoint", forwarded[0].URL)
				}
				if tc.location != "" && w.Header().Get("Location") != tc.location {
					t.Errorf("Location %q, want %q", w.Header().Get("Location"), tc.location)
				}
				if tc.code != "" {
					var e struct{ Error, Message string }
					if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error != tc.code || e.Message == "" {
						t.Errorf("answer %s, want the error %q", w.Body, tc.code)
					}
				}
				return
			}
			if len(forwarded) != 1 {
				t.Fatalf("forwarded %d requests, want 1", len(forwarded))
			}
			f := forwarded[0]
			if f.Method != method || f.URL.Path != r.URL.Path || f.Host != adminHost {
				t.Errorf("forwarded %s %s Host %s, want %s %s Host %s", f.Method, f.URL.Path, f.Host, method, r.URL.Path, adminHost)
			}
			// The admin endpoint sees caddy apikey's request: its own
			// origin, none of the browser's origin or fetch metadata.
			if o := f.Header.Get("Origin"); o != "http://"+adminHost {
				t.Errorf("forwarded Origin %q, want the admin's", o)
			}
			for _, h := range []string{"Referer", "Cookie", "Sec-Fetch-Mode", "Sec-Fetch-Dest", "X-Forwarded-For"} {
				if v := f.Header.Get(h); v != "" {
					t.Errorf("forwarded %s: %q", h, v)
				}
			}
			if v := w.Header().Get("Access-Control-Allow-Origin"); v != "" {
				t.Errorf("answered Access-Control-Allow-Origin %q (the admin's)", v)
			}
			if w.Body.String() != "admin" {
				t.Errorf("answer %q", w.Body)
			}
		})
	}
}

func TestUIListenLoopback(t *testing.T) {
	tests := []struct {
		listen string
		ok     bool
	}{
		{"127.0.0.1:0", true},
		{"127.0.0.1:8080", true},
		{"[::1]:0", true},
		{"0.0.0.0:0", false},
		{":8080", false},
		{"192.0.2.1:80", false},
		{"[::]:0", false},
		{"localhost:0", false},
		{"127.0.0.1", false},
	}
	for _, tc := range tests {
		if err := cliLoopbackListen(tc.listen); (err == nil) != tc.ok {
			t.Errorf("--listen %s: %v, want ok %v", tc.listen, err, tc.ok)
		}
	}
}

// FuzzUIPath: a path that `caddy apikey ui` forwards stays under the
// page's prefix once cleaned, as the admin endpoint's mux will read it: no
// dot segment or doubled slash leads out of it.
func FuzzUIPath(f *testing.F) {
	for _, p := range []string{uiPrefix, uiPrefix + "app.js", uiPrefix + "../config/", uiPrefix + "a//b", uiPrefix + "./x", "/apikey/uix", uiPrefix + "api/keys/"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if !strings.HasPrefix(p, uiPrefix) || !cleanPath(p) {
			return // refused with 404
		}
		c := path.Clean(p)
		if c+"/" != uiPrefix && !strings.HasPrefix(c, uiPrefix) {
			t.Fatalf("%q is forwarded and cleans to %q, outside %s", p, c, uiPrefix)
		}
		for _, seg := range strings.Split(p, "/")[1:] {
			if seg == "." || seg == ".." {
				t.Fatalf("%q is forwarded with a dot segment", p)
			}
		}
	})
}
