package adminapi

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestAccounts(t *testing.T) {
	e := newEnv(t)

	m := e.mustDo(op, req{method: "POST", path: "/accounts", body: `{"id": "acme", "name": "Acme Inc.", "status": "open", "rate_limit": {"requests": 100, "window": "1m"}}`}, http.StatusCreated)
	if m["id"] != "acme" || m["name"] != "Acme Inc." || m["status"] != "open" || m["rate_limit"] == nil || m["created_at"] == nil {
		t.Fatalf("create: %v", m)
	}
	m = e.mustDo(op, req{method: "POST", path: "/accounts", body: `{"id": "b2"}`}, http.StatusCreated)
	if m["name"] != "b2" || m["status"] != "open" || m["rate_limit"] != nil {
		t.Fatalf("defaults: %v", m)
	}

	list := e.mustDo(op, req{method: "GET", path: "/accounts"}, http.StatusOK)
	if got := fmt.Sprint(ids(list["accounts"])); got != "[acme b2 default]" {
		t.Fatalf("list %s", got)
	}
	if got := e.mustDo(op, req{method: "GET", path: "/accounts/acme"}, http.StatusOK); got["name"] != "Acme Inc." {
		t.Fatalf("get: %v", got)
	}

	patches := []struct {
		body  string
		check func(m map[string]any) bool
	}{
		{`{"name": "Acme"}`, func(m map[string]any) bool { return m["name"] == "Acme" && m["rate_limit"] != nil }},
		{`{"status": "suspended"}`, func(m map[string]any) bool { return m["status"] == "suspended" && m["name"] == "Acme" }},
		{`{"rate_limit": {"unlimited": true}}`, func(m map[string]any) bool { return m["rate_limit"].(map[string]any)["unlimited"] == true }},
		{`{"rate_limit": null}`, func(m map[string]any) bool { return m["rate_limit"] == nil }},
		{`{}`, func(m map[string]any) bool { return m["status"] == "suspended" }},
		{`{"status": "open", "name": "Acme 2"}`, func(m map[string]any) bool { return m["status"] == "open" && m["name"] == "Acme 2" }},
	}
	for _, p := range patches {
		m := e.mustDo(op, req{method: "PATCH", path: "/accounts/acme", body: p.body}, http.StatusOK)
		if !p.check(m) {
			t.Fatalf("after %s: %v", p.body, m)
		}
	}

	// A status change applies to the account's keys at once.
	k := e.createKey(map[string]any{"name": "k", "account": "acme", "scopes": []string{"a:read"}})
	e.mustDo(op, req{method: "PATCH", path: "/accounts/acme", body: `{"status": "past_due"}`}, http.StatusOK)
	if got := e.verify(k["key"].(string)); got != "account_inactive" {
		t.Fatalf("key of a past_due account: %s", got)
	}
	e.mustDo(op, req{method: "PATCH", path: "/accounts/acme", body: `{"status": "open"}`}, http.StatusOK)
	if got := e.verify(k["key"].(string)); got != "ok" {
		t.Fatalf("key of a reopened account: %s", got)
	}

	// Delete: 409 while it has keys, 204 after.
	errorIs(t, e.do(op, req{method: "DELETE", path: "/accounts/acme"}), http.StatusConflict, "conflict", "")
	e.mustDo(op, req{method: "DELETE", path: "/keys/" + k["id"].(string)}, http.StatusNoContent)
	e.mustDo(op, req{method: "DELETE", path: "/accounts/acme"}, http.StatusNoContent)
	errorIs(t, e.do(op, req{method: "GET", path: "/accounts/acme"}), http.StatusNotFound, "not_found", "")
	errorIs(t, e.do(op, req{method: "DELETE", path: "/accounts/acme"}), http.StatusNotFound, "not_found", "")
	errorIs(t, e.do(op, req{method: "POST", path: "/keys", body: `{"name": "n", "account": "acme", "scopes": ["a:read"]}`}), 400, "invalid_request", "account")
}

