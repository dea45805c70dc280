package caddymodule_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestManagerKeyLimitsThroughCaddy: a manager key behind apikey_admin
// whose key expires, is rate-limited, has a quota and a type, and whose
// account has max_keys, cannot get past any of them (issue 17, items 3 to
// 5): it cannot clear its own expiry, the key it creates expires with it,
// is limited as it is (the backend stops getting its requests at the
// limit) and is of its type, and the account's max_keys stops its
// creates.
func TestManagerKeyLimitsThroughCaddy(t *testing.T) {
	e := start(t)
	e.admin("POST", "/accounts", `{"id": "acme", "max_keys": 3}`, http.StatusCreated)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	mgrID, mgr := e.createKey(`{"name": "manager", "account": "acme", "type": "partner",
		"scopes": ["apikeys:write", "contacts:read"], "expires_at": "` + exp + `",
		"rate_limit": {"requests": 10, "window": "1h"}, "quota": {"requests": 100, "period": "day"}}`)
	manage := func(method, path, body string) (*http.Response, map[string]any) {
		return e.do(method, siteURL+"/manage"+path, hdr("X-Api-Key", mgr), body)
	}

	// Item 3: the manager cannot make its own key permanent.
	res, body := manage("PATCH", "/keys/"+mgrID, `{"expires_at": null}`)
	e.expect("clear own expiry", res, body, http.StatusForbidden, "forbidden", false)
	if msg, _ := body["message"].(string); !strings.Contains(msg, exp) {
		t.Errorf("message %q does not name the latest allowed time %s", msg, exp)
	}
	if got := e.admin("GET", "/keys/"+mgrID, "", http.StatusOK); got["expires_at"] != exp {
		t.Fatalf("the manager's key expires at %v after the refused PATCH, want %s", got["expires_at"], exp)
	}

	// Item 4: its child inherits its expiry, limits and type.
	res, child := manage("POST", "/keys", `{"name": "child", "scopes": ["contacts:read"]}`)
	e.expect("create a child", res, child, http.StatusCreated, "", false)
	if child["expires_at"] != exp || child["type"] != "partner" || child["rate_limit"] == nil || child["quota"] == nil {
		t.Fatalf("child: expires_at %v type %v rate_limit %v quota %v, want the manager's", child["expires_at"], child["type"], child["rate_limit"], child["quota"])
	}
	res, body = manage("POST", "/keys", `{"name": "internal", "scopes": ["contacts:read"], "type": "internal"}`)
	e.expect("create of another type", res, body, http.StatusForbidden, "forbidden", false)
	key := child["key"].(string)
	for i := range 10 {
		res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
		got := e.expect(fmt.Sprintf("child request %d", i+1), res, body, http.StatusOK, "", true)
		if got.Get("X-Api-Key-Type") != "partner" {
			t.Fatalf("the backend got X-Api-Key-Type %q, want partner", got.Get("X-Api-Key-Type"))
		}
	}
	res, body = e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
	e.expect("child request 11, past the inherited 10 an hour", res, body, http.StatusTooManyRequests, "rate_limited", false)

	// Item 5: the account holds the manager, the child and one more.
	res, body = manage("POST", "/keys", `{"name": "third", "scopes": ["contacts:read"]}`)
	e.expect("the third key", res, body, http.StatusCreated, "", false)
	res, body = manage("POST", "/keys", `{"name": "fourth", "scopes": ["contacts:read"]}`)
	e.expect("past max_keys", res, body, http.StatusConflict, "key_limit_reached", false)
	if list := e.admin("GET", "/keys?account=acme", "", http.StatusOK); len(list["keys"].([]any)) != 3 {
		t.Fatalf("the account holds %d keys, want 3", len(list["keys"].([]any)))
	}
}
