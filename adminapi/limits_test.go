package adminapi

import (
	"net/http"
	"testing"
)

// TestQuotaAndRateLimitFields: quota and rate_limit on keys and accounts,
// quota usage in the views, null clearing, validation.
func TestQuotaAndRateLimitFields(t *testing.T) {
	e := newEnv(t)
	k := e.createKey(map[string]any{
		"name": "q", "scopes": []string{"a:read"},
		"quota":      map[string]any{"requests": 10, "period": "day"},
		"rate_limit": map[string]any{"requests": 5, "window": "1m"},
	})
	if q := k["quota"].(map[string]any); q["requests"] != float64(10) || q["period"] != "day" {
		t.Errorf("quota: %v", q)
	}
	if k["quota_used"] != float64(0) || k["quota_resets_at"] == nil {
		t.Errorf("fresh usage: %v %v", k["quota_used"], k["quota_resets_at"])
	}
	for range 2 {
		if got := e.verify(k["key"].(string)); got != "ok" {
			t.Fatal(got)
		}
	}
	id := k["id"].(string)
	got := e.mustDo(op, req{method: "GET", path: "/keys/" + id}, http.StatusOK)
	if got["quota_used"] != float64(2) {
		t.Errorf("quota_used %v, want 2", got["quota_used"])
	}
	list := e.mustDo(op, req{method: "GET", path: "/keys"}, http.StatusOK)
	if first := list["keys"].([]any)[0].(map[string]any); first["quota_used"] != float64(2) {
		t.Errorf("listed quota_used %v", first["quota_used"])
	}

	got = e.mustDo(op, req{method: "PATCH", path: "/keys/" + id, body: `{"quota": null}`}, http.StatusOK)
	if got["quota"] != nil || got["quota_used"] != nil || got["quota_resets_at"] != nil {
		t.Errorf("after clearing: %v %v %v", got["quota"], got["quota_used"], got["quota_resets_at"])
	}

	for _, tc := range []struct{ body, field string }{
		{`{"name": "n", "scopes": ["a:read"], "quota": {"requests": 0, "period": "day"}}`, "quota"},
		{`{"name": "n", "scopes": ["a:read"], "quota": {"requests": 5, "period": "week"}}`, "quota"},
		{`{"name": "n", "scopes": ["a:read"], "quota": {"requests": 5, "period": "day", "extra": 1}}`, "quota.extra"},
		{`{"name": "n", "scopes": ["a:read"], "quota": {"requests": "5", "period": "day"}}`, "quota.requests"},
	} {
		before := e.snapshot()
		errorIs(t, e.do(op, req{method: "POST", path: "/keys", body: tc.body}), http.StatusBadRequest, "invalid_request", tc.field)
		if e.snapshot() != before {
			t.Errorf("%s changed the store", tc.body)
		}
	}

	acct := e.mustDo(op, req{method: "POST", path: "/accounts", body: `{"id": "acme", "quota": {"requests": 100, "period": "month"}, "rate_limit": {"requests": 50, "window": "1s"}}`}, http.StatusCreated)
	if acct["quota_used"] != float64(0) || acct["quota_resets_at"] == nil {
		t.Errorf("account usage: %v", acct)
	}
	acct = e.mustDo(op, req{method: "PATCH", path: "/accounts/acme", body: `{"quota": null, "rate_limit": null}`}, http.StatusOK)
	if acct["quota"] != nil || acct["rate_limit"] != nil || acct["quota_used"] != nil {
		t.Errorf("account after clearing: %v", acct)
	}
}

// TestKeyCallerCannotSetLimits: a key caller can neither create nor edit a
// key's rate_limit or quota, so it cannot lift what the operator set.
func TestKeyCallerCannotSetLimits(t *testing.T) {
	e := newEnv(t)
	e.account("acme")
	c := e.keyCaller("acme", "apikeys:write", "a:read")
	own := e.mustDo(c, req{method: "POST", path: "/keys", body: `{"name": "mine", "scopes": ["a:read"]}`}, http.StatusCreated)
	for _, rq := range []req{
		{method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["a:read"], "rate_limit": {"unlimited": true}}`},
		{method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["a:read"], "quota": {"requests": 1000000, "period": "day"}}`},
		{method: "PATCH", path: "/keys/" + own["id"].(string), body: `{"rate_limit": {"unlimited": true}}`},
		{method: "PATCH", path: "/keys/" + own["id"].(string), body: `{"quota": null}`},
	} {
		before := e.snapshot()
		errorIs(t, e.do(c, rq), http.StatusForbidden, "forbidden", "")
		if e.snapshot() != before {
			t.Errorf("%s %v changed the store", rq.method, rq.body)
		}
	}
}
