package caddymodule_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// Hostile input on a real Caddy (siteConfig): credentials of every length
// and with every kind of byte, Authorization schemes, duplicate and
// conflicting headers, header names in any case, keys of another format,
// spoofed identity headers; and hostile admin requests through Caddy's
// admin endpoint and the apikey_admin mount. Requests are written as raw
// bytes on a TCP connection, because Go's client refuses to send most of
// them.
//
// Each case gets its documented answer: a refusal with its code, or a
// pass where the request is the equivalent of a valid one (Go's server
// canonicalizes header names and trims surrounding whitespace); or Go's
// server's own 400 (a control byte in a header) or 431 (headers over
// Caddy's max_header_size, 16 KiB by default, plus Go's 4 KiB of slack).
// Never a 5xx, never a pass of an invalid credential, and a refused
// request never reaches the upstream.

// hostileAnswer is what the test expects of a raw request.
type hostileAnswer int

const (
	answerPass    hostileAnswer = iota // 200 from the upstream
	answerGo400                        // Go's 400, before any handler
	answerGo431                        // Go's 431, before any handler
	answerRefusal                      // our JSON refusal with the case's code
)

// rawCase is one raw request: headers are complete lines without the
// final CRLF ("X-API-Key: ..."), written after the request line and Host.
type rawCase struct {
	name    string
	method  string // default GET
	path    string // default /contacts
	headers []string
	want    hostileAnswer
	status  int    // for answerRefusal
	code    string // for answerRefusal
}

// rawDo sends a raw HTTP/1.1 request to the site and reads the answer.
func rawDo(t *testing.T, method, path string, headers []string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(siteURL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: localhost:9080\r\n", method, path)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatalf("writing the request: %v", err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, body
}

// rawCheck runs a raw case and checks the answer and whether the upstream was
// reached; it returns the headers the upstream received.
func (e *env) rawCheck(t *testing.T, tc rawCase) http.Header {
	t.Helper()
	path := tc.path
	if path == "" {
		path = "/contacts"
	}
	method := tc.method
	if method == "" {
		method = "GET"
	}
	res, body := rawDo(t, method, path, tc.headers)
	got, hits := e.up.take()
	if res.StatusCode >= 500 {
		t.Errorf("%s: status %d: %s", tc.name, res.StatusCode, body)
	}
	switch tc.want {
	case answerPass:
		if res.StatusCode != 200 || hits != 1 {
			t.Errorf("%s: status %d, upstream hits %d, want a pass: %s", tc.name, res.StatusCode, hits, body)
		}
		return got
	case answerGo400, answerGo431:
		want := http.StatusBadRequest
		if tc.want == answerGo431 {
			want = http.StatusRequestHeaderFieldsTooLarge
		}
		if res.StatusCode != want {
			t.Errorf("%s: status %d, want Go's %d: %.200s", tc.name, res.StatusCode, want, body)
		}
	case answerRefusal:
		var m map[string]any
		if res.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d: %.200s", tc.name, res.StatusCode, tc.status, body)
		} else if err := json.Unmarshal(body, &m); err != nil || m["error"] != tc.code {
			t.Errorf("%s: body %.200s, want error %s", tc.name, body, tc.code)
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", tc.name, ct)
		}
	}
	if hits != 0 {
		t.Errorf("%s: refused (%d), but the upstream was reached", tc.name, res.StatusCode)
	}
	return nil
}

func refusalOf(code string) (hostileAnswer, int, string) {
	status := http.StatusUnauthorized
	if code == "insufficient_scope" || code == "account_inactive" {
		status = http.StatusForbidden
	}
	return answerRefusal, status, code
}

func refusalCase(name string, code string, headers ...string) rawCase {
	w, s, c := refusalOf(code)
	return rawCase{name: name, headers: headers, want: w, status: s, code: c}
}

func passCase(name string, headers ...string) rawCase {
	return rawCase{name: name, headers: headers, want: answerPass}
}

// hostileCred returns a credential of n bytes that is not a valid key:
// the start of a real key, then filler.
func hostileCred(key string, n int) string {
	if n <= len(key)-1 {
		return key[:n]
	}
	if n == len(key) {
		// The right length and alphabet, the wrong checksum.
		c := byte('A')
		if key[n-1] == 'A' {
			c = 'B'
		}
		return key[:n-1] + string(c)
	}
	return key + strings.Repeat("x", n-len(key))
}

