package adminapi

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCreateKey(t *testing.T) {
	e := newEnv(t)
	e.account("acme")
	future := e.clock.Now().Add(24 * time.Hour).Format(time.RFC3339)
	tests := []struct {
		name  string
		body  map[string]any
		check func(t *testing.T, m map[string]any)
	}{
		{"minimal", map[string]any{"name": "ci", "scopes": []string{"contacts:read"}}, func(t *testing.T, m map[string]any) {
			if m["account"] != "default" || m["type"] != "api" || m["status"] != "active" {
				t.Errorf("defaults: %v", m)
			}
			if m["expires_at"] != nil || m["revoked_at"] != nil || m["last_used_at"] != nil || m["rate_limit"] != nil || m["metadata"] != nil {
				t.Errorf("null fields: %v", m)
			}
		}},
		{"every field", map[string]any{
			"name": "full", "account": "acme", "scopes": []string{"contacts:write", "contacts:read", "contacts:read"},
			"expires_at": future, "type": "service", "rate_limit": map[string]any{"requests": 5, "window": "1s", "burst": 10},
			"metadata": map[string]string{"team": "billing"},
		}, func(t *testing.T, m map[string]any) {
			if m["account"] != "acme" || m["type"] != "service" {
				t.Errorf("fields: %v", m)
			}
			if fmt.Sprint(m["scopes"]) != "[contacts:read contacts:write]" {
				t.Errorf("scopes not normalized: %v", m["scopes"])
			}
			if m["expires_at"] != future {
				t.Errorf("expires_at %v, want %s", m["expires_at"], future)
			}
			if rl := m["rate_limit"].(map[string]any); rl["requests"] != float64(5) || rl["window"] != "1s" || rl["burst"] != float64(10) {
				t.Errorf("rate_limit %v", rl)
			}
			if m["metadata"].(map[string]any)["team"] != "billing" {
				t.Errorf("metadata %v", m["metadata"])
			}
		}},
		{"unlimited", map[string]any{"name": "u", "scopes": []string{"*:read"}, "rate_limit": map[string]any{"unlimited": true}}, func(t *testing.T, m map[string]any) {
			if m["rate_limit"].(map[string]any)["unlimited"] != true {
				t.Errorf("rate_limit %v", m["rate_limit"])
			}
		}},
		{"255 characters", map[string]any{"name": strings.Repeat("é", 255), "scopes": []string{"a:read"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(op, req{method: "POST", path: "/keys", body: tt.body})
			if r.status != http.StatusCreated {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if r.header.Get("Content-Type") != "application/json" || r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("headers %v", r.header)
			}
			m := r.obj(t)
			plain, _ := m["key"].(string)
			if !strings.HasPrefix(plain, "ak_") || e.fmt.Check(plain) != nil {
				t.Fatalf("key %q", plain)
			}
			if got := e.verify(plain); got != "ok" {
				t.Fatalf("new key verifies as %s", got)
			}
			if hint := m["hint"].(string); !strings.HasPrefix(hint, plain[:7]) || !strings.HasSuffix(hint, plain[len(plain)-4:]) {
				t.Errorf("hint %q of %q", hint, plain)
			}
			if _, ok := m["hash"]; ok {
				t.Error("record shows a hash")
			}
			if m["name"] != tt.body["name"] || m["id"] == "" {
				t.Errorf("record %v", m)
			}
			if tt.check != nil {
				tt.check(t, m)
			}
			// Shown once: never again.
			got := e.do(op, req{method: "GET", path: "/keys/" + m["id"].(string)})
			if strings.Contains(got.String(), plain) || strings.Contains(got.String(), `"key"`) {
				t.Errorf("GET shows the key: %s", got.body)
			}
		})
	}
}

// TestCreateKeyInvalid: every kind of bad input gets its 4xx, naming the
// field, and changes nothing.
func TestCreateKeyInvalid(t *testing.T) {
	e := newEnv(t)
	e.createKey(map[string]any{"name": "existing", "scopes": []string{"a:read"}})
	past := e.clock.Now().Add(-time.Minute).Format(time.RFC3339)
	tests := []struct {
		name   string
		body   string
		ctype  string
		status int
		code   string
		field  string
	}{
		{"malformed JSON", `{"name": "x", "scopes": [`, "", 400, "invalid_request", ""},
		{"syntax error", `{"name" "x"}`, "", 400, "invalid_request", ""},
		{"empty body", ``, "", 400, "invalid_request", ""},
		{"null body", `null`, "", 400, "invalid_request", ""},
		{"array body", `[{"name": "x"}]`, "", 400, "invalid_request", ""},
		{"string body", `"x"`, "", 400, "invalid_request", ""},
		{"unknown field", `{"name": "x", "scopes": ["a:read"], "owner": "me"}`, "", 400, "invalid_request", "owner"},
		{"unknown nested field", `{"name": "x", "scopes": ["a:read"], "rate_limit": {"requests": 1, "window": "1s", "per": 2}}`, "", 400, "invalid_request", "rate_limit.per"},
		{"case variant", `{"NAME": "x", "scopes": ["a:read"]}`, "", 400, "invalid_request", "NAME"},
		{"unicode fold variant", `{"name": "x", "ſcopes": ["a:read"]}`, "", 400, "invalid_request", "ſcopes"},
		{"nested case variant", `{"name": "x", "scopes": ["a:read"], "rate_limit": {"Requests": 1, "window": "1s"}}`, "", 400, "invalid_request", "rate_limit.Requests"},
		{"duplicate field", `{"name": "x", "name": "y", "scopes": ["a:read"]}`, "", 400, "invalid_request", "name"},
		{"escaped duplicate", `{"name": "x", "n\u0061me": "y", "scopes": ["a:read"]}`, "", 400, "invalid_request", "name"},
		{"duplicate metadata key", `{"name": "x", "scopes": ["a:read"], "metadata": {"a": "1", "a": "2"}}`, "", 400, "invalid_request", "metadata.a"},
		{"name wrong type", `{"name": 5, "scopes": ["a:read"]}`, "", 400, "invalid_request", "name"},
		{"scopes wrong type", `{"name": "x", "scopes": "a:read"}`, "", 400, "invalid_request", "scopes"},
		{"scope wrong type", `{"name": "x", "scopes": [1]}`, "", 400, "invalid_request", "scopes"},
		{"metadata wrong type", `{"name": "x", "scopes": ["a:read"], "metadata": {"a": 1}}`, "", 400, "invalid_request", "metadata"},
		{"huge number", `{"name": "x", "scopes": ["a:read"], "rate_limit": {"requests": 1e400, "window": "1s"}}`, "", 400, "invalid_request", "rate_limit.requests"},
		{"fraction", `{"name": "x", "scopes": ["a:read"], "rate_limit": {"requests": 1.5, "window": "1s"}}`, "", 400, "invalid_request", "rate_limit.requests"},
		{"trailing data", `{"name": "x", "scopes": ["a:read"]} {}`, "", 400, "invalid_request", ""},
		{"trailing garbage", `{"name": "x", "scopes": ["a:read"]}x`, "", 400, "invalid_request", ""},
		{"deep nesting", `{"name": "x", "scopes": ["a:read"], "metadata": {"a": ` + strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001) + `}}`, "", 400, "invalid_request", ""},
		{"no name", `{"scopes": ["a:read"]}`, "", 400, "invalid_request", "name"},
		{"empty name", `{"name": "", "scopes": ["a:read"]}`, "", 400, "invalid_request", "name"},
		{"blank name", `{"name": "   ", "scopes": ["a:read"]}`, "", 400, "invalid_request", "name"},
		{"name over 255", `{"name": "` + strings.Repeat("x", 256) + `", "scopes": ["a:read"]}`, "", 400, "invalid_request", "name"},
		{"control character in name", `{"name": "a\nb", "scopes": ["a:read"]}`, "", 400, "invalid_request", "name"},
		{"no scopes", `{"name": "x"}`, "", 400, "invalid_request", "scopes"},
		{"empty scopes", `{"name": "x", "scopes": []}`, "", 400, "invalid_request", "scopes"},
		{"invalid scope", `{"name": "x", "scopes": ["contacts"]}`, "", 400, "invalid_request", "scopes"},
		{"invalid access", `{"name": "x", "scopes": ["contacts:admin"]}`, "", 400, "invalid_request", "scopes"},
		{"expiry in the past", `{"name": "x", "scopes": ["a:read"], "expires_at": "` + past + `"}`, "", 400, "invalid_request", "expires_at"},
		{"unparsable expiry", `{"name": "x", "scopes": ["a:read"], "expires_at": "next week"}`, "", 400, "invalid_request", "expires_at"},
		{"empty expiry", `{"name": "x", "scopes": ["a:read"], "expires_at": ""}`, "", 400, "invalid_request", "expires_at"},
		{"unknown account", `{"name": "x", "scopes": ["a:read"], "account": "nope"}`, "", 400, "invalid_request", "account"},
		{"bad type", `{"name": "x", "scopes": ["a:read"], "type": "Not A Type"}`, "", 400, "invalid_request", "type"},
		{"bad rate limit", `{"name": "x", "scopes": ["a:read"], "rate_limit": {"requests": 0, "window": "1s"}}`, "", 400, "invalid_request", "rate_limit"},
		{"bad window", `{"name": "x", "scopes": ["a:read"], "rate_limit": {"requests": 1, "window": "soon"}}`, "", 400, "invalid_request", "rate_limit"},
		{"unlimited with requests", `{"name": "x", "scopes": ["a:read"], "rate_limit": {"unlimited": true, "requests": 1}}`, "", 400, "invalid_request", "rate_limit"},
		{"metadata over 4 KiB", `{"name": "x", "scopes": ["a:read"], "metadata": {"a": "` + strings.Repeat("x", 4096) + `"}}`, "", 400, "invalid_request", "metadata"},
		{"empty metadata key", `{"name": "x", "scopes": ["a:read"], "metadata": {"": "x"}}`, "", 400, "invalid_request", "metadata"},
		{"form content type", `{"name": "x", "scopes": ["a:read"]}`, "application/x-www-form-urlencoded", 415, "unsupported_media_type", ""},
		{"text content type", `{"name": "x", "scopes": ["a:read"]}`, "text/plain", 415, "unsupported_media_type", ""},
		{"bad content type", `{"name": "x", "scopes": ["a:read"]}`, "application/json; =", 415, "unsupported_media_type", ""},
		{"body over 64 KiB", `{"name": "x", "scopes": ["a:read"], "metadata": {"a": "` + strings.Repeat("x", MaxBody) + `"}}`, "", 413, "payload_too_large", ""},
	}
	before := e.snapshot()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(op, req{method: "POST", path: "/keys", body: tt.body, ctype: tt.ctype})
			errorIs(t, r, tt.status, tt.code, tt.field)
			if after := e.snapshot(); after != before {
				t.Fatal("a refused request changed the store")
			}
		})
	}
}

