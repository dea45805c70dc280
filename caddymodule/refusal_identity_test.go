package caddymodule_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRefusalsNameTheKey: a refusal that identified the key (revoked,
// expired, inactive account, scope, rate limit, quota) sets the identity
// placeholders, so the access log's user_id names the refused key (the
// outside review found it empty: an operator could not tell which key was
// being throttled). Refusals that identify no key leave it empty.
func TestRefusalsNameTheKey(t *testing.T) {
	e := start(t)
	e.admin("POST", "/accounts", `{"id": "halted"}`, http.StatusCreated)
	ids := map[string]string{}
	keys := map[string]string{}
	for name, body := range map[string]string{
		"revoked":  `{"name": "revoked", "scopes": ["contacts:read"]}`,
		"expired":  `{"name": "expired", "scopes": ["contacts:read"], "expires_at": "` + time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano) + `"}`,
		"inactive": `{"name": "inactive", "account": "halted", "scopes": ["contacts:read"]}`,
		"scope":    `{"name": "scope", "scopes": ["contacts:read"]}`,
		"limited":  `{"name": "limited", "scopes": ["contacts:read"], "rate_limit": {"requests": 1, "window": "1h"}}`,
		"quota":    `{"name": "quota", "scopes": ["contacts:read"], "quota": {"requests": 1, "period": "day"}}`,
	} {
		ids[name], keys[name] = e.createKey(body)
	}
	e.admin("POST", "/keys/"+ids["revoked"]+"/revoke", "", http.StatusOK)
	e.admin("PATCH", "/accounts/halted", `{"status": "suspended"}`, http.StatusOK)
	for _, name := range []string{"limited", "quota"} {
		res, body := e.do("GET", siteURL+"/contacts/warmup-"+name, hdr("X-Api-Key", keys[name]), "")
		e.expect(name+" first request", res, body, 200, "", true)
	}
	time.Sleep(1100 * time.Millisecond) // past the expired key's expiry

	for _, tc := range []struct {
		name, method, code string
		status             int
	}{
		{"revoked", "GET", "key_revoked", 401},
		{"expired", "GET", "key_expired", 401},
		{"inactive", "GET", "account_inactive", 403},
		{"scope", "DELETE", "insufficient_scope", 403},
		{"limited", "GET", "rate_limited", 429},
		{"quota", "GET", "quota_exceeded", 429},
	} {
		res, body := e.do(tc.method, siteURL+"/contacts/refused-"+tc.name, hdr("X-Api-Key", keys[tc.name]), "")
		e.expect(tc.name, res, body, tc.status, tc.code, false)
	}
	unknownRes, body := e.do("GET", siteURL+"/contacts/refused-unknown", hdr("X-Api-Key", "ak_unknown"), "")
	e.expect("malformed", unknownRes, body, 401, "malformed_key", false)

	userIDs := e.accessUserIDs()
	for name, id := range ids {
		uri := "/contacts/refused-" + name
		got, logged := userIDs[uri]
		if !logged || got != id {
			t.Errorf("%s: access log user_id of %s is %q (logged %v), want %s", name, uri, got, logged, id)
		}
	}
	if got := userIDs["/contacts/refused-unknown"]; got != "" {
		t.Errorf("a malformed key's refusal has user_id %q", got)
	}
}

// TestRefusalMessagesSayWhy: the account-wide limits name the account in
// their message and limited_by (the review read "too many requests for
// this API key" when the account's limit had refused), and more than one
// credential says so (it read as a key in the wrong format).
func TestRefusalMessagesSayWhy(t *testing.T) {
	e := start(t)
	e.admin("POST", "/accounts", `{"id": "capped", "rate_limit": {"requests": 1, "window": "1h"}}`, http.StatusCreated)
	e.admin("POST", "/accounts", `{"id": "counted", "quota": {"requests": 1, "period": "month"}}`, http.StatusCreated)
	_, accountLimited := e.createKey(`{"name": "a", "account": "capped", "scopes": ["contacts:read"]}`)
	_, accountQuota := e.createKey(`{"name": "b", "account": "counted", "scopes": ["contacts:read"]}`)
	_, keyLimited := e.createKey(`{"name": "c", "scopes": ["contacts:read"], "rate_limit": {"requests": 1, "window": "1h"}}`)
	_, keyQuota := e.createKey(`{"name": "d", "scopes": ["contacts:read"], "quota": {"requests": 1, "period": "month"}}`)
	for _, tc := range []struct {
		name, key, code, limitedBy, says string
	}{
		{"account rate limit", accountLimited, "rate_limited", "account", "account's rate limit"},
		{"account quota", accountQuota, "quota_exceeded", "account", "quota of this API key's account"},
		{"key rate limit", keyLimited, "rate_limited", "key", "for this API key;"},
		{"key quota", keyQuota, "quota_exceeded", "key", "quota of this API key is"},
	} {
		res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", tc.key), "")
		e.expect(tc.name+", first", res, body, 200, "", true)
		res, body = e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", tc.key), "")
		e.expect(tc.name, res, body, 429, tc.code, false)
		msg, _ := body["message"].(string)
		if body["limited_by"] != tc.limitedBy || !strings.Contains(msg, tc.says) {
			t.Errorf("%s: limited_by %v, message %q; want %s and %q", tc.name, body["limited_by"], msg, tc.limitedBy, tc.says)
		}
	}

	_, other := e.createKey(`{"name": "e", "scopes": ["contacts:read"]}`)
	for name, h := range map[string]http.Header{
		"two keys in two headers": hdr("X-Api-Key", keyLimited, "Authorization", "Bearer "+other),
		"the key header twice":    hdr("X-Api-Key", other, "X-Api-Key", other),
		"two Bearer values":       hdr("Authorization", "Bearer "+other, "Authorization", "Bearer "+other),
	} {
		res, body := e.do("GET", siteURL+"/contacts", h, "")
		e.expect(name, res, body, 401, "malformed_key", false)
		if msg, _ := body["message"].(string); !strings.Contains(msg, "more than one API key") {
			t.Errorf("%s: message %q does not say the credentials are ambiguous", name, msg)
		}
	}
	res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", "ak_short"), "")
	e.expect("malformed", res, body, 401, "malformed_key", false)
	if msg, _ := body["message"].(string); !strings.Contains(msg, "not in the format") {
		t.Errorf("a malformed key's message %q changed", msg)
	}
}

// accessUserIDs loads another config, so that the access log is flushed
// and closed, and returns the user_id of each request URI it logged.
func (e *env) accessUserIDs() map[string]string {
	e.t.Helper()
	e.unload()
	access, err := os.ReadFile(filepath.Join(e.dir, "access.log"))
	if err != nil {
		e.t.Fatal(err)
	}
	userIDs := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(access))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			UserID  string `json:"user_id"`
			Request struct {
				URI string `json:"uri"`
			} `json:"request"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			e.t.Fatalf("access log line %q: %v", sc.Bytes(), err)
		}
		userIDs[line.Request.URI] = line.UserID
	}
	return userIDs
}
