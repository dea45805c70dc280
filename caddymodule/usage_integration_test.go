package caddymodule_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestUsageThroughCaddy: requests through a real Caddy are counted per key
// and account, written by the flush (last_used_flush), and read through
// the admin endpoint, the apikey_admin mount (own account, apikeys:read)
// and caddy apikey usage.
func TestUsageThroughCaddy(t *testing.T) {
	cfg := strings.Replace(siteConfig, "\t\tstorage %[2]s\n", "\t\tstorage %[2]s\n\t\tlast_used_flush 100ms\n\t\tusage_hourly_retention 2d\n", 1)
	e := startWith(t, cfg)
	e.admin("POST", "/accounts", `{"id": "acme"}`, http.StatusCreated)
	id, key := e.createKey(`{"name": "reader", "account": "acme", "scopes": ["contacts:read"]}`)
	_, other := e.createKey(`{"name": "other", "account": "acme", "scopes": ["contacts:read"]}`)
	_, manager := e.createKey(`{"name": "manager", "account": "acme", "scopes": ["apikeys:read"]}`)
	rivalID, _ := e.createKey(`{"name": "rival", "scopes": ["contacts:read"]}`)

	for range 2 {
		res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
		e.expect("read", res, body, 200, "", true)
	}
	res, body := e.do("POST", siteURL+"/contacts", hdr("X-Api-Key", key), `{}`)
	e.expect("write with a read key", res, body, 403, "insufficient_scope", false)
	res, body = e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", other), "")
	e.expect("other", res, body, 200, "", true)

	// The flush writes the counts within a few flush periods.
	var got map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = e.admin("GET", "/keys/"+id+"/usage", "", http.StatusOK)
		if tot := got["totals"].(map[string]any); tot["passed"] == 2.0 && tot["refused_total"] == 1.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage not written within 10 s: %v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	points := got["points"].([]any)
	last := points[len(points)-1].(map[string]any)
	if len(points) != 25 || got["interval"] != "hour" || got["account"] != "acme" || got["key"] != id {
		t.Errorf("series: %d points, %v", len(points), got)
	}
	if last["passed"] != 2.0 || last["refused"].(map[string]any)["insufficient_scope"] != 1.0 || last["refused_total"] != 1.0 {
		t.Errorf("this hour's point: %v", last)
	}
	acct := e.admin("GET", "/accounts/acme/usage?interval=day", "", http.StatusOK)
	if tot := acct["totals"].(map[string]any); tot["passed"] != 3.0 || tot["refused_total"] != 1.0 || acct["interval"] != "day" {
		t.Errorf("account series: %v", acct)
	}
	// (Before the manager's requests below, which the account counts too.)
	out := cliOK(t, "account", "usage", "acme", "--interval", "day", "--from", "2d")
	if !strings.HasPrefix(out, "Account acme: daily requests from ") || !regexp.MustCompile(`(?m)^\s*TOTAL\s+3\s+1\s+1\s*$`).MatchString(out) {
		t.Errorf("account usage:\n%s", out)
	}
	res, body = e.do("GET", adminURL+"/keys/"+id+"/usage?interval=week", nil, "")
	if res.StatusCode != 400 || body["error"] != "invalid_request" || body["field"] != "interval" {
		t.Errorf("bad interval: %d %v", res.StatusCode, body)
	}

	// apikey_admin: the manager's own account only.
	as := func(path string) (*http.Response, map[string]any) {
		return e.do("GET", manageURL+path, hdr("X-Api-Key", manager), "")
	}
	if res, body := as("/keys/" + id + "/usage"); res.StatusCode != 200 || body["totals"].(map[string]any)["passed"] != 2.0 {
		t.Errorf("manager, own key: %d %v", res.StatusCode, body)
	}
	// (The account counts the manager's own requests too, once flushed.)
	if res, body := as("/accounts/acme/usage"); res.StatusCode != 200 || body["totals"].(map[string]any)["passed"].(float64) < 3 {
		t.Errorf("manager, own account: %d %v", res.StatusCode, body)
	}
	for _, path := range []string{"/keys/" + rivalID + "/usage", "/accounts/default/usage"} {
		if res, body := as(path); res.StatusCode != 404 || body["error"] != "not_found" {
			t.Errorf("manager, %s: %d %v", path, res.StatusCode, body)
		}
	}
	if res, body := e.do("GET", manageURL+"/keys/"+id+"/usage", hdr("X-Api-Key", other), ""); res.StatusCode != 403 || body["error"] != "insufficient_scope" {
		t.Errorf("a key without apikeys:read: %d %v", res.StatusCode, body)
	}

	// caddy apikey usage: a row per hour, the refusal codes that occur as
	// columns, a total.
	out = cliOK(t, "usage", id)
	if !strings.HasPrefix(out, "Key "+id+" (account acme): hourly requests from ") {
		t.Errorf("usage: %q", out)
	}
	header := regexp.MustCompile(`(?m)^\s*START\s+PASSED\s+REFUSED\s+INSUFFICIENT_SCOPE\s*$`)
	total := regexp.MustCompile(`(?m)^\s*TOTAL\s+2\s+1\s+1\s*$`)
	if !header.MatchString(out) || !total.MatchString(out) || strings.Count(out, "\n") != 1+1+25+1 {
		t.Errorf("usage table:\n%s", out)
	}
	js := cliJSON(t, "usage", id, "--from", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "--to", "0h")
	if raw, _ := json.Marshal(js["totals"]); js["key"] != id || len(js["points"].([]any)) != 2 || !strings.Contains(string(raw), `"passed":2`) {
		t.Errorf("usage --json: %v", js)
	}
	cliFail(t, "--interval must be hour or day", "usage", id, "--interval", "week")
	cliFail(t, "--from \"yesterday\" is neither", "usage", id, "--from", "yesterday")
	cliFail(t, "there is no key with this id (not_found)", "usage", "nope")
	cliFail(t, "there is no account with this id (not_found)", "account", "usage", "nope")
	cliFail(t, "(invalid_request)", "usage", id, "--from", "1h", "--to", "2h")

	// Deleted with the key.
	e.admin("DELETE", "/keys/"+id, "", http.StatusNoContent)
	e.admin("GET", "/keys/"+id+"/usage", "", http.StatusNotFound)
}
