package caddymodule_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// The findings of the outside review (issue #17, security items 1 and 2),
// sent as raw bytes to a real Caddy whose routes guard a real Go 1.22
// ServeMux backend, as the documented pattern does: a handle block per
// resource and a catch-all.

// reviewConfig is the documented pattern, and a /files route whose ids
// may hold encoded slashes. UPSTREAM is the routing backend.
const reviewConfig = `{
	admin %[1]s
	http_port 9080
	https_port 9443
	grace_period 1s
	apikey {
		storage %[2]s
	}
}

http://localhost:9080 {
	handle /contacts* {
		apikey contacts
		reverse_proxy UPSTREAM
	}
	handle /billing* {
		apikey billing
		reverse_proxy UPSTREAM
	}
	handle /files* {
		apikey files {
			escaped_slashes keep
		}
		reverse_proxy UPSTREAM
	}
	handle_path /manage/* {
		apikey_admin
	}
	handle {
		apikey
		reverse_proxy UPSTREAM
	}
}
`

// received is what the routing backend got: the method and request
// target as they came on the wire, and the ServeMux pattern that ran
// ("" if none did).
type received struct {
	Method, Target, Pattern string
}

// routingBackend is a Go 1.22 ServeMux behind a front that upper-cases
// the method before routing, as Werkzeug (Flask) does. It records every
// request it receives.
type routingBackend struct {
	*httptest.Server
	mu  sync.Mutex
	got []received
}

func newRoutingBackend(t *testing.T) *routingBackend {
	rb := &routingBackend{}
	mux := http.NewServeMux()
	for _, pattern := range []string{
		"GET /contacts", "GET /contacts/{id}", "PATCH /contacts/{id}", "DELETE /contacts/{id}",
		"GET /billing/{id}", "DELETE /billing/{id}", "GET /files/{name}", "GET /other",
	} {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			rb.mu.Lock()
			rb.got[len(rb.got)-1].Pattern = pattern
			rb.mu.Unlock()
			_, _ = w.Write([]byte("ran " + pattern))
		})
	}
	rb.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rb.mu.Lock()
		rb.got = append(rb.got, received{Method: r.Method, Target: r.RequestURI})
		rb.mu.Unlock()
		r.Method = strings.ToUpper(r.Method) // Werkzeug's environ["REQUEST_METHOD"].upper()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(rb.Close)
	return rb
}

// take returns what the backend received since the last take.
func (rb *routingBackend) take() []received {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	got := rb.got
	rb.got = nil
	return got
}

// startReview loads reviewConfig with a fresh store and routing backend.
func startReview(t *testing.T) (*env, *routingBackend) {
	t.Helper()
	rb := newRoutingBackend(t)
	return startWith(t, strings.ReplaceAll(reviewConfig, "UPSTREAM", rb.URL)), rb
}

// rawExpect sends a raw request with the key and checks the answer: a
// JSON refusal with status and code, or (status 200) a pass. It returns
// the answer's body.
func rawExpect(t *testing.T, name, method, target, key string, status int, code string) map[string]any {
	t.Helper()
	res, body := rawDo(t, method, target, []string{"X-API-Key: " + key, "Connection: close"})
	var m map[string]any
	if status != 200 {
		if err := json.Unmarshal(body, &m); err != nil || res.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %s %s: %d %q, want a JSON refusal", name, method, target, res.StatusCode, body)
			return nil
		}
	}
	if res.StatusCode != status || m["error"] != nil && m["error"] != code {
		t.Errorf("%s: %s %s: %d %s, want %d %s", name, method, target, res.StatusCode, body, status, code)
	}
	return m
}

