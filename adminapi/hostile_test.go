package adminapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Hostile input on the admin API, over a real store: every request below
// must get its documented 4xx (the JSON error shape, a 405 with Allow where
// the path exists), quickly, and change nothing: the store's snapshot
// (every key record with its hash, every audit trail, every account) is
// the same after the requests as before. GETs that succeed are in the
// tables too, as the documented status of a method on a path.

// hostileCase is one request and its documented answer.
type hostileCase struct {
	name   string
	caller *Caller // nil: the operator
	method string
	path   string
	body   any // as req.body
	ctype  string
	mod    func(*http.Request)
	status int
	code   string   // the error code; "" for a success
	field  string   // the error's field, if documented
	allow  []string // on 405: the Allow header's methods
}

// hostileSlow is far above what any of these requests takes (tens of
// milliseconds, a few hundred for the 64 MiB import), so that only a
// runaway (a quadratic scan, a recursion) trips it, not a loaded machine.
const hostileSlow = 20 * time.Second

// runHostile runs the cases and checks each answer.
func runHostile(t *testing.T, e *env, cases []hostileCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			et := *e
			et.t = t
			c := op
			if tc.caller != nil {
				c = *tc.caller
			}
			start := time.Now()
			r := et.do(c, req{method: tc.method, path: tc.path, body: tc.body, ctype: tc.ctype, mod: tc.mod})
			if d := time.Since(start); d > hostileSlow {
				t.Errorf("%s %s took %v", tc.method, tc.path, d)
			}
			checkHostile(t, tc, r)
		})
	}
}

func checkHostile(t *testing.T, tc hostileCase, r resp) {
	t.Helper()
	if r.status != tc.status {
		t.Fatalf("%s %s: status %d, want %d: %.300s", tc.method, tc.path, r.status, tc.status, r.body)
	}
	if tc.code == "" {
		return
	}
	if tc.method == http.MethodHead {
		// No body; the status is the answer.
		return
	}
	errorIs(t, r, tc.status, tc.code, tc.field)
	if tc.status == http.StatusMethodNotAllowed {
		got := strings.Split(r.header.Get("Allow"), ", ")
		slices.Sort(got)
		want := slices.Clone(tc.allow)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("Allow %q, want %q", r.header.Get("Allow"), want)
		}
	}
}

// hostileEnv is a store with a key in the default account, an account
// acme with a key, and a key caller of acme with every apikeys scope.
type hostileEnv struct {
	*env
	id     string // a key of the default account
	acmeID string // a key of acme
	mgr    Caller // a key caller of acme
}

func newHostileEnv(t *testing.T) *hostileEnv {
	e := newEnv(t)
	e.account("acme")
	h := &hostileEnv{env: e}
	h.id = e.createKey(map[string]any{"name": "target", "scopes": []string{"contacts:read"}})["id"].(string)
	h.acmeID = e.createKey(map[string]any{"name": "acme key", "account": "acme", "scopes": []string{"contacts:read"}})["id"].(string)
	h.mgr = e.keyCaller("acme", "apikeys:delete", "apikeys:write", "*:delete", "*:write")
	return h
}

// unchanged runs f and fails if the store changed.
func (h *hostileEnv) unchanged(t *testing.T, f func()) {
	t.Helper()
	before := h.snapshot()
	f()
	if after := h.snapshot(); after != before {
		t.Errorf("the store changed:\nbefore: %s\nafter:  %s", before, after)
	}
}

