package caddymodule

import (
	"net/http"
	"strings"
)

// credentialSource says where a credential came from, so that exactly that
// header is removed before the request goes upstream.
type credentialSource uint8

const (
	fromNone credentialSource = iota
	fromHeader
	fromBearer
	fromBoth
)

// credHeaders are the values of a request's key header and Authorization.
type credHeaders struct{ key, authz []string }

func credHeadersOf(h http.Header, keyHeader string) credHeaders {
	return credHeaders{h[keyHeader], h["Authorization"]}
}

// credentialFrom finds the key in a request's credential headers: the key
// header, or Authorization: Bearer (scheme matched case-insensitively) if
// bearer is on. It returns ok=false for an ambiguous request: a header sent
// more than once, or both headers with different keys. An Authorization
// header of another scheme is not ours and is ignored. Values are taken as
// Go's server parsed them (leading and trailing spaces and tabs already
// trimmed); anything else is left to the format check.
func credentialFrom(ch credHeaders, bearer bool) (cred string, src credentialSource, ok bool) {
	if vals := ch.key; len(vals) > 0 {
		if len(vals) > 1 {
			return "", fromHeader, false
		}
		if vals[0] != "" {
			cred, src = vals[0], fromHeader
		}
	}
	if !bearer {
		return cred, src, true
	}
	var token string
	found := 0
	for _, v := range ch.authz {
		if t, isBearer := bearerToken(v); isBearer {
			token = t
			found++
		}
	}
	switch {
	case found == 0:
		return cred, src, true
	case found > 1:
		return "", fromBearer, false
	case src == fromHeader && token != cred:
		return "", fromBoth, false
	case src == fromHeader:
		return cred, fromBoth, true
	case token == "":
		return "", fromNone, true
	}
	return token, fromBearer, true
}

// bearerToken returns the token of an Authorization value of the Bearer
// scheme. The scheme is case-insensitive (RFC 9110 §11.1); spaces between
// it and the token are skipped.
func bearerToken(v string) (string, bool) {
	const scheme = "bearer"
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	rest := v[len(scheme):]
	if rest == "" {
		return "", true
	}
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false // e.g. "Bearerfoo": another scheme
	}
	return strings.TrimLeft(rest, " \t"), true
}
