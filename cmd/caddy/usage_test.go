package main

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
)

// TestClusterUsage: two Caddy replicas on one Redis count the requests of
// one key; the usage series read through either replica is the sum of
// both, for the key and its account; a replica that stops right after
// requests has written them (by its flush or at the stop); the key's
// points go with it, the account's stay.
func TestClusterUsage(t *testing.T) {
	skipIfShort(t)
	srv := redistest.Start(t)
	rs := startClusterFrom(t, srv, "usage.Caddyfile.tmpl", 2, 28300, 18300)
	rs[0].admin(t, "POST", "/accounts", `{"id": "acme"}`, http.StatusCreated)
	k := rs[0].admin(t, "POST", "/keys", `{"name": "usage", "account": "acme", "scopes": ["contacts:read"]}`, http.StatusCreated)
	id, key := k["id"].(string), k["key"].(string)
	var delays []time.Duration
	// B answers invalid_key (not counted) until it knows the key, then one
	// 200 (counted).
	until(t, rs, 0, "created on A", "GET", key, 200, "", time.Second, &delays)

	send := func(r *replica, method string, n, status int, code string) {
		t.Helper()
		for range n {
			if st, c := r.call(t, method, key); st != status || c != code {
				t.Fatalf("%s %s on %s: %d %s, want %d %s", method, key[:6], r.name, st, c, status, code)
			}
		}
	}
	send(rs[0], "GET", 30, 200, "")
	send(rs[1], "GET", 20, 200, "")
	send(rs[0], "POST", 3, 403, "insufficient_scope")
	send(rs[1], "POST", 2, 403, "insufficient_scope")

	// totals reads a series' totals through r until they are want, up to
	// 10 s.
	totals := func(r *replica, path string, passed, refused float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := r.admin(t, "GET", path, "", http.StatusOK)
			tot := got["totals"].(map[string]any)
			scope := tot["refused"].(map[string]any)["insufficient_scope"]
			if tot["passed"] == passed && tot["refused_total"] == refused && scope == refused {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s on %s: totals %v, want passed %v, insufficient_scope %v", path, r.name, tot, passed, refused)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, r := range rs {
		totals(r, "/keys/"+id+"/usage", 51, 5)
		totals(r, "/accounts/acme/usage?interval=day", 51, 5)
	}

	// Requests on A right before a graceful stop are written.
	send(rs[0], "GET", 7, 200, "")
	if code := rs[0].proc.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("A exited with %d", code)
	}
	totals(rs[1], "/keys/"+id+"/usage", 58, 5)

	// Deleted with the key, through B.
	rs[1].admin(t, "DELETE", "/keys/"+id, "", http.StatusNoContent)
	rs[1].admin(t, "GET", "/keys/"+id+"/usage", "", http.StatusNotFound)
	totals(rs[1], "/accounts/acme/usage", 58, 5)
}