// TestHostileMethodsAndPaths: every method on every path, as the operator
// and as a key caller. A path that exists answers 405 with its Allow for a
// method it does not serve; a path that does not exist answers 404 for
// every method; the methods it serves get their documented answer (the
// mutating ones are sent with a body that is refused, or at an id that
// does not exist).
func TestHostileMethodsAndPaths(t *testing.T) {
	h := newHostileEnv(t)
	id, unknownID := h.id, "01a202ff-bf60-7804-908e-585442779731"
	methods := []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PROPFIND"}
	type pathSpec struct {
		path  string
		allow []string // nil: no such path
		// serve gives the case for a method in allow.
		serve map[string]hostileCase
	}
	bad := `{"bogus": 1}` // an unknown field: 400 on every body
	paths := []pathSpec{
		{"/keys", []string{"GET", "HEAD", "POST"}, map[string]hostileCase{
			"GET":  {status: 200},
			"HEAD": {status: 200},
			"POST": {body: bad, status: 400, code: "invalid_request", field: "bogus"},
		}},
		// POST /keys/import, and /keys/{id} with the id "import".
		{"/keys/import", []string{"DELETE", "GET", "HEAD", "PATCH", "POST"}, map[string]hostileCase{
			"GET":    {status: 404, code: "not_found"},
			"HEAD":   {status: 404, code: "not_found"},
			"POST":   {body: `[` + bad + `]`, status: 400, code: "invalid_request", field: "keys[0].bogus"},
			"PATCH":  {body: `{}`, status: 404, code: "not_found"},
			"DELETE": {status: 404, code: "not_found"},
		}},
		{"/keys/" + id, []string{"DELETE", "GET", "HEAD", "PATCH"}, map[string]hostileCase{
			"GET":    {status: 200},
			"HEAD":   {status: 200},
			"PATCH":  {body: bad, status: 400, code: "invalid_request", field: "bogus"},
			"DELETE": {path: "/keys/" + unknownID, status: 404, code: "not_found"},
		}},
		{"/keys/" + id + "/revoke", []string{"POST"}, map[string]hostileCase{
			"POST": {body: bad, status: 400, code: "invalid_request", field: "bogus"},
		}},
		{"/keys/" + id + "/activate", []string{"POST"}, map[string]hostileCase{
			"POST": {body: bad, status: 400, code: "invalid_request", field: "bogus"},
		}},
		{"/keys/" + id + "/regenerate", []string{"POST"}, map[string]hostileCase{
			"POST": {body: `{"grace_period": "-1h"}`, status: 400, code: "invalid_request", field: "grace_period"},
		}},
		{"/keys/" + id + "/audit", []string{"GET", "HEAD"}, map[string]hostileCase{
			"GET":  {status: 200},
			"HEAD": {status: 200},
		}},
		{"/accounts", []string{"GET", "HEAD", "POST"}, map[string]hostileCase{
			"GET":  {status: 200},
			"HEAD": {status: 200},
			"POST": {body: bad, status: 400, code: "invalid_request", field: "bogus"},
		}},
		{"/accounts/acme", []string{"DELETE", "GET", "HEAD", "PATCH"}, map[string]hostileCase{
			"GET":    {status: 200},
			"HEAD":   {status: 200},
			"PATCH":  {body: `{"status": "closed"}`, status: 400, code: "invalid_request", field: "status"},
			"DELETE": {status: 409, code: "conflict"}, // it has a key
		}},
		{"/accounts/default", []string{"DELETE", "GET", "HEAD", "PATCH"}, map[string]hostileCase{
			"GET":    {status: 200},
			"HEAD":   {status: 200},
			"PATCH":  {body: `{"name": ""}`, status: 400, code: "invalid_request", field: "name"},
			"DELETE": {status: 409, code: "conflict"},
		}},
		// No such paths.
		{path: "/"}, {path: "/keys/" + id + "/revoke/x"}, {path: "/key"}, {path: "/keys/"}, {path: "/keys/" + id + "/"},
		{path: "/keys/" + id + "/audit/x"}, {path: "/keys/" + id + "/delete"}, {path: "/keys/" + id + "/revoke/"},
		{path: "/accounts/"}, {path: "/accounts/acme/keys"}, {path: "/apikey/keys"}, {path: "//keys"},
		{path: "/keys//revoke"}, {path: "/KEYS"}, {path: "/Keys/" + id}, {path: "/keys/./" + id},
		{path: "/keys/" + id + "/../" + id}, {path: "/keys/import/x"}, {path: "/accounts/acme/"},
	}
	var cases, mgrCases []hostileCase
	for _, p := range paths {
		for _, m := range methods {
			name, path := m+" "+p.path, p.path
			var tc hostileCase
			switch {
			case p.allow == nil:
				tc = hostileCase{status: 404, code: "not_found"}
			case slices.Contains(p.allow, m):
				tc = p.serve[m]
			default:
				tc = hostileCase{status: 405, code: "method_not_allowed", allow: p.allow}
			}
			if m == "CONNECT" && p.path == "/keys//revoke" {
				// Go's ServeMux does not clean the path of a CONNECT, so
				// the empty segment is an (empty) id of /keys/{id}/revoke:
				// 405 instead of the 404 of every other method. Still a
				// 4xx, and nothing is revoked.
				tc = hostileCase{status: 405, code: "method_not_allowed", allow: []string{"POST"}}
			}
			tc.name, tc.method = name, m
			if tc.path == "" {
				tc.path = path
			}
			cases = append(cases, tc)

			// A key caller of acme, with every apikeys scope: the same
			// 404 and 405 (path and method are checked first), then 403
			// on the operator-only endpoints and 404 on the default
			// account's key, whatever the method.
			mc := tc
			mc.caller = &h.mgr
			switch {
			case tc.status == 404 || tc.status == 405:
			case strings.HasPrefix(p.path, "/accounts") || (p.path == "/keys/import" && m == "POST"):
				mc = hostileCase{name: name, caller: &h.mgr, method: m, path: tc.path, body: tc.body, status: 403, code: "forbidden"}
			case strings.HasPrefix(p.path, "/keys/"+id):
				mc.status, mc.code, mc.field = 404, "not_found", ""
				if m == "POST" || m == "PATCH" {
					// The body's syntax and members are checked before
					// the key's existence; a value such as grace_period's
					// after it.
					mc.status, mc.code, mc.field = tc.status, tc.code, tc.field
					if strings.HasSuffix(p.path, "/regenerate") {
						mc.status, mc.code, mc.field = 404, "not_found", ""
					}
				}
			}
			mgrCases = append(mgrCases, mc)
		}
	}
	h.unchanged(t, func() {
		t.Run("operator", func(t *testing.T) { runHostile(t, h.env, cases) })
		t.Run("key caller", func(t *testing.T) { runHostile(t, h.env, mgrCases) })
	})
	t.Logf("%d method × path cases", len(cases)+len(mgrCases))
}

