package adminapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/testclock"
	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// env is a real store in a temporary directory and the API over it.
type env struct {
	t     testing.TB
	store *keystore.Store
	api   *API
	clock *testclock.Clock
	fmt   keystore.Format
}

func newEnv(t testing.TB) *env {
	t.Helper()
	// The clock starts at the real time, so that Badger's TTLs and the
	// UUIDv7 ids (which use the real time) agree with it.
	clk := testclock.New(time.Now().UTC())
	s, err := keystore.Open(testOptions(t, keystore.Options{Now: clk.Now}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := keystore.DefaultFormat()
	return &env{t: t, store: s, api: New(Options{Store: s, Format: f, AcceptForeign: true}), clock: clk, fmt: f}
}

// resp is a recorded answer.
type resp struct {
	status int
	header http.Header
	body   []byte
}

// obj decodes the body as a JSON object.
func (r resp) obj(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

func (r resp) String() string { return string(r.body) }

// req describes a request.
type req struct {
	method string
	path   string
	body   any // nil: none; string or []byte: raw; else JSON-encoded
	ctype  string
	noType bool                // send no Content-Type
	mod    func(*http.Request) // changes the request before it is served
}

// do serves one request through an http.HandlerFunc wrapping Serve with
// caller c.
func (e *env) do(c Caller, rq req) resp {
	e.t.Helper()
	var body io.Reader
	switch b := rq.body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		body = bytes.NewReader(j)
	}
	r := httptest.NewRequest(rq.method, rq.path, body)
	switch {
	case rq.noType:
	case rq.ctype != "":
		r.Header.Set("Content-Type", rq.ctype)
	case body != nil:
		r.Header.Set("Content-Type", "application/json")
	}
	if rq.mod != nil {
		rq.mod(r)
	}
	w := httptest.NewRecorder()
	http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.api.Serve(w, r, c)
	}).ServeHTTP(w, r)
	res := w.Result()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// op is the operator caller.
var op = OperatorCaller()

// mustDo is do that fails the test on an unexpected status.
func (e *env) mustDo(c Caller, rq req, status int) map[string]any {
	e.t.Helper()
	r := e.do(c, rq)
	if r.status != status {
		e.t.Fatalf("%s %s: status %d, want %d: %s", rq.method, rq.path, r.status, status, r.body)
	}
	if status == http.StatusNoContent {
		return nil
	}
	return r.obj(e.t)
}

// createKey creates a key through the API as the operator and returns its
// record (with "key").
func (e *env) createKey(body map[string]any) map[string]any {
	e.t.Helper()
	return e.mustDo(op, req{method: "POST", path: "/keys", body: body}, http.StatusCreated)
}

// account creates an account in the store.
func (e *env) account(id string) {
	e.t.Helper()
	if _, err := e.store.CreateAccount(keystore.Account{ID: id}); err != nil {
		e.t.Fatal(err)
	}
}

// keyCaller creates a key with these scopes in account and returns it as
// an apikey_admin caller.
func (e *env) keyCaller(account string, scopes ...string) Caller {
	e.t.Helper()
	return e.keyCallerOf(keystore.NewKey{Name: "manager", Account: account, Scopes: scopes})
}

// keyCallerOf creates the key nk (as the operator: with its expiry, type
// and limits) and returns it as an apikey_admin caller.
func (e *env) keyCallerOf(nk keystore.NewKey) Caller {
	e.t.Helper()
	k, _, err := e.store.CreateKey(nk, e.fmt, "admin")
	if err != nil {
		e.t.Fatal(err)
	}
	sc, err := keystore.ParseScopes(k.Scopes)
	if err != nil {
		e.t.Fatal(err)
	}
	return Caller{KeyID: k.ID, Account: k.Account, Scopes: sc}
}

// verify verifies a key string and returns the outcome's code.
func (e *env) verify(plain string) string {
	e.t.Helper()
	v := &keystore.Verifier{Store: e.store, Format: e.fmt, AcceptForeign: true}
	res, err := v.Verify(plain, keystore.Scope{}, false)
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Outcome.Code()
}

// snapshot is everything the API can change, to check that a refused
// request changed nothing: every key record, every account, and every
// key's audit trail.
func (e *env) snapshot() string {
	e.t.Helper()
	keys, _, err := e.store.ListKeys(keystore.ListQuery{Limit: keystore.MaxListLimit})
	if err != nil {
		e.t.Fatal(err)
	}
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	for _, k := range keys {
		enc.Encode(k)
		enc.Encode(k.Hash.String())
		ev, err := e.store.Audit(k.ID)
		if err != nil {
			e.t.Fatal(err)
		}
		enc.Encode(ev)
	}
	enc.Encode(e.store.Accounts())
	return sb.String()
}

// errorIs checks an error answer: status, code, and (if not empty) field.
func errorIs(t testing.TB, r resp, status int, code, field string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	m := r.obj(t)
	if m["error"] != code {
		t.Errorf("error %v, want %s: %s", m["error"], code, r.body)
	}
	if msg, _ := m["message"].(string); msg == "" {
		t.Errorf("no message: %s", r.body)
	}
	if field != "" && m["field"] != field {
		t.Errorf("field %v, want %s: %s", m["field"], field, r.body)
	}
}

// ids returns the ids of a list of records.
func ids(list any) []string {
	var out []string
	for _, v := range list.([]any) {
		out = append(out, v.(map[string]any)["id"].(string))
	}
	return out
}

func reversed(s []string) []string {
	s = slices.Clone(s)
	slices.Reverse(s)
	return s
}
