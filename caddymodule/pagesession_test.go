package caddymodule_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestPageSessionSurvivesReload: a manager signed in to the API Keys page
// at /manage/ stays signed in across config reloads and across a restart
// of the store (a config without the apikey app, then the site again:
// the store is closed and opened), because the session lives in the key
// store, not in the handler that a reload provisions again. A sign-out
// then ends it on the server.
func TestPageSessionSurvivesReload(t *testing.T) {
	e := start(t)
	_, key := e.createKey(`{"name": "manager", "scopes": ["apikeys:read"]}`)
	res, body := e.do("POST", siteURL+"/manage/ui/session", nil, `{"key":"`+key+`"}`)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d %v", res.StatusCode, body)
	}
	cookie, _, _ := strings.Cut(res.Header.Get("Set-Cookie"), ";")
	if !strings.HasPrefix(cookie, "apikey_ui_session=") {
		t.Fatalf("no session cookie in %q", cookie)
	}
	session := func(what string, want int) {
		t.Helper()
		res, body := e.do("GET", siteURL+"/manage/ui/api/keys", hdr("Cookie", cookie), "")
		if res.StatusCode != want {
			t.Fatalf("%s: status %d, want %d (%v)", what, res.StatusCode, want, body)
		}
	}
	session("signed in", http.StatusOK)
	variant := strings.Replace(siteConfig, "handle /read* {", "handle /read2* {", 1)
	e.load(variant)
	session("after a reload", http.StatusOK)
	e.load(siteConfig)
	session("after a second reload", http.StatusOK)
	e.unload()
	e.load(siteConfig)
	session("after the store was closed and opened again", http.StatusOK)
	res, body = e.do("DELETE", siteURL+"/manage/ui/session", hdr("Cookie", cookie, "Content-Type", "application/json"), "")
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out: %d %v", res.StatusCode, body)
	}
	e.load(variant)
	session("signed out, after a reload", http.StatusUnauthorized)
}