// TestHostilePathTraversal: ids that try to climb out of /keys/{id}, with
// dots, encoded dots and slashes, NUL, backslashes and overlong UTF-8. The
// API routes on the escaped path: a path that is not clean is 404 (never
// a redirect), and an encoded slash or dot does not split a segment, so
// "..%2faccounts" is the id "../accounts" of /keys/{id}: a key that does
// not exist (404), or a method /keys/{id} does not serve (405). None
// reaches another endpoint, none changes anything.
func TestHostilePathTraversal(t *testing.T) {
	h := newHostileEnv(t)
	id := h.id
	const (
		unclean = iota // not a clean path: 404 for every method
		keyID          // one segment after /keys/: the id of /keys/{id}
		acctID         // one segment after /accounts/
		noRoute        // clean, but no such endpoint
	)
	paths := []struct {
		path string
		kind int
	}{
		{"/keys/../accounts", unclean},
		{"/keys/%2e%2e/accounts", noRoute}, // escaped: three segments, not cleaned
		{"/keys/%2E%2E/x", noRoute},
		{"/keys/x/../" + id, unclean},
		{"/keys/" + id + "/..", unclean},
		{"/keys/./" + id, unclean},
		{"/keys/" + id + "/%2e%2e", noRoute},
		{"/keys/%c0%ae%c0%ae/accounts", noRoute},
		{"/keys/..%2f", keyID},
		{"/keys/..%2faccounts", keyID},
		{"/keys/..%2F..%2Faccounts%2Facme", keyID},
		{"/keys/%2e%2e%2f" + id, keyID},
		{"/keys/x%2f..%2f" + id, keyID},
		{"/keys/.%2f" + id, keyID},
		{"/keys/" + id + "%00", keyID},
		{"/keys/%00" + id, keyID},
		{"/keys/..%5caccounts", keyID},
		{"/keys/..\\accounts", keyID},
		{"/keys/%2e", keyID},
		{"/keys/%2e%2e", keyID},
		{"/keys/%20", keyID},
		{"/keys/" + id + "%2f", keyID},
		{"/keys/%2f" + id, keyID},
		{"/keys/" + id + "%2frevoke", keyID},
		{"/keys/" + id + "%2Fregenerate", keyID},
		{"/keys/" + id + "%2factivate", keyID},
		{"/keys/" + id + "%2faudit", keyID},
		{"/accounts/..%2fkeys%2f" + id, acctID},
		{"/accounts/%2e%2e", acctID},
		{"/accounts/acme%2f..%2fdefault", acctID},
		{"/accounts/acme%2f", acctID},
		{"/accounts/default%00", acctID},
	}
	var cases []hostileCase
	for _, p := range paths {
		for _, m := range []string{"GET", "DELETE", "PATCH", "POST"} {
			for _, caller := range []*Caller{nil, &h.mgr} {
				tc := hostileCase{name: m + " " + p.path, caller: caller, method: m, path: p.path, status: 404, code: "not_found"}
				if caller != nil {
					tc.name = "key caller " + tc.name
				}
				if m == "PATCH" || m == "POST" {
					tc.body = `{}`
				}
				switch {
				case p.kind == keyID && m == "POST":
					tc.status, tc.code, tc.allow = 405, "method_not_allowed", []string{"DELETE", "GET", "HEAD", "PATCH"}
				case p.kind == acctID && m == "POST":
					tc.status, tc.code, tc.allow = 405, "method_not_allowed", []string{"DELETE", "GET", "HEAD", "PATCH"}
				case p.kind == acctID && caller != nil:
					tc.status, tc.code = 403, "forbidden" // operator only
				}
				cases = append(cases, tc)
			}
		}
	}
	h.unchanged(t, func() { runHostile(t, h.env, cases) })
	for _, c := range []string{h.id, h.acmeID} {
		if got := h.verifyID(c); got != "" {
			t.Errorf("key %s: %s", c, got)
		}
	}
	t.Logf("%d traversal cases", len(cases))
}

// verifyID checks that a key still exists and is active.
func (h *hostileEnv) verifyID(id string) string {
	k, err := h.store.Key(id)
	if err != nil {
		return err.Error()
	}
	if k.RevokedAt != nil {
		return "revoked"
	}
	return ""
}

// TestHostileOtherAccount: a key caller of acme, with every apikeys scope
// and *:delete, names the default account's key: 404 on every endpoint,
// exactly like an unknown id; an empty page for ?account=default; 403 for
// a create in the default account.
func TestHostileOtherAccount(t *testing.T) {
	h := newHostileEnv(t)
	id := h.id
	mgr := &h.mgr
	// A caller of acme that may write keys but holds no other scope.
	writer := h.keyCaller("acme", "apikeys:write")
	cases := []hostileCase{
		{name: "get", caller: mgr, method: "GET", path: "/keys/" + id, status: 404, code: "not_found"},
		{name: "head", caller: mgr, method: "HEAD", path: "/keys/" + id, status: 404, code: "not_found"},
		{name: "audit", caller: mgr, method: "GET", path: "/keys/" + id + "/audit", status: 404, code: "not_found"},
		{name: "patch", caller: mgr, method: "PATCH", path: "/keys/" + id, body: `{"name": "mine now"}`, status: 404, code: "not_found"},
		{name: "patch scopes", caller: mgr, method: "PATCH", path: "/keys/" + id, body: `{"scopes": ["contacts:read"]}`, status: 404, code: "not_found"},
		{name: "patch active", caller: mgr, method: "PATCH", path: "/keys/" + id, body: `{"active": false}`, status: 404, code: "not_found"},
		{name: "patch empty", caller: mgr, method: "PATCH", path: "/keys/" + id, body: `{}`, status: 404, code: "not_found"},
		{name: "revoke", caller: mgr, method: "POST", path: "/keys/" + id + "/revoke", status: 404, code: "not_found"},
		{name: "activate", caller: mgr, method: "POST", path: "/keys/" + id + "/activate", status: 404, code: "not_found"},
		{name: "regenerate", caller: mgr, method: "POST", path: "/keys/" + id + "/regenerate", status: 404, code: "not_found"},
		{name: "regenerate with grace", caller: mgr, method: "POST", path: "/keys/" + id + "/regenerate", body: `{"grace_period": "24h"}`, status: 404, code: "not_found"},
		{name: "delete", caller: mgr, method: "DELETE", path: "/keys/" + id, status: 404, code: "not_found"},
		{name: "create in default", caller: mgr, method: "POST", path: "/keys", body: `{"name": "x", "account": "default", "scopes": ["contacts:read"]}`, status: 403, code: "forbidden"},
		{name: "create in unknown", caller: mgr, method: "POST", path: "/keys", body: `{"name": "x", "account": "nope", "scopes": ["contacts:read"]}`, status: 403, code: "forbidden"},
		{name: "create with a scope not held", caller: &writer, method: "POST", path: "/keys", body: `{"name": "x", "scopes": ["apikeys:read", "billing:read"]}`, status: 403, code: "insufficient_scope"},
		{name: "patch in a scope not held", caller: &writer, method: "PATCH", path: "/keys/" + h.acmeID, body: `{"scopes": ["*:delete"]}`, status: 403, code: "insufficient_scope"},
		{name: "change a key with a scope not held", caller: &writer, method: "POST", path: "/keys/" + h.acmeID + "/regenerate", status: 403, code: "insufficient_scope"},
		{name: "delete without apikeys:delete", caller: &writer, method: "DELETE", path: "/keys/" + h.acmeID, status: 403, code: "insufficient_scope"},
		{name: "create with a rate limit", caller: mgr, method: "POST", path: "/keys", body: `{"name": "x", "scopes": ["contacts:read"], "rate_limit": {"unlimited": true}}`, status: 403, code: "forbidden"},
		{name: "import", caller: mgr, method: "POST", path: "/keys/import", body: `[{"sha256": "` + sha("x") + `", "name": "x", "scopes": ["contacts:read"]}]`, status: 403, code: "forbidden"},
		{name: "accounts", caller: mgr, method: "GET", path: "/accounts", status: 403, code: "forbidden"},
		{name: "suspend default", caller: mgr, method: "PATCH", path: "/accounts/default", body: `{"status": "suspended"}`, status: 403, code: "forbidden"},
		// The caller's own account key cannot be lifted either.
		{name: "own key: rate limit", caller: mgr, method: "PATCH", path: "/keys/" + h.acmeID, body: `{"rate_limit": {"unlimited": true}}`, status: 403, code: "forbidden"},
	}
	h.unchanged(t, func() {
		runHostile(t, h.env, cases)
		// Listing another account: an empty page, whatever the filter.
		for _, q := range []string{"?account=default", "?account=default&status=active", "?account=nope", "?account=default&q=target"} {
			r := h.do(*mgr, req{method: "GET", path: "/keys" + q})
			if r.status != 200 || !bytes.Contains(r.body, []byte(`"keys":[]`)) {
				t.Errorf("GET /keys%s as acme: %d %s", q, r.status, r.body)
			}
		}
		r := h.do(*mgr, req{method: "GET", path: "/keys"})
		if bytes.Contains(r.body, []byte(id)) {
			t.Errorf("GET /keys as acme lists the default account's key: %s", r.body)
		}
	})
	t.Logf("%d other-account cases", len(cases)+5)
}