// TestReviewEncodedPaths: a path whose encoded slashes, backslashes or dot
// segments make Caddy's matchers pick one handle block while the backend
// routes the raw path elsewhere is refused (400 invalid_path) by the
// apikey of whichever block Caddy picked, before the key is checked, and
// the backend receives nothing. Each variant is sent through the contacts
// and billing blocks and the catch-all, with a key that the block passes.
func TestReviewEncodedPaths(t *testing.T) {
	e, rb := startReview(t)
	_, contacts := e.createKey(`{"name": "contacts reader", "scopes": ["contacts:read"], "rate_limit": {"unlimited": true}}`)
	_, billing := e.createKey(`{"name": "billing reader", "scopes": ["billing:read"], "rate_limit": {"unlimited": true}}`)
	_, other := e.createKey(`{"name": "other reader", "scopes": ["other:read"], "rate_limit": {"unlimited": true}}`)
	_, files := e.createKey(`{"name": "files reader", "scopes": ["files:read"], "rate_limit": {"unlimited": true}}`)

	// The ordinary requests pass and run the route they name.
	for _, tc := range []struct{ target, key, pattern string }{
		{"/contacts", contacts, "GET /contacts"},
		{"/contacts/7", contacts, "GET /contacts/{id}"},
		{"/billing/42", billing, "GET /billing/{id}"},
		{"/other", other, "GET /other"},
		{"/files/report.pdf", files, "GET /files/{name}"},
	} {
		rawExpect(t, "ordinary", "GET", tc.target, tc.key, 200, "")
		if got := rb.take(); len(got) != 1 || got[0] != (received{"GET", tc.target, tc.pattern}) {
			t.Errorf("GET %s: the backend received %+v, want it as sent, running %s", tc.target, got, tc.pattern)
		}
	}

	// Each block: the resource Caddy must see (self), a path of another
	// route (victim), and a key that passes the block.
	blocks := []struct{ name, self, victim, key string }{
		{"contacts", "contacts", "billing/42", contacts},
		{"billing", "billing", "contacts/7", billing},
		{"catch-all", "other", "billing/42", other},
	}
	// Each variant builds a target that Caddy decodes and cleans to /self
	// (or to a path under it), but whose raw form names victim to a
	// backend: by an encoded slash (a Go 1.22 ServeMux takes
	// billing/42%2f..%2f..%2fcontacts as billing/{id}), a backslash
	// (Windows and some Java servers read it as a slash), a dot segment
	// Caddy resolves and the backend does not, or a Tomcat-style ..;.
	variants := []struct {
		name  string
		build func(self, victim string) string
	}{
		{"%2f", func(s, v string) string { return "/" + v + "%2f..%2f..%2f" + s }},
		{"%2F", func(s, v string) string { return "/" + v + "%2F..%2F..%2F" + s }},
		{"%5c", func(s, v string) string { return "/" + s + "%5c..%5c" + strings.ReplaceAll(v, "/", "%5c") }},
		{"%5C", func(s, v string) string { return "/" + s + "%5C..%5C" + strings.ReplaceAll(v, "/", "%5C") }},
		{"%2e%2e", func(s, v string) string { return "/" + v + "/%2e%2e/%2E%2E/" + s }},
		{".%2e", func(s, v string) string { return "/" + v + "/.%2e/%2e./" + s }},
		{"%2e%2e%2f", func(s, v string) string { return "/" + v + "/%2e%2e%2f%2e%2e%2f" + s }},
		{"..;", func(s, v string) string { return "/" + s + "/..;/" + v }},
		{".;", func(s, v string) string { return "/" + s + "/.;/" + v }},
		{"%252f", func(s, v string) string { return "/" + s + "%252f..%252f" + strings.ReplaceAll(v, "/", "%252f") }},
		{"%252F", func(s, v string) string { return "/" + s + "%252F..%252F" + strings.ReplaceAll(v, "/", "%252F") }},
		{"%255c", func(s, v string) string { return "/" + s + "%255c..%255c" + strings.ReplaceAll(v, "/", "%255c") }},
	}
	for _, b := range blocks {
		for _, v := range variants {
			target := v.build(b.self, b.victim)
			m := rawExpect(t, b.name+" "+v.name, "GET", target, b.key, 400, "invalid_path")
			if msg, _ := m["message"].(string); m != nil && !strings.HasPrefix(msg, "the request path holds a") {
				t.Errorf("%s %s: message %q", b.name, v.name, msg)
			}
			if got := rb.take(); len(got) != 0 {
				t.Errorf("%s %s: GET %s was refused, but the backend received %+v", b.name, v.name, target, got)
			}
			// The path is refused before the key is looked at: without
			// a key, or with a key of any scope, the answer is the same.
			for _, key := range []string{"", contacts} {
				rawExpect(t, b.name+" "+v.name+", other key", "GET", target, key, 400, "invalid_path")
			}
			if got := rb.take(); len(got) != 0 {
				t.Errorf("%s %s: the backend received %+v", b.name, v.name, got)
			}
		}
	}

	// escaped_slashes keep: encoded slashes and backslashes reach the
	// backend exactly as sent; dot segments are still refused.
	for _, target := range []string{"/files/a%2Fb", "/files/a%2fb%5Cc", "/files/a%252Fb"} {
		rawExpect(t, "keep", "GET", target, files, 200, "")
		if got := rb.take(); len(got) != 1 || got[0] != (received{"GET", target, "GET /files/{name}"}) {
			t.Errorf("keep: GET %s: the backend received %+v, want it unchanged", target, got)
		}
	}
	for _, target := range []string{"/files/a%2F..%2F..%2Fbilling%2F42", "/files/..;/billing/42", "/files/%2e%2e/billing/42"} {
		rawExpect(t, "keep, dot segment", "GET", target, files, 400, "invalid_path")
		if got := rb.take(); len(got) != 0 {
			t.Errorf("keep: GET %s was refused, but the backend received %+v", target, got)
		}
	}
}

