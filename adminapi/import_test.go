package adminapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func legacyKey(i int) string { return fmt.Sprintf("legacy-key-%08d-abcdefgh", i) }

// TestImportLarge imports keystore.MaxImport (100,000) keys by their
// SHA-256 in one call. Under the race detector, or with -short, it
// imports 5,000: the store's import is then CPU-bound and about ten
// times slower.
func TestImportLarge(t *testing.T) {
	n := keystore.MaxImport
	if raceEnabled || testing.Short() {
		n = 5_000
	}
	e := newEnv(t)
	var sb strings.Builder
	sb.Grow(n * 140)
	sb.WriteByte('[')
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"sha256":%q,"name":"legacy %d","scopes":["contacts:read"]}`, sha(legacyKey(i)), i)
	}
	sb.WriteByte(']')
	body := sb.String()
	if len(body) > MaxImportBody {
		t.Fatalf("body of %d bytes is over MaxImportBody", len(body))
	}

	start := time.Now()
	r := e.do(op, req{method: "POST", path: "/keys/import", body: body})
	took := time.Since(start)
	t.Logf("imported %d keys (%.1f MiB body) in %v (race detector: %v)", n, float64(len(body))/(1<<20), took, raceEnabled)
	if r.status != http.StatusCreated {
		t.Fatalf("status %d: %.500s", r.status, r.body)
	}
	var out struct {
		Imported int              `json:"imported"`
		Keys     []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	if out.Imported != n || len(out.Keys) != n {
		t.Fatalf("imported %d, %d records", out.Imported, len(out.Keys))
	}
	for _, i := range []int{0, n / 2, n - 1} {
		rec := out.Keys[i]
		if rec["name"] != fmt.Sprintf("legacy %d", i) || rec["hint"] != "…" || rec["status"] != "active" {
			t.Fatalf("record %d: %v", i, rec)
		}
		if got := e.verify(legacyKey(i)); got != "ok" {
			t.Fatalf("key %d verifies as %s", i, got)
		}
	}
	if strings.Contains(r.String(), sha(legacyKey(0))) {
		t.Fatal("the answer shows a hash")
	}
	if got := e.verify(legacyKey(n)); got != "invalid_key" {
		t.Fatalf("a key not imported verifies as %s", got)
	}
	list := e.mustDo(op, req{method: "GET", path: "/keys?limit=1"}, http.StatusOK)
	if got := ids(list["keys"]); len(got) != 1 || list["next_cursor"] == nil {
		t.Fatalf("list after import: %v", list)
	}
}

func TestImport(t *testing.T) {
	e := newEnv(t)
	e.account("acme")
	plain := "sk_live_0123456789abcdefghij"
	formatted, err := e.fmt.Generate()
	if err != nil {
		t.Fatal(err)
	}
	exp := e.clock.Now().Add(48 * time.Hour).Format(time.RFC3339)
	body := fmt.Sprintf(`[
		{"key": %q, "name": "foreign", "scopes": ["contacts:read"], "account": "acme", "type": "legacy"},
		{"key": %q, "name": "ours", "scopes": ["contacts:write"], "expires_at": %q, "metadata": {"from": "old"}},
		{"sha256": %q, "name": "hashed", "scopes": ["*:read"], "rate_limit": {"requests": 10, "window": "1s"}}
	]`, plain, formatted, exp, strings.ToUpper(sha("hashed-only-key-0001")))
	m := e.mustDo(op, req{method: "POST", path: "/keys/import", body: body}, http.StatusCreated)
	if m["imported"] != float64(3) {
		t.Fatalf("imported %v", m["imported"])
	}
	recs := m["keys"].([]any)
	r0, r1, r2 := recs[0].(map[string]any), recs[1].(map[string]any), recs[2].(map[string]any)
	if r0["name"] != "foreign" || r0["account"] != "acme" || r0["type"] != "legacy" || r0["hint"] != "sk_l…ghij" {
		t.Errorf("record 0: %v", r0)
	}
	if r1["account"] != "default" || r1["expires_at"] == nil || r1["metadata"].(map[string]any)["from"] != "old" {
		t.Errorf("record 1: %v", r1)
	}
	if r2["hint"] != "…" || r2["rate_limit"] == nil {
		t.Errorf("record 2: %v", r2)
	}
	for _, rec := range recs {
		if _, ok := rec.(map[string]any)["key"]; ok {
			t.Fatalf("an import answer shows a key: %v", rec)
		}
	}
	if strings.Contains(string(e.do(op, req{method: "GET", path: "/keys"}).body), plain) {
		t.Fatal("the list shows an imported plaintext")
	}
	for _, k := range []string{plain, formatted, "hashed-only-key-0001"} {
		if got := e.verify(k); got != "ok" {
			t.Errorf("imported key verifies as %s", got)
		}
	}
	ev := e.mustDo(op, req{method: "GET", path: "/keys/" + r0["id"].(string) + "/audit"}, http.StatusOK)
	events := ev["events"].([]any)
	if len(events) != 1 || events[0].(map[string]any)["action"] != "created" || events[0].(map[string]any)["actor"] != "admin" {
		t.Errorf("audit of an imported key: %v", events)
	}
}

// TestImportAllOrNothing: one bad entry refuses the whole batch, names its
// index, and stores nothing.
func TestImportAllOrNothing(t *testing.T) {
	e := newEnv(t)
	existing := e.createKey(map[string]any{"name": "existing", "scopes": []string{"a:read"}})
	good := func(i int) string {
		return fmt.Sprintf(`{"sha256": %q, "name": "k%d", "scopes": ["a:read"]}`, sha(legacyKey(i)), i)
	}
	batch := func(bad string, at int) string {
		var parts []string
		for i := range 5 {
			if i == at {
				parts = append(parts, bad)
				continue
			}
			parts = append(parts, good(i))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	tests := []struct {
		name   string
		body   string
		status int
		code   string
		field  string
	}{
		{"bad scope", batch(`{"sha256": "`+sha("x1")+`", "name": "n", "scopes": ["nope"]}`, 2), 400, "invalid_request", "keys[2].scopes"},
		{"no scopes", batch(`{"sha256": "`+sha("x1")+`", "name": "n"}`, 4), 400, "invalid_request", "keys[4].scopes"},
		{"empty name", batch(`{"sha256": "`+sha("x1")+`", "name": "", "scopes": ["a:read"]}`, 1), 400, "invalid_request", "keys[1].name"},
		{"neither key nor sha256", batch(`{"name": "n", "scopes": ["a:read"]}`, 3), 400, "invalid_request", "keys[3].key"},
		{"both key and sha256", batch(`{"key": "0123456789abcdefXYZ", "sha256": "`+sha("x1")+`", "name": "n", "scopes": ["a:read"]}`, 0), 400, "invalid_request", "keys[0].key"},
		{"bad sha256", batch(`{"sha256": "abc", "name": "n", "scopes": ["a:read"]}`, 2), 400, "invalid_request", "keys[2].sha256"},
		{"short foreign key", batch(`{"key": "short", "name": "n", "scopes": ["a:read"]}`, 2), 400, "invalid_request", "keys[2].key"},
		{"unknown account", batch(`{"sha256": "`+sha("x1")+`", "name": "n", "scopes": ["a:read"], "account": "nope"}`, 3), 400, "invalid_request", "keys[3].account"},
		{"expiry in the past", batch(`{"sha256": "`+sha("x1")+`", "name": "n", "scopes": ["a:read"], "expires_at": "2001-01-01T00:00:00Z"}`, 1), 400, "invalid_request", "keys[1].expires_at"},
		{"unparsable expiry", batch(`{"sha256": "`+sha("x1")+`", "name": "n", "scopes": ["a:read"], "expires_at": "tomorrow"}`, 1), 400, "invalid_request", "keys[1].expires_at"},
		{"twice in the batch", batch(good(0), 3), 400, "invalid_request", "keys[3]"},
		// Passes, as documented: repeats before accounts, so the repeat in
		// keys[1] answers although keys[0] names an unknown account.
		{"repeat checked before accounts", `[{"sha256": "` + sha("x1") + `", "name": "n", "scopes": ["a:read"], "account": "nope"}, {"sha256": "` + sha("x1") + `", "name": "n", "scopes": ["a:read"]}]`, 400, "invalid_request", "keys[1]"},
		// Expiry formats are a pass before field rules: the bad expiry of
		// keys[2] answers before the empty name of keys[1].
		{"expiry format before field rules", `[` + good(0) + `, {"sha256": "` + sha("x1") + `", "name": "", "scopes": ["a:read"]}, {"sha256": "` + sha("x2") + `", "name": "n", "scopes": ["a:read"], "expires_at": "tomorrow"}]`, 400, "invalid_request", "keys[2].expires_at"},
		{"already in the store", batch(`{"sha256": "`+sha("x1")+`", "name": "n", "scopes": ["a:read"]}`, 4), 0, "", ""},
		{"unknown field", batch(`{"sha256": "`+sha("x1")+`", "name": "n", "scopes": ["a:read"], "nope": 1}`, 2), 400, "invalid_request", "keys[2].nope"},
		{"wrong type", batch(`{"sha256": "`+sha("x1")+`", "name": "n", "scopes": "a:read"}`, 2), 400, "invalid_request", "keys[2].scopes"},
		{"not an object", batch(`7`, 1), 400, "invalid_request", "keys[1]"},
		{"duplicate member", batch(`{"sha256": "`+sha("x1")+`", "name": "n", "name": "m", "scopes": ["a:read"]}`, 3), 400, "invalid_request", "keys[3].name"},
		{"case variant", batch(`{"sha256": "`+sha("x1")+`", "Name": "n", "scopes": ["a:read"]}`, 3), 400, "invalid_request", "keys[3].Name"},
		{"empty array", `[]`, 400, "invalid_request", "keys"},
		{"object body", `{"keys": []}`, 400, "invalid_request", ""},
		{"malformed", `[{"sha256": `, 400, "invalid_request", ""},
		{"trailing data", batch(good(9), 0) + ` []`, 400, "invalid_request", ""},
	}
	// "already in the store": an entry whose key the store has.
	for i := range tests {
		if tests[i].name == "already in the store" {
			tests[i].body = batch(fmt.Sprintf(`{"key": %q, "name": "n", "scopes": ["a:read"]}`, existing["key"]), 4)
			tests[i].status, tests[i].code, tests[i].field = 400, "invalid_request", "keys[4]"
		}
	}
	before := e.snapshot()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(op, req{method: "POST", path: "/keys/import", body: tt.body})
			errorIs(t, r, tt.status, tt.code, tt.field)
			if strings.HasPrefix(tt.field, "keys[") && !strings.Contains(r.obj(t)["message"].(string), tt.field[:strings.Index(tt.field, "]")+1]) {
				t.Errorf("message does not name %s: %s", tt.field, r.body)
			}
			if after := e.snapshot(); after != before {
				t.Fatal("a refused import changed the store")
			}
		})
	}
}

func TestImportLimits(t *testing.T) {
	e := newEnv(t)
	// One entry over MaxImport.
	var sb strings.Builder
	sb.WriteByte('[')
	for i := range keystore.MaxImport + 1 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{}`)
	}
	sb.WriteByte(']')
	r := e.do(op, req{method: "POST", path: "/keys/import", body: sb.String()})
	errorIs(t, r, 400, "invalid_request", "keys")

	// Over MaxImportBody.
	big := `["` + strings.Repeat("x", MaxImportBody) + `"]`
	r = e.do(op, req{method: "POST", path: "/keys/import", body: big})
	errorIs(t, r, http.StatusRequestEntityTooLarge, "payload_too_large", "")

	// The import limit is its own: a body over MaxBody is fine.
	var parts []string
	for i := 0; len(strings.Join(parts, ",")) <= MaxBody; i++ {
		parts = append(parts, fmt.Sprintf(`{"sha256": %q, "name": "k%d", "scopes": ["a:read"]}`, sha(legacyKey(i)), i))
	}
	e.mustDo(op, req{method: "POST", path: "/keys/import", body: "[" + strings.Join(parts, ",") + "]"}, http.StatusCreated)
}

