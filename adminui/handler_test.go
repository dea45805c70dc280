package adminui

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

func TestSignInCookie(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tls    bool
		secure bool
	}{
		{"http", false, false},
		{"https", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false)
			_, plain := e.key("default", "manager", "apikeys:write")
			res := e.do(request{method: "POST", path: "/ui/session", body: `{"key":"` + plain + `"}`, tls: tc.tls})
			want(t, res, http.StatusOK)
			c := sessionOf(t, res)
			switch {
			case !c.HttpOnly:
				t.Error("the cookie is not HttpOnly")
			case c.SameSite != http.SameSiteStrictMode:
				t.Errorf("SameSite %v, want Strict", c.SameSite)
			case c.Secure != tc.secure:
				t.Errorf("Secure %v, want %v", c.Secure, tc.secure)
			case c.Path != "/manage/":
				t.Errorf("Path %q, want the mount /manage/", c.Path)
			case c.MaxAge != int(DefaultAbsoluteTimeout/time.Second):
				t.Errorf("Max-Age %d, want the absolute timeout", c.MaxAge)
			case strings.Contains(c.Value, plain) || len(c.Value) < 43:
				t.Errorf("the cookie's value %q is not a random token", c.Value)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", got)
			}
			res = e.do(request{method: "GET", path: "/ui/api/keys", cookie: c})
			want(t, res, http.StatusOK)
		})
	}
}

func TestSignInRefusals(t *testing.T) {
	e := newEnv(t, false)
	noScopeKey, noScope := e.key("default", "reader", "contacts:read")
	revokedKey, revoked := e.key("default", "old", "apikeys:read")
	if _, err := e.store.RevokeKey(revokedKey.ID, ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"unknown key", `{"key":"ak_unknownunknownunknownunknown"}`, 401, "malformed_key"},
		{"no apikeys scope", `{"key":"` + noScope + `"}`, 403, "insufficient_scope"},
		{"revoked", `{"key":"` + revoked + `"}`, 401, "key_revoked"},
		{"empty", `{"key":""}`, 400, "invalid_request"},
		{"unknown field", `{"key":"a","x":1}`, 400, "invalid_request"},
		{"two values", `{"key":"a"} {}`, 400, "invalid_request"},
		{"too big", `{"key":"` + strings.Repeat("a", maxSignInBody) + `"}`, 413, "payload_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.do(request{method: "POST", path: "/ui/session", body: tc.body})
			if len(res.Cookies()) != 0 {
				t.Errorf("a refused sign-in set %v", res.Header["Set-Cookie"])
			}
			want(t, res, tc.status)
			if got := errorCode(t, res); got != tc.code {
				t.Errorf("error %q, want %q", got, tc.code)
			}
		})
	}
	if n := e.sessions(noScopeKey.ID, revokedKey.ID); n != 0 {
		t.Errorf("%d sessions after refused sign-ins", n)
	}
}

func TestSessionTimeouts(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		e := newEnv(t, false)
		k, plain := e.key("default", "manager", "apikeys:read")
		c := e.signIn(plain)
		e.clock.Add(DefaultIdleTimeout - time.Second)
		want(t, e.do(request{method: "GET", path: "/ui/session", cookie: c}), http.StatusOK)
		e.clock.Add(DefaultIdleTimeout - time.Second) // idle counts from the last use
		want(t, e.do(request{method: "GET", path: "/ui/session", cookie: c}), http.StatusOK)
		// The last use is stored at most once a minute: the idle timeout
		// allows for that minute.
		e.clock.Add(DefaultIdleTimeout + keystore.SessionTouchInterval - time.Second)
		want(t, e.do(request{method: "GET", path: "/ui/session", cookie: c}), http.StatusOK)
		e.clock.Add(DefaultIdleTimeout + keystore.SessionTouchInterval)
		res := e.do(request{method: "GET", path: "/ui/api/keys", cookie: c})
		want(t, res, http.StatusUnauthorized)
		if got := errorCode(t, res); got != "signed_out" {
			t.Errorf("error %q, want signed_out", got)
		}
		if n := e.sessions(k.ID); n != 0 {
			t.Errorf("%d sessions kept after the idle timeout", n)
		}
	})
	t.Run("absolute", func(t *testing.T) {
		e := newEnv(t, false)
		k, plain := e.key("default", "manager", "apikeys:read")
		c := e.signIn(plain)
		for used := time.Duration(0); used < DefaultAbsoluteTimeout-20*time.Minute; used += 20 * time.Minute {
			e.clock.Add(20 * time.Minute)
			want(t, e.do(request{method: "GET", path: "/ui/api/keys/" + k.ID, cookie: c}), http.StatusOK)
		}
		e.clock.Add(20 * time.Minute) // 12 h after sign-in, used 20 min ago
		want(t, e.do(request{method: "GET", path: "/ui/api/keys/" + k.ID, cookie: c}), http.StatusUnauthorized)
	})
}

