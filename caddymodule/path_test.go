package caddymodule

import (
	"net/http/httptest"
	"net/url"
	"testing"
)

// TestCheckPath: the request targets the path guard refuses or passes, as
// Go's server parses them (url.ParseRequestURI), in both modes.
func TestCheckPath(t *testing.T) {
	const ok = pathOK
	for _, tc := range []struct {
		target string
		reject pathProblem // with escaped_slashes reject (the default)
		keep   pathProblem // with escaped_slashes keep
	}{
		{"/", ok, ok},
		{"/contacts", ok, ok},
		{"/contacts/7", ok, ok},
		{"/contacts/7?x=..%2f..", ok, ok}, // the query is not the path
		{"/contacts/01a202ff-bf60-7804-908e-585442779731/notes.json", ok, ok},
		{"/files/.well-known/x", ok, ok},
		{"/files/..x/...", ok, ok},
		{"/files/a..b/x.", ok, ok},
		{"/files/%2e%2e%2e", ok, ok},
		{"/files/%2ex", ok, ok},
		{"/files/;x", ok, ok},
		{"/files/a%20b", ok, ok},
		{"/files/100%25", ok, ok},
		{"/files/%252", ok, ok},
		{"/files/%25ff", ok, ok},
		{"/files/%3f", ok, ok},
		// Encoded slashes, any case, and double-encoded.
		{"/billing/42%2f..%2f..%2fcontacts", pathEncodedSlash, pathDotSegment},
		{"/billing/42%2fcontacts", pathEncodedSlash, ok},
		{"/billing/42%2Fcontacts", pathEncodedSlash, ok},
		{"/billing%2F42", pathEncodedSlash, ok},
		{"/billing/42%252fcontacts", pathEncodedSlash, ok},
		{"/billing/42%252Fcontacts", pathEncodedSlash, ok},
		{"/a%2f", pathEncodedSlash, ok},
		// Backslashes: encoded, double-encoded and as is.
		{"/billing/42%5c..%5ccontacts", pathBackslash, ok},
		{"/billing/42%5Ccontacts", pathBackslash, ok},
		{"/billing/42%255ccontacts", pathBackslash, ok},
		{"/billing/42%255Ccontacts", pathBackslash, ok},
		{`/billing\42`, pathBackslash, ok},
		// Dot segments, in every spelling, anywhere: always refused.
		{"/.", pathDotSegment, pathDotSegment},
		{"/..", pathDotSegment, pathDotSegment},
		{"/./contacts", pathDotSegment, pathDotSegment},
		{"/billing/../contacts", pathDotSegment, pathDotSegment},
		{"/billing/42/..", pathDotSegment, pathDotSegment},
		{"/billing/42/../", pathDotSegment, pathDotSegment},
		{"/billing/%2e%2e/contacts", pathDotSegment, pathDotSegment},
		{"/billing/%2E%2E/contacts", pathDotSegment, pathDotSegment},
		{"/billing/.%2e/contacts", pathDotSegment, pathDotSegment},
		{"/billing/%2e./contacts", pathDotSegment, pathDotSegment},
		{"/billing/%2e/contacts", pathDotSegment, pathDotSegment},
		{"/billing/..;/contacts", pathDotSegment, pathDotSegment},
		{"/billing/..;jsessionid=x/contacts", pathDotSegment, pathDotSegment},
		{"/billing/.;/contacts", pathDotSegment, pathDotSegment},
		{"/billing/%2e%2e;/contacts", pathDotSegment, pathDotSegment},
		{"/billing/..%3b/contacts", pathDotSegment, pathDotSegment},
		{"/billing/%252e%252e/contacts", pathDotSegment, pathDotSegment},
		{"/billing/%252E./contacts", pathDotSegment, pathDotSegment},
		{"/billing/42%2f..", pathEncodedSlash, pathDotSegment},
		{"http://localhost/billing/../contacts", pathDotSegment, pathDotSegment}, // absolute form
	} {
		u, err := url.ParseRequestURI(tc.target)
		if err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		if got := checkPath(u, false); got != tc.reject {
			t.Errorf("%s: reject mode: %v, want %v", tc.target, got, tc.reject)
		}
		if got := checkPath(u, true); got != tc.keep {
			t.Errorf("%s: keep mode: %v, want %v", tc.target, got, tc.keep)
		}
	}
}

// TestPathGuard: the refusal is a 400 with the documented JSON body, and
// a passing path costs no allocation.
func TestPathGuard(t *testing.T) {
	g, err := newPathGuard("")
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	if !g.refused(w, &url.URL{Path: "/a/../b"}) {
		t.Fatal("a dot segment passed")
	}
	want := `{"error":"invalid_path","message":"the request path holds a dot segment (. or .., also spelled %2E, or followed by ;), which the backend could resolve differently from this server"}`
	if body := w.Body.String(); w.Code != 400 || body != want+"\n" && body != want {
		t.Errorf("refusal: %d %s", w.Code, body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	clean, _ := url.ParseRequestURI("/contacts/01a202ff-bf60-7804-908e-585442779731/notes.json?x=1")
	if n := testing.AllocsPerRun(100, func() { g.refused(nil, clean) }); n != 0 {
		t.Errorf("a clean path allocates %v times", n)
	}
	for _, mode := range []string{"unescape", "Keep", "REJECT", " keep"} {
		if _, err := newPathGuard(mode); err == nil {
			t.Errorf("escaped_slashes %q accepted", mode)
		}
	}
}

// BenchmarkCheckPath is the guard's cost on a clean path of a typical
// length.
func BenchmarkCheckPath(b *testing.B) {
	u, _ := url.ParseRequestURI("/v1/contacts/01a202ff-bf60-7804-908e-585442779731/notes.json")
	b.ReportAllocs()
	for b.Loop() {
		if checkPath(u, false) != pathOK {
			b.Fatal("refused")
		}
	}
}