// nested returns depth nested arrays ([[[...]]]) or objects
// ({"a":{"a":...1}}).
func deepJSON(depth int, objects bool) string {
	if objects {
		return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
	}
	return strings.Repeat("[", depth) + strings.Repeat("]", depth)
}

// TestHostileBodies: malformed JSON, duplicate and unknown members, wrong
// types, huge numbers, deep nesting and oversized bodies, on every
// endpoint that decodes a body.
func TestHostileBodies(t *testing.T) {
	h := newHostileEnv(t)
	id := h.id
	const valid = `"name": "n", "scopes": ["contacts:read"]`
	type target struct {
		method, path string
		isImport     bool
	}
	targets := []target{
		{"POST", "/keys", false},
		{"PATCH", "/keys/" + id, false},
		{"POST", "/keys/" + id + "/regenerate", false},
		{"POST", "/keys/" + id + "/revoke", false},
		{"POST", "/keys/" + id + "/activate", false},
		{"POST", "/accounts", false},
		{"PATCH", "/accounts/acme", false},
		{"POST", "/keys/import", true},
		{"DELETE", "/keys/" + id, false},
		{"DELETE", "/accounts/acme", false},
	}
	// Bodies refused everywhere (400 invalid_request), written for an
	// object; an import gets each wrapped in an array.
	everywhere := []struct{ name, body, field string }{
		{"truncated", `{`, ""},
		{"truncated member", `{"name": `, ""},
		{"missing value", `{"name": }`, ""},
		{"trailing comma", `{"name": "a",}`, ""},
		{"single quotes", `{'name': 'a'}`, ""},
		{"bare word", `{name: "a"}`, ""},
		{"comment", `{"name": "a" /* x */}`, ""},
		{"NaN", `{"name": NaN}`, ""},
		{"hex number", `{"name": 0x10}`, ""},
		{"leading zero", `{"name": 01}`, ""},
		{"plus sign", `{"name": +1}`, ""},
		{"BOM", "\xef\xbb\xbf{}", ""},
		{"NUL byte", "{\"name\": \"a\x00\"}", ""},
		{"raw newline in string", "{\"name\": \"a\nb\"}", ""},
		{"bad escape", `{"name": "\x41"}`, ""},
		{"short unicode escape", `{"name": "\u12"}`, ""},
		{"two values", `{} {}`, ""},
		{"trailing garbage", `{} x`, ""},
		{"unknown member", `{"bogus": 1}`, "bogus"},
		{"unknown nested in a known one", `{"rate_limit": {"requests": 1, "window": "1s", "evil": true}}`, "rate_limit.evil"},
		{"case-folded name", `{"NAME": "a"}`, "NAME"},
		{"unicode-folded name", `{"ſcopes": []}`, "ſcopes"},
		{"duplicate", `{"name": "a", "name": "b"}`, "name"},
		{"escaped duplicate", `{"name": "a", "\u006eame": "b"}`, "name"},
		{"nested duplicate", `{"rate_limit": {"requests": 1, "requests": 2}}`, "rate_limit.requests"},
		{"__proto__", `{"__proto__": {"admin": true}}`, "__proto__"},
		{"empty name", `{"": 1}`, ""},
	}
	var cases []hostileCase
	for _, tg := range targets {
		for _, b := range everywhere {
			body, field := b.body, b.field
			if tg.isImport {
				body = "[" + body + "]"
				if field != "" {
					field = "keys[0]." + field
				}
				if b.name == "two values" {
					body = `[] []`
				}
			}
			if tg.path == "/keys/"+id+"/revoke" || tg.path == "/keys/"+id+"/activate" || strings.HasSuffix(tg.path, "/regenerate") || tg.method == "DELETE" {
				// Bodies of another schema: the field differs, the code not.
				field = ""
			}
			cases = append(cases, hostileCase{name: tg.method + " " + tg.path + ": " + b.name, method: tg.method, path: tg.path,
				body: body, status: 400, code: "invalid_request", field: field})
		}
		// Not a JSON object (or array, for import).
		for _, body := range []string{`null`, `true`, `123`, `"s"`, `[]`, `[{}]`, `{}`, ` `} {
			want, field := 400, ""
			switch {
			case tg.isImport && body == `[]`:
				field = "keys"
			case tg.isImport && body == `[{}]`:
				field = "" // name/scopes missing in keys[0]
			case tg.isImport:
			case body == `{}` || body == ` `:
				continue // valid (empty) for some endpoints: covered by the tables
			case body == `[]` || body == `[{}]`:
			}
			cases = append(cases, hostileCase{name: tg.method + " " + tg.path + ": body " + body, method: tg.method, path: tg.path,
				body: body, status: want, code: "invalid_request", field: field})
		}
		// Deep nesting: a 4xx, fast, no stack overflow. 30,000 levels fit in
		// 64 KiB; an import may nest a million (2 MB).
		depths := []int{100, 10_000, 10_001, 30_000}
		if tg.isImport {
			depths = append(depths, 1_000_000)
		}
		for _, d := range depths {
			for _, objects := range []bool{false, true} {
				kind := "arrays"
				if objects {
					kind = "objects"
				}
				for _, shape := range []string{"top", "member"} {
					body := deepJSON(d, objects)
					if shape == "member" {
						body = `{"name": ` + body + `}`
						if tg.isImport {
							body = "[" + body + "]"
						}
					}
					if shape == "top" && tg.isImport && objects {
						body = "[" + body + "]"
					}
					want, code := 400, "invalid_request"
					if len(body) > MaxBody && !tg.isImport {
						want, code = 413, "payload_too_large"
					}
					cases = append(cases, hostileCase{name: tg.method + " " + tg.path + ": " + strconv.Itoa(d) + " nested " + kind + " at " + shape,
						method: tg.method, path: tg.path, body: body, status: want, code: code})
				}
			}
		}
		// Over the limit: by Content-Length, and chunked (no length).
		limit := MaxBody
		if tg.isImport {
			limit = MaxImportBody
		}
		over := func(n int) io.Reader {
			return io.MultiReader(strings.NewReader(`{"name": "`), io.LimitReader(byteStream('a'), int64(n)))
		}
		cases = append(cases,
			hostileCase{name: tg.method + " " + tg.path + ": Content-Length over the limit", method: tg.method, path: tg.path,
				body: "{}", mod: func(r *http.Request) { r.ContentLength = int64(limit) + 1 }, status: 413, code: "payload_too_large"},
			hostileCase{name: tg.method + " " + tg.path + ": chunked over the limit", method: tg.method, path: tg.path,
				mod: func(r *http.Request) { r.Body = io.NopCloser(over(limit + 1)); r.ContentLength = -1 }, status: 413, code: "payload_too_large"},
			hostileCase{name: tg.method + " " + tg.path + ": Content-Length lies low", method: tg.method, path: tg.path,
				mod: func(r *http.Request) { r.Body = io.NopCloser(over(limit + 1)); r.ContentLength = 10 }, status: 413, code: "payload_too_large"},
			hostileCase{name: tg.method + " " + tg.path + ": not JSON", method: tg.method, path: tg.path,
				body: `{}`, ctype: "text/plain", status: 415, code: "unsupported_media_type"},
			hostileCase{name: tg.method + " " + tg.path + ": form", method: tg.method, path: tg.path,
				body: `name=a`, ctype: "application/x-www-form-urlencoded", status: 415, code: "unsupported_media_type"},
			hostileCase{name: tg.method + " " + tg.path + ": bad media type", method: tg.method, path: tg.path,
				body: `{}`, ctype: "application/json; charset", status: 415, code: "unsupported_media_type"},
		)
	}
	// Wrong types and huge numbers, per field.
	wrong := []struct{ path, body, field string }{
		{"/keys", `{"name": 1, "scopes": ["a:read"]}`, "name"},
		{"/keys", `{"name": ["a"], "scopes": ["a:read"]}`, "name"},
		{"/keys", `{"name": "a", "scopes": "a:read"}`, "scopes"},
		{"/keys", `{"name": "a", "scopes": [1]}`, "scopes"},
		{"/keys", `{"name": "a", "scopes": [["a:read"]]}`, "scopes"},
		{"/keys", `{"name": "a", "scopes": {"a:read": true}}`, "scopes"},
		{"/keys", `{"name": null, "scopes": ["a:read"]}`, "name"},
		{"/keys", `{` + valid + `, "expires_at": 1893456000}`, "expires_at"},
		{"/keys", `{` + valid + `, "expires_at": "tomorrow"}`, "expires_at"},
		{"/keys", `{` + valid + `, "expires_at": "10000-01-01T00:00:00Z"}`, "expires_at"},
		{"/keys", `{` + valid + `, "expires_at": "2030-01-01T00:00:00+99:00"}`, "expires_at"},
		{"/keys", `{` + valid + `, "expires_at": "0001-01-01T00:00:00Z"}`, "expires_at"},
		{"/keys", `{` + valid + `, "metadata": {"a": 1}}`, "metadata"},
		{"/keys", `{` + valid + `, "metadata": ["a"]}`, "metadata"},
		{"/keys", `{` + valid + `, "metadata": {"": "x"}}`, "metadata"},
		{"/keys", `{` + valid + `, "metadata": {"owner": null}}`, "metadata.owner"},
		{"/keys/" + id, `{"metadata": {"owner": "ops", "team": null}}`, "metadata.team"},
		{"/keys", `{` + valid + `, "metadata": {"a": "` + strings.Repeat("x", 5000) + `"}}`, "metadata"},
		{"/keys", `{` + valid + `, "rate_limit": "fast"}`, "rate_limit"},
		{"/keys", `{` + valid + `, "rate_limit": {"requests": "1", "window": "1s"}}`, "rate_limit.requests"},
		{"/keys", `{` + valid + `, "rate_limit": {"requests": 1e400, "window": "1s"}}`, "rate_limit.requests"},
		{"/keys", `{` + valid + `, "rate_limit": {"requests": 9223372036854775808, "window": "1s"}}`, "rate_limit.requests"},
		{"/keys", `{` + valid + `, "rate_limit": {"requests": -9223372036854775809, "window": "1s"}}`, "rate_limit.requests"},
		{"/keys", `{` + valid + `, "rate_limit": {"requests": 1.5, "window": "1s"}}`, "rate_limit.requests"},
		{"/keys", `{` + valid + `, "rate_limit": {"requests": 1e2, "window": "1s"}}`, "rate_limit.requests"},
		{"/keys", `{` + valid + `, "rate_limit": {"requests": 1, "window": "9999999999999h"}}`, "rate_limit"},
		{"/keys", `{` + valid + `, "rate_limit": {"requests": 1, "window": "1d"}}`, "rate_limit"},
		{"/keys", `{` + valid + `, "rate_limit": {"requests": 0, "window": "1s"}}`, "rate_limit"},
		{"/keys", `{` + valid + `, "rate_limit": {"requests": 1, "window": "1s", "burst": -1}}`, "rate_limit"},
		{"/keys", `{` + valid + `, "rate_limit": {"unlimited": "yes"}}`, "rate_limit.unlimited"},
		{"/keys", `{` + valid + `, "rate_limit": {"unlimited": true, "requests": 1}}`, "rate_limit"},
		{"/keys", `{` + valid + `, "quota": {"requests": 1e400, "period": "day"}}`, "quota.requests"},
		{"/keys", `{` + valid + `, "quota": {"requests": 9223372036854775808, "period": "day"}}`, "quota.requests"},
		{"/keys", `{` + valid + `, "quota": {"requests": 1, "period": "year"}}`, "quota"},
		{"/keys", `{` + valid + `, "type": 7}`, "type"},
		{"/keys", `{` + valid + `, "type": "Evil Type"}`, "type"},
		{"/keys", `{` + valid + `, "account": ["acme"]}`, "account"},
		{"/keys", `{` + valid + `, "account": "nope"}`, "account"},
		{"/keys", `{"name": "a\r\nX-Api-Key-Id: evil", "scopes": ["a:read"]}`, "name"},
		{"/keys", `{"name": "\u0000", "scopes": ["a:read"]}`, "name"},
		{"/keys", `{"name": "` + strings.Repeat("n", 256) + `", "scopes": ["a:read"]}`, "name"},
		{"/keys", `{"name": "a", "scopes": ["contacts:admin"]}`, "scopes"},
		{"/keys", `{"name": "a", "scopes": []}`, "scopes"},
		{"/keys/" + id, `{"name": null}`, "name"},
		{"/keys/" + id, `{"active": "false"}`, "active"},
		{"/keys/" + id, `{"active": 0}`, "active"},
		{"/keys/" + id, `{"active": null}`, "active"},
		{"/keys/" + id, `{"scopes": null}`, "scopes"},
		{"/keys/" + id, `{"id": "x"}`, "id"},
		{"/keys/" + id, `{"account": "acme"}`, "account"},
		{"/keys/" + id, `{"hash": "00"}`, "hash"},
		{"/keys/" + id, `{"name": "ok", "scopes": ["Bad"]}`, "scopes"},
		{"/keys/" + id, `{"expires_at": "2000-01-01T00:00:00Z"}`, "expires_at"},
		{"/keys/" + id + "/regenerate", `{"grace_period": 3600}`, "grace_period"},
		{"/keys/" + id + "/regenerate", `{"grace_period": "1e400h"}`, "grace_period"},
		{"/keys/" + id + "/regenerate", `{"grace_period": "9999999999999999999h"}`, "grace_period"},
		{"/keys/" + id + "/regenerate", `{"grace_period": "1d"}`, "grace_period"},
		{"/keys/" + id + "/regenerate", `{"grace_period": "-1ns"}`, "grace_period"},
		{"/accounts", `{"id": 1}`, "id"},
		{"/accounts", `{"id": "../default"}`, "id"},
		{"/accounts", `{"id": "Acme"}`, "id"},
		{"/accounts", `{"id": "acme"}`, ""}, // exists: 409, below
		{"/accounts", `{"id": "new", "status": "god"}`, "status"},
		{"/accounts", `{"id": "new", "rate_limit": {"requests": 9223372036854775808, "window": "1s"}}`, "rate_limit.requests"},
		{"/accounts/acme", `{"status": 1}`, "status"},
		{"/accounts/acme", `{"status": null}`, "status"},
		{"/accounts/acme", `{"id": "other"}`, "id"},
	}
	for _, w := range wrong {
		method := "POST"
		if strings.HasPrefix(w.path, "/keys/") && !strings.HasSuffix(w.path, "/regenerate") || strings.HasPrefix(w.path, "/accounts/") {
			method = "PATCH"
		}
		tc := hostileCase{name: method + " " + w.path + ": " + w.body, method: method, path: w.path, body: w.body,
			status: 400, code: "invalid_request", field: w.field}
		if w.path == "/accounts" && w.body == `{"id": "acme"}` {
			tc.status, tc.code = 409, "conflict"
		}
		if len(tc.name) > 120 {
			tc.name = tc.name[:120]
		}
		cases = append(cases, tc)
	}
	cases = append(cases, hostileCase{name: "POST /keys/import: a null metadata value", method: "POST", path: "/keys/import",
		body:   `[{"sha256": "` + strings.Repeat("ab", 32) + `", ` + valid + `, "metadata": {"owner": null}}]`,
		status: 400, code: "invalid_request", field: "keys[0].metadata.owner"})
	// Query strings that endpoints do not take, or take only once.
	for _, q := range []struct{ method, path, field string }{
		{"GET", "/keys?limit=1e400", "limit"},
		{"GET", "/keys?limit=9223372036854775808", "limit"},
		{"GET", "/keys?limit=-1", "limit"},
		{"GET", "/keys?limit=0x10", "limit"},
		{"GET", "/keys?limit=1001", "limit"},
		{"GET", "/keys?limit=%00", "limit"},
		{"GET", "/keys?limit=1&limit=2", "limit"},
		{"GET", "/keys?status=ACTIVE", "status"},
		{"GET", "/keys?cursor=../../etc/passwd", "cursor"},
		{"GET", "/keys?cursor=Li4vLi4v", "cursor"},
		{"GET", "/keys?account=../default", "account"},
		{"GET", "/keys?account=default&account=acme", "account"},
		{"GET", "/keys?bogus=1", "bogus"},
		{"GET", "/keys?a%zz=1", ""},
		{"GET", "/keys?limit=1;status=active", ""},
		{"POST", "/keys?account=acme", "account"},
		{"GET", "/keys/" + id + "?fields=hash", "fields"},
		{"DELETE", "/keys/" + id + "?force=1", "force"},
		{"POST", "/keys/" + id + "/revoke?x", "x"},
		{"GET", "/accounts?limit=1", "limit"},
		{"DELETE", "/accounts/acme?cascade=true", "cascade"},
	} {
		cases = append(cases, hostileCase{name: q.method + " " + q.path, method: q.method, path: q.path,
			status: 400, code: "invalid_request", field: q.field})
	}
	h.unchanged(t, func() { runHostile(t, h.env, cases) })
	t.Logf("%d body and query cases", len(cases))
}

