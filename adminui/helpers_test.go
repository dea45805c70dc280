package adminui

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-apikey/caddy-apikey/adminapi"
	"github.com/caddy-apikey/caddy-apikey/internal/testclock"
	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// env is a real store (Badger in a temporary directory), the admin API
// over it, and the page's handler at /manage (or the operator's).
type env struct {
	t     *testing.T
	store *keystore.Store
	page  *Handler
	clock *testclock.Clock
	logs  *observer.ObservedLogs
	// seen is every answer's headers and body, to check that no key
	// appears in them.
	seen bytes.Buffer
}

func newEnv(t *testing.T, operator bool) *env {
	t.Helper()
	// The clock starts at the real time, so that the UUIDv7 ids (which
	// use the real time) agree with it.
	clk := testclock.New(time.Now().UTC())
	s, err := keystore.Open(keystore.Options{Dir: t.TempDir(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	f := keystore.DefaultFormat()
	b := Backend{
		API:      adminapi.New(adminapi.Options{Store: s, Format: f, Logger: log}),
		Verifier: &keystore.Verifier{Store: s, Format: f},
	}
	e := &env{t: t, store: s, clock: clk, logs: logs}
	e.page = New(Options{
		Operator:  operator,
		Backend:   func() (Backend, error) { return b, nil },
		Resources: func() []string { return []string{"contacts"} },
		Logger:    log,
	})
	return e
}

// key creates a key directly in the store and returns its record and
// plaintext.
func (e *env) key(account, name string, scopes ...string) (*keystore.Key, string) {
	e.t.Helper()
	if account != keystore.DefaultAccount {
		if _, err := e.store.Account(account); err != nil {
			if _, err := e.store.CreateAccount(keystore.Account{ID: account}); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	k, plain, err := e.store.CreateKey(keystore.NewKey{Name: name, Account: account, Scopes: scopes}, keystore.DefaultFormat(), "")
	if err != nil {
		e.t.Fatal(err)
	}
	return k, plain
}

// sessions is how many page sessions the store holds for the keys.
func (e *env) sessions(ids ...string) int {
	e.t.Helper()
	n := 0
	for _, id := range ids {
		c, err := e.store.SessionCount(id)
		if err != nil {
			e.t.Fatal(err)
		}
		n += c
	}
	return n
}

// request is a request to the page, same-origin unless its headers say
// otherwise.
type request struct {
	method, path, body string
	// mount is where the page is mounted; "" means /manage.
	mount  string
	cookie *http.Cookie
	header map[string]string
	tls    bool
}

// do sends q to the page (mounted at /manage unless q says otherwise)
// and returns the answer.
func (e *env) do(q request) *http.Response {
	e.t.Helper()
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	r := httptest.NewRequest(q.method, "http://example.test"+q.path, body)
	if q.tls {
		r = httptest.NewRequest(q.method, "https://example.test"+q.path, body)
	}
	if q.method != http.MethodGet && q.method != http.MethodHead {
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	for k, v := range q.header {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	if q.cookie != nil {
		r.AddCookie(q.cookie)
	}
	w := httptest.NewRecorder()
	mount := q.mount
	if mount == "" {
		mount = "/manage"
	}
	e.page.Serve(w, r, mount)
	res := w.Result()
	_ = res.Header.Write(&e.seen)
	e.seen.Write(w.Body.Bytes())
	return res
}

// signIn signs in with key and returns the session cookie.
func (e *env) signIn(key string) *http.Cookie {
	e.t.Helper()
	res := e.do(request{method: "POST", path: "/ui/session", body: `{"key":"` + key + `"}`})
	if res.StatusCode != http.StatusOK {
		e.t.Fatalf("sign-in: %d %s", res.StatusCode, readBody(res))
	}
	return sessionOf(e.t, res)
}

// sessionOf returns the session cookie res sets.
func sessionOf(t *testing.T, res *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range res.Cookies() {
		if c.Name == cookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie in %v", cookieName, res.Header["Set-Cookie"])
	return nil
}

func readBody(res *http.Response) string {
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// errorCode is the error code of a JSON error answer.
func errorCode(t *testing.T, res *http.Response) string {
	t.Helper()
	var body struct {
		Error string `json:"error"`
	}
	raw := readBody(res)
	if err := json.Unmarshal([]byte(raw), &body); err != nil {
		t.Fatalf("not a JSON error: %q", raw)
	}
	return body.Error
}

// want fails unless res has status.
func want(t *testing.T, res *http.Response, status int) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", res.StatusCode, status, readBody(res))
	}
}
