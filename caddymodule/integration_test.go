package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-apikey/caddy-apikey/caddymodule"
	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// Ports of the in-process Caddy: not the defaults, so that a Caddy running
// on the developer's machine is not disturbed.
const (
	adminAddr = "localhost:2999"
	siteURL   = "http://localhost:9080"
	adminURL  = "http://" + adminAddr + "/apikey"
)

// baseDir holds every test's storage and logs; it outlives each test
// because the in-process Caddy keeps the last config's store open.
var baseDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "apikey-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	baseDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// recorder is a real upstream that records the headers of what it got.
type recorder struct {
	*httptest.Server
	mu      sync.Mutex
	last    http.Header
	trailer http.Header // of the last request, its body read to the end
	hits    int
	first   time.Time // arrival of the first request since the last take
	final   time.Time // and of the last one
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // to the end: trailers follow the body
		now := time.Now()
		rec.mu.Lock()
		rec.last = r.Header.Clone()
		rec.trailer = r.Trailer.Clone()
		if rec.hits == 0 {
			rec.first = now
		}
		rec.final = now
		rec.hits++
		rec.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "upstream ok")
	}))
	t.Cleanup(rec.Close)
	return rec
}

// window is the time from the first to the last request recorded since the
// last take.
func (rec *recorder) window() time.Duration {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.final.Sub(rec.first)
}

// take returns the last recorded headers and the hit count, and resets them.
func (rec *recorder) take() (http.Header, int) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	h, n := rec.last, rec.hits
	rec.last, rec.hits = nil, 0
	return h, n
}

type env struct {
	t       *testing.T
	tester  *caddytest.Tester
	up      *recorder
	dir     string
	storage string
}

const siteConfig = `{
	admin %[1]s
	http_port 9080
	https_port 9443
	grace_period 1s
	apikey {
		storage %[2]s
	}
	log default {
		output file %[3]s/error.log
		level DEBUG
		format filter {
			wrap json
			fields {
				request>headers>X-Api-Key delete
			}
		}
	}
}

http://localhost:9080 {
	log {
		output file %[3]s/access.log
		format filter {
			wrap json
			fields {
				request>headers>X-Api-Key delete
			}
		}
	}
	handle /contacts* {
		apikey contacts
		reverse_proxy %[4]s
	}
	handle /read* {
		apikey contacts:read
		reverse_proxy %[4]s
	}
	handle /fwd* {
		apikey {
			forward_key
		}
		reverse_proxy %[4]s
	}
	handle /custom* {
		apikey {
			header X-Token
			bearer off
		}
		reverse_proxy %[4]s
	}
	handle_path /manage/* {
		apikey_admin
	}
	handle /whoami {
		apikey
		respond "{http.auth.user.id}|{http.auth.user.name}|{http.auth.user.account}|{http.auth.user.type}|{http.auth.user.scopes}"
	}
	handle {
		apikey
		reverse_proxy %[4]s
	}
}
`

// start loads the site config with a fresh store and upstream.
func start(t *testing.T) *env {
	t.Helper()
	return startWith(t, siteConfig)
}

// startWith loads config (a siteConfig-like template) with a fresh store
// and upstream.
func startWith(t *testing.T, config string) *env {
	t.Helper()
	dir, err := os.MkdirTemp(baseDir, strings.ReplaceAll(t.Name(), "/", "_")+"-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, tester: caddytest.NewTester(t), up: newRecorder(t), dir: dir, storage: filepath.Join(dir, "store")}
	e.load(config)
	return e
}

func (e *env) load(config string) {
	e.t.Helper()
	e.tester.InitServer(fmt.Sprintf(config, adminAddr, e.storage, e.dir, e.up.URL), "caddyfile")
}

// unload loads a config without the apikey app and the sites: the
// previous config's log files are flushed and closed, and its store is
// released (closed, if nothing else holds it).
func (e *env) unload() {
	e.t.Helper()
	e.tester.InitServer(`{
		admin `+adminAddr+`
		http_port 9080
	}`, "caddyfile")
}

// do sends a request and decodes a JSON body if there is one.
func (e *env) do(method, url string, headers http.Header, body string) (*http.Response, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, vs := range headers {
		req.Header[k] = vs
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := e.tester.Client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out); err != nil {
			e.t.Fatalf("%s %s: bad JSON %q: %v", method, url, raw, err)
		}
	}
	return res, out
}

// admin calls the admin endpoint and requires the status.
func (e *env) admin(method, path, body string, want int) map[string]any {
	e.t.Helper()
	res, out := e.do(method, adminURL+path, nil, body)
	if res.StatusCode != want {
		e.t.Fatalf("%s %s: status %d, want %d: %v", method, path, res.StatusCode, want, out)
	}
	return out
}