func TestHostileCredentials(t *testing.T) {
	e := start(t)
	_, key := e.createKey(`{"name": "hostile", "scopes": ["contacts:write"], "rate_limit": {"unlimited": true}}`)
	_, reader := e.createKey(`{"name": "reader", "scopes": ["contacts:read"], "rate_limit": {"unlimited": true}}`)
	unknown, _ := keystore.DefaultFormat().Generate()
	otherPrefix, _ := keystore.Format{Prefix: "bme_", Length: 43, Checksum: true}.Generate()
	noChecksum, _ := keystore.Format{Prefix: "ak_", Length: 43, Checksum: false}.Generate()
	longer, _ := keystore.Format{Prefix: "ak_", Length: 64, Checksum: true}.Generate()
	X := func(v string) string { return "X-API-Key: " + v }
	B := func(v string) string { return "Authorization: Bearer " + v }

	var cases []rawCase
	// Every length, in the key header and as a bearer token. Up to 16 KiB
	// the handler sees it; from 24 KiB Go's server refuses the header
	// block (Caddy's max_header_size is 16 KiB, and Go allows 4 KiB more).
	for _, n := range []int{0, 1, 2, 3, 4, 15, 16, 22, 45, 50, 51, 52, 53, 54, 100, 255, 256, 257, 1000, 1024, 4096, 8192, 16384, 24 << 10, 60 << 10, 64 << 10} {
		cred := hostileCred(key, n)
		for _, via := range []struct {
			name string
			line func(string) string
		}{{"X-API-Key", X}, {"Bearer", B}} {
			tc := refusalCase(fmt.Sprintf("%s of length %d", via.name, n), "malformed_key", via.line(cred))
			switch {
			case n == 0:
				tc.code = "missing_key" // an empty header (Bearer with no token) is no key
			case n >= 24<<10:
				tc.want = answerGo431
			}
			cases = append(cases, tc)
		}
	}
	cases = append(cases,
		// Bytes that are not the key's alphabet. Go's server refuses
		// control bytes in a header value itself (400); non-ASCII
		// (obs-text) reaches the handler and is malformed.
		refusalCase("UTF-8 é in the key", "malformed_key", X(key[:10]+"é"+key[12:])),
		refusalCase("Latin-1 byte in the key", "malformed_key", X(key[:10]+"\xe9"+key[11:])),
		refusalCase("byte 0x80 after the key", "malformed_key", X(key+"\x80")),
		refusalCase("byte 0xff after the key", "malformed_key", X(key+"\xff")),
		refusalCase("all 0xff", "malformed_key", X(strings.Repeat("\xff", len(key)))),
		refusalCase("UTF-8 BOM before the key", "malformed_key", X("\ufeff"+key)),
		refusalCase("zero-width space in the key", "malformed_key", X(key[:20]+"\u200b"+key[20:])),
		refusalCase("full-width letters", "malformed_key", X("ａｋ＿"+key[3:])),
		refusalCase("inner tab", "malformed_key", X(key[:20]+"\t"+key[20:])),
		refusalCase("inner space", "malformed_key", X(key[:20]+" "+key[20:])),
		refusalCase("percent-encoded", "malformed_key", X(strings.ReplaceAll(key, "_", "%5F"))),
		refusalCase("quoted", "malformed_key", X(`"`+key+`"`)),
		refusalCase("two keys, comma-joined", "malformed_key", X(key+", "+key)),
		refusalCase("key;param", "malformed_key", X(key+";v=1")),
		refusalCase("obs-fold inside the key", "malformed_key", X(key[:20]), " "+key[20:]),
		refusalCase("lower-cased key", "malformed_key", X(strings.ToLower(key))),
		refusalCase("upper-cased prefix", "malformed_key", X("AK_"+key[3:])),
		refusalCase("valid key of another prefix", "malformed_key", X(otherPrefix)),
		refusalCase("another prefix as Bearer", "malformed_key", B(otherPrefix)),
		refusalCase("the format without its checksum", "malformed_key", X(noChecksum)),
		refusalCase("a longer key of the same prefix", "malformed_key", X(longer)),
		refusalCase("the key twice, glued", "malformed_key", X(key+key)),
		refusalCase("unknown well-formed key", "invalid_key", X(unknown)),
		refusalCase("unknown well-formed key as Bearer", "invalid_key", B(unknown)),
		rawCase{name: "NUL in the key", headers: []string{X(key[:10] + "\x00" + key[11:])}, want: answerGo400},
		rawCase{name: "NUL after the key", headers: []string{X(key + "\x00")}, want: answerGo400},
		rawCase{name: "escape byte in the key", headers: []string{X(key[:10] + "\x1b" + key[11:])}, want: answerGo400},
		rawCase{name: "DEL in the key", headers: []string{X(key[:10] + "\x7f" + key[11:])}, want: answerGo400},
		rawCase{name: "vertical tab after the key", headers: []string{X(key + "\v")}, want: answerGo400},
		rawCase{name: "bare CR inside the key", headers: []string{X(key[:10] + "\r" + key[10:])}, want: answerGo400},
		rawCase{name: "trailing CR before CRLF", headers: []string{X(key + "\r")}, want: answerGo400},
		rawCase{name: "trailing CR LF CR before CRLF", headers: []string{X(key + "\r\n\r")}, want: answerGo400},
		rawCase{name: "space before the colon", headers: []string{"X-API-Key : " + key}, want: answerGo400},
		rawCase{name: "NUL in the header name", headers: []string{"X-API-Key\x00: " + key}, want: answerGo400},

		// Surrounding whitespace is not part of a header value (RFC 9110
		// §5.5): Go trims it, so these are the valid key.
		passCase("spaces around the key", X("   "+key+"   ")),
		passCase("tabs around the key", X("\t"+key+"\t")),
		passCase("no space after the colon", "X-API-Key:"+key),
		passCase("bare LF line end", X(key)+"\n"+"Accept: */*"),
		passCase("obs-fold before the key", "X-API-Key:", " "+key),

		// Header names: Go canonicalizes them, so any case is the same
		// header; "_" is another header.
		passCase("lower-case header name", "x-api-key: "+key),
		passCase("upper-case header name", "X-API-KEY: "+key),
		passCase("mixed-case header name", "x-ApI-kEy: "+key),
		passCase("upper-case Authorization and scheme", "AUTHORIZATION: BEARER "+key),
		refusalCase("underscores in the header name", "missing_key", "X_API_KEY: "+key),
		refusalCase("a header name one letter off", "missing_key", "X-API-Keys: "+key),

		// Authorization schemes other than Bearer are not ours.
		refusalCase("Basic", "missing_key", "Authorization: Basic dXNlcjpwYXNz"),
		refusalCase("Basic carrying the key", "missing_key", "Authorization: Basic "+key),
		refusalCase("Digest", "missing_key", `Authorization: Digest username="u", response="x"`),
		refusalCase("Token scheme", "missing_key", "Authorization: Token "+key),
		refusalCase("ApiKey scheme", "missing_key", "Authorization: ApiKey "+key),
		refusalCase("the key as the scheme", "missing_key", "Authorization: "+key),
		refusalCase("Bearer glued to the key", "missing_key", "Authorization: Bearer"+key),
		refusalCase("Bearer with no token", "missing_key", "Authorization: Bearer"),
		refusalCase("Bearer with spaces only", "missing_key", "Authorization: Bearer    "),
		refusalCase("Bearers", "missing_key", "Authorization: Bearers "+key),
		refusalCase("Bearer, then more", "malformed_key", B(key+" extra")),
		refusalCase("Bearer, comma, Basic", "malformed_key", B(key+", Basic abc")),
		refusalCase("Bearer, quoted", "malformed_key", B(`"`+key+`"`)),
		refusalCase("Bearer token68 padding", "malformed_key", B(key+"==")),
		passCase("Bearer with two spaces", "Authorization: Bearer  "+key),
		passCase("Bearer with a tab", "Authorization: Bearer\t"+key),
		passCase("lower-case bearer", "Authorization: bearer "+key),
		passCase("Basic and Bearer headers", "Authorization: Basic dXNlcjpwYXNz", B(key)),
		rawCase{name: "Bearer on a route with bearer off", path: "/custom", headers: []string{B(key)}, want: answerRefusal, status: 401, code: "missing_key"},

		// Duplicates and conflicts.
		refusalCase("key header twice, same key", "malformed_key", X(key), X(key)),
		refusalCase("key header twice, different keys", "malformed_key", X(key), X(reader)),
		refusalCase("key header twice, one empty", "malformed_key", X(""), X(key)),
		refusalCase("key header twice, other case", "malformed_key", X(key), "x-api-key: "+key),
		refusalCase("Bearer twice, same key", "malformed_key", B(key), B(key)),
		refusalCase("Bearer twice, different keys", "malformed_key", B(key), B(reader)),
		refusalCase("Bearer twice, other case", "malformed_key", B(key), "authorization: bearer "+key),
		refusalCase("both headers, different keys", "malformed_key", X(key), B(reader)),
		refusalCase("both headers, valid and unknown", "malformed_key", X(key), B(unknown)),
		refusalCase("both headers, valid and malformed", "malformed_key", X(key), B("ak_nope")),
		refusalCase("both headers, malformed and valid", "malformed_key", X("ak_nope"), B(key)),
		passCase("both headers, same key", X(key), B(key)),
		passCase("empty key header, Bearer key", X(""), B(key)),
		refusalCase("empty key header, empty Bearer", "missing_key", X(""), "Authorization: Bearer"),

		// Scope after a valid credential in a hostile shape.
		rawCase{name: "reader key, lower-case header name", headers: []string{"x-api-key: " + reader}, want: answerPass, path: "/contacts"},
	)
	for _, tc := range cases {
		e.rawCheck(t, tc)
	}

	// The header that carried the key never reaches the upstream. With a
	// Basic Authorization next to the Bearer one (two Authorization
	// fields: not valid HTTP, it is a singleton), both are removed today;
	// the docs say a Basic header is "left in place" (reported).
	got := e.rawCheck(t, passCase("Basic and Bearer: what the upstream gets", "Authorization: Basic dXNlcjpwYXNz", B(key)))
	for _, v := range got["Authorization"] {
		if strings.Contains(v, key) {
			t.Errorf("Basic and Bearer: the upstream got the key: %q", got["Authorization"])
		}
	}
	// A key header on a route that reads another one is not ours.
	got = e.rawCheck(t, rawCase{name: "X-Token route", path: "/custom", headers: []string{"X-Token: " + key, X("not-ours")}, want: answerPass})
	if len(got["X-Token"]) != 0 || got.Get("X-Api-Key") != "not-ours" {
		t.Errorf("X-Token route: upstream X-Token %q, X-Api-Key %q", got["X-Token"], got.Get("X-Api-Key"))
	}

	// Methods: on a bare-resource route, only GET, HEAD and OPTIONS read;
	// any other method, including unknown ones and a lower-case "get"
	// (methods are case-sensitive), needs write. A reader key, sent with
	// a hostile header name, passes only the reads.
	methods := []rawCase{
		{method: "HEAD", want: answerPass},
		{method: "OPTIONS", want: answerPass},
		{method: "POST", want: answerRefusal},
		{method: "TRACE", want: answerRefusal},
		{method: "PROPFIND", want: answerRefusal},
		{method: "get", want: answerRefusal},
		{method: "Get", want: answerRefusal},
		{method: "DELETE", want: answerRefusal},
	}
	for _, tc := range methods {
		tc.name = tc.method + " as a reader"
		tc.headers = []string{"X-API-KEY: " + reader, "Content-Length: 0"}
		if tc.want == answerRefusal {
			tc.status, tc.code = 403, "insufficient_scope"
		}
		e.rawCheck(t, tc)
	}

	// With accept_foreign_keys, 16 to 256 printable ASCII characters are
	// looked up (invalid_key); anything else is still malformed.
	foreign := strings.Replace(siteConfig, "\t\tstorage %[2]s\n", "\t\tstorage %[2]s\n\t\taccept_foreign_keys\n", 1)
	e.load(foreign)
	var fcases []rawCase
	for _, n := range []int{1, 15, 16, 17, 52, 255, 256, 257, 1000, 8192} {
		code := "malformed_key"
		if n >= keystore.MinForeignLen && n <= keystore.MaxForeignLen {
			code = "invalid_key"
		}
		fcases = append(fcases, refusalCase(fmt.Sprintf("foreign of length %d", n), code, X(hostileCred(key, n))))
	}
	fcases = append(fcases,
		refusalCase("foreign with a non-ASCII byte", "malformed_key", X(strings.Repeat("a", 20)+"é")),
		refusalCase("foreign with an inner space", "malformed_key", X(strings.Repeat("a", 10)+" "+strings.Repeat("a", 10))),
		refusalCase("foreign with an inner tab", "malformed_key", X(strings.Repeat("a", 10)+"\t"+strings.Repeat("a", 10))),
		passCase("the real key", X(key)),
	)
	for _, tc := range fcases {
		e.rawCheck(t, tc)
	}
	t.Logf("%d hostile credential cases (+2 upstream checks, %d methods, %d with accept_foreign_keys)", len(cases), len(methods), len(fcases))
}