// TestSessionInStore: sessions live in the key store, not in the
// handler: a new handler over the same store (what a config reload
// provisions) accepts the cookie; a cookie of one mount is refused on
// another (and stays valid on its own); a key's sessions are bounded, a
// sign-in beyond the bound ending its oldest.
func TestSessionInStore(t *testing.T) {
	e := newEnv(t, false)
	k, plain := e.key("default", "manager", "apikeys:read")
	c := e.signIn(plain)
	e.page = New(e.page.opts)
	want(t, e.do(request{method: "GET", path: "/ui/api/keys", cookie: c}), http.StatusOK)
	res := e.do(request{method: "GET", path: "/ui/api/keys", cookie: c, mount: "/other"})
	want(t, res, http.StatusUnauthorized)
	if got := errorCode(t, res); got != "signed_out" {
		t.Errorf("error %q on another mount, want signed_out", got)
	}
	want(t, e.do(request{method: "GET", path: "/ui/api/keys", cookie: c}), http.StatusOK)
	cookies := []*http.Cookie{c}
	for range MaxSessionsPerKey {
		e.clock.Add(time.Millisecond) // the index orders sessions by creation
		cookies = append(cookies, e.signIn(plain))
	}
	want(t, e.do(request{method: "GET", path: "/ui/api/keys", cookie: cookies[0]}), http.StatusUnauthorized)
	for _, c := range cookies[1:] {
		want(t, e.do(request{method: "GET", path: "/ui/session", cookie: c}), http.StatusOK)
	}
	if n := e.sessions(k.ID); n != MaxSessionsPerKey {
		t.Errorf("%d sessions of the key, want %d", n, MaxSessionsPerKey)
	}
}

func TestSignOut(t *testing.T) {
	e := newEnv(t, false)
	_, plain := e.key("default", "manager", "apikeys:read")
	c := e.signIn(plain)
	other := e.signIn(plain)
	res := e.do(request{method: "DELETE", path: "/ui/session", cookie: c})
	want(t, res, http.StatusNoContent)
	cleared := sessionOf(t, res)
	if cleared.MaxAge >= 0 || cleared.Value != "" || cleared.Path != "/manage/" {
		t.Errorf("sign-out's cookie %+v does not remove the session cookie", cleared)
	}
	// The server ended the session: the old cookie, replayed, is refused.
	want(t, e.do(request{method: "GET", path: "/ui/api/keys", cookie: c}), http.StatusUnauthorized)
	// Another session of the same key is not affected.
	want(t, e.do(request{method: "GET", path: "/ui/api/keys", cookie: other}), http.StatusOK)
}

func TestCrossSiteRefused(t *testing.T) {
	e := newEnv(t, false)
	_, plain := e.key("default", "manager", "apikeys:write")
	c := e.signIn(plain)
	create := `{"name":"csrf","scopes":["apikeys:read"]}`
	for _, tc := range []struct {
		name   string
		header map[string]string
		status int
		code   string
	}{
		{"cross-site fetch", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "cross_origin"},
		{"same-site other origin", map[string]string{"Sec-Fetch-Site": "same-site"}, 403, "cross_origin"},
		{"other Origin", map[string]string{"Sec-Fetch-Site": "", "Origin": "https://evil.test"}, 403, "cross_origin"},
		{"form body", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
		{"text body", map[string]string{"Content-Type": "text/plain"}, 415, "unsupported_media_type"},
		{"no type", map[string]string{"Content-Type": ""}, 415, "unsupported_media_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.do(request{method: "POST", path: "/ui/api/keys", body: create, cookie: c, header: tc.header})
			want(t, res, tc.status)
			if got := errorCode(t, res); got != tc.code {
				t.Errorf("error %q, want %q", got, tc.code)
			}
		})
	}
	keys, _, err := e.store.ListKeys(keystore.ListQuery{Limit: 10})
	if err != nil || len(keys) != 1 {
		t.Fatalf("%d keys (%v), want only the manager's: a refused request created one", len(keys), err)
	}
	// Sign-out is refused cross-site too (a forced sign-out).
	want(t, e.do(request{method: "DELETE", path: "/ui/session", cookie: c, header: map[string]string{"Sec-Fetch-Site": "cross-site"}}), http.StatusForbidden)
	want(t, e.do(request{method: "POST", path: "/ui/api/keys", body: create, cookie: c}), http.StatusCreated)
}