// createKey creates a key and returns its id and plaintext.
func (e *env) createKey(body string) (id, key string) {
	e.t.Helper()
	out := e.admin("POST", "/keys", body, http.StatusCreated)
	id, _ = out["id"].(string)
	key, _ = out["key"].(string)
	if id == "" || key == "" {
		e.t.Fatalf("create: no id or key in %v", out)
	}
	return id, key
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = append(h[kv[i]], kv[i+1])
	}
	return h
}

// expect checks a response: status, error code, and whether it reached
// the upstream.
func (e *env) expect(name string, res *http.Response, body map[string]any, status int, code string, reached bool) http.Header {
	e.t.Helper()
	got, hits := e.up.take()
	if res.StatusCode != status {
		e.t.Errorf("%s: status %d, want %d (%v)", name, res.StatusCode, status, body)
	}
	if code != "" && body["error"] != code {
		e.t.Errorf("%s: error %v, want %s", name, body["error"], code)
	}
	if code != "" && body["message"] == "" {
		e.t.Errorf("%s: no message", name)
	}
	if reached != (hits == 1) {
		e.t.Errorf("%s: upstream hits %d, want reached=%v", name, hits, reached)
	}
	return got
}

func TestVerificationOrder(t *testing.T) {
	e := start(t)
	_, writer := e.createKey(`{"name": "writer", "scopes": ["contacts:write"]}`)
	_, reader := e.createKey(`{"name": "reader", "scopes": ["contacts:read"]}`)
	revokedID, revoked := e.createKey(`{"name": "revoked", "scopes": ["contacts:read"]}`)
	e.admin("POST", "/keys/"+revokedID+"/revoke", "", http.StatusOK)
	soon := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339Nano)
	_, expiring := e.createKey(`{"name": "expiring", "scopes": ["contacts:read"], "expires_at": "` + soon + `"}`)
	unknown, _ := keystore.DefaultFormat().Generate()
	otherPrefix, _ := keystore.Format{Prefix: "bme_", Length: 43, Checksum: true}.Generate()
	badChecksum := writer[:len(writer)-1] + "A"
	if strings.HasSuffix(writer, "A") {
		badChecksum = writer[:len(writer)-1] + "B"
	}

	for _, tc := range []struct {
		name    string
		method  string
		path    string
		headers http.Header
		status  int
		code    string
		wwwAuth string
	}{
		{"no key", "GET", "/contacts", nil, 401, "missing_key", `Bearer realm="api"`},
		{"empty key", "GET", "/contacts", hdr("X-Api-Key", ""), 401, "missing_key", `Bearer realm="api"`},
		{"basic auth is not ours", "GET", "/contacts", hdr("Authorization", "Basic dXNlcjpwYXNz"), 401, "missing_key", `Bearer realm="api"`},
		{"garbage", "GET", "/contacts", hdr("X-Api-Key", "hello"), 401, "malformed_key", `Bearer realm="api", error="invalid_token"`},
		{"other prefix", "GET", "/contacts", hdr("X-Api-Key", otherPrefix), 401, "malformed_key", ""},
		{"bad checksum", "GET", "/contacts", hdr("X-Api-Key", badChecksum), 401, "malformed_key", ""},
		{"truncated", "GET", "/contacts", hdr("X-Api-Key", writer[:len(writer)-1]), 401, "malformed_key", ""},
		{"header twice", "GET", "/contacts", hdr("X-Api-Key", writer, "X-Api-Key", writer), 401, "malformed_key", ""},
		{"two different keys", "GET", "/contacts", hdr("X-Api-Key", writer, "Authorization", "Bearer "+reader), 401, "malformed_key", ""},
		{"unknown", "GET", "/contacts", hdr("X-Api-Key", unknown), 401, "invalid_key", `Bearer realm="api", error="invalid_token"`},
		{"revoked", "GET", "/contacts", hdr("X-Api-Key", revoked), 401, "key_revoked", `Bearer realm="api", error="invalid_token"`},
		{"read scope, GET", "GET", "/contacts", hdr("X-Api-Key", reader), 200, "", ""},
		{"read scope, POST", "POST", "/contacts", hdr("X-Api-Key", reader), 403, "insufficient_scope", `Bearer error="insufficient_scope", scope="contacts:write"`},
		{"write implies read", "GET", "/read", hdr("X-Api-Key", writer), 200, "", ""},
		{"write is not delete", "DELETE", "/contacts/1", hdr("X-Api-Key", writer), 403, "insufficient_scope", `Bearer error="insufficient_scope", scope="contacts:delete"`},
		{"bearer", "PUT", "/contacts/1", hdr("Authorization", "Bearer "+writer), 200, "", ""},
		{"bearer, lower-case scheme", "GET", "/contacts", hdr("Authorization", "bearer "+writer), 200, "", ""},
		{"both headers, same key", "GET", "/contacts", hdr("X-Api-Key", writer, "Authorization", "Bearer "+writer), 200, "", ""},
		{"any valid key", "GET", "/anything", hdr("X-Api-Key", reader), 200, "", ""},
	} {
		res, body := e.do(tc.method, siteURL+tc.path, tc.headers, "")
		e.expect(tc.name, res, body, tc.status, tc.code, tc.status == 200)
		if tc.wwwAuth != "" && res.Header.Get("WWW-Authenticate") != tc.wwwAuth {
			t.Errorf("%s: WWW-Authenticate %q, want %q", tc.name, res.Header.Get("WWW-Authenticate"), tc.wwwAuth)
		}
		if tc.status != 200 && res.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: Content-Type %q", tc.name, res.Header.Get("Content-Type"))
		}
		if tc.code == "insufficient_scope" {
			want := "this request requires the " + body["required_scope"].(string) + " scope"
			if body["message"] != want {
				t.Errorf("%s: message %q, want %q", tc.name, body["message"], want)
			}
		}
	}

	// Expiry: the key works until expires_at, then is refused.
	res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", expiring), "")
	e.expect("before expiry", res, body, 200, "", true)
	time.Sleep(time.Until(time.Now().Add(2100 * time.Millisecond)))
	res, body = e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", expiring), "")
	e.expect("after expiry", res, body, 401, "key_expired", false)
}

