package caddymodule_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

func init() {
	caddy.RegisterModule(eventsRecorder{})
}

// eventsRecorder is a test-only events handler (events.handlers.
// apikey_test_events) that keeps the events the apikey app emits.
type eventsRecorder struct{}

func (eventsRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.apikey_test_events", New: func() caddy.Module { return new(eventsRecorder) }}
}

func (*eventsRecorder) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the handler's name
	return nil
}

func (*eventsRecorder) Handle(_ context.Context, e caddy.Event) error {
	if o := e.Origin(); o == nil || o.CaddyModule().ID != "apikey" {
		return nil
	}
	recorded.mu.Lock()
	defer recorded.mu.Unlock()
	recorded.events = append(recorded.events, gotEvent{e.Name(), e.Data})
	return nil
}

type gotEvent struct {
	name string
	data map[string]any
}

var recorded struct {
	mu     sync.Mutex
	events []gotEvent
}

// takeEvents returns the events recorded since the last call.
func takeEvents() []gotEvent {
	recorded.mu.Lock()
	defer recorded.mu.Unlock()
	ev := recorded.events
	recorded.events = nil
	return ev
}

// obsConfig is siteConfig with the test's events handler subscribed to
// every event, fast expiry and purge sweeps, and a 2-second expiry
// notice.
var obsConfig = strings.NewReplacer(
	"\tgrace_period 1s\n", "\tgrace_period 1s\n\tevents {\n\t\ton * apikey_test_events\n\t}\n",
	"\t\tstorage %[2]s\n", "\t\tstorage %[2]s\n\t\texpiry_check_interval 100ms\n\t\texpiring_notice 2s\n\t\tpurge_revoked_after 1500ms\n\t\tpurge_interval 100ms\n",
).Replace(siteConfig)

// metricLine matches one sample of the text exposition format.
var metricLine = regexp.MustCompile(`^(caddy_apikey_[a-z_]+)(\{[^}]*\})? (\S+)$`)

// scrape reads the admin endpoint's /metrics and returns the caddy_apikey
// samples, by name and labels as exposed ({handler="apikey",...}).
func (e *env) scrape() map[string]float64 {
	e.t.Helper()
	res, err := e.tester.Client.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		e.t.Fatalf("/metrics: %d %s", res.StatusCode, raw)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		m := metricLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			e.t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[m[1]+m[2]] = v
	}
	return out
}

