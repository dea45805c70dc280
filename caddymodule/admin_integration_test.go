package caddymodule_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

const manageURL = siteURL + "/manage"

// TestManageMount: the apikey_admin handler on a site, for an account's own
// managers: authentication as apikey does it, scopes, isolation, no
// escalation, audit actor.
func TestManageMount(t *testing.T) {
	e := start(t)
	e.admin("POST", "/accounts", `{"id": "acme", "name": "Acme"}`, http.StatusCreated)
	e.admin("POST", "/accounts", `{"id": "globex", "name": "Globex"}`, http.StatusCreated)
	mgrID, manager := e.createKey(`{"name": "acme manager", "account": "acme", "scopes": ["apikeys:write", "contacts:read"]}`)
	_, reader := e.createKey(`{"name": "acme reader", "account": "acme", "scopes": ["apikeys:read"]}`)
	_, plain := e.createKey(`{"name": "acme plain", "account": "acme", "scopes": ["contacts:read"]}`)
	otherID, _ := e.createKey(`{"name": "globex key", "account": "globex", "scopes": ["contacts:read"]}`)

	as := func(key, method, path, body string) (*http.Response, map[string]any) {
		t.Helper()
		return e.do(method, manageURL+path, hdr("X-Api-Key", key), body)
	}
	want := func(name string, res *http.Response, body map[string]any, status int, code string) {
		t.Helper()
		if res.StatusCode != status || (code != "" && body["error"] != code) {
			t.Errorf("%s: %d %v, want %d %s", name, res.StatusCode, body, status, code)
		}
	}

	// Authentication answers exactly as apikey does.
	res, body := e.do("GET", manageURL+"/keys", nil, "")
	want("no key", res, body, 401, "missing_key")
	if res.Header.Get("WWW-Authenticate") != `Bearer realm="api"` {
		t.Errorf("no key: WWW-Authenticate %q", res.Header.Get("WWW-Authenticate"))
	}
	res, body = e.do("GET", manageURL+"/keys", hdr("X-Api-Key", "ak_garbage"), "")
	want("garbage", res, body, 401, "malformed_key")

	// Scopes: apikeys:read lists, cannot create; a key without apikeys:*
	// cannot even list.
	res, body = as(reader, "GET", "/keys", "")
	want("reader lists", res, body, 200, "")
	res, body = as(reader, "POST", "/keys", `{"name": "x", "scopes": ["contacts:read"]}`)
	want("reader creates", res, body, 403, "insufficient_scope")
	if body["required_scope"] != "apikeys:write" {
		t.Errorf("reader creates: required_scope %v", body["required_scope"])
	}
	res, body = as(plain, "GET", "/keys", "")
	want("no apikeys scope", res, body, 403, "insufficient_scope")

	// Isolation: only acme's keys, another account's id is 404.
	res, body = as(manager, "GET", "/keys", "")
	want("manager lists", res, body, 200, "")
	for _, k := range body["keys"].([]any) {
		if acct := k.(map[string]any)["account"]; acct != "acme" {
			t.Errorf("manager sees a key of account %v", acct)
		}
	}
	res, body = as(manager, "GET", "/keys/"+otherID, "")
	want("other account's key", res, body, 404, "not_found")
	res, body = as(manager, "POST", "/keys/"+otherID+"/revoke", "")
	want("revoke other account's key", res, body, 404, "not_found")
	res, body = as(manager, "GET", "/accounts", "")
	want("accounts", res, body, 403, "forbidden")
	res, body = as(manager, "POST", "/keys/import", `[]`)
	want("import", res, body, 403, "forbidden")

	// No escalation: cannot grant a scope it does not hold.
	res, body = as(manager, "POST", "/keys", `{"name": "escalate", "scopes": ["contacts:write"]}`)
	want("escalate on create", res, body, 403, "insufficient_scope")
	res, body = as(manager, "POST", "/keys", `{"name": "everything", "scopes": ["*:read"]}`)
	want("escalate to *", res, body, 403, "insufficient_scope")
	res, body = as(manager, "POST", "/keys", `{"name": "other account", "account": "globex", "scopes": ["contacts:read"]}`)
	want("create in another account", res, body, 403, "forbidden")

	// What it may do, it does, in its own account, audited as key:<id>.
	res, body = as(manager, "POST", "/keys", `{"name": "made by manager", "scopes": ["contacts:read"]}`)
	want("create", res, body, 201, "")
	newID, newKey := body["id"].(string), body["key"].(string)
	if body["account"] != "acme" {
		t.Errorf("created in account %v", body["account"])
	}
	res, body = e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", newKey), "")
	e.expect("created key through the proxy", res, body, 200, "", true)
	res, body = as(manager, "POST", "/keys/"+newID+"/revoke", "")
	want("revoke", res, body, 200, "")
	res, body = as(manager, "DELETE", "/keys/"+newID, "")
	want("delete without apikeys:delete", res, body, 403, "insufficient_scope")
	audit := e.admin("GET", "/keys/"+newID+"/audit", "", http.StatusOK)
	events := audit["events"].([]any)
	if len(events) != 2 {
		t.Fatalf("audit: %v", audit)
	}
	for _, ev := range events {
		if actor := ev.(map[string]any)["actor"]; actor != "key:"+mgrID {
			t.Errorf("audit actor %v, want key:%s", actor, mgrID)
		}
	}
}

