package keystore

import (
	"net/http"
	"strings"
	"testing"
)

// fuzzFormats are the formats FuzzFormatCheck checks a key against; the
// fuzzer picks one with its second argument.
var fuzzFormats = []Format{
	DefaultFormat(),
	{Prefix: "bme_", Length: 43, Checksum: false},
	{Prefix: "bme_", Length: 43, Checksum: true},
	{Prefix: "k", Length: MinLength, Checksum: true},
	{Prefix: "k", Length: MinLength, Checksum: false},
	{Prefix: "abcdefghij_12345", Length: MaxLength, Checksum: true},
}

// FuzzFormatCheck: Check never panics, and a key it accepts has the
// format's length and prefix, only base62 characters after the prefix, and
// (with a checksum) a checksum that the spec's own arithmetic recomputes.
func FuzzFormatCheck(f *testing.F) {
	for i, fm := range fuzzFormats {
		for range 2 {
			key, err := fm.Generate()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(key, uint8(i))
			f.Add(key[:len(key)-1]+"-", uint8(i))
			f.Add(key[1:], uint8(i))
		}
	}
	f.Add("", uint8(0))
	f.Add("ak_", uint8(0))
	f.Add("ak_0000000000000000000000000000000000000000000"+"2PL60u", uint8(0))
	f.Add("ak_0000000000000000000000000000000000000000000"+"2PL60v", uint8(0))
	f.Add("ak_000000000000000000000é0000000000000000000"+"2PL60u", uint8(0))
	f.Add("ak_\x00\x00", uint8(0))
	f.Add("bme_"+strings.Repeat("Z", 43), uint8(1))
	f.Fuzz(func(t *testing.T, key string, sel uint8) {
		fm := fuzzFormats[int(sel)%len(fuzzFormats)]
		if fm.Check(key) != nil {
			return
		}
		if len(key) != fm.KeyLen() {
			t.Fatalf("accepted %q of length %d, want %d", key, len(key), fm.KeyLen())
		}
		if !strings.HasPrefix(key, fm.Prefix) {
			t.Fatalf("accepted %q without prefix %q", key, fm.Prefix)
		}
		for i := len(fm.Prefix); i < len(key); i++ {
			if !isSpecBase62(key[i]) {
				t.Fatalf("accepted %q with %q at %d", key, key[i], i)
			}
		}
		if fm.Checksum {
			body := key[:len(key)-ChecksumLength]
			if got, want := key[len(body):], specChecksum(body); got != want {
				t.Fatalf("accepted %q: checksum %q, spec says %q", key, got, want)
			}
		}
		// Hint of an accepted key is the documented shape.
		if h := Hint(key, fm.Prefix); h != fm.Prefix+key[len(fm.Prefix):len(fm.Prefix)+4]+"…"+key[len(key)-4:] {
			t.Fatalf("Hint(%q) = %q", key, h)
		}
	})
}

// FuzzParseScope: ParseScope never panics, and an accepted scope is
// canonical: String() gives back the input, which parses to the same
// scope.
func FuzzParseScope(f *testing.F) {
	for _, s := range []string{
		"contacts:read", "contacts:write", "contacts:delete", "*:read",
		"*:admin", "contacts:", ":read", "a:b:read", "Contacts:read",
		"1a:read", "billing.invoices-v2_x:write", "a" + strings.Repeat("b", 63) + ":read",
		"a" + strings.Repeat("b", 64) + ":read", "", ":", "contacts:read\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScope(s)
		if err != nil {
			if sc != (Scope{}) {
				t.Fatalf("ParseScope(%q) = %+v with error %v", s, sc, err)
			}
			return
		}
		if sc.String() != s {
			t.Fatalf("ParseScope(%q).String() = %q", s, sc.String())
		}
		again, err := ParseScope(sc.String())
		if err != nil || again != sc {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
		if sc.Access != AccessRead && sc.Access != AccessWrite && sc.Access != AccessDelete {
			t.Fatalf("ParseScope(%q): access %d", s, sc.Access)
		}
		if !sc.Satisfies(sc) {
			t.Fatalf("%q does not satisfy itself", s)
		}
		if !sc.Satisfies(Scope{Resource: sc.Resource, Access: AccessRead}) {
			t.Fatalf("%q does not satisfy read of its resource", s)
		}
		// As a requirement, a full scope means the same.
		req, err := ParseRequirement(s)
		if err != nil || req.Scope != sc {
			t.Fatalf("ParseRequirement(%q) = %+v, %v", s, req, err)
		}
		// The scope list of one scope is that scope.
		list, err := ParseScopes([]string{s, s})
		if err != nil || len(list) != 1 || list[0] != sc {
			t.Fatalf("ParseScopes(%q twice) = %v, %v", s, list, err)
		}
	})
}

// FuzzParseRequirement: ParseRequirement never panics, an accepted
// requirement round-trips through String(), and For gives a valid scope of
// the same resource for every method.
func FuzzParseRequirement(f *testing.F) {
	for _, s := range []string{
		"contacts", "contacts:read", "contacts:write", "*", "*:delete",
		"contacts:", "Contacts", "", ":", "a.b-c_d", "contacts:read:x", "1x",
	} {
		f.Add(s, "GET")
	}
	f.Add("contacts", "TRACE")
	f.Add("contacts", "DELETE")
	f.Add("contacts", "")
	f.Fuzz(func(t *testing.T, s, method string) {
		req, err := ParseRequirement(s)
		if err != nil {
			if !req.IsZero() {
				t.Fatalf("ParseRequirement(%q) = %+v with error %v", s, req, err)
			}
			return
		}
		if req.IsZero() {
			t.Fatalf("ParseRequirement(%q) accepted a zero requirement", s)
		}
		if req.String() != s {
			t.Fatalf("ParseRequirement(%q).String() = %q", s, req.String())
		}
		again, err := ParseRequirement(req.String())
		if err != nil || again != req {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
		sc := req.For(method)
		if sc.Resource != req.Resource {
			t.Fatalf("For(%q) of %q: resource %q", method, s, sc.Resource)
		}
		if _, err := ParseScope(sc.String()); err != nil {
			t.Fatalf("For(%q) of %q = %q, not a valid scope: %v", method, s, sc, err)
		}
		if strings.Contains(s, ":") {
			if sc != req.Scope {
				t.Fatalf("For(%q) of full scope %q = %v", method, s, sc)
			}
		} else if sc.Access != AccessForMethod(method) {
			t.Fatalf("For(%q) of %q = %v", method, s, sc)
		}
		switch method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			if AccessForMethod(method) != AccessRead {
				t.Fatalf("%s is not read", method)
			}
		default:
			if strings.EqualFold(method, http.MethodDelete) {
				// #17: any spelling of DELETE needs delete access.
				if AccessForMethod(method) != AccessDelete {
					t.Fatalf("%q is not delete", method)
				}
				break
			}
			if AccessForMethod(method) != AccessWrite {
				t.Fatalf("%q is not write", method)
			}
		}
	})
}