func TestAccountsInvalid(t *testing.T) {
	e := newEnv(t)
	e.account("acme")
	e.createKey(map[string]any{"name": "k", "account": "acme", "scopes": []string{"a:read"}})
	tests := []struct {
		rq     req
		status int
		code   string
		field  string
	}{
		{req{method: "POST", path: "/accounts", body: `{"id": "acme"}`}, 409, "conflict", ""},
		{req{method: "POST", path: "/accounts", body: `{"id": "default"}`}, 409, "conflict", ""},
		{req{method: "POST", path: "/accounts", body: `{}`}, 400, "invalid_request", "id"},
		{req{method: "POST", path: "/accounts", body: `{"id": "Acme"}`}, 400, "invalid_request", "id"},
		{req{method: "POST", path: "/accounts", body: `{"id": "-x"}`}, 400, "invalid_request", "id"},
		{req{method: "POST", path: "/accounts", body: `{"id": "a/b"}`}, 400, "invalid_request", "id"},
		{req{method: "POST", path: "/accounts", body: `{"id": "` + strings.Repeat("a", 64) + `"}`}, 400, "invalid_request", "id"},
		{req{method: "POST", path: "/accounts", body: `{"id": "x", "status": "closed"}`}, 400, "invalid_request", "status"},
		{req{method: "POST", path: "/accounts", body: `{"id": "x", "name": "` + strings.Repeat("n", 256) + `"}`}, 400, "invalid_request", "name"},
		{req{method: "POST", path: "/accounts", body: `{"id": "x", "rate_limit": {"requests": 1}}`}, 400, "invalid_request", "rate_limit"},
		{req{method: "POST", path: "/accounts", body: `{"id": "x", "plan": "pro"}`}, 400, "invalid_request", "plan"},
		{req{method: "POST", path: "/accounts", body: `{"id": "x", "id": "y"}`}, 400, "invalid_request", "id"},
		{req{method: "POST", path: "/accounts", body: `{"ID": "x"}`}, 400, "invalid_request", "ID"},
		{req{method: "POST", path: "/accounts", body: `{"id": 5}`}, 400, "invalid_request", "id"},
		{req{method: "POST", path: "/accounts", body: `{"id": "x"`}, 400, "invalid_request", ""},
		{req{method: "POST", path: "/accounts", body: `{"id": "x"}`, ctype: "text/plain"}, 415, "unsupported_media_type", ""},
		{req{method: "PATCH", path: "/accounts/acme", body: `{"status": "bogus"}`}, 400, "invalid_request", "status"},
		{req{method: "PATCH", path: "/accounts/acme", body: `{"status": null}`}, 400, "invalid_request", "status"},
		{req{method: "PATCH", path: "/accounts/acme", body: `{"name": null}`}, 400, "invalid_request", "name"},
		{req{method: "PATCH", path: "/accounts/acme", body: `{"name": ""}`}, 400, "invalid_request", "name"},
		{req{method: "PATCH", path: "/accounts/acme", body: `{"id": "new"}`}, 400, "invalid_request", "id"},
		{req{method: "PATCH", path: "/accounts/acme", body: `{"rate_limit": {"window": "1s"}}`}, 400, "invalid_request", "rate_limit"},
		{req{method: "PATCH", path: "/accounts/acme", body: ``}, 400, "invalid_request", ""},
		{req{method: "PATCH", path: "/accounts/nope", body: `{"name": "x"}`}, 404, "not_found", ""},
		{req{method: "GET", path: "/accounts/nope"}, 404, "not_found", ""},
		{req{method: "DELETE", path: "/accounts/nope"}, 404, "not_found", ""},
		{req{method: "DELETE", path: "/accounts/acme"}, 409, "conflict", ""},
		{req{method: "DELETE", path: "/accounts/default"}, 409, "conflict", ""},
		{req{method: "PUT", path: "/accounts/acme", body: `{}`}, 405, "method_not_allowed", ""},
		{req{method: "GET", path: "/accounts?status=open"}, 400, "invalid_request", "status"},
	}
	before := e.snapshot()
	for _, tt := range tests {
		t.Run(tt.rq.method+" "+tt.rq.path+" "+fmt.Sprint(tt.rq.body), func(t *testing.T) {
			errorIs(t, e.do(op, tt.rq), tt.status, tt.code, tt.field)
			if e.snapshot() != before {
				t.Fatal("a refused request changed the store")
			}
		})
	}
}