// TestCreateKeyContentType: JSON with parameters, +json and a missing
// Content-Type are accepted.
func TestCreateKeyContentType(t *testing.T) {
	e := newEnv(t)
	for _, ct := range []string{"application/json; charset=utf-8", "application/merge-patch+json", "APPLICATION/JSON"} {
		e.mustDo(op, req{method: "POST", path: "/keys", body: `{"name": "x", "scopes": ["a:read"]}`, ctype: ct}, http.StatusCreated)
	}
	r := e.do(op, req{method: "POST", path: "/keys", body: `{"name": "x", "scopes": ["a:read"]}`, noType: true})
	if r.status != http.StatusCreated {
		t.Fatalf("without Content-Type: %d %s", r.status, r.body)
	}
}

// TestBodyLimitWithoutLength: a chunked body over the limit (no
// Content-Length) is cut by MaxBytesReader: 413.
func TestBodyLimitWithoutLength(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot()
	body := `{"name": "x", "scopes": ["a:read"], "metadata": {"a": "` + strings.Repeat("x", MaxBody) + `"}}`
	r := e.do(op, req{method: "POST", path: "/keys", body: body, mod: func(r *http.Request) { r.ContentLength = -1 }})
	errorIs(t, r, http.StatusRequestEntityTooLarge, "payload_too_large", "")
	if e.snapshot() != before {
		t.Fatal("changed the store")
	}
}

