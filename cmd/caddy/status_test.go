package main

// caddy apikey status, run as the built binary against a Caddy child.
//
//	test          admin          site
//	TestStatus    28030-28032    18030-18032

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
)

// statusOut runs "caddy apikey status <args>" (the built binary) against
// the admin endpoint of p; it must succeed.
func statusOut(t *testing.T, p ports, args ...string) string {
	t.Helper()
	cmd := exec.Command(caddyBin, append([]string{"apikey", "status", "--address", p.adminAddr()}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("caddy apikey status %v: %v\nstderr: %s", args, err, stderr.String())
	}
	return string(out)
}

// statusJSON runs status with --json and decodes it.
func statusJSON(t *testing.T, p ports, args ...string) map[string]any {
	t.Helper()
	out := statusOut(t, p, append(args, "--json")...)
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return v
}

func contains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: no %q in\n%s", what, w, out)
		}
	}
}

// statusKeys makes three keys: one active, one revoked, one expired.
func statusKeys(t *testing.T, p ports) {
	t.Helper()
	a := newAdmin(p)
	a.createKey(t, `{"name": "active", "scopes": ["contacts:read"]}`)
	id, _ := a.createKey(t, `{"name": "revoked", "scopes": ["contacts:read"]}`)
	a.must(t, "POST", "/keys/"+id+"/revoke", "", http.StatusOK)
	soon := time.Now().Add(time.Second)
	a.createKey(t, fmt.Sprintf(`{"name": "expired", "scopes": ["contacts:read"], "expires_at": %q}`, soon.Format(time.RFC3339Nano)))
	time.Sleep(time.Until(soon.Add(50 * time.Millisecond)))
}

// TestStatus: status in text and JSON on Badger and on Redis; on Redis
// run with persistence off (redistest's default) it warns, with
// appendonly yes, appendfsync always and maxmemory-policy noeviction it
// warns of nothing; after Redis is killed it says the connection failed
// and that the replica refuses for staleness.
func TestStatus(t *testing.T) {
	skipIfShort(t)
	up := newUpstream(t)

	// Badger.
	dir := t.TempDir()
	p := ports{admin: 28030, site: 18030}
	storage := filepath.Join(dir, "keys")
	startCaddy(t, dir, writeConfig(t, dir, "proxy.Caddyfile.tmpl", p, storage, up.URL, "{{FLUSH}}", "30s"), p)
	statusKeys(t, p)
	contains(t, "badger status", statusOut(t, p),
		"Backend:    badger "+storage+"\n", "Keys:       3 (1 revoked; --full counts active and expired)\n", "Accounts:   1\n")
	contains(t, "badger status --full", statusOut(t, p, "--full"), "Keys:       3 (1 revoked, 1 active, 1 expired)\n")
	st := statusJSON(t, p)
	keys, _ := st["keys"].(map[string]any)
	if st["backend"] != "badger" || st["badger"].(map[string]any)["dir"] != storage || st["redis"] != nil || st["accounts"] != 1.0 ||
		keys["total"] != 3.0 || keys["revoked"] != 1.0 || keys["active"] != nil || keys["full"] != false {
		t.Errorf("badger status --json: %v", st)
	}
	a := newAdmin(p)
	if out := a.must(t, "POST", "/status", "", http.StatusMethodNotAllowed); out["error"] != "method_not_allowed" {
		t.Errorf("POST /status: %v", out)
	}
	if out := a.must(t, "GET", "/status?full=maybe", "", http.StatusBadRequest); out["error"] != "invalid_request" {
		t.Errorf("GET /status?full=maybe: %v", out)
	}
	st = statusJSON(t, p, "--full")
	if keys, _ := st["keys"].(map[string]any); keys["active"] != 1.0 || keys["expired"] != 1.0 || keys["full"] != true {
		t.Errorf("badger status --full --json: %v", st)
	}

	// Redis with persistence off: a warning.
	srv := redistest.Start(t)
	dir = t.TempDir()
	p = ports{admin: 28031, site: 18031}
	startCaddy(t, dir, writeConfig(t, dir, "cluster.Caddyfile.tmpl", p, "", up.URL, "{{REDIS}}", srv.URL(), "{{PREFIX}}", "status:"), p)
	statusKeys(t, p)
	out := statusOut(t, p, "--full")
	contains(t, "redis status", out,
		"Backend:    redis "+srv.URL()+" (key prefix status:)\n", "Connection: ok\n", "Stale:      no\n", "(max_staleness 1s)\n",
		"Keys:       3 (1 revoked, 1 active, 1 expired)\n", "Accounts:   1\n", "Warning:    persistence is off (appendonly no, save \"\")")
	st = statusJSON(t, p)
	r, _ := st["redis"].(map[string]any)
	warnings, _ := r["warnings"].([]any)
	if st["backend"] != "redis" || r["url"] != srv.URL() || r["key_prefix"] != "status:" || r["connection"] != "ok" || r["stale"] != false ||
		len(warnings) == 0 || !strings.Contains(fmt.Sprint(warnings), "persistence is off") || st["keys"].(map[string]any)["total"] != 3.0 {
		t.Errorf("redis status --json: %v", st)
	}
	if lag, _ := r["lag_ms"].(float64); lag < 0 || lag > 1000 {
		t.Errorf("redis status: lag %v ms", r["lag_ms"])
	}

	// Redis that keeps keys: no warning.
	safe := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction")
	dir = t.TempDir()
	p2 := ports{admin: 28032, site: 18032}
	startCaddy(t, dir, writeConfig(t, dir, "cluster.Caddyfile.tmpl", p2, "", up.URL, "{{REDIS}}", safe.URL(), "{{PREFIX}}", "apikey:"), p2)
	contains(t, "safe redis status", statusOut(t, p2), "Connection: ok\n", "Warnings:   none\n", "Keys:       0 (0 revoked;")
	if w := statusJSON(t, p2)["redis"].(map[string]any)["warnings"]; fmt.Sprint(w) != "[]" {
		t.Errorf("safe redis status --json: warnings %v", w)
	}

	// Redis gone: the connection fails and the replica refuses.
	srv.Signal(syscall.SIGKILL)
	time.Sleep(1500 * time.Millisecond)
	out = statusOut(t, p)
	contains(t, "status with Redis gone", out, "Connection: error: ", "Stale:      yes", "Keys:       unknown: ")
	st = statusJSON(t, p)
	if r := st["redis"].(map[string]any); r["connection"] != "error" || r["stale"] != true || st["keys"] != nil || st["counts_error"] == nil {
		t.Errorf("status --json with Redis gone: %v", st)
	}
}