// TestMetricsCountDecisions: Caddy's /metrics counts every outcome of
// both handlers exactly, and the store's, admin's and sweep's figures.
func TestMetricsCountDecisions(t *testing.T) {
	e := startWith(t, obsConfig)
	e.admin("POST", "/accounts", `{"id": "halted"}`, http.StatusCreated)
	e.admin("POST", "/keys", `{"name": "", "scopes": ["contacts:read"]}`, http.StatusBadRequest)
	keys := map[string]string{}
	for name, body := range map[string]string{
		"ok":       `{"name": "ok", "scopes": ["contacts:read", "apikeys:read"]}`,
		"revoked":  `{"name": "revoked", "scopes": ["contacts:read"]}`,
		"expired":  `{"name": "expired", "scopes": ["contacts:read"], "expires_at": "` + time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano) + `"}`,
		"inactive": `{"name": "inactive", "account": "halted", "scopes": ["contacts:read"]}`,
		"limited":  `{"name": "limited", "scopes": ["contacts:read"], "rate_limit": {"requests": 1, "window": "1h"}}`,
		"quota":    `{"name": "quota", "scopes": ["contacts:read"], "quota": {"requests": 1, "period": "day"}}`,
	} {
		_, keys[name] = e.createKey(body)
	}
	revokedID := e.admin("GET", "/keys?q=revoked", "", 200)["keys"].([]any)[0].(map[string]any)["id"].(string)
	e.admin("POST", "/keys/"+revokedID+"/revoke", "", http.StatusOK)
	e.admin("PATCH", "/accounts/halted", `{"status": "suspended"}`, http.StatusOK)
	time.Sleep(1100 * time.Millisecond) // past the expired key's expiry
	unknown, err := keystore.DefaultFormat().Generate()
	if err != nil {
		t.Fatal(err)
	}

	send := func(url, key, method string, want int, n int) {
		t.Helper()
		for range n {
			h := http.Header{}
			if key != "" {
				h.Set("X-Api-Key", key)
			}
			res, body := e.do(method, url, h, "")
			if res.StatusCode != want {
				t.Fatalf("%s %s: %d %v, want %d", method, url, res.StatusCode, body, want)
			}
		}
	}
	c := siteURL + "/contacts"
	send(c, keys["ok"], "GET", 200, 3)
	send(c, "", "GET", 401, 2)
	send(c, "ak_garbage", "GET", 401, 1)
	send(c, unknown, "GET", 401, 4)
	send(c, keys["revoked"], "GET", 401, 1)
	send(c, keys["expired"], "GET", 401, 2)
	send(c, keys["inactive"], "GET", 403, 1)
	send(c, keys["ok"], "DELETE", 403, 1)
	send(c, keys["limited"], "GET", 200, 1)
	send(c, keys["limited"], "GET", 429, 2)
	send(c, keys["quota"], "GET", 200, 1)
	send(c, keys["quota"], "GET", 429, 1)
	send(siteURL+"/contacts/a%2Fb", keys["ok"], "GET", 400, 2)
	send(manageURL+"/keys", keys["ok"], "GET", 200, 2)
	send(manageURL+"/keys", "", "GET", 401, 1)
	send(manageURL+"/keys", keys["revoked"], "GET", 401, 1)
	send(manageURL+"/keys/a%2Fb", keys["ok"], "GET", 400, 1)
	time.Sleep(300 * time.Millisecond) // an expiry sweep counts the keys

	got := e.scrape()
	want := map[string]float64{
		"ok": 5, "missing_key": 2, "malformed_key": 1, "invalid_key": 4, "key_revoked": 1, "key_expired": 2,
		"account_inactive": 1, "insufficient_scope": 1, "rate_limited": 2, "quota_exceeded": 1, "invalid_path": 2, "unavailable": 0,
	}
	wantAdmin := map[string]float64{"ok": 2, "missing_key": 1, "key_revoked": 1, "invalid_path": 1}
	lookups := 0.0
	for _, code := range []string{"ok", "missing_key", "malformed_key", "invalid_key", "key_revoked", "key_expired",
		"account_inactive", "insufficient_scope", "rate_limited", "quota_exceeded", "invalid_path", "unavailable"} {
		for handler, w := range map[string]float64{"apikey": want[code], "apikey_admin": wantAdmin[code]} {
			name := `caddy_apikey_requests_total{handler="` + handler + `",outcome="` + code + `",server="srv0"}`
			v, ok := got[name]
			if !ok || v != w {
				t.Errorf("%s = %v (exposed %v), want %v", name, v, ok, w)
			}
			if code != "missing_key" && code != "malformed_key" && code != "invalid_path" && code != "unavailable" {
				lookups += w
			}
		}
	}
	if h, m := got["caddy_apikey_cache_hits_total"], got["caddy_apikey_cache_misses_total"]; h+m != lookups || m < 4 {
		t.Errorf("cache hits %v + misses %v, want %v lookups, at least the 4 unknown keys missed", h, m, lookups)
	}
	if _, ok := got["caddy_apikey_store_reads_total"]; !ok {
		t.Error("caddy_apikey_store_reads_total is not exposed")
	}
	for name, w := range map[string]float64{
		`caddy_apikey_keys{status="active"}`:                                                  4,
		`caddy_apikey_keys{status="revoked"}`:                                                 1,
		`caddy_apikey_keys{status="expired"}`:                                                 1,
		`caddy_apikey_accounts`:                                                               2,
		`caddy_apikey_admin_mutations_total{operation="create_key",result="ok"}`:              6,
		`caddy_apikey_admin_mutations_total{operation="create_key",result="invalid_request"}`: 1,
		`caddy_apikey_admin_mutations_total{operation="revoke_key",result="ok"}`:              1,
		`caddy_apikey_admin_mutations_total{operation="update_account",result="ok"}`:          1,
		`caddy_apikey_admin_mutations_total{operation="create_account",result="ok"}`:          1,
	} {
		if got[name] != w {
			t.Errorf("%s = %v, want %v", name, got[name], w)
		}
	}
	if got[`caddy_apikey_decision_duration_seconds_count{handler="apikey",server="srv0"}`] > 28 {
		t.Error("the decision histogram counted more decisions than were made")
	}
	for _, name := range []string{"caddy_apikey_purge_runs_total", "caddy_apikey_last_used_flushes_total", "caddy_apikey_store_errors_total"} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s is not exposed", name)
		}
	}
	if got["caddy_apikey_store_errors_total"] != 0 {
		t.Errorf("store errors %v on a healthy store", got["caddy_apikey_store_errors_total"])
	}
	if _, ok := got["caddy_apikey_replica_lag_seconds"]; ok {
		t.Error("a Badger store exposes the cluster's replica lag")
	}
}