// TestImportForeignNeedsAcceptForeign: without accept_foreign_keys, a
// plaintext key of another format would be stored but refused on every
// request, so the import refuses it, naming the entry; keys of the
// configured format and hashes are imported.
func TestImportForeignNeedsAcceptForeign(t *testing.T) {
	e := newEnv(t)
	e.api = New(Options{Store: e.store, Format: e.fmt})
	native, _ := e.fmt.Generate()
	before := e.snapshot()
	r := e.do(op, req{method: "POST", path: "/keys/import", body: `[
		{"key": "` + native + `", "name": "native", "scopes": ["a:read"]},
		{"key": "legacy-0123456789abcdefghij", "name": "foreign", "scopes": ["a:read"]}]`})
	errorIs(t, r, http.StatusBadRequest, "invalid_request", "keys[1].key")
	if e.snapshot() != before {
		t.Error("a refused import changed the store")
	}
	e.mustDo(op, req{method: "POST", path: "/keys/import", body: `[
		{"key": "` + native + `", "name": "native", "scopes": ["a:read"]},
		{"sha256": "` + strings.Repeat("ab", 32) + `", "name": "by hash", "scopes": ["a:read"]}]`}, http.StatusCreated)
	if got := e.verify(native); got != "ok" {
		t.Errorf("imported native key: %s", got)
	}
}