func TestListKeys(t *testing.T) {
	e := newEnv(t)
	e.account("acme")
	var all, acme []string // creation order
	for i := range 7 {
		acct := "default"
		if i%2 == 1 {
			acct = "acme"
		}
		m := e.createKey(map[string]any{"name": fmt.Sprintf("Key %d", i), "account": acct, "scopes": []string{"a:read"}})
		all = append(all, m["id"].(string))
		if acct == "acme" {
			acme = append(acme, m["id"].(string))
		}
	}
	// Key 2 revoked, key 4 expiring soon.
	e.mustDo(op, req{method: "POST", path: "/keys/" + all[2] + "/revoke"}, http.StatusOK)
	exp := e.clock.Now().Add(time.Hour).Format(time.RFC3339)
	e.mustDo(op, req{method: "PATCH", path: "/keys/" + all[4], body: map[string]any{"expires_at": exp}}, http.StatusOK)
	e.clock.Add(2 * time.Hour)

	t.Run("pages", func(t *testing.T) {
		var got []string
		path := "/keys?limit=3"
		for pages := 0; ; pages++ {
			if pages > 5 {
				t.Fatal("too many pages")
			}
			m := e.mustDo(op, req{method: "GET", path: path}, http.StatusOK)
			page := ids(m["keys"])
			got = append(got, page...)
			if m["next_cursor"] == nil {
				break
			}
			if len(page) != 3 {
				t.Fatalf("page of %d with a next cursor", len(page))
			}
			path = "/keys?limit=3&cursor=" + m["next_cursor"].(string)
		}
		if fmt.Sprint(got) != fmt.Sprint(reversed(all)) {
			t.Fatalf("pages %v, want newest first %v", got, reversed(all))
		}
	})

	tests := []struct {
		query string
		want  []string
	}{
		{"", reversed(all)},
		{"?account=acme", reversed(acme)},
		{"?account=default&limit=1000", reversed([]string{all[0], all[2], all[4], all[6]})},
		{"?status=revoked", []string{all[2]}},
		{"?status=expired", []string{all[4]}},
		{"?status=active&account=acme", reversed(acme)},
		{"?q=KEY%205", []string{all[5]}},
		{"?q=key", reversed(all)},
		{"?q=nothing", nil},
		{"?account=acme&q=3", []string{all[3]}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			m := e.mustDo(op, req{method: "GET", path: "/keys" + tt.query}, http.StatusOK)
			got := ids(m["keys"])
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			if m["next_cursor"] != nil {
				t.Fatalf("next_cursor %v", m["next_cursor"])
			}
			if _, ok := m["keys"].([]any); !ok {
				t.Fatalf("keys is not an array: %v", m)
			}
		})
	}

	t.Run("records", func(t *testing.T) {
		r := e.do(op, req{method: "GET", path: "/keys"})
		for _, rec := range r.obj(t)["keys"].([]any) {
			m := rec.(map[string]any)
			if _, ok := m["key"]; ok {
				t.Fatal("list shows a key")
			}
			if _, ok := m["hash"]; ok {
				t.Fatal("list shows a hash")
			}
			if !strings.Contains(m["hint"].(string), "…") || m["status"] == "" {
				t.Fatalf("record %v", m)
			}
		}
	})

	bad := []struct{ query, field string }{
		{"?limit=0", "limit"},
		{"?limit=1001", "limit"},
		{"?limit=-1", "limit"},
		{"?limit=ten", "limit"},
		{"?cursor=%%%", ""},
		{"?cursor=!!", "cursor"},
		{"?cursor=bm90LWFuLWlk", "cursor"}, // base64url of "not-an-id"
		{"?status=gone", "status"},
		{"?account=nope", "account"},
		{"?acount=acme", "acount"},
		{"?limit=1&limit=2", "limit"},
	}
	for _, tt := range bad {
		t.Run("bad"+tt.query, func(t *testing.T) {
			errorIs(t, e.do(op, req{method: "GET", path: "/keys" + tt.query}), 400, "invalid_request", tt.field)
		})
	}
}