// TestEventsFromEveryPath: each lifecycle change emits its Caddy event
// once, through the events app, from the admin endpoint, apikey_admin,
// the CLI, an import, the purge and the expiry sweep, with who made it and
// never a key or its hash; a restart emits no expiry notice again.
func TestEventsFromEveryPath(t *testing.T) {
	e := startWith(t, obsConfig)
	time.Sleep(200 * time.Millisecond)
	takeEvents()
	var secrets []string // plaintexts and hashes that no event may hold

	// Admin endpoint.
	e.admin("POST", "/accounts", `{"id": "acme"}`, http.StatusCreated)
	e.admin("PATCH", "/accounts/acme", `{"name": "Acme Inc"}`, http.StatusOK)
	e.admin("PATCH", "/accounts/acme", `{"status": "past_due"}`, http.StatusOK)
	e.admin("PATCH", "/accounts/acme", `{"status": "open"}`, http.StatusOK)
	id, key := e.createKey(`{"name": "one", "account": "acme", "scopes": ["contacts:read"]}`)
	secrets = append(secrets, key, keystore.HashKey(key).String())
	e.admin("PATCH", "/keys/"+id, `{"name": "one renamed"}`, http.StatusOK)
	e.admin("POST", "/keys/"+id+"/revoke", "", http.StatusOK)
	e.admin("POST", "/keys/"+id+"/activate", "", http.StatusOK)
	regen := e.admin("POST", "/keys/"+id+"/regenerate", "", http.StatusOK)
	secrets = append(secrets, regen["key"].(string), keystore.HashKey(regen["key"].(string)).String())
	e.admin("DELETE", "/keys/"+id, "", http.StatusNoContent)

	// apikey_admin, as an account's manager.
	mgrID, mgr := e.createKey(`{"name": "manager", "account": "acme", "scopes": ["apikeys:write", "apikeys:delete"]}`)
	secrets = append(secrets, mgr)
	res, body := e.do("POST", manageURL+"/keys", hdr("X-Api-Key", mgr), `{"name": "by manager", "scopes": ["apikeys:read"]}`)
	if res.StatusCode != 201 {
		t.Fatalf("manager create: %d %v", res.StatusCode, body)
	}
	byMgr := body["id"].(string)
	secrets = append(secrets, body["key"].(string))
	if res, body := e.do("POST", manageURL+"/keys/"+byMgr+"/revoke", hdr("X-Api-Key", mgr), ""); res.StatusCode != 200 {
		t.Fatalf("manager revoke: %d %v", res.StatusCode, body)
	}

	// CLI (through the admin endpoint).
	var created struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(cliOK(t, "create", "--json", "--name", "by cli", "--scope", "contacts:read")), &created); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, created.Key)
	cliOK(t, "revoke", created.ID)

	// Import.
	imported, _ := keystore.DefaultFormat().Generate()
	secrets = append(secrets, imported, keystore.HashKey(imported).String())
	e.admin("POST", "/keys/import", `[{"key": "`+imported+`", "name": "imported", "scopes": ["contacts:read"]}]`, http.StatusCreated)

	// Expiry notices: within 2s of its expiry at once, then past it.
	expID, expKey := e.createKey(`{"name": "expiring", "scopes": ["contacts:read"], "expires_at": "` + time.Now().Add(1500*time.Millisecond).UTC().Format(time.RFC3339Nano) + `"}`)
	secrets = append(secrets, expKey)

	// The purge deletes the two revoked keys 1.5s after their revocation;
	// the key expires meanwhile.
	time.Sleep(2500 * time.Millisecond)

	want := []struct{ name, id, actor string }{
		{"account_created", "acme", "admin"},
		{"account_updated", "acme", "admin"},
		{"account_updated", "acme", "admin"},
		{"account_status_changed", "acme", "admin"},
		{"account_updated", "acme", "admin"},
		{"account_status_changed", "acme", "admin"},
		{"key_created", id, "admin"},
		{"key_updated", id, "admin"},
		{"key_revoked", id, "admin"},
		{"key_activated", id, "admin"},
		{"key_regenerated", id, "admin"},
		{"key_deleted", id, "admin"},
		{"key_created", mgrID, "admin"},
		{"key_created", byMgr, "key:" + mgrID},
		{"key_revoked", byMgr, "key:" + mgrID},
		{"key_created", created.ID, "admin"},
		{"key_revoked", created.ID, "admin"},
		{"key_created", "", "admin"}, // the imported key
		{"key_created", expID, "admin"},
		{"key_expiring", expID, "expiry"},
		{"key_expired", expID, "expiry"},
		{"key_purged", byMgr, "purge"},
		{"key_purged", created.ID, "purge"},
	}
	got := takeEvents()
	counts := map[string]int{}
	for _, g := range got {
		raw, _ := json.Marshal(g.data)
		for _, s := range secrets {
			if bytes.Contains(raw, []byte(s)) {
				t.Errorf("event %s holds a key or its hash: %s", g.name, raw)
			}
		}
		id, _ := g.data["id"].(string)
		if strings.HasPrefix(g.name, "account_") {
			id, _ = g.data["account"].(string)
		}
		if g.name == "key_created" && g.data["name"] == "imported" {
			id = ""
		}
		counts[g.name+" "+id+" "+g.data["actor"].(string)]++
	}
	wantCounts := map[string]int{}
	for _, w := range want {
		wantCounts[w.name+" "+w.id+" "+w.actor]++
	}
	for k, n := range wantCounts {
		if counts[k] != n {
			t.Errorf("event %q emitted %d times, want %d", k, counts[k], n)
		}
	}
	if len(got) != len(want) {
		for _, g := range got {
			t.Logf("got %s %v", g.name, g.data)
		}
		t.Errorf("%d events, want %d", len(got), len(want))
	}
	for _, g := range got {
		if g.name == "key_updated" {
			ch, _ := g.data["changes"].(map[string]keystore.Change)
			if ch["name"].To != "one renamed" {
				t.Errorf("key_updated changes: %v", g.data["changes"])
			}
		}
		if g.name == "account_status_changed" && g.data["status"] == "" {
			t.Errorf("account_status_changed without the status: %v", g.data)
		}
	}

	// A restart (the store closed and opened again) tells no notice again.
	e.unload()
	e.load(obsConfig)
	time.Sleep(400 * time.Millisecond)
	for _, g := range takeEvents() {
		if g.name == "key_expiring" || g.name == "key_expired" {
			t.Errorf("after a restart: %s %v again", g.name, g.data)
		}
	}
}

// TestAdminRefusalNamesKey: apikey_admin's refusals that identify the key
// carry its id in the access log's user_id, as apikey's do.
func TestAdminRefusalNamesKey(t *testing.T) {
	e := start(t)
	id, key := e.createKey(`{"name": "manager", "scopes": ["apikeys:read"]}`)
	e.admin("POST", "/keys/"+id+"/revoke", "", http.StatusOK)
	if res, body := e.do("GET", manageURL+"/keys", hdr("X-Api-Key", key), ""); res.StatusCode != 401 || body["error"] != "key_revoked" {
		t.Fatalf("revoked manager: %d %v", res.StatusCode, body)
	}
	e.admin("POST", "/keys/"+id+"/activate", "", http.StatusOK)
	if res, body := e.do("GET", manageURL+"/keys/"+id, hdr("X-Api-Key", key), ""); res.StatusCode != 200 {
		t.Fatalf("manager: %d %v", res.StatusCode, body)
	}
	seen := e.accessUserIDs()
	for _, uri := range []string{"/manage/keys", "/manage/keys/" + id} {
		if seen[uri] != id {
			t.Errorf("access log user_id of %s: %q, want %s", uri, seen[uri], id)
		}
	}
}
