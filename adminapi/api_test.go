package adminapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// TestRouting: unknown paths are 404 and wrong methods 405 with Allow,
// both in our JSON shape; paths the mux would redirect are 404.
func TestRouting(t *testing.T) {
	e := newEnv(t)
	id := e.createKey(map[string]any{"name": "k", "scopes": []string{"a:read"}})["id"].(string)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/", 404, ""},
		{"GET", "", 404, ""},
		{"GET", "/nope", 404, ""},
		{"GET", "/keys/", 404, ""},
		{"GET", "/keys/" + id + "/", 404, ""},
		{"GET", "/keys/" + id + "/nope", 404, ""},
		{"GET", "/keys/" + id + "/audit/x", 404, ""},
		{"GET", "//keys", 404, ""},
		{"GET", "/keys/./" + id, 404, ""},
		{"GET", "/keys/../accounts", 404, ""},
		{"GET", "/accounts/../keys", 404, ""},
		{"GET", "/keys/" + id + "/../../accounts", 404, ""},
		{"GET", "/KEYS", 404, ""},
		{"GET", "/apikey/keys", 404, ""},
		{"PUT", "/keys", 405, "GET, HEAD, POST"},
		{"DELETE", "/keys", 405, "GET, HEAD, POST"},
		{"OPTIONS", "/keys", 405, "GET, HEAD, POST"},
		{"PUT", "/keys/" + id, 405, "DELETE, GET, HEAD, PATCH"},
		{"POST", "/keys/" + id, 405, "DELETE, GET, HEAD, PATCH"},
		{"GET", "/keys/" + id + "/revoke", 405, "POST"},
		{"DELETE", "/keys/" + id + "/regenerate", 405, "POST"},
		{"POST", "/keys/" + id + "/audit", 405, "GET, HEAD"},
		{"GET", "/keys/import", 404, ""}, // GET /keys/{id} with id "import"
		{"PUT", "/keys/import", 405, "DELETE, GET, HEAD, PATCH, POST"},
		{"PATCH", "/accounts", 405, "GET, HEAD, POST"},
		{"POST", "/accounts/default", 405, "DELETE, GET, HEAD, PATCH"},
		{"BREW", "/keys", 405, "GET, HEAD, POST"},
	}
	before := e.snapshot()
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			path := tt.path
			if path == "" {
				path = "/" // then emptied: a mount that strips its whole path
			}
			r := e.do(op, req{method: tt.method, path: path, mod: func(r *http.Request) {
				r.URL.Path = tt.path
			}})
			code := "not_found"
			if tt.status == 405 {
				code = "method_not_allowed"
			}
			errorIs(t, r, tt.status, code, "")
			if got := r.header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
			if r.header.Get("Location") != "" {
				t.Errorf("redirects to %s", r.header.Get("Location"))
			}
		})
	}
	if e.snapshot() != before {
		t.Fatal("routing errors changed the store")
	}
	// Query parameters are refused where none are taken.
	errorIs(t, e.do(op, req{method: "GET", path: "/keys/" + id + "?verbose=1"}), 400, "invalid_request", "verbose")
}

// TestServeOverHTTP runs the API behind a real HTTP server, as the glue
// mounts it.
func TestServeOverHTTP(t *testing.T) {
	e := newEnv(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.api.Serve(w, r, OperatorCaller())
	}))
	defer srv.Close()
	res, err := http.Post(srv.URL+"/keys", "application/json", strings.NewReader(`{"name": "http", "scopes": ["a:read"]}`))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated || m["key"] == nil {
		t.Fatalf("%d %v", res.StatusCode, m)
	}
	res, err = http.Head(srv.URL + "/keys/" + m["id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("HEAD: %d %v", res.StatusCode, res.Header)
	}
	// A body over the limit, streamed without a length.
	pr := strings.NewReader(`{"name": "` + strings.Repeat("x", 2*MaxBody) + `"}`)
	rq, _ := http.NewRequest("POST", srv.URL+"/keys", struct{ *strings.Reader }{pr})
	rq.ContentLength = -1
	res, err = http.DefaultClient.Do(rq)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked body over the limit: %d", res.StatusCode)
	}
}

func TestWriteError(t *testing.T) {
	w := httptest.NewRecorder()
	WriteError(w, http.StatusUnauthorized, "invalid_key", "the API key is not valid")
	if w.Code != 401 || w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	if got := strings.TrimSpace(w.Body.String()); got != `{"error":"invalid_key","message":"the API key is not valid"}` {
		t.Fatalf("body %s", got)
	}
}

// TestInternalError: a store failure is a 500 "internal", logged without
// details in the answer.
func TestInternalError(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	s, err := keystore.Open(testOptions(t, keystore.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	a := New(Options{Store: s, Logger: zap.New(core)})
	s.Close()
	w := httptest.NewRecorder()
	a.Serve(w, httptest.NewRequest("GET", "/keys", nil), OperatorCaller())
	if w.Code != http.StatusInternalServerError {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var m map[string]any
	json.Unmarshal(w.Body.Bytes(), &m)
	if m["error"] != "internal" {
		t.Fatalf("body %s", w.Body)
	}
	if logs.FilterMessage("admin API request failed").Len() != 1 {
		t.Fatalf("not logged: %v", logs.All())
	}
}

// TestDefaultFormat: a zero Format means the default one.
func TestDefaultFormat(t *testing.T) {
	s, err := keystore.Open(testOptions(t, keystore.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := New(Options{Store: s})
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/keys", strings.NewReader(`{"name": "n", "scopes": ["a:read"]}`))
	a.Serve(w, r, OperatorCaller())
	var m map[string]any
	json.Unmarshal(w.Body.Bytes(), &m)
	if key, _ := m["key"].(string); keystore.DefaultFormat().Check(key) != nil {
		t.Fatalf("key %q is not of the default format", key)
	}
}

// TestNoSecretsInLogs: keys created, regenerated and imported never reach
// the log, even at debug level.
func TestNoSecretsInLogs(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	e := newEnv(t)
	e.api = New(Options{Store: e.store, Format: e.fmt, Logger: zap.New(core), AcceptForeign: true})
	m := e.createKey(map[string]any{"name": "k", "scopes": []string{"a:read"}})
	r := e.mustDo(op, req{method: "POST", path: "/keys/" + m["id"].(string) + "/regenerate"}, http.StatusOK)
	foreign := "sk_live_secret_0123456789"
	e.mustDo(op, req{method: "POST", path: "/keys/import", body: `[{"key": "` + foreign + `", "name": "f", "scopes": ["a:read"]}]`}, http.StatusCreated)
	e.do(op, req{method: "POST", path: "/keys/import", body: `[{"key": "` + foreign + `", "name": "f", "scopes": ["a:read"]}]`})
	for _, entry := range logs.All() {
		b, _ := json.Marshal(entry.ContextMap())
		line := entry.Message + string(b)
		for _, secret := range []string{m["key"].(string), r["key"].(string), foreign} {
			if strings.Contains(line, secret) {
				t.Fatalf("a key is in the log: %s", line)
			}
		}
	}
}