func TestGetKey(t *testing.T) {
	e := newEnv(t)
	m := e.createKey(map[string]any{"name": "k", "scopes": []string{"a:read"}})
	got := e.mustDo(op, req{method: "GET", path: "/keys/" + m["id"].(string)}, http.StatusOK)
	delete(m, "key")
	if fmt.Sprint(got) != fmt.Sprint(m) {
		t.Fatalf("GET %v\nwant %v", got, m)
	}
	for _, id := range []string{"0190b6a0-0000-7000-8000-000000000000", "nope", "..", "%2e%2e", "a%2Fb"} {
		errorIs(t, e.do(op, req{method: "GET", path: "/keys/" + id}), 404, "not_found", "")
	}
	// last_used_at shows a verification at once.
	if got["last_used_at"] != nil {
		t.Fatal("used before use")
	}
}

func TestLastUsedShownAtOnce(t *testing.T) {
	e := newEnv(t)
	m := e.createKey(map[string]any{"name": "k", "scopes": []string{"a:read"}})
	if e.verify(m["key"].(string)) != "ok" {
		t.Fatal("verify")
	}
	got := e.mustDo(op, req{method: "GET", path: "/keys/" + m["id"].(string)}, http.StatusOK)
	if got["last_used_at"] == nil {
		t.Fatal("last_used_at not shown after a verification")
	}
}