func TestSessionFollowsKey(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(e *env, k *keystore.Key)
		code   string
	}{
		{"revoked", func(e *env, k *keystore.Key) {
			if _, err := e.store.RevokeKey(k.ID, "admin"); err != nil {
				t.Fatal(err)
			}
		}, "key_revoked"},
		{"expired", func(e *env, k *keystore.Key) {
			at := e.clock.Now().Add(time.Minute)
			if _, err := e.store.UpdateKey(k.ID, keystore.KeyPatch{ExpiresAt: &at}, "admin"); err != nil {
				t.Fatal(err)
			}
			e.clock.Add(2 * time.Minute)
		}, "key_expired"},
		{"apikeys scope removed", func(e *env, k *keystore.Key) {
			if _, err := e.store.UpdateKey(k.ID, keystore.KeyPatch{Scopes: []string{"contacts:read"}}, "admin"); err != nil {
				t.Fatal(err)
			}
		}, "insufficient_scope"},
		{"regenerated", func(e *env, k *keystore.Key) {
			if _, _, err := e.store.RegenerateKey(k.ID, keystore.DefaultFormat(), 0, "admin"); err != nil {
				t.Fatal(err)
			}
		}, "invalid_key"},
		{"deleted", func(e *env, k *keystore.Key) {
			if err := e.store.DeleteKey(k.ID); err != nil {
				t.Fatal(err)
			}
		}, "invalid_key"},
		{"account suspended", func(e *env, k *keystore.Key) {
			st := "suspended"
			if _, err := e.store.UpdateAccount(k.Account, keystore.AccountPatch{Status: &st}); err != nil {
				t.Fatal(err)
			}
		}, "account_inactive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false)
			k, plain := e.key("acme", "manager", "apikeys:write")
			c := e.signIn(plain)
			want(t, e.do(request{method: "GET", path: "/ui/api/keys", cookie: c}), http.StatusOK)
			tc.change(e, k)
			res := e.do(request{method: "GET", path: "/ui/api/keys", cookie: c})
			if got := errorCode(t, res); got != tc.code {
				t.Errorf("error %q, want %q", got, tc.code)
			}
			if res.StatusCode/100 != 4 {
				t.Errorf("status %d", res.StatusCode)
			}
			if n := e.sessions(k.ID); n != 0 {
				t.Errorf("the session outlived its key's refusal (%d sessions)", n)
			}
		})
	}
}

func TestPageAddsNoPower(t *testing.T) {
	e := newEnv(t, false)
	theirs, _ := e.key("globex", "theirs", "contacts:read")
	_, plain := e.key("acme", "manager", "apikeys:write", "contacts:read")
	c := e.signIn(plain)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"another account's key", "GET", "/ui/api/keys/" + theirs.ID, "", 404, "not_found"},
		{"revoke another account's key", "POST", "/ui/api/keys/" + theirs.ID + "/revoke", "{}", 404, "not_found"},
		{"grant a scope it lacks", "POST", "/ui/api/keys", `{"name":"x","scopes":["contacts:write"]}`, 403, "insufficient_scope"},
		{"delete without apikeys:delete", "DELETE", "/ui/api/keys/" + theirs.ID, "", 403, "insufficient_scope"},
		{"accounts", "GET", "/ui/api/accounts", "", 403, "forbidden"},
		{"import", "POST", "/ui/api/keys/import", "[]", 403, "forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.do(request{method: tc.method, path: tc.path, body: tc.body, cookie: c})
			want(t, res, tc.status)
			if got := errorCode(t, res); got != tc.code {
				t.Errorf("error %q, want %q", got, tc.code)
			}
		})
	}
	res := e.do(request{method: "GET", path: "/ui/api/keys", cookie: c})
	want(t, res, http.StatusOK)
	if body := readBody(res); strings.Contains(body, theirs.ID) {
		t.Errorf("the list shows another account's key: %s", body)
	}
}