// TestHostileCheckOrder: the documented order of checks holds where a
// request fails more than one: a body that decodes but has a bad value
// gets the 404 of an unknown key and the 403 of the no-escalation rule
// first, since field values are the last check.
func TestHostileCheckOrder(t *testing.T) {
	h := newHostileEnv(t)
	unknown := "01a202ff-bf60-7804-908e-585442779731"
	weak := h.keyCaller("acme", "apikeys:write", "contacts:read")
	strong := h.createKey(map[string]any{"name": "strong", "account": "acme", "scopes": []string{"billing:write"}})["id"].(string)
	cases := []hostileCase{
		{name: "PATCH unknown key, empty name", method: "PATCH", path: "/keys/" + unknown, body: `{"name": ""}`, status: 404, code: "not_found"},
		{name: "PATCH unknown key, bad expires_at", method: "PATCH", path: "/keys/" + unknown, body: `{"expires_at": "tomorrow"}`, status: 404, code: "not_found"},
		{name: "regenerate unknown key, negative grace", method: "POST", path: "/keys/" + unknown + "/regenerate", body: `{"grace_period": "-1h"}`, status: 404, code: "not_found"},
		{name: "PATCH stronger key, bad expires_at", caller: &weak, method: "PATCH", path: "/keys/" + strong, body: `{"expires_at": "tomorrow"}`, status: 403, code: "insufficient_scope"},
		{name: "regenerate stronger key, bad grace", caller: &weak, method: "POST", path: "/keys/" + strong + "/regenerate", body: `{"grace_period": "1d"}`, status: 403, code: "insufficient_scope"},
		{name: "create in another account, bad expires_at", caller: &weak, method: "POST", path: "/keys", body: `{"name": "n", "account": "default", "scopes": ["contacts:read"], "expires_at": "tomorrow"}`, status: 403, code: "forbidden"},
		{name: "create a stronger key, bad expires_at", caller: &weak, method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["billing:read"], "expires_at": "tomorrow"}`, status: 403, code: "insufficient_scope"},
		{name: "create with a limit, bad expires_at", caller: &weak, method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["contacts:read"], "rate_limit": {"unlimited": true}, "expires_at": "tomorrow"}`, status: 403, code: "forbidden"},
		{name: "own key, bad expires_at", caller: &weak, method: "PATCH", path: "/keys/" + h.acmeID, body: `{"expires_at": "tomorrow"}`, status: 400, code: "invalid_request", field: "expires_at"},
	}
	h.unchanged(t, func() { runHostile(t, h.env, cases) })
}