func TestPatchKey(t *testing.T) {
	e := newEnv(t)
	created := e.createKey(map[string]any{
		"name": "orig", "scopes": []string{"a:read"}, "type": "api",
		"rate_limit": map[string]any{"requests": 1, "window": "1s"}, "metadata": map[string]string{"k": "v"},
		"expires_at": e.clock.Now().Add(time.Hour).Format(time.RFC3339),
	})
	id, plain := created["id"].(string), created["key"].(string)
	path := "/keys/" + id
	exp := e.clock.Now().Add(48 * time.Hour).Truncate(time.Second).UTC().Format(time.RFC3339)
	tests := []struct {
		name  string
		body  string
		check func(m map[string]any) bool
	}{
		{"name", `{"name": "renamed"}`, func(m map[string]any) bool { return m["name"] == "renamed" }},
		{"scopes", `{"scopes": ["b:write", "a:read"]}`, func(m map[string]any) bool { return fmt.Sprint(m["scopes"]) == "[a:read b:write]" }},
		{"expires_at", `{"expires_at": "` + exp + `"}`, func(m map[string]any) bool { return m["expires_at"] == exp }},
		{"clear expires_at", `{"expires_at": null}`, func(m map[string]any) bool { return m["expires_at"] == nil }},
		{"type", `{"type": "service"}`, func(m map[string]any) bool { return m["type"] == "service" }},
		{"rate_limit", `{"rate_limit": {"unlimited": true}}`, func(m map[string]any) bool {
			return m["rate_limit"].(map[string]any)["unlimited"] == true
		}},
		{"clear rate_limit", `{"rate_limit": null}`, func(m map[string]any) bool { return m["rate_limit"] == nil }},
		{"metadata", `{"metadata": {"x": "y"}}`, func(m map[string]any) bool { return fmt.Sprint(m["metadata"]) == "map[x:y]" }},
		{"clear metadata", `{"metadata": null}`, func(m map[string]any) bool { return m["metadata"] == nil }},
		{"empty metadata clears", `{"metadata": {"a": "b"}}`, nil},
		{"empty metadata clears 2", `{"metadata": {}}`, func(m map[string]any) bool { return m["metadata"] == nil }},
		{"revoke", `{"active": false}`, func(m map[string]any) bool { return m["status"] == "revoked" && m["revoked_at"] != nil }},
		{"activate", `{"active": true}`, func(m map[string]any) bool { return m["status"] == "active" && m["revoked_at"] == nil }},
		{"several", `{"name": "n2", "type": "t2", "active": true}`, func(m map[string]any) bool { return m["name"] == "n2" && m["type"] == "t2" }},
		{"nothing", `{}`, func(m map[string]any) bool { return m["name"] == "n2" }},
	}
	prev := created
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := e.mustDo(op, req{method: "PATCH", path: path, body: tt.body}, http.StatusOK)
			if tt.check != nil && !tt.check(m) {
				t.Fatalf("after %s: %v", tt.body, m)
			}
			if _, ok := m["key"]; ok {
				t.Fatal("PATCH shows a key")
			}
			if m["hint"] != created["hint"] {
				t.Fatal("PATCH changed the hint")
			}
			// Fields not named are unchanged.
			for _, f := range []string{"id", "account", "created_at"} {
				if m[f] != prev[f] {
					t.Fatalf("%s changed: %v -> %v", f, prev[f], m[f])
				}
			}
			prev = m
		})
	}
	if got := e.verify(plain); got != "ok" {
		t.Fatalf("the key string changed: %s", got)
	}
	// An empty patch records no event.
	n := len(e.mustDo(op, req{method: "GET", path: path + "/audit"}, http.StatusOK)["events"].([]any))
	e.mustDo(op, req{method: "PATCH", path: path, body: `{}`}, http.StatusOK)
	if m := len(e.mustDo(op, req{method: "GET", path: path + "/audit"}, http.StatusOK)["events"].([]any)); m != n {
		t.Fatalf("an empty patch added %d events", m-n)
	}
}