// TestHostileTrailers: identity headers and credentials sent as request
// trailers (HTTP/1.1 chunked bodies) do not reach the backend, which
// reverse_proxy forwards trailers to, whether or not the Trailer header
// announces them: Go keeps every trailer field once one is announced.
// (They did: X-Api-Key-Id: evil and the plaintext key arrived as
// trailers.) A trailer of another name still arrives.
func TestHostileTrailers(t *testing.T) {
	e := start(t)
	_, key := e.createKey(`{"name": "trailers", "scopes": ["contacts:write"], "rate_limit": {"unlimited": true}}`)
	for _, tc := range []struct {
		name     string
		announce string
		trailers []string
	}{
		{"announced", "X-Foo, X-Api-Key-Id, X-Api-Account, X-Api-Scopes, X-Api-Key, Authorization", []string{"X-Foo: 1", "X-Api-Key-Id: evil", "X-Api-Account: victim", "X-Api-Scopes: *:delete", "X-Api-Key: " + key, "Authorization: Bearer " + key}},
		{"not announced", "X-Foo", []string{"X-Foo: 1", "X-Api-Key-Id: evil", "x_api_account: victim", "X-API-KEY-NAME: admin", "X-Api-Key: " + key}},
		{"underscores and case", "X-Foo, x_api_key_id", []string{"X-Foo: 1", "x_api_key_id: evil", "X-API-SCOPES: *:delete"}},
		// The outside review's finding: dots for dashes, and the key
		// header with underscores.
		{"dots and the key header folded", "X-Foo", []string{"X-Foo: 1", "X.Api.Key.Id: evil", "X.Api.Scopes: *:delete", "X_Api_Key: " + key, "x.api.account: victim"}},
	} {
		conn, err := net.DialTimeout("tcp", strings.TrimPrefix(siteURL, "http://"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
		req := "POST /contacts HTTP/1.1\r\nHost: localhost:9080\r\nX-API-Key: " + key + "\r\nTrailer: " + tc.announce +
			"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n" + strings.Join(tc.trailers, "\r\n") + "\r\n\r\n"
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "POST"})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		conn.Close()
		e.up.mu.Lock()
		trailer := e.up.trailer
		e.up.mu.Unlock()
		_, hits := e.up.take()
		if res.StatusCode != 200 || hits != 1 {
			t.Fatalf("%s: status %d, upstream hits %d: %s", tc.name, res.StatusCode, hits, body)
		}
		for k, vs := range trailer {
			if identityLike(k) != "" || foldLikeBackend(k) == "x-api-key" || strings.EqualFold(k, "Authorization") || strings.Contains(strings.Join(vs, " "), key) {
				t.Errorf("%s: the upstream got the trailer %s: %q", tc.name, k, vs)
			}
		}
		if trailer.Get("X-Foo") != "1" {
			t.Errorf("%s: the upstream's trailers %v lack X-Foo: 1", tc.name, trailer)
		}
	}
}

