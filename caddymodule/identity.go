package caddymodule

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"unsafe"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// The identity headers the backend receives. Clients can never set them:
// any header of these names is removed from every request first.
const (
	HeaderKeyID   = "X-Api-Key-Id"
	HeaderKeyName = "X-Api-Key-Name"
	HeaderKeyType = "X-Api-Key-Type"
	HeaderAccount = "X-Api-Account"
	HeaderScopes  = "X-Api-Scopes"
)

var identityHeaders = [...]string{HeaderKeyID, HeaderKeyName, HeaderKeyType, HeaderAccount, HeaderScopes}

// stripIdentity removes client-sent identity headers: under their canonical
// names, under any spelling that a backend might read as the same name
// (case, or _ for -, as CGI and some proxies map them), and from the
// tokens of Connection, which would make a proxy drop the headers we set.
// It returns the values of the key header (canonical name keyHeader, never
// an identity name) and of Authorization, which the same pass meets. With
// dropKey it also deletes the key header, where the pass has its slot at
// hand: a request that passes is forwarded without it (unless forward_key),
// and one that is refused goes nowhere.
func stripIdentity(h http.Header, keyHeader string, dropKey bool) (ch credHeaders) {
	// One pass over the request's few headers finds every spelling,
	// canonical ones included: cheaper than hashing the five names to
	// delete them first. It notes Connection and the credential headers
	// on the way, which saves looking those names up.
	conn := false
	for k, v := range h {
		switch {
		case k == keyHeader:
			ch.key = v
			if dropKey {
				delete(h, k)
			}
		case k == "Authorization":
			ch.authz = v
		case isIdentityName(k):
			delete(h, k)
		case k == "Connection":
			conn = true
		}
	}
	if !conn {
		return ch
	}
	if conn, ok := h["Connection"]; ok {
		h["Connection"] = filterConnection(conn)
		if len(h["Connection"]) == 0 {
			delete(h, "Connection")
		}
	}
	return ch
}

// scrubTrailers keeps identity headers and the credential headers (the key
// header, Authorization) out of the request's trailers, which
// reverse_proxy forwards to the backend after the body: a client could
// otherwise send X-Api-Key-Id as a trailer (HTTP/1.1 chunked bodies,
// HTTP/2), or a key in a trailer that the backend would take for the
// verified one (forward_key keeps the header that carried the key, never
// a trailer). Names are folded as a backend might fold them (case, and _
// and . for -): X.Api.Key.Id and X_Api_Key are removed too. Go fills the trailer map when the body's last chunk is
// read, so the names are deleted now (they are then not announced in the
// forwarded Trailer header) and again when the body reports its end.
// Requests without trailers (nearly all) cost a nil check.
func scrubTrailers(r *http.Request, keyHeader string) {
	if r.Trailer == nil {
		return
	}
	scrub := func() {
		for k := range r.Trailer {
			if isIdentityName(k) || foldedName(k, keyHeader) || foldedName(k, "Authorization") {
				delete(r.Trailer, k)
			}
		}
	}
	scrub()
	r.Body = &trailerScrubber{ReadCloser: r.Body, scrub: scrub}
}

// trailerScrubber runs scrub when the body it wraps ends: the read that
// returns io.EOF is the one after which Go has filled the trailers.
type trailerScrubber struct {
	io.ReadCloser
	scrub func()
}

func (b *trailerScrubber) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.scrub()
	}
	return n, err
}

// isIdentityName reports whether a header name reads as one of the identity
// headers, ignoring case and treating _ and . as -.
func isIdentityName(name string) bool {
	// The shortest names (X-Api-Key-Id, X-Api-Scopes) are 12 characters,
	// the longest (X-Api-Key-Name, X-Api-Key-Type) 14.
	if len(name) < len(HeaderKeyID) || len(name) > len(HeaderKeyName) {
		return false
	}
	for _, n := range identityHeaders {
		if foldedName(name, n) {
			return true
		}
	}
	return false
}