func TestAccountStanding(t *testing.T) {
	e := start(t)
	e.admin("POST", "/accounts", `{"id": "acme", "name": "Acme", "status": "open"}`, http.StatusCreated)
	_, key := e.createKey(`{"name": "acme key", "account": "acme", "scopes": ["contacts:read"]}`)
	for _, tc := range []struct {
		status string
		ok     bool
	}{
		{"open", true},
		{"suspended", false},
		{"pending_cancel", true},
		{"past_due", false},
		{"terminated", false},
		{"open", true},
	} {
		e.admin("PATCH", "/accounts/acme", `{"status": "`+tc.status+`"}`, http.StatusOK)
		res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
		if tc.ok {
			e.expect("account "+tc.status, res, body, 200, "", true)
			continue
		}
		e.expect("account "+tc.status, res, body, 403, "account_inactive", false)
		if body["account_status"] != tc.status {
			t.Errorf("account %s: account_status %v", tc.status, body["account_status"])
		}
	}
}

func TestKeyLifecycleThroughProxy(t *testing.T) {
	e := start(t)
	id, key := e.createKey(`{"name": "life", "scopes": ["contacts:read"]}`)
	check := func(name, k string, status int, code string) {
		t.Helper()
		res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", k), "")
		e.expect(name, res, body, status, code, status == 200)
	}
	check("created", key, 200, "")
	e.admin("POST", "/keys/"+id+"/revoke", "", http.StatusOK)
	check("revoked", key, 401, "key_revoked")
	e.admin("POST", "/keys/"+id+"/activate", "", http.StatusOK)
	check("re-activated", key, 200, "")
	out := e.admin("POST", "/keys/"+id+"/regenerate", "", http.StatusOK)
	newKey, _ := out["key"].(string)
	check("old string after regenerate", key, 401, "invalid_key")
	check("new string", newKey, 200, "")
	e.admin("DELETE", "/keys/"+id, "", http.StatusNoContent)
	check("deleted", newKey, 401, "invalid_key")
}

