package caddymodule

import (
	"net/http"
	"strings"
	"testing"
)

const testKeyHeader = "X-Api-Key"

func TestExtractCredential(t *testing.T) {
	const key, other = "ak_key1", "ak_key2"
	for i, tc := range []struct {
		name    string
		header  http.Header
		noBear  bool // bearer off
		cred    string
		src     credentialSource
		ok      bool
		comment string
	}{
		{name: "none", header: http.Header{}, src: fromNone, ok: true},
		{name: "nil header", header: nil, src: fromNone, ok: true},
		{name: "empty X-Api-Key", header: http.Header{"X-Api-Key": {""}}, src: fromNone, ok: true},
		{name: "X-Api-Key only", header: http.Header{"X-Api-Key": {key}}, cred: key, src: fromHeader, ok: true},
		{name: "Bearer only", header: http.Header{"Authorization": {"Bearer " + key}}, cred: key, src: fromBearer, ok: true},
		{name: "bearer lowercase", header: http.Header{"Authorization": {"bearer " + key}}, cred: key, src: fromBearer, ok: true},
		{name: "BEARER uppercase", header: http.Header{"Authorization": {"BEARER " + key}}, cred: key, src: fromBearer, ok: true},
		{name: "bEaReR mixed case", header: http.Header{"Authorization": {"bEaReR " + key}}, cred: key, src: fromBearer, ok: true},
		{name: "Bearer with no token", header: http.Header{"Authorization": {"Bearer"}}, src: fromNone, ok: true},
		{name: "Bearer and a space, no token", header: http.Header{"Authorization": {"Bearer "}}, src: fromNone, ok: true},
		{name: "Bearer, two spaces", header: http.Header{"Authorization": {"Bearer  " + key}}, cred: key, src: fromBearer, ok: true},
		{name: "Bearer, tab", header: http.Header{"Authorization": {"Bearer\t" + key}}, cred: key, src: fromBearer, ok: true},
		{
			name: "Bearer token with inner space", header: http.Header{"Authorization": {"Bearer ak_a b"}},
			cred: "ak_a b", src: fromBearer, ok: true, comment: "left to the format check",
		},
		{name: "Bearertok is not bearer", header: http.Header{"Authorization": {"Bearer" + key}}, src: fromNone, ok: true},
		{name: "Bearer- is not bearer", header: http.Header{"Authorization": {"Bearer-" + key}}, src: fromNone, ok: true},
		{name: "Bear is not bearer", header: http.Header{"Authorization": {"Bear " + key}}, src: fromNone, ok: true},
		{name: "empty Authorization", header: http.Header{"Authorization": {""}}, src: fromNone, ok: true},
		{name: "Basic ignored", header: http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, src: fromNone, ok: true},
		{
			name: "Basic ignored, X-Api-Key used", header: http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}, "X-Api-Key": {key}},
			cred: key, src: fromHeader, ok: true,
		},
		{
			name: "Basic and Bearer", header: http.Header{"Authorization": {"Basic dXNlcjpwYXNz", "Bearer " + key}},
			cred: key, src: fromBearer, ok: true,
		},
		{name: "X-Api-Key repeated", header: http.Header{"X-Api-Key": {key, key}}, src: fromHeader, ok: false},
		{name: "X-Api-Key repeated, different", header: http.Header{"X-Api-Key": {key, other}}, src: fromHeader, ok: false},
		{name: "X-Api-Key repeated, empty", header: http.Header{"X-Api-Key": {"", ""}}, src: fromHeader, ok: false},
		{
			name: "X-Api-Key repeated, bearer off", header: http.Header{"X-Api-Key": {key, other}},
			noBear: true, src: fromHeader, ok: false,
		},
		{
			name: "two Bearer Authorization", header: http.Header{"Authorization": {"Bearer " + key, "Bearer " + other}},
			src: fromBearer, ok: false,
		},
		{
			name: "two Bearer Authorization, same key", header: http.Header{"Authorization": {"Bearer " + key, "bearer " + key}},
			src: fromBearer, ok: false,
		},
		{
			name: "both headers, same key", header: http.Header{"X-Api-Key": {key}, "Authorization": {"Bearer " + key}},
			cred: key, src: fromBoth, ok: true,
		},
		{
			name: "both headers, different keys", header: http.Header{"X-Api-Key": {key}, "Authorization": {"Bearer " + other}},
			src: fromBoth, ok: false,
		},
		{
			name: "both headers, keys differ in case", header: http.Header{"X-Api-Key": {key}, "Authorization": {"Bearer " + strings.ToUpper(key)}},
			src: fromBoth, ok: false,
		},
		{
			name: "X-Api-Key and an empty Bearer", header: http.Header{"X-Api-Key": {key}, "Authorization": {"Bearer"}},
			src: fromBoth, ok: false, comment: "two credentials that differ",
		},
		{
			name: "empty X-Api-Key and a Bearer", header: http.Header{"X-Api-Key": {""}, "Authorization": {"Bearer " + key}},
			cred: key, src: fromBearer, ok: true,
		},
		{
			name: "bearer off ignores Authorization", header: http.Header{"Authorization": {"Bearer " + key}},
			noBear: true, src: fromNone, ok: true,
		},
		{
			name: "bearer off ignores two Authorization", header: http.Header{"Authorization": {"Bearer " + key, "Bearer " + other}},
			noBear: true, src: fromNone, ok: true,
		},
		{
			name: "bearer off, both headers differ", header: http.Header{"X-Api-Key": {key}, "Authorization": {"Bearer " + other}},
			noBear: true, cred: key, src: fromHeader, ok: true,
		},
		{
			name: "non-canonical raw key is not the header", header: http.Header{"x-api-key": {key}},
			src: fromNone, ok: true, comment: "Go's server canonicalizes names; a raw map key is not read",
		},
	} {
		cred, src, ok := extractCredential(tc.header, testKeyHeader, !tc.noBear)
		if cred != tc.cred || src != tc.src || ok != tc.ok {
			t.Errorf("test %d (%s): got (%q, %d, %v), want (%q, %d, %v)", i, tc.name, cred, src, ok, tc.cred, tc.src, tc.ok)
		}
	}
}