// byteStream is an endless stream of one byte.
type byteStream byte

func (r byteStream) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// TestHostileExtremesAccepted: values at the edge of what is valid are
// accepted and then do not break the key's verification (no panic, no
// overflow into a refusal of a valid key or a pass of a revoked one).
func TestHostileExtremesAccepted(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{"max requests per ns", map[string]any{"requests": int64(1<<63 - 1), "window": "1ns", "burst": int64(1<<63 - 1)}},
		{"one per max duration", map[string]any{"requests": 1, "window": "2562047h47m16.854775807s"}},
		{"max requests per max duration", map[string]any{"requests": int64(1<<63 - 1), "window": "2562047h47m16.854775807s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			et := *e
			et.t = t
			k := et.createKey(map[string]any{"name": "edge", "scopes": []string{"a:read"}, "rate_limit": tc.body,
				"expires_at": "2262-01-01T00:00:00Z", "metadata": map[string]string{"k": strings.Repeat("v", MaxBody/16-1)}})
			// The first request passes; later ones pass or meet the
			// (maybe tiny) limit, never an expiry or an invalid key.
			okOrLimited := func(what, key string, first bool) {
				t.Helper()
				got := et.verify(key)
				if got != "ok" && (first || got != "rate_limited") {
					t.Fatalf("%s: %s", what, got)
				}
			}
			for i := range 3 {
				okOrLimited("verification "+strconv.Itoa(i), k["key"].(string), i == 0)
			}
			id := k["id"].(string)
			// The longest grace period, which the expiry caps.
			r := et.mustDo(op, req{method: "POST", path: "/keys/" + id + "/regenerate", body: `{"grace_period": "2562047h47m16.854775807s"}`}, 200)
			okOrLimited("old string in a maximal grace period", k["key"].(string), false)
			okOrLimited("new string", r["key"].(string), false)
			et.mustDo(op, req{method: "POST", path: "/keys/" + id + "/revoke"}, 200)
			for _, s := range []string{k["key"].(string), r["key"].(string)} {
				if got := et.verify(s); got != "key_revoked" {
					t.Fatalf("revoked: %s", got)
				}
			}
		})
	}
}