func TestPatchKeyInvalid(t *testing.T) {
	e := newEnv(t)
	id := e.createKey(map[string]any{"name": "k", "scopes": []string{"a:read"}})["id"].(string)
	path := "/keys/" + id
	tests := []struct {
		name, body string
		status     int
		code       string
		field      string
	}{
		{"null name", `{"name": null}`, 400, "invalid_request", "name"},
		{"null scopes", `{"scopes": null}`, 400, "invalid_request", "scopes"},
		{"null active", `{"active": null}`, 400, "invalid_request", "active"},
		{"null type", `{"type": null}`, 400, "invalid_request", "type"},
		{"empty name", `{"name": ""}`, 400, "invalid_request", "name"},
		{"long name", `{"name": "` + strings.Repeat("n", 256) + `"}`, 400, "invalid_request", "name"},
		{"empty scopes", `{"scopes": []}`, 400, "invalid_request", "scopes"},
		{"invalid scope", `{"scopes": ["x"]}`, 400, "invalid_request", "scopes"},
		{"active not bool", `{"active": "false"}`, 400, "invalid_request", "active"},
		{"past expiry", `{"expires_at": "2000-01-01T00:00:00Z"}`, 400, "invalid_request", "expires_at"},
		{"bad expiry", `{"expires_at": 5}`, 400, "invalid_request", "expires_at"},
		{"bad expiry string", `{"expires_at": "2030-13-01"}`, 400, "invalid_request", "expires_at"},
		{"bad type", `{"type": "UPPER"}`, 400, "invalid_request", "type"},
		{"bad rate_limit", `{"rate_limit": {"requests": -1, "window": "1s"}}`, 400, "invalid_request", "rate_limit"},
		{"rate_limit not object", `{"rate_limit": 5}`, 400, "invalid_request", "rate_limit"},
		{"big metadata", `{"metadata": {"a": "` + strings.Repeat("m", 4097) + `"}}`, 400, "invalid_request", "metadata"},
		{"unknown field", `{"account": "other"}`, 400, "invalid_request", "account"},
		{"duplicate", `{"name": "a", "name": "b"}`, 400, "invalid_request", "name"},
		{"case variant", `{"Active": false}`, 400, "invalid_request", "Active"},
		{"valid then invalid", `{"name": "fine", "scopes": ["bad"]}`, 400, "invalid_request", "scopes"},
		{"revoke then invalid", `{"active": false, "type": "BAD"}`, 400, "invalid_request", "type"},
		{"empty body", ``, 400, "invalid_request", ""},
		{"array", `[]`, 400, "invalid_request", ""},
		{"trailing", `{} {}`, 400, "invalid_request", ""},
	}
	before := e.snapshot()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errorIs(t, e.do(op, req{method: "PATCH", path: path, body: tt.body}), tt.status, tt.code, tt.field)
			if e.snapshot() != before {
				t.Fatal("a refused patch changed the store")
			}
		})
	}
	errorIs(t, e.do(op, req{method: "PATCH", path: "/keys/nope", body: `{"name": "x"}`}), 404, "not_found", "")
}

func TestRevokeActivate(t *testing.T) {
	e := newEnv(t)
	m := e.createKey(map[string]any{"name": "k", "scopes": []string{"a:read"}})
	id, plain := m["id"].(string), m["key"].(string)

	r := e.mustDo(op, req{method: "POST", path: "/keys/" + id + "/revoke"}, http.StatusOK)
	if r["status"] != "revoked" || r["revoked_at"] == nil {
		t.Fatalf("revoke: %v", r)
	}
	if got := e.verify(plain); got != "key_revoked" {
		t.Fatalf("revoked key verifies as %s", got)
	}
	// Revoking again changes nothing and records no event; {} is a valid
	// body.
	again := e.mustDo(op, req{method: "POST", path: "/keys/" + id + "/revoke", body: `{}`}, http.StatusOK)
	if again["revoked_at"] != r["revoked_at"] {
		t.Fatal("a second revoke changed revoked_at")
	}
	a := e.mustDo(op, req{method: "POST", path: "/keys/" + id + "/activate"}, http.StatusOK)
	if a["status"] != "active" || a["revoked_at"] != nil {
		t.Fatalf("activate: %v", a)
	}
	if got := e.verify(plain); got != "ok" {
		t.Fatalf("re-activated key verifies as %s", got)
	}
	e.mustDo(op, req{method: "POST", path: "/keys/" + id + "/activate"}, http.StatusOK)
	ev := e.mustDo(op, req{method: "GET", path: "/keys/" + id + "/audit"}, http.StatusOK)["events"].([]any)
	if len(ev) != 3 {
		t.Fatalf("%d events, want created, revoked, activated: %v", len(ev), ev)
	}

	before := e.snapshot()
	for _, action := range []string{"revoke", "activate"} {
		errorIs(t, e.do(op, req{method: "POST", path: "/keys/nope/" + action}), 404, "not_found", "")
		errorIs(t, e.do(op, req{method: "POST", path: "/keys/" + id + "/" + action, body: `{"reason": "x"}`}), 400, "invalid_request", "reason")
		errorIs(t, e.do(op, req{method: "POST", path: "/keys/" + id + "/" + action, body: `[]`}), 400, "invalid_request", "")
		errorIs(t, e.do(op, req{method: "GET", path: "/keys/" + id + "/" + action}), 405, "method_not_allowed", "")
	}
	if e.snapshot() != before {
		t.Fatal("refused requests changed the store")
	}
}