func TestExtractCredentialOtherHeader(t *testing.T) {
	for i, tc := range []struct {
		header http.Header
		cred   string
		src    credentialSource
		ok     bool
	}{
		{http.Header{"X-Token": {"k"}}, "k", fromHeader, true},
		{http.Header{"X-Api-Key": {"k"}}, "", fromNone, true},
		{http.Header{"X-Token": {"k"}, "Authorization": {"Bearer k"}}, "k", fromBoth, true},
		{http.Header{"X-Token": {"k", "k"}}, "", fromHeader, false},
	} {
		cred, src, ok := extractCredential(tc.header, "X-Token", true)
		if cred != tc.cred || src != tc.src || ok != tc.ok {
			t.Errorf("test %d: got (%q, %d, %v), want (%q, %d, %v)", i, cred, src, ok, tc.cred, tc.src, tc.ok)
		}
	}
}

func TestBearerToken(t *testing.T) {
	for i, tc := range []struct {
		in       string
		token    string
		isBearer bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"BEARER abc", "abc", true},
		{"Bearer  abc", "abc", true},
		{"Bearer \t abc", "abc", true},
		{"Bearer abc ", "abc ", true},
		{"Bearer", "", true},
		{"Bearer ", "", true},
		{"Bearer   ", "", true},
		{"Bearerabc", "", false},
		{"Bearer,abc", "", false},
		{"Bearer:abc", "", false},
		{"Beare abc", "", false},
		{"Basic abc", "", false},
		{"", "", false},
		{"Bea", "", false},
		{" Bearer abc", "", false},
		{"Béarer abc", "", false},
	} {
		token, isBearer := bearerToken(tc.in)
		if token != tc.token || isBearer != tc.isBearer {
			t.Errorf("test %d: bearerToken(%q) = (%q, %v), want (%q, %v)", i, tc.in, token, isBearer, tc.token, tc.isBearer)
		}
	}
}

// specBearer is the contract's reading of an Authorization value,
// independent of bearerToken: the scheme "bearer" in any case, then either
// nothing or spaces/tabs and the token.
func specBearer(v string) (string, bool) {
	if len(v) < 6 || strings.ToLower(v[:6]) != "bearer" {
		return "", false
	}
	rest := v[6:]
	if rest == "" {
		return "", true
	}
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false
	}
	for rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	return rest, true
}