// TestHostileFarFutureTimes: a time the API accepts must mean what it says
// when a key is verified. An expires_at after 2262-04-11T23:47:16Z, or a
// grace period that ends after it, does not fit in int64 nanoseconds; the
// API must either refuse it (400) or honour it (the key works), not store
// it and then refuse the key as expired (or its old string as invalid).
func TestHostileFarFutureTimes(t *testing.T) {
	e := newEnv(t)
	for _, exp := range []string{"2262-04-11T23:47:16Z", "2262-04-11T23:47:17Z", "2300-01-01T00:00:00Z", "9999-12-31T23:59:59Z"} {
		r := e.do(op, req{method: "POST", path: "/keys", body: map[string]any{"name": "far", "scopes": []string{"a:read"}, "expires_at": exp}})
		if r.status == 400 {
			continue
		}
		k := r.obj(t)
		if r.status != 201 || k["status"] != "active" {
			t.Fatalf("expires_at %s: %d %s", exp, r.status, r.body)
		}
		if got := e.verify(k["key"].(string)); got != "ok" {
			t.Errorf("expires_at %s: created as active, but verification says %s", exp, got)
		}
	}
	// A time in 9999 with an offset west of UTC is in the year 10000 in
	// UTC, which no record can hold: a 400 naming the field on every
	// path, and nothing stored (it was a 500, and an import had begun
	// writing).
	h := newHostileEnv(t)
	h.unchanged(t, func() {
		const far = "9999-12-31T23:00:00-05:00"
		id := h.id
		runHostile(t, h.env, []hostileCase{
			{name: "create", method: "POST", path: "/keys", body: `{"name": "far", "scopes": ["a:read"], "expires_at": "` + far + `"}`, status: 400, code: "invalid_request", field: "expires_at"},
			{name: "patch", method: "PATCH", path: "/keys/" + id, body: `{"expires_at": "` + far + `"}`, status: 400, code: "invalid_request", field: "expires_at"},
			{name: "import", method: "POST", path: "/keys/import", body: `[{"sha256": "` + sha("ok") + `", "name": "ok", "scopes": ["a:read"]}, {"sha256": "` + sha("far") + `", "name": "far", "scopes": ["a:read"], "expires_at": "` + far + `"}]`, status: 400, code: "invalid_request", field: "keys[1].expires_at"},
		})
	})
	k := e.createKey(map[string]any{"name": "grace", "scopes": []string{"a:read"}})
	for _, grace := range []string{"1000000h", "2400000h", "2562047h47m16.854775807s"} {
		r := e.do(op, req{method: "POST", path: "/keys/" + k["id"].(string) + "/regenerate", body: map[string]any{"grace_period": grace}})
		if r.status == 400 {
			continue
		}
		if r.status != 200 {
			t.Fatalf("grace %s: %d %s", grace, r.status, r.body)
		}
		if got := e.verify(k["key"].(string)); got != "ok" {
			t.Errorf("grace_period %s accepted, but the old string is refused at once: %s", grace, got)
		}
		k["key"] = r.obj(t)["key"]
	}
}