func TestRegenerate(t *testing.T) {
	e := newEnv(t)
	m := e.createKey(map[string]any{"name": "k", "scopes": []string{"a:read"}, "metadata": map[string]string{"x": "y"}})
	id, old := m["id"].(string), m["key"].(string)

	r := e.mustDo(op, req{method: "POST", path: "/keys/" + id + "/regenerate"}, http.StatusOK)
	fresh, _ := r["key"].(string)
	if fresh == "" || fresh == old || r["id"] != id || r["name"] != "k" || fmt.Sprint(r["metadata"]) != "map[x:y]" {
		t.Fatalf("regenerate: %v", r)
	}
	if r["hint"] == m["hint"] {
		t.Fatal("hint unchanged")
	}
	if got := e.verify(old); got != "invalid_key" {
		t.Fatalf("old key without grace verifies as %s", got)
	}
	if got := e.verify(fresh); got != "ok" {
		t.Fatalf("new key verifies as %s", got)
	}
	if strings.Contains(e.do(op, req{method: "GET", path: "/keys/" + id}).String(), fresh) {
		t.Fatal("GET shows the new key")
	}

	// Empty body and {} are the same: no grace.
	r = e.mustDo(op, req{method: "POST", path: "/keys/" + id + "/regenerate", body: `{}`}, http.StatusOK)
	if got := e.verify(fresh); got != "invalid_key" {
		t.Fatalf("old key verifies as %s", got)
	}
	fresh = r["key"].(string)

	before := e.snapshot()
	for _, tt := range []struct{ body, field string }{
		{`{"grace_period": "soon"}`, "grace_period"},
		{`{"grace_period": "-1h"}`, "grace_period"},
		{`{"grace_period": 3600}`, "grace_period"},
		{`{"grace": "1h"}`, "grace"},
		{`{"grace_period": "1h", "grace_period": "2h"}`, "grace_period"},
		{`{"grace_period": "1h"`, ""},
	} {
		errorIs(t, e.do(op, req{method: "POST", path: "/keys/" + id + "/regenerate", body: tt.body}), 400, "invalid_request", tt.field)
	}
	errorIs(t, e.do(op, req{method: "POST", path: "/keys/nope/regenerate"}), 404, "not_found", "")
	if e.snapshot() != before {
		t.Fatal("refused regenerates changed the store")
	}
	if got := e.verify(fresh); got != "ok" {
		t.Fatalf("key after refused regenerates: %s", got)
	}
}

// TestRegenerateGrace: with a grace period the old string keeps working
// until the period ends, never past the key's expiry.
func TestRegenerateGrace(t *testing.T) {
	e := newEnv(t)
	m := e.createKey(map[string]any{"name": "k", "scopes": []string{"a:read"}})
	id, old := m["id"].(string), m["key"].(string)

	r := e.mustDo(op, req{method: "POST", path: "/keys/" + id + "/regenerate", body: `{"grace_period": "1h"}`}, http.StatusOK)
	fresh := r["key"].(string)
	for _, step := range []struct {
		advance  time.Duration
		old, new string
	}{
		{0, "ok", "ok"},
		{59 * time.Minute, "ok", "ok"},
		{2 * time.Minute, "invalid_key", "ok"},
	} {
		e.clock.Add(step.advance)
		if got := e.verify(old); got != step.old {
			t.Fatalf("after +%v the old key verifies as %s, want %s", step.advance, got, step.old)
		}
		if got := e.verify(fresh); got != step.new {
			t.Fatalf("after +%v the new key verifies as %s", step.advance, got)
		}
	}

	// A second regenerate ends the first grace period at once.
	r = e.mustDo(op, req{method: "POST", path: "/keys/" + id + "/regenerate", body: `{"grace_period": "1h"}`}, http.StatusOK)
	third := r["key"].(string)
	e.mustDo(op, req{method: "POST", path: "/keys/" + id + "/regenerate", body: `{"grace_period": "24h"}`}, http.StatusOK)
	if got := e.verify(fresh); got != "invalid_key" {
		t.Fatalf("a string two regenerations old verifies as %s", got)
	}
	if got := e.verify(third); got != "ok" {
		t.Fatalf("the previous string in its grace period verifies as %s", got)
	}

	// After the key's expiry the old string, still in its grace period,
	// answers as the key does.
	exp := e.clock.Now().Add(10 * time.Minute).Format(time.RFC3339)
	k2 := e.createKey(map[string]any{"name": "k2", "scopes": []string{"a:read"}, "expires_at": exp})
	r = e.mustDo(op, req{method: "POST", path: "/keys/" + k2["id"].(string) + "/regenerate", body: `{"grace_period": "24h"}`}, http.StatusOK)
	e.clock.Add(5 * time.Minute)
	if got := e.verify(k2["key"].(string)); got != "ok" {
		t.Fatalf("old string before expiry: %s", got)
	}
	e.clock.Add(6 * time.Minute)
	if got := e.verify(k2["key"].(string)); got != "key_expired" {
		t.Fatalf("old string after the key's expiry: %s, want key_expired", got)
	}
	if got := e.verify(r["key"].(string)); got != "key_expired" {
		t.Fatalf("new string after expiry: %s", got)
	}
}