func TestIdentityHeaders(t *testing.T) {
	e := start(t)
	id, key := e.createKey(`{"name": "CRM sync", "type": "mcp", "scopes": ["contacts:write", "billing:read"]}`)
	spoof := hdr(
		"X-Api-Key", key,
		"X-Api-Key-Id", "evil",
		"X-Api-Key-Id", "evil2",
		"X-Api-Account", "victim",
		"X_api_scopes", "*:delete",
		"X-Api-Key-Name", "admin",
		"Connection", "X-Api-Key-Id, X-Api-Account, X-Api-Scopes, X-Api-Key-Name, X-Api-Key-Type",
	)
	res, body := e.do("POST", siteURL+"/contacts", spoof, "")
	got := e.expect("spoofed", res, body, 200, "", true)
	for name, want := range map[string]string{
		"X-Api-Key-Id":   id,
		"X-Api-Key-Name": "CRM sync",
		"X-Api-Key-Type": "mcp",
		"X-Api-Account":  "default",
		"X-Api-Scopes":   "billing:read contacts:write",
	} {
		if vs := got[name]; len(vs) != 1 || vs[0] != want {
			t.Errorf("upstream %s = %q, want [%q]", name, vs, want)
		}
	}
	if vs := got["X_api_scopes"]; len(vs) != 0 {
		t.Errorf("upstream got the underscore spoof: %q", vs)
	}
	if v := got.Get("X-Api-Key"); v != "" {
		t.Errorf("upstream got the key: %q", v)
	}

	// Bearer: the Authorization header that carried the key is removed.
	res, body = e.do("GET", siteURL+"/contacts", hdr("Authorization", "Bearer "+key), "")
	got = e.expect("bearer", res, body, 200, "", true)
	if v := got.Get("Authorization"); v != "" {
		t.Errorf("upstream got Authorization %q", v)
	}

	// forward_key keeps the credential.
	res, body = e.do("GET", siteURL+"/fwd", hdr("X-Api-Key", key), "")
	got = e.expect("forward_key", res, body, 200, "", true)
	if v := got.Get("X-Api-Key"); v != key {
		t.Errorf("forward_key: upstream X-Api-Key %q", v)
	}

	// A custom header, with bearer off.
	res, body = e.do("GET", siteURL+"/custom", hdr("X-Token", key), "")
	got = e.expect("custom header", res, body, 200, "", true)
	if v := got.Get("X-Token"); v != "" {
		t.Errorf("custom header forwarded: %q", v)
	}
	res, body = e.do("GET", siteURL+"/custom", hdr("Authorization", "Bearer "+key), "")
	e.expect("bearer off", res, body, 401, "missing_key", false)
}

// TestPlaceholders: other handlers see the key's identity.
func TestPlaceholders(t *testing.T) {
	e := start(t)
	id, key := e.createKey(`{"name": "placeholders", "type": "mcp", "scopes": ["b:read", "a:write"]}`)
	want := id + "|placeholders|default|mcp|a:write b:read"
	e.tester.AssertResponse(func() *http.Request {
		req, _ := http.NewRequest("GET", siteURL+"/whoami", nil)
		req.Header.Set("X-Api-Key", key)
		return req
	}(), 200, want)
}

func TestNoKeyInLogs(t *testing.T) {
	e := start(t)
	id, key := e.createKey(`{"name": "logged", "scopes": ["contacts:read"]}`)
	for _, h := range []http.Header{hdr("X-Api-Key", key), hdr("Authorization", "Bearer "+key)} {
		res, body := e.do("GET", siteURL+"/contacts", h, "")
		e.expect("logged request", res, body, 200, "", true)
	}
	// A request whose upstream fails is logged by the error log too.
	e.up.Close()
	res, _ := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
	if res.StatusCode != http.StatusBadGateway {
		t.Errorf("dead upstream: status %d", res.StatusCode)
	}
	// Load another config so that the logs are flushed and closed.
	e.unload()

	access, err := os.ReadFile(filepath.Join(e.dir, "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(access, []byte(`"user_id":"`+id+`"`)) {
		t.Errorf("access log has no user_id %s:\n%s", id, access)
	}
	for _, name := range []string{"access.log", "error.log"} {
		b, _ := os.ReadFile(filepath.Join(e.dir, name))
		if bytes.Contains(b, []byte(key)) {
			t.Errorf("%s contains the plaintext key", name)
		}
	}
	assertNoKeyInDir(t, e.storage, key)
}

// assertNoKeyInDir fails if any file under dir contains the key.
func assertNoKeyInDir(t *testing.T, dir, key string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(key)) {
			t.Errorf("%s contains the plaintext key", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestReloadKeepsStore(t *testing.T) {
	e := start(t)
	_, key := e.createKey(`{"name": "reload", "scopes": ["contacts:read"]}`)
	variant := strings.Replace(siteConfig, "handle /read* {", "handle /read2* {", 1)
	for i := 0; i < 4; i++ {
		if i%2 == 0 {
			e.load(variant)
		} else {
			e.load(siteConfig)
		}
		res, body := e.do("GET", siteURL+"/contacts", hdr("X-Api-Key", key), "")
		e.expect(fmt.Sprintf("after reload %d", i+1), res, body, 200, "", true)
		// The store is writable after the reload.
		e.createKey(fmt.Sprintf(`{"name": "after reload %d", "scopes": ["contacts:read"]}`, i+1))
	}
}

func TestInvalidScopeFailsConfigLoad(t *testing.T) {
	caddytest.AssertLoadError(t, `{
		admin `+adminAddr+`
		http_port 9080
	}
	http://localhost:9080 {
		apikey Contacts:read
		respond ok
	}`, "caddyfile", "invalid scope")
}
