package main

// The API Keys page across replicas (ports: admin 28400-28401, site
// 18400-18401).

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
)

// TestClusterPageSessions: two Caddy replicas on one Redis, as behind a
// load balancer without sticky sessions. A manager signs in to the page
// through A; the session cookie works through B at once (the session is in
// Redis); a sign-out through B ends it on A too.
func TestClusterPageSessions(t *testing.T) {
	skipIfShort(t)
	srv := redistest.Start(t)
	rs := startClusterFrom(t, srv, "cluster_page.Caddyfile.tmpl", 2, 28400, 18400)
	k := rs[0].admin(t, "POST", "/keys", `{"name": "manager", "scopes": ["apikeys:read", "contacts:read"]}`, http.StatusCreated)
	key := k["key"].(string)
	// B knows the key (its follower applied A's change).
	var delays []time.Duration
	until(t, rs, 0, "created on A", "GET", key, 200, "", time.Second, &delays)

	page := func(r *replica, method, path, cookie, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, r.p.siteURL()+"/manage"+path, strings.NewReader(body))
		if method != http.MethodGet {
			req.Header.Set("Content-Type", "application/json")
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		res, err := clusterClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s on %s: %v", method, path, r.name, err)
		}
		res.Body.Close()
		return res
	}
	res := page(rs[0], "POST", "/ui/session", "", `{"key":"`+key+`"}`)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in on A: %d", res.StatusCode)
	}
	cookie, _, _ := strings.Cut(res.Header.Get("Set-Cookie"), ";")
	if !strings.HasPrefix(cookie, "apikey_ui_session=") {
		t.Fatalf("no session cookie in %q", cookie)
	}
	for i, r := range []*replica{rs[1], rs[0], rs[1]} {
		if res := page(r, "GET", "/ui/api/keys", cookie, ""); res.StatusCode != http.StatusOK {
			t.Fatalf("request %d on %s: %d, want 200", i+1, r.name, res.StatusCode)
		}
	}
	if res := page(rs[1], "DELETE", "/ui/session", cookie, ""); res.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out on B: %d", res.StatusCode)
	}
	for _, r := range rs {
		if res := page(r, "GET", "/ui/api/keys", cookie, ""); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("after the sign-out on B, %s answers %d, want 401", r.name, res.StatusCode)
		}
	}
}