func TestOperatorPage(t *testing.T) {
	e := newEnv(t, true)
	e.key("globex", "theirs", "contacts:read")
	res := e.do(request{method: "GET", path: "/ui/session"})
	want(t, res, http.StatusOK)
	if body := readBody(res); !strings.Contains(body, `"operator":true`) || !strings.Contains(body, `"contacts"`) {
		t.Errorf("session %s", body)
	}
	want(t, e.do(request{method: "GET", path: "/ui/api/accounts"}), http.StatusOK)
	want(t, e.do(request{method: "POST", path: "/ui/session", body: `{"key":"x"}`}), http.StatusNotFound)
	want(t, e.do(request{method: "POST", path: "/ui/api/accounts", body: `{"id":"initech"}`, header: map[string]string{"Sec-Fetch-Site": "cross-site"}}), http.StatusForbidden)
	want(t, e.do(request{method: "POST", path: "/ui/api/accounts", body: `{"id":"initech"}`}), http.StatusCreated)
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t, false)
	_, plain := e.key("default", "manager", "apikeys:read")
	c := e.signIn(plain)
	for _, tc := range []struct {
		path, cache string
		status      int
	}{
		{"/", "no-cache", 200},
		{"/ui/app.js", "no-cache", 200},
		{"/ui/app.css", "no-cache", 200},
		{"/ui/session", "no-store", 200},
		{"/ui/api/keys", "no-store", 200},
		{"/ui/nothing.js", "no-store", 404},
		{"/ui/index.html", "no-store", 404},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res := e.do(request{method: "GET", path: tc.path, cookie: c})
			want(t, res, tc.status)
			for h, v := range map[string]string{
				"Content-Security-Policy": contentSecurityPolicy,
				"X-Frame-Options":         "DENY",
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
				"Cache-Control":           tc.cache,
			} {
				if got := res.Header.Get(h); got != v {
					t.Errorf("%s: %q, want %q", h, got, v)
				}
			}
		})
	}
	for _, bad := range []string{"'unsafe-inline'", "'unsafe-eval'", "http:", "https:", "*"} {
		if strings.Contains(contentSecurityPolicy, bad) {
			t.Errorf("the CSP allows %s", bad)
		}
	}
}

// TestNoKeyInAnswersOrLogs signs in, creates and regenerates keys through
// the page, and then finds the manager's key in no answer (headers and
// bodies) and no log entry. (Create and regenerate answer their new key
// once, by design; the manager's own key is never answered.)
func TestNoKeyInAnswersOrLogs(t *testing.T) {
	e := newEnv(t, false)
	_, plain := e.key("default", "manager", "apikeys:write")
	c := e.signIn(plain)
	for _, q := range []request{
		{method: "GET", path: "/ui/session"},
		{method: "GET", path: "/ui/api/keys"},
		{method: "POST", path: "/ui/api/keys", body: `{"name":"new","scopes":["apikeys:read"]}`},
		{method: "POST", path: "/ui/api/keys", body: `{"name":"bad","scopes":["nope"]}`},
		{method: "POST", path: "/ui/session", body: `{"key":"` + plain + `x"}`},
		{method: "DELETE", path: "/ui/session"},
		{method: "GET", path: "/ui/api/keys"},
	} {
		q.cookie = c
		e.do(q)
	}
	if strings.Contains(e.seen.String(), plain) {
		t.Error("an answer holds the manager's key")
	}
	if strings.Contains(e.seen.String(), plain[:20]) {
		t.Error("an answer holds part of the manager's key")
	}
	for _, entry := range e.logs.All() {
		line := entry.Message
		for k, v := range entry.ContextMap() {
			line += k + "=" + toString(v)
		}
		if strings.Contains(line, plain) || strings.Contains(line, c.Value) {
			t.Errorf("a log entry holds the key or the session token: %s", line)
		}
	}
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// TestPageSize keeps the whole page (HTML, CSS and JavaScript, as
// embedded, uncompressed) under 100 KB.
func TestPageSize(t *testing.T) {
	n := PageSize()
	t.Logf("the page is %d bytes (%.1f KB) uncompressed, in %d files", n, float64(n)/1000, len(assets))
	if n <= 0 || n >= 100_000 {
		t.Errorf("the page is %d bytes, want under 100 KB", n)
	}
	for _, want := range []string{"index.html", "app.js", "api.js", "dom.js", "usage.js", "app.css"} {
		if _, ok := assets[want]; !ok {
			t.Errorf("%s is not embedded", want)
		}
	}
}