// FuzzExtractCredential builds a header with 0 to 2 key header values and 0
// to 2 Authorization values. extractCredential must not panic, and:
//   - refused (not ok): no credential is returned;
//   - ok with fromNone: no credential;
//   - ok with a source: a non-empty credential that is exactly the value of
//     the header it names (the key header's value, or the Bearer token), so
//     it never carries a header the request did not have;
//   - fromBoth: the key header and the Bearer token agree;
//   - bearer off: Authorization is never read.
func FuzzExtractCredential(f *testing.F) {
	for _, s := range []struct {
		x1, x2 string
		nx     uint8
		a1, a2 string
		na     uint8
		bearer bool
	}{
		{"", "", 0, "", "", 0, true},
		{"ak_k", "", 1, "", "", 0, true},
		{"", "", 1, "", "", 0, true},
		{"ak_k", "ak_k", 2, "", "", 0, true},
		{"", "", 0, "Bearer ak_k", "", 1, true},
		{"", "", 0, "bearer  ak_k", "", 1, true},
		{"", "", 0, "Bearer", "", 1, true},
		{"", "", 0, "Bearerak_k", "", 1, true},
		{"", "", 0, "Basic abc", "Bearer ak_k", 2, true},
		{"", "", 0, "Bearer ak_k", "BEARER ak_j", 2, true},
		{"ak_k", "", 1, "Bearer ak_k", "", 1, true},
		{"ak_k", "", 1, "Bearer ak_j", "", 1, true},
		{"ak_k", "", 1, "Bearer ak_j", "", 1, false},
		{"", "", 0, "Bearer\t\tak_k", "", 1, false},
	} {
		f.Add(s.x1, s.x2, s.nx, s.a1, s.a2, s.na, s.bearer)
	}
	f.Fuzz(func(t *testing.T, x1, x2 string, nx uint8, a1, a2 string, na uint8, bearer bool) {
		h := http.Header{}
		xs := []string{x1, x2}[:nx%3]
		as := []string{a1, a2}[:na%3]
		if len(xs) > 0 {
			h[testKeyHeader] = append([]string(nil), xs...)
		}
		if len(as) > 0 {
			h["Authorization"] = append([]string(nil), as...)
		}
		cred, src, ok := extractCredential(h, testKeyHeader, bearer)

		// The handler's path (the credential headers found by the pass
		// that strips identity headers) decides the same.
		withIdentity := h.Clone()
		withIdentity[HeaderKeyID] = []string{"spoofed"}
		c2, s2, ok2 := credentialFrom(stripIdentity(withIdentity, testKeyHeader, false), bearer)
		if c2 != cred || s2 != src || ok2 != ok || withIdentity[HeaderKeyID] != nil {
			t.Fatalf("the stripping pass found %q %d %v, extractCredential %q %d %v", c2, s2, ok2, cred, src, ok)
		}

		// The header is never modified.
		if len(h[testKeyHeader]) != len(xs) || len(h["Authorization"]) != len(as) {
			t.Fatalf("headers modified: %v", h)
		}
		if !ok {
			if cred != "" {
				t.Fatalf("refused with a credential %q", cred)
			}
			return
		}
		if !bearer && (src == fromBearer || src == fromBoth) {
			t.Fatalf("bearer off, but source %d", src)
		}
		var tokens []string
		if bearer {
			for _, a := range as {
				if tok, isBearer := specBearer(a); isBearer {
					tokens = append(tokens, tok)
				}
			}
		}
		if len(xs) > 1 || len(tokens) > 1 {
			t.Fatalf("accepted an ambiguous request: %v (bearer %v) -> %q", h, bearer, cred)
		}
		fromX := len(xs) == 1 && xs[0] == cred
		fromA := len(tokens) == 1 && tokens[0] == cred
		switch src {
		case fromNone:
			if cred != "" {
				t.Fatalf("fromNone with credential %q", cred)
			}
			if len(xs) == 1 && xs[0] != "" {
				t.Fatalf("key header %q ignored", xs[0])
			}
			if len(tokens) == 1 && tokens[0] != "" {
				t.Fatalf("bearer token %q ignored", tokens[0])
			}
			return
		case fromHeader:
			if !fromX || len(tokens) != 0 {
				t.Fatalf("fromHeader: %q from %v", cred, h)
			}
		case fromBearer:
			if !fromA || (len(xs) == 1 && xs[0] != "") {
				t.Fatalf("fromBearer: %q from %v", cred, h)
			}
		case fromBoth:
			if !fromX || !fromA {
				t.Fatalf("fromBoth: %q from %v", cred, h)
			}
		default:
			t.Fatalf("unknown source %d", src)
		}
		if cred == "" {
			t.Fatalf("source %d with an empty credential", src)
		}
	})
}

// extractCredential is credentialFrom on a header map, as the handlers
// call it (apikey_admin through credHeadersOf, apikey through the pass of
// stripIdentity, which the fuzz target below checks against it).
func extractCredential(h http.Header, keyHeader string, bearer bool) (string, credentialSource, bool) {
	return credentialFrom(credHeadersOf(h, keyHeader), bearer)
}