// foldLikeBackend folds a header name as a backend might: lower case, and
// _ and . read as -.
func foldLikeBackend(name string) string {
	return strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(name))
}

// identityLike folds a header name as a backend might (foldLikeBackend)
// and returns the identity header it reads as, or "".
func identityLike(name string) string {
	n := foldLikeBackend(name)
	for _, canon := range []string{"X-Api-Key-Id", "X-Api-Key-Name", "X-Api-Key-Type", "X-Api-Account", "X-Api-Scopes"} {
		if strings.ToLower(canon) == n {
			return canon
		}
	}
	return ""
}

// TestHostileIdentitySpoofing: identity headers sent by the client, in any
// case, with underscores, several times, or named in Connection (which
// would make reverse_proxy drop the headers the proxy sets). On a pass the
// upstream sees exactly what the proxy set; on a refusal it sees nothing.
func TestHostileIdentitySpoofing(t *testing.T) {
	e := start(t)
	id, key := e.createKey(`{"name": "CRM sync", "type": "mcp", "scopes": ["contacts:write", "billing:read"], "rate_limit": {"unlimited": true}}`)
	want := map[string]string{
		"X-Api-Key-Id":   id,
		"X-Api-Key-Name": "CRM sync",
		"X-Api-Key-Type": "mcp",
		"X-Api-Account":  "default",
		"X-Api-Scopes":   "billing:read contacts:write",
	}
	spoofs := []struct {
		name    string
		headers []string
	}{
		{"canonical", []string{"X-Api-Key-Id: evil", "X-Api-Key-Name: admin", "X-Api-Key-Type: root", "X-Api-Account: victim", "X-Api-Scopes: *:delete"}},
		{"lower case", []string{"x-api-key-id: evil", "x-api-account: victim", "x-api-scopes: *:delete"}},
		{"upper case", []string{"X-API-KEY-ID: evil", "X-API-ACCOUNT: victim", "X-API-SCOPES: *:delete", "X-API-KEY-NAME: admin", "X-API-KEY-TYPE: root"}},
		{"mixed case", []string{"x-Api-KEY-id: evil", "X-aPi-AcCoUnT: victim"}},
		{"underscores", []string{"X_Api_Key_Id: evil", "x_api_account: victim", "X_API_SCOPES: *:delete", "X-Api_Key-Name: admin", "x_api-key_type: root"}},
		{"dots", []string{"X.Api.Key.Id: evil", "x.api.account: victim", "X.API.SCOPES: *:delete", "X-Api.Key-Name: admin", "x.api_key-type: root"}},
		{"several times", []string{"X-Api-Key-Id: evil", "X-Api-Key-Id: evil2", "x-api-key-id: evil3", "X_Api_Key_Id: evil4"}},
		{"empty values", []string{"X-Api-Key-Id:", "X-Api-Account:"}},
		{"comma lists", []string{"X-Api-Key-Id: evil, " + id, "X-Api-Scopes: *:delete, *:write"}},
		{"named in Connection", []string{"Connection: X-Api-Key-Id"}},
		{"all named in Connection", []string{"Connection: X-Api-Key-Id, X-Api-Key-Name, X-Api-Key-Type, X-Api-Account, X-Api-Scopes"}},
		{"Connection: close and a name", []string{"Connection: close, X-Api-Key-Id"}},
		{"Connection: keep-alive and names", []string{"Connection: keep-alive, x-api-account,X-API-SCOPES"}},
		{"several Connection headers", []string{"Connection: keep-alive", "Connection: X-Api-Account", "connection: X-Api-Scopes, X-Api-Key-Id"}},
		{"Connection with underscores", []string{"Connection: X_Api_Key_Id, x_api_account"}},
		{"Connection and the headers", []string{"Connection: X-Api-Key-Id", "X-Api-Key-Id: evil", "X-Api-Account: victim"}},
		{"Connection naming the key header", []string{"Connection: X-Api-Key"}},
		{"everything at once", []string{"Connection: close, X-Api-Key-Id", "Connection: X-Api-Account", "x-api-key-id: evil", "X_API_ACCOUNT: victim", "X-Api-Scopes: *:delete", "X-API-SCOPES: *:write"}},
	}
	unknown, _ := keystore.DefaultFormat().Generate()
	cases := 0
	for _, sp := range spoofs {
		for _, cred := range []struct {
			name string
			line string
			ok   bool
		}{
			{"X-API-Key", "X-API-Key: " + key, true},
			{"Bearer", "Authorization: Bearer " + key, true},
			{"unknown key", "X-API-Key: " + unknown, false},
			{"no key", "", false},
		} {
			cases++
			name := sp.name + ", " + cred.name
			headers := append([]string(nil), sp.headers...)
			if cred.line != "" {
				headers = append(headers, cred.line)
			}
			tc := rawCase{name: name, headers: headers, want: answerPass}
			if !cred.ok {
				code := "invalid_key"
				if cred.line == "" {
					code = "missing_key"
				}
				tc.want, tc.status, tc.code = refusalOf(code)
			}
			got := e.rawCheck(t, tc)
			if !cred.ok {
				continue
			}
			for canon, v := range want {
				if vs := got[canon]; len(vs) != 1 || vs[0] != v {
					t.Errorf("%s: upstream %s = %q, want [%q]", name, canon, vs, v)
				}
			}
			for k, vs := range got {
				if canon := identityLike(k); canon != "" && k != canon {
					t.Errorf("%s: upstream got a spoofed %s: %q", name, k, vs)
				}
				if strings.EqualFold(k, "X-Api-Key") || strings.EqualFold(k, "Authorization") {
					t.Errorf("%s: upstream got the credential header %s", name, k)
				}
			}
		}
	}
	t.Logf("%d spoofing cases", cases)
}