// foldedName reports whether the header name reads as canon to a backend
// that folds names: ASCII case ignored, and _ and . read as - (CGI and
// WSGI servers map - to _, PHP maps . to _, so all three can meet).
func foldedName(name, canon string) bool {
	if len(name) != len(canon) {
		return false
	}
	for i := 0; i < len(canon); i++ {
		c := name[i]
		if c == '_' || c == '.' {
			c = '-'
		}
		if lower(c) != lower(canon[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// filterConnection drops identity header names from Connection values; it
// returns vals itself when there is nothing to drop.
func filterConnection(vals []string) []string {
	dirty := false
	for _, v := range vals {
		for tok := range strings.SplitSeq(v, ",") {
			if isIdentityName(strings.TrimSpace(tok)) {
				dirty = true
			}
		}
	}
	if !dirty {
		return vals
	}
	var out []string
	for _, v := range vals {
		var keep []string
		for tok := range strings.SplitSeq(v, ",") {
			if t := strings.TrimSpace(tok); t != "" && !isIdentityName(t) {
				keep = append(keep, t)
			}
		}
		if len(keep) > 0 {
			out = append(out, strings.Join(keep, ", "))
		}
	}
	return out
}

// passValues is one passing request's copy of the values of the headers
// the handler sets: the five identity headers and the three RateLimit-*
// ones, with the digits of the rate numbers, in one allocation (the only
// one the handler makes on a pass). The values are the request's own,
// never shared with another request: a handler such as header replaces a
// value in place (hdr[name][i] = ...), which on an array shared by a
// key's requests would rewrite the value for all of them. Each header
// gets its own element, capacity one: an append copies.
type passValues struct {
	vals   [len(identityHeaders) + 3]string
	digits [3 * 20]byte // three int64s in decimal, sign included
}

// setIdentity sets the identity headers and placeholders of a verified key.
func setIdentity(h http.Header, repl *caddy.Replacer, res *keystore.Result) {
	new(passValues).setIdentity(h, res)
	setPlaceholders(repl, res)
}

// setIdentity sets the identity headers of res's key in h.
func (pv *passValues) setIdentity(h http.Header, res *keystore.Result) {
	k := res.Key
	vals := pv.vals[:len(identityHeaders)]
	vals[0], vals[1], vals[2], vals[3], vals[4] = k.ID, k.Name, k.Type, k.Account, res.ScopeHeader
	for i, name := range identityHeaders {
		h[name] = vals[i : i+1 : i+1]
	}
}

// setRate sets RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset
// (see setRateHeaders) in h.
func (pv *passValues) setRate(h http.Header, st keystore.RateState) {
	b := strconv.AppendInt(pv.digits[:0], int64(st.Limit), 10)
	i := len(b)
	b = strconv.AppendInt(b, int64(st.Remaining), 10)
	j := len(b)
	b = strconv.AppendInt(b, int64(st.Reset), 10)
	// The digits are never written again: the strings can view them.
	nums := unsafe.String(unsafe.SliceData(b), len(b))
	vals := pv.vals[len(identityHeaders):]
	vals[0], vals[1], vals[2] = nums[:i], nums[i:j], nums[j:]
	h["Ratelimit-Limit"] = vals[0:1:1]
	h["Ratelimit-Remaining"] = vals[1:2:2]
	h["Ratelimit-Reset"] = vals[2:3:3]
}

// setPlaceholders sets the identity placeholders ({http.auth.user.id} and
// the rest) of the key res names: on a pass, and on a refusal that
// identified the key (revoked, expired, inactive account, scope, limits),
// so that the access log's user_id names the key that was refused.
func setPlaceholders(repl *caddy.Replacer, res *keystore.Result) {
	if repl == nil || res.Key == nil {
		return
	}
	repl.Map(placeholders(res))
}

// placeholders is the provider of res's key's identity placeholders, which
// the replacer calls only when a placeholder is used (the access log's
// user_id does). It is made once per cached key, with its values already
// converted to interfaces, and kept in the key's memo (immutable: the
// key's snapshot never changes), so that a request allocates nothing for
// it, whether a placeholder is used or not.
func placeholders(res *keystore.Result) func(string) (any, bool) {
	if res.Memo != nil {
		if f, ok := res.Memo.Load().(func(string) (any, bool)); ok {
			return f
		}
	}
	k := res.Key
	vals := [...]any{k.ID, k.Name, k.Account, k.Type, res.ScopeHeader}
	f := func(key string) (any, bool) {
		switch key {
		case "http.auth.user.id":
			return vals[0], true
		case "http.auth.user.name":
			return vals[1], true
		case "http.auth.user.account":
			return vals[2], true
		case "http.auth.user.type":
			return vals[3], true
		case "http.auth.user.scopes":
			return vals[4], true
		}
		return nil, false
	}
	if res.Memo != nil {
		res.Memo.Store(f)
	}
	return f
}
