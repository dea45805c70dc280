package caddymodule

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddy-apikey/caddy-apikey/adminapi"
)

// The values of the apikey handler's escaped_slashes option.
const (
	// EscapedSlashesReject refuses a request whose path holds an encoded
	// slash or backslash. The default.
	EscapedSlashesReject = "reject"
	// EscapedSlashesKeep passes encoded slashes and backslashes on as
	// sent, for backends whose ids contain them.
	EscapedSlashesKeep = "keep"
)

// pathProblem is why a request path is refused; pathOK is none.
type pathProblem uint8

const (
	pathOK pathProblem = iota
	pathEncodedSlash
	pathBackslash
	pathDotSegment
	pathProblems // the number of problems, pathOK included
)

// pathMessages are the messages of the invalid_path refusals.
var pathMessages = [pathProblems]string{
	pathEncodedSlash: "the request path holds an encoded slash (%2F, or double-encoded %252F), which the backend could route differently from this server",
	pathBackslash:    "the request path holds a backslash (\\, %5C, or double-encoded %255C), which the backend could read as a slash and route differently from this server",
	pathDotSegment:   "the request path holds a dot segment (. or .., also spelled %2E, or followed by ;), which the backend could resolve differently from this server",
}

// pathGuard refuses request paths that Caddy's matchers and the backend
// could route differently: Caddy matches on the decoded, cleaned path,
// while reverse_proxy forwards the path as the client escaped it. The
// refusal bodies are encoded once, when the handler is provisioned.
type pathGuard struct {
	keepSlashes bool
	bodies      [pathProblems][]byte
}

// newPathGuard returns the guard for an escaped_slashes mode: "" or
// reject, or keep.
func newPathGuard(escapedSlashes string) (pathGuard, error) {
	var g pathGuard
	switch escapedSlashes {
	case "", EscapedSlashesReject:
	case EscapedSlashesKeep:
		g.keepSlashes = true
	default:
		return g, fmt.Errorf("escaped_slashes: want %s or %s, got %q", EscapedSlashesReject, EscapedSlashesKeep, escapedSlashes)
	}
	for p := pathOK + 1; p < pathProblems; p++ {
		b, err := adminapi.EncodeJSON(refusal{Error: "invalid_path", Message: pathMessages[p]})
		if err != nil {
			return g, err
		}
		g.bodies[p] = b
	}
	return g, nil
}

// refused answers 400 invalid_path and reports true if the request's path
// is one the guard refuses. It does not allocate for a path it passes.
func (g *pathGuard) refused(w http.ResponseWriter, u *url.URL) bool {
	p := checkPath(u, g.keepSlashes)
	if p == pathOK {
		return false
	}
	adminapi.WriteJSONBody(w, http.StatusBadRequest, g.bodies[p])
	return true
}

// checkPath finds what is wrong with u's path, if anything:
//
//   - an encoded slash in the raw path (%2F in any case; Go keeps the
//     escaped form in RawPath, which reverse_proxy forwards), or in the
//     decoded path (%2F there was %252F in the request: a backend that
//     decodes twice sees a slash);
//   - a backslash in the decoded path (\ or %5C; %5C in the decoded path
//     was %255C): some servers read it as a slash;
//   - a dot segment in the decoded path: . or .., spelled with %2E too
//     (the decoded path still has %2E when the request had %252E), and
//     followed by ; and anything (Tomcat-style servers drop path
//     parameters before they resolve dot segments).
//
// With keepSlashes the slash and backslash checks are skipped; dot
// segments are always refused. The scans look only at the bytes that
// can start a problem (%, . and \), found with strings.IndexByte, and
// allocate nothing.
func checkPath(u *url.URL, keepSlashes bool) pathProblem {
	p := u.Path
	if !keepSlashes {
		// RawPath is set only when the request's escaping differs from
		// Go's default one; an encoded slash always makes it differ.
		if raw := u.RawPath; raw != "" {
			for i := strings.IndexByte(raw, '%'); i >= 0; i = nextByte(raw, i, '%') {
				if i+2 < len(raw) && raw[i+1] == '2' && raw[i+2]|0x20 == 'f' {
					return pathEncodedSlash
				}
			}
		}
		if strings.IndexByte(p, '\\') >= 0 {
			return pathBackslash
		}
	}
	for i := strings.IndexByte(p, '.'); i >= 0; i = nextByte(p, i, '.') {
		if (i == 0 || p[i-1] == '/') && isDotSegment(p[i:]) {
			return pathDotSegment
		}
	}
	for i := strings.IndexByte(p, '%'); i >= 0; i = nextByte(p, i, '%') {
		if !keepSlashes && i+2 < len(p) {
			switch {
			case p[i+1] == '2' && p[i+2]|0x20 == 'f':
				return pathEncodedSlash
			case p[i+1] == '5' && p[i+2]|0x20 == 'c':
				return pathBackslash
			}
		}
		if (i == 0 || p[i-1] == '/') && isDotSegment(p[i:]) {
			return pathDotSegment
		}
	}
	return pathOK
}

// nextByte returns the index of the next c in s after index i, or -1.
func nextByte(s string, i int, c byte) int {
	j := strings.IndexByte(s[i+1:], c)
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// isDotSegment reports whether the decoded path segment at the start of s
// (up to the next /) is . or .., each dot also spelled %2E (in any case),
// optionally followed by ; and path parameters.
func isDotSegment(s string) bool {
	dots := 0
	for i := 0; i < len(s) && s[i] != ';' && s[i] != '/'; {
		switch {
		case s[i] == '.':
			i++
		case s[i] == '%' && i+2 < len(s) && s[i+1] == '2' && s[i+2]|0x20 == 'e':
			i += 3
		default:
			return false
		}
		if dots++; dots > 2 {
			return false
		}
	}
	return dots > 0
}
