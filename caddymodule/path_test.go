package caddymodule

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
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

// TestAdaptEscapedSlashes: escaped_slashes is checked when the Caddyfile
// is adapted, and a wrong value is reported with its file and line.
func TestAdaptEscapedSlashes(t *testing.T) {
	adapt := func(mode string) (string, error) {
		src := ":19653 {\n\tapikey contacts {\n\t\tescaped_slashes " + mode + "\n\t}\n\trespond ok\n}\n"
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
		return string(out), err
	}
	out, err := adapt("keep")
	if err != nil || !strings.Contains(out, `"escaped_slashes":"keep"`) {
		t.Errorf("keep: %v\n%s", err, out)
	}
	for _, mode := range []string{"unescape", "KEEP", "keep reject"} {
		_, err := adapt(mode)
		if err == nil || !strings.Contains(err.Error(), "Caddyfile:3") || !strings.Contains(err.Error(), "escaped_slashes") && !strings.Contains(err.Error(), "argument") {
			t.Errorf("%q: %v, want an error at Caddyfile:3", mode, err)
		}
	}
}

// BenchmarkCheckPath is the guard's cost on clean paths of typical
// lengths.
func BenchmarkCheckPath(b *testing.B) {
	for _, target := range []string{
		"/contacts",
		"/v1/contacts/01a202ff-bf60-7804-908e-585442779731/notes.json",
		"/v1/files/a%20b/c%3Fd/report.v2.final.pdf",
	} {
		u, _ := url.ParseRequestURI(target)
		b.Run(target, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if checkPath(u, false) != pathOK {
					b.Fatal("refused")
				}
			}
		})
	}
}

// specPath is checkPath written from its definition, slowly: whether the
// path is refused at all.
func specPath(u *url.URL, keepSlashes bool) bool {
	lower := strings.ToLower(u.Path)
	if !keepSlashes && (strings.Contains(strings.ToLower(u.RawPath), "%2f") ||
		strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(u.Path, `\`)) {
		return true
	}
	for _, seg := range strings.Split(lower, "/") {
		seg, _, _ = strings.Cut(seg, ";")
		if seg = strings.ReplaceAll(seg, "%2e", "."); seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// FuzzCheckPath: checkPath refuses exactly what specPath does, for any
// request target Go's server would accept.
func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{"/contacts", "/a/../b", "/a%2fb", "/a/%2e%2E;x/b", "/a/%252e./b", `/a\b`, "/a/..x/.b", "/%2e", "/a/%2%2ee"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		for _, keep := range []bool{false, true} {
			if got, want := checkPath(u, keep) != pathOK, specPath(u, keep); got != want {
				t.Fatalf("%q (path %q, raw %q), keep %v: refused %v, want %v", target, u.Path, u.RawPath, keep, got, want)
			}
		}
	})
}