// TestReviewAdminPaths: apikey_admin refuses the same paths, so the admin
// API routes exactly the path Caddy's matchers chose it for. Under
// handle_path, Caddy itself decodes and cleans the stripped path, so
// encoded slashes and dot segments reach the handler resolved, as the
// matchers saw them, and the API answers for that path; what the strip
// leaves (a backslash, a ..; segment, a path the strip did not match)
// is refused.
func TestReviewAdminPaths(t *testing.T) {
	e, rb := startReview(t)
	id, _ := e.createKey(`{"name": "target", "scopes": ["contacts:read"]}`)
	_, mgr := e.createKey(`{"name": "manager", "scopes": ["apikeys:write"], "rate_limit": {"unlimited": true}}`)
	for _, tc := range []struct {
		target string
		status int
		code   string
	}{
		{"/manage/keys/" + id, 200, ""},
		// Resolved by handle_path to /keys/<id>, /keys and /accounts.
		{"/manage/keys/x%2f..%2f" + id, 200, ""},
		{"/manage/keys/" + id + "%2f..", 200, ""},
		{"/manage/keys/%2e%2e/accounts", 403, "forbidden"},
		// Left by the strip: refused.
		{"/manage/keys/..;/accounts", 400, "invalid_path"},
		{"/manage/keys/.;/" + id, 400, "invalid_path"},
		{"/manage/keys%5c" + id, 400, "invalid_path"},
		{"/manage/keys/" + id + "%255c", 400, "invalid_path"},
		{"/contacts/..%2f..%2fmanage/keys", 400, "invalid_path"},
	} {
		rawExpect(t, "admin", "GET", tc.target, mgr, tc.status, tc.code)
	}
	if got := rb.take(); len(got) != 0 {
		t.Errorf("the backend received %+v", got)
	}
}

// TestReviewMethodCase: a case variant of a known method needs at least
// that method's access, because the backend may upper-case it (this one
// does, as Werkzeug does) and run the method's route. A variant of DELETE
// needs delete; any other variant needs write, as an unknown method does,
// so get still fails closed.
func TestReviewMethodCase(t *testing.T) {
	e, rb := startReview(t)
	_, reader := e.createKey(`{"name": "reader", "scopes": ["contacts:read"], "rate_limit": {"unlimited": true}}`)
	_, writer := e.createKey(`{"name": "writer", "scopes": ["contacts:write"], "rate_limit": {"unlimited": true}}`)
	_, deleter := e.createKey(`{"name": "deleter", "scopes": ["contacts:delete"], "rate_limit": {"unlimited": true}}`)
	for _, tc := range []struct {
		name, method, target, key string
		status                    int
		code, required            string // for a refusal
		pattern                   string // for a pass: the route the backend ran
	}{
		{"write key, delete", "delete", "/contacts/7", writer, 403, "insufficient_scope", "contacts:delete", ""},
		{"write key, Delete", "Delete", "/contacts/7", writer, 403, "insufficient_scope", "contacts:delete", ""},
		{"write key, dELETE", "dELETE", "/contacts/7", writer, 403, "insufficient_scope", "contacts:delete", ""},
		{"write key, DELETE", "DELETE", "/contacts/7", writer, 403, "insufficient_scope", "contacts:delete", ""},
		{"read key, delete", "delete", "/contacts/7", reader, 403, "insufficient_scope", "contacts:delete", ""},
		{"read key, get", "get", "/contacts", reader, 403, "insufficient_scope", "contacts:write", ""},
		{"read key, Get", "Get", "/contacts/7", reader, 403, "insufficient_scope", "contacts:write", ""},
		{"read key, patch", "patch", "/contacts/7", reader, 403, "insufficient_scope", "contacts:write", ""},
		{"read key, GET", "GET", "/contacts", reader, 200, "", "", "GET /contacts"},
		{"delete key, delete", "delete", "/contacts/7", deleter, 200, "", "", "DELETE /contacts/{id}"},
		{"delete key, DELETE", "DELETE", "/contacts/7", deleter, 200, "", "", "DELETE /contacts/{id}"},
		{"write key, patch", "patch", "/contacts/7", writer, 200, "", "", "PATCH /contacts/{id}"},
		{"write key, get", "get", "/contacts", writer, 200, "", "", "GET /contacts"},
	} {
		m := rawExpect(t, tc.name, tc.method, tc.target, tc.key, tc.status, tc.code)
		got := rb.take()
		if tc.status != 200 {
			if m != nil && m["required_scope"] != tc.required {
				t.Errorf("%s: required_scope %v, want %s", tc.name, m["required_scope"], tc.required)
			}
			if len(got) != 0 {
				t.Errorf("%s: refused, but the backend received %+v", tc.name, got)
			}
			continue
		}
		// The backend gets the method as sent and, upper-casing it, runs
		// the route of a method whose access the key has.
		if want := (received{tc.method, tc.target, tc.pattern}); len(got) != 1 || got[0] != want {
			t.Errorf("%s: the backend received %+v, want %+v", tc.name, got, want)
		}
	}
}