// TestHostileAdminThroughCaddy: hostile requests through Caddy's admin
// endpoint (/apikey/) and the apikey_admin mount (/manage/): each gets its
// documented 4xx and nothing changes. The adminapi package's own tests
// cover the full tables; these check that the mounts add no way around
// them (prefix stripping, Caddy's path handling, its body handling).
func TestHostileAdminThroughCaddy(t *testing.T) {
	e := start(t)
	e.admin("POST", "/accounts", `{"id": "acme"}`, http.StatusCreated)
	id, _ := e.createKey(`{"name": "default key", "scopes": ["contacts:read"]}`)
	acmeID, _ := e.createKey(`{"name": "acme key", "account": "acme", "scopes": ["contacts:read"]}`)
	_, mgr := e.createKey(`{"name": "acme manager", "account": "acme", "scopes": ["apikeys:delete", "apikeys:write", "*:write"], "rate_limit": {"unlimited": true}}`)

	// snapshot is every key (without last_used_at, which the manager's
	// own calls update), every audit trail and every account.
	snapshot := func() string {
		t.Helper()
		keys := e.admin("GET", "/keys?limit=1000", "", http.StatusOK)["keys"].([]any)
		var sb strings.Builder
		for _, k := range keys {
			m := k.(map[string]any)
			delete(m, "last_used_at")
			b, _ := json.Marshal(m)
			sb.Write(b)
			b, _ = json.Marshal(e.admin("GET", "/keys/"+m["id"].(string)+"/audit", "", http.StatusOK))
			sb.Write(b)
		}
		b, _ := json.Marshal(e.admin("GET", "/accounts", "", http.StatusOK))
		sb.Write(b)
		return sb.String()
	}
	before := snapshot()

	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	type adminCase struct {
		name         string
		manage       bool // through /manage/ with the manager's key, else the admin endpoint
		method, path string
		body         string
		status       int
		code         string
	}
	cases := []adminCase{
		{"deep arrays", false, "POST", "/keys", `{"name": ` + deep(10_000) + `}`, 400, "invalid_request"},
		{"deep objects", false, "POST", "/keys", strings.Repeat(`{"a":`, 10_000) + "1" + strings.Repeat("}", 10_000), 400, "invalid_request"},
		{"deep import", false, "POST", "/keys/import", deep(1_000_000), 400, "invalid_request"},
		{"over the limit", false, "POST", "/keys", `{"name": "` + strings.Repeat("a", 64<<10) + `", "scopes": ["a:read"]}`, 413, "payload_too_large"},
		{"duplicate member", false, "POST", "/keys", `{"name": "a", "name": "b", "scopes": ["a:read"]}`, 400, "invalid_request"},
		{"unknown member", false, "PATCH", "/keys/" + id, `{"account": "acme"}`, 400, "invalid_request"},
		{"wrong type", false, "PATCH", "/keys/" + id, `{"active": "false"}`, 400, "invalid_request"},
		{"huge number", false, "PATCH", "/keys/" + id, `{"rate_limit": {"requests": 1e400, "window": "1s"}}`, 400, "invalid_request"},
		{"2^63", false, "POST", "/accounts", `{"id": "x", "rate_limit": {"requests": 9223372036854775808, "window": "1s"}}`, 400, "invalid_request"},
		{"encoded traversal", false, "GET", "/keys/..%2faccounts", "", 404, "not_found"},
		{"encoded traversal, DELETE", false, "DELETE", "/keys/..%2f" + id, "", 404, "not_found"},
		{"encoded slash before revoke", false, "POST", "/keys/" + id + "%2frevoke", "", 405, "method_not_allowed"},
		{"trailing slash", false, "GET", "/keys/", "", 404, "not_found"},
		{"method not allowed", false, "PUT", "/keys/" + id, `{}`, 405, "method_not_allowed"},
		{"operator: unknown id", false, "DELETE", "/keys/01a202ff-bf60-7804-908e-585442779731", "", 404, "not_found"},
		{"default cannot go", false, "DELETE", "/accounts/default", "", 409, "conflict"},
		{"manage: another account's key", true, "GET", "/keys/" + id, "", 404, "not_found"},
		{"manage: delete another account's key", true, "DELETE", "/keys/" + id, "", 404, "not_found"},
		{"manage: revoke another account's key", true, "POST", "/keys/" + id + "/revoke", "", 404, "not_found"},
		{"manage: regenerate another account's key", true, "POST", "/keys/" + id + "/regenerate", `{"grace_period": "1h"}`, 404, "not_found"},
		{"manage: patch another account's key", true, "PATCH", "/keys/" + id, `{"name": "mine"}`, 404, "not_found"},
		// Caddy's handle_path hands the API the cleaned path (/accounts),
		// which a key caller may not call.
		{"manage: encoded traversal", true, "GET", "/keys/..%2faccounts", "", 403, "forbidden"},
		{"manage: encoded traversal to another account's key", true, "GET", "/keys/" + acmeID + "%2f..%2f" + id, "", 404, "not_found"},
		{"manage: encoded traversal to audit", true, "GET", "/keys/x%2f..%2f" + id + "/audit", "", 404, "not_found"},
		{"manage: accounts", true, "GET", "/accounts", "", 403, "forbidden"},
		{"manage: import", true, "POST", "/keys/import", `[]`, 403, "forbidden"},
		{"manage: create elsewhere", true, "POST", "/keys", `{"name": "x", "account": "default", "scopes": ["contacts:read"]}`, 403, "forbidden"},
		{"manage: deep nesting", true, "POST", "/keys", `{"name": ` + deep(10_000) + `}`, 400, "invalid_request"},
		{"manage: over the limit", true, "PATCH", "/keys/" + acmeID, `{"name": "` + strings.Repeat("a", 64<<10) + `"}`, 413, "payload_too_large"},
		{"manage: duplicate member", true, "PATCH", "/keys/" + acmeID, `{"name": "a", "name": "b"}`, 400, "invalid_request"},
		{"manage: method not allowed", true, "OPTIONS", "/keys", "", 405, "method_not_allowed"},
	}
	for _, tc := range cases {
		url, h := adminURL+tc.path, http.Header(nil)
		if tc.manage {
			url, h = siteURL+"/manage"+tc.path, hdr("X-Api-Key", mgr)
		}
		start := time.Now()
		res, body := e.do(tc.method, url, h, tc.body)
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("%s: took %v", tc.name, d)
		}
		if res.StatusCode != tc.status || body["error"] != tc.code {
			t.Errorf("%s: %s %s: %d %v, want %d %s", tc.name, tc.method, tc.path, res.StatusCode, body, tc.status, tc.code)
		}
		if tc.status == 405 && res.Header.Get("Allow") == "" {
			t.Errorf("%s: 405 without Allow", tc.name)
		}
	}
	// Caddy routes on the cleaned, unescaped path, so a dot segment can
	// move a request from one route to another ("/manage/..%2fcontacts" is
	// routed as /contacts). Every route of the site needs a key, so no
	// such path reaches the upstream or the admin API without one. The
	// handler that Caddy picks refuses a path that still holds an encoded
	// slash or a dot segment (400 invalid_path) before it looks for a
	// key; handle_path's strip resolves them itself (/manage/./keys,
	// /manage%2fkeys), so those meet the key check.
	paths := []struct {
		path    string
		refused bool // 400 invalid_path, whatever the key
	}{
		{"/manage/..%2fcontacts", true}, {"/manage/%2e%2e/contacts", true}, {"/manage/keys/..%2f..%2f..%2fanything", true},
		{"/contacts/..%2f..%2fmanage/keys", true}, {"/%2e%2e/manage/keys", true}, {"/manage%2fkeys", false}, {"//manage/keys", false},
		{"/manage/./keys", false}, {"/Manage/keys", false}, {"/MANAGE/KEYS", false}, {"/manage/keys%00", false}, {"/manage/keys/" + id + "%2f..", false},
		{"/read/..%2fcontacts", true}, {"/custom/..%2fcontacts", true}, {"/fwd/..%2f..%2f", true},
	}
	unknown, _ := keystore.DefaultFormat().Generate()
	for _, p := range paths {
		for _, h := range []http.Header{nil, hdr("X-Api-Key", unknown)} {
			res, body := e.do("GET", siteURL+p.path, h, "")
			status, code := 401, "missing_key"
			switch {
			case p.refused:
				status, code = 400, "invalid_path"
			case h != nil:
				code = "invalid_key"
			}
			e.expect("no key through "+p.path, res, body, status, code, false)
		}
	}
	if after := snapshot(); after != before {
		t.Errorf("the store changed:\nbefore %s\nafter  %s", before, after)
	}
	t.Logf("%d hostile admin cases through Caddy, %d paths without a valid key", len(cases), 2*len(paths))
}