// TestHostileInvalidUTF8: JSON text must be UTF-8 (RFC 8259 §8.1).
// encoding/json replaces invalid bytes with U+FFFD instead of refusing
// them, so without a check two different metadata names ("\xff", "\xfe")
// decode to the same one, the last wins, and the duplicate-member rule
// (which compares the raw bytes) is bypassed: the ambiguity it exists to
// refuse. Every such body must be a 400 that changes nothing.
func TestHostileInvalidUTF8(t *testing.T) {
	h := newHostileEnv(t)
	var cases []hostileCase
	// Each body is complete and valid but for the bytes of the name (a
	// create needs scopes, an account an id).
	for _, tg := range []struct{ method, path, rest string }{
		{"POST", "/keys", `, "scopes": ["a:read"]`},
		{"PATCH", "/keys/" + h.id, ""},
		{"POST", "/accounts", `, "id": "utf"`},
		{"PATCH", "/accounts/acme", ""},
	} {
		for _, b := range []struct{ name, value string }{
			{"in a value", "\xff\xfe"},
			{"truncated sequence", "caf\xc3"},
			{"surrogate half", "\xed\xa0\x80"},
			{"overlong", "\xc0\xaf"},
		} {
			cases = append(cases, hostileCase{name: tg.method + " " + tg.path + ": " + b.name, method: tg.method, path: tg.path,
				body: `{"name": "` + b.value + `"` + tg.rest + `}`, status: 400, code: "invalid_request"})
		}
	}
	for _, tg := range []struct{ method, path, body string }{
		{"POST", "/keys", "{\"name\": \"a\", \"scopes\": [\"a:read\"], \"metadata\": {\"\xff\": \"first\", \"\xfe\": \"second\"}}"},
		{"PATCH", "/keys/" + h.id, "{\"metadata\": {\"\xff\": \"first\", \"\xfe\": \"second\"}}"},
	} {
		cases = append(cases, hostileCase{name: tg.method + " " + tg.path + ": metadata names that collapse", method: tg.method, path: tg.path,
			body: tg.body, status: 400, code: "invalid_request"})
	}
	cases = append(cases, hostileCase{name: "import: metadata names that collapse", method: "POST", path: "/keys/import",
		body:   "[{\"sha256\": \"" + sha("x") + "\", \"name\": \"a\", \"scopes\": [\"a:read\"], \"metadata\": {\"\xff\": \"1\", \"\xfe\": \"2\"}}]",
		status: 400, code: "invalid_request"})
	h.unchanged(t, func() { runHostile(t, h.env, cases) })
}

// TestHostileErrorsAreJSON: a handful of the answers above, decoded: the
// error bodies are JSON objects with a string error and message, and echo
// no raw input that could break a log or a terminal.
func TestHostileErrorsAreJSON(t *testing.T) {
	e := newEnv(t)
	for _, body := range []string{"{\"name\": \"\x1b[31mred\"}", "{\"\x1b]0;title\x07\": 1}", `{"a` + strings.Repeat("b", 10000) + `": 1}`} {
		r := e.do(op, req{method: "POST", path: "/keys", body: body})
		if r.status != 400 {
			t.Fatalf("%q: %d", body, r.status)
		}
		var m map[string]any
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatalf("not JSON: %s", r.body)
		}
		if bytes.ContainsAny(r.body, "\x1b\x07") {
			t.Errorf("raw control bytes in %q", r.body)
		}
	}
}