func TestDeleteKey(t *testing.T) {
	e := newEnv(t)
	m := e.createKey(map[string]any{"name": "k", "scopes": []string{"a:read"}})
	other := e.createKey(map[string]any{"name": "other", "scopes": []string{"a:read"}})
	id := m["id"].(string)
	r := e.do(op, req{method: "DELETE", path: "/keys/" + id})
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("delete: %d %q", r.status, r.body)
	}
	if got := e.verify(m["key"].(string)); got != "invalid_key" {
		t.Fatalf("deleted key verifies as %s", got)
	}
	for _, rq := range []req{
		{method: "GET", path: "/keys/" + id},
		{method: "GET", path: "/keys/" + id + "/audit"},
		{method: "DELETE", path: "/keys/" + id},
		{method: "PATCH", path: "/keys/" + id, body: `{"name": "x"}`},
		{method: "POST", path: "/keys/" + id + "/regenerate"},
	} {
		errorIs(t, e.do(op, rq), 404, "not_found", "")
	}
	if got := ids(e.mustDo(op, req{method: "GET", path: "/keys"}, http.StatusOK)["keys"]); fmt.Sprint(got) != fmt.Sprint([]string{other["id"].(string)}) {
		t.Fatalf("list after delete: %v", got)
	}
	if got := e.verify(other["key"].(string)); got != "ok" {
		t.Fatalf("the other key: %s", got)
	}
}

func TestAudit(t *testing.T) {
	e := newEnv(t)
	m := e.createKey(map[string]any{"name": "k", "scopes": []string{"a:read"}})
	id := m["id"].(string)
	steps := []req{
		{method: "PATCH", path: "/keys/" + id, body: `{"name": "renamed"}`},
		{method: "POST", path: "/keys/" + id + "/revoke"},
		{method: "POST", path: "/keys/" + id + "/activate"},
		{method: "PATCH", path: "/keys/" + id, body: `{"active": false}`},
		{method: "PATCH", path: "/keys/" + id, body: `{"active": true}`},
		{method: "POST", path: "/keys/" + id + "/regenerate"},
	}
	for _, s := range steps {
		e.clock.Add(time.Second)
		e.mustDo(op, s, http.StatusOK)
	}
	kc := e.keyCaller("default", "apikeys:write", "a:read")
	e.clock.Add(time.Second)
	e.mustDo(kc, req{method: "PATCH", path: "/keys/" + id, body: `{"name": "by key"}`}, http.StatusOK)

	events := e.mustDo(op, req{method: "GET", path: "/keys/" + id + "/audit"}, http.StatusOK)["events"].([]any)
	want := []struct{ action, actor, changed string }{
		{"updated", "key:" + kc.KeyID, "name"},
		{"regenerated", "admin", "hint"},
		{"activated", "admin", "revoked_at"},
		{"revoked", "admin", "revoked_at"},
		{"activated", "admin", "revoked_at"},
		{"revoked", "admin", "revoked_at"},
		{"updated", "admin", "name"},
		{"created", "admin", "name"},
	}
	if len(events) != len(want) {
		t.Fatalf("%d events, want %d: %v", len(events), len(want), events)
	}
	var prev time.Time
	for i, w := range want {
		ev := events[i].(map[string]any)
		if ev["action"] != w.action || ev["actor"] != w.actor {
			t.Errorf("event %d: %v %v, want %s by %s", i, ev["action"], ev["actor"], w.action, w.actor)
		}
		ch, ok := ev["changes"].(map[string]any)
		if !ok || ch[w.changed] == nil {
			t.Errorf("event %d changes %v, want %s", i, ev["changes"], w.changed)
		}
		at, err := time.Parse(time.RFC3339, ev["at"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && at.After(prev) {
			t.Errorf("event %d at %v is after the one before it: not newest first", i, at)
		}
		prev = at
	}
	name := events[6].(map[string]any)["changes"].(map[string]any)["name"].(map[string]any)
	if name["from"] != "k" || name["to"] != "renamed" {
		t.Errorf("name change %v", name)
	}
	r := e.do(op, req{method: "GET", path: "/keys/" + id + "/audit"})
	if strings.Contains(r.String(), m["key"].(string)) {
		t.Fatal("the audit shows a key")
	}
}