// TestAdminEndpoint: the operator mount on Caddy's admin endpoint: the
// lifecycle, errors in the JSON shape, and the 405/404/413 answers.
func TestAdminEndpoint(t *testing.T) {
	e := start(t)
	id, _ := e.createKey(`{"name": "ops", "scopes": ["contacts:read"], "metadata": {"team": "crm"}}`)

	got := e.admin("PATCH", "/keys/"+id, `{"name": "ops renamed", "scopes": ["contacts:write"], "expires_at": "2099-01-01T00:00:00Z"}`, http.StatusOK)
	if got["name"] != "ops renamed" || got["expires_at"] != "2099-01-01T00:00:00Z" {
		t.Errorf("patch: %v", got)
	}
	got = e.admin("PATCH", "/keys/"+id, `{"expires_at": null, "active": false}`, http.StatusOK)
	if got["expires_at"] != nil || got["status"] != "revoked" {
		t.Errorf("patch clearing expiry and revoking: %v", got)
	}
	list := e.admin("GET", "/keys?status=revoked&q=RENAMED&limit=10", "", http.StatusOK)
	if keys := list["keys"].([]any); len(keys) != 1 || list["next_cursor"] != nil {
		t.Errorf("filtered list: %v", list)
	}
	for _, k := range list["keys"].([]any) {
		m := k.(map[string]any)
		if _, leaked := m["key"]; leaked {
			t.Error("a listed record carries the key")
		}
		if !strings.Contains(m["hint"].(string), "…") {
			t.Errorf("hint %v", m["hint"])
		}
	}

	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/keys", `{"name": ""}`, 400, "invalid_request"},
		{"POST", "/keys", `{"name": "x", "scopes": ["contacts:admin"]}`, 400, "invalid_request"},
		{"POST", "/keys", `{"name": "x", "scopes": ["a:read"], "expires_at": "2001-01-01T00:00:00Z"}`, 400, "invalid_request"},
		{"POST", "/keys", `{"name": "x", "scopes": ["a:read"], "account": "nobody"}`, 400, "invalid_request"},
		{"POST", "/keys", `{"name": "x", "scopes": ["a:read"], "surprise": 1}`, 400, "invalid_request"},
		{"POST", "/keys", `{"name": "x"`, 400, "invalid_request"},
		{"POST", "/keys", `{"name": "` + strings.Repeat("x", 70000) + `"}`, 413, "payload_too_large"},
		{"GET", "/keys?limit=0", "", 400, "invalid_request"},
		{"GET", "/keys?cursor=nope", "", 400, "invalid_request"},
		{"GET", "/keys/00000000-0000-7000-8000-000000000000", "", 404, "not_found"},
		{"PUT", "/keys/" + id, `{}`, 405, "method_not_allowed"},
		{"GET", "/nothing", "", 404, "not_found"},
		{"DELETE", "/accounts/default", "", 409, "conflict"},
	} {
		res, body := e.do(tc.method, adminURL+tc.path, nil, tc.body)
		if res.StatusCode != tc.status || body["error"] != tc.code || body["message"] == "" {
			t.Errorf("%s %s: %d %v, want %d %s", tc.method, tc.path, res.StatusCode, body, tc.status, tc.code)
		}
		if tc.status == 405 && res.Header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", tc.method, tc.path)
		}
	}
}

// TestPurgeRevoked: with short durations, a revoked key is purged with its
// audit events by the background sweep; an active one stays.
func TestPurgeRevoked(t *testing.T) {
	cfg := strings.Replace(siteConfig, "\t\tstorage %[2]s\n", "\t\tstorage %[2]s\n\t\tpurge_revoked_after 1s\n\t\tpurge_interval 1s\n", 1)
	e := startWith(t, cfg)
	revokedID, _ := e.createKey(`{"name": "to purge", "scopes": ["contacts:read"]}`)
	activeID, _ := e.createKey(`{"name": "to keep", "scopes": ["contacts:read"]}`)
	e.admin("POST", "/keys/"+revokedID+"/revoke", "", http.StatusOK)
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, _ := e.do("GET", adminURL+"/keys/"+revokedID, nil, "")
		if res.StatusCode == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked key not purged after 10 s (status %d)", res.StatusCode)
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.admin("GET", "/keys/"+revokedID+"/audit", "", http.StatusNotFound)
	e.admin("GET", "/keys/"+activeID, "", http.StatusOK)
}

// TestLastUsedShownAtOnce: a use through the proxy shows in the admin API
// at once, although it is written to Badger only by the batched flush.
func TestLastUsedShownAtOnce(t *testing.T) {
	e := start(t)
	id, key := e.createKey(`{"name": "used", "scopes": ["contacts:read"]}`)
	if rec := e.admin("GET", "/keys/"+id, "", http.StatusOK); rec["last_used_at"] != nil {
		t.Fatalf("unused key has last_used_at %v", rec["last_used_at"])
	}
	before := time.Now().Add(-time.Second)
	res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
	e.expect("use", res, body, 200, "", true)
	rec := e.admin("GET", "/keys/"+id, "", http.StatusOK)
	at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(rec["last_used_at"]))
	if err != nil || at.Before(before) {
		t.Errorf("last_used_at %v (%v)", rec["last_used_at"], err)
	}
}
