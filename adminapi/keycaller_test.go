package adminapi

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// refusedUnchanged sends rq as c, checks a 403 whose message names want
// (when not empty), and that the store did not change.
func (e *env) refusedUnchanged(c Caller, rq req, want string) {
	e.t.Helper()
	before := e.snapshot()
	r := e.do(c, rq)
	errorIs(e.t, r, http.StatusForbidden, "forbidden", "")
	if msg, _ := r.obj(e.t)["message"].(string); !strings.Contains(msg, want) {
		e.t.Errorf("%s %s: message %q does not name %q", rq.method, rq.path, msg, want)
	}
	if e.snapshot() != before {
		e.t.Errorf("%s %s %v: refused, but the store changed", rq.method, rq.path, rq.body)
	}
}

// TestKeyCallerCannotOutliveItsKey: a key caller whose key expires sets
// no expiry later than its own, and clears none, on its own key or any
// other; a key it creates without expires_at gets its own; it cannot
// regenerate a key that outlives it. The refusals are 403s naming the
// latest time it may set, and change nothing.
func TestKeyCallerCannotOutliveItsKey(t *testing.T) {
	e := newEnv(t)
	e.account("acme")
	exp := e.clock.Now().Add(time.Hour).Truncate(time.Second).UTC()
	latest := exp.Format(time.RFC3339)
	later := exp.Add(time.Minute).Format(time.RFC3339)
	earlier := exp.Add(-time.Minute).Format(time.RFC3339)
	c := e.keyCallerOf(keystore.NewKey{Name: "manager", Account: "acme", Scopes: []string{"apikeys:write", "a:read"}, ExpiresAt: &exp})
	own := "/keys/" + c.KeyID

	// Its own key.
	e.refusedUnchanged(c, req{method: "PATCH", path: own, body: `{"expires_at": null}`}, latest)
	e.refusedUnchanged(c, req{method: "PATCH", path: own, body: `{"expires_at": "` + later + `"}`}, latest)
	r := e.do(c, req{method: "PATCH", path: own, body: `{"expires_at": null}`})
	if m := r.obj(t); m["field"] != "expires_at" {
		t.Errorf("field %v, want expires_at", m["field"])
	}
	// The same expiry, and an earlier one, are allowed.
	e.mustDo(c, req{method: "PATCH", path: own, body: `{"expires_at": "` + latest + `"}`}, http.StatusOK)

	// Keys it creates.
	e.refusedUnchanged(c, req{method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["a:read"], "expires_at": "` + later + `"}`}, latest)
	for _, body := range []string{`{"name": "n", "scopes": ["a:read"]}`, `{"name": "n", "scopes": ["a:read"], "expires_at": null}`} {
		inherited := e.mustDo(c, req{method: "POST", path: "/keys", body: body}, http.StatusCreated)
		if inherited["expires_at"] != latest {
			t.Errorf("%s: the key expires at %v, want the caller's %s", body, inherited["expires_at"], latest)
		}
	}
	shorter := e.mustDo(c, req{method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["a:read"], "expires_at": "` + earlier + `"}`}, http.StatusCreated)
	if shorter["expires_at"] != earlier {
		t.Errorf("expires_at %v, want %s", shorter["expires_at"], earlier)
	}

	// Keys it edits.
	other := e.createKey(map[string]any{"name": "o", "account": "acme", "scopes": []string{"a:read"}})
	path := "/keys/" + other["id"].(string)
	e.refusedUnchanged(c, req{method: "PATCH", path: path, body: `{"expires_at": "` + later + `"}`}, latest)
	e.refusedUnchanged(c, req{method: "PATCH", path: path, body: `{"expires_at": null}`}, latest)
	// Other fields of a key that outlives the caller stay editable.
	e.mustDo(c, req{method: "PATCH", path: path, body: `{"name": "renamed"}`}, http.StatusOK)

	// Keys it regenerates.
	forever := e.createKey(map[string]any{"name": "forever", "account": "acme", "scopes": []string{"a:read"}})
	far := e.createKey(map[string]any{"name": "far", "account": "acme", "scopes": []string{"a:read"}, "expires_at": later})
	for _, k := range []map[string]any{forever, far} {
		path := "/keys/" + k["id"].(string)
		e.refusedUnchanged(c, req{method: "POST", path: path + "/regenerate"}, latest)
		if got := e.verify(k["key"].(string)); got != "ok" {
			t.Errorf("the refused regenerate changed the key's string: %s", got)
		}
		// Shortened first, it can be regenerated.
		e.mustDo(c, req{method: "PATCH", path: path, body: `{"expires_at": "` + latest + `"}`}, http.StatusOK)
		e.mustDo(c, req{method: "POST", path: path + "/regenerate"}, http.StatusOK)
	}
	e.mustDo(c, req{method: "POST", path: own + "/regenerate"}, http.StatusOK)

	// The operator shortens the caller's key after the caller was
	// authenticated: its next request is held to the new expiry.
	sooner := exp.Add(-30 * time.Minute)
	if _, err := e.store.UpdateKey(c.KeyID, keystore.KeyPatch{ExpiresAt: &sooner}, "admin"); err != nil {
		t.Fatal(err)
	}
	e.refusedUnchanged(c, req{method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["a:read"], "expires_at": "` + earlier + `"}`}, sooner.Format(time.RFC3339))
	k := e.mustDo(c, req{method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["a:read"]}`}, http.StatusCreated)
	if k["expires_at"] != sooner.Format(time.RFC3339) {
		t.Errorf("expires_at %v, want the caller's new %s", k["expires_at"], sooner.Format(time.RFC3339))
	}
	// Revoked, the caller changes nothing more.
	if _, err := e.store.RevokeKey(c.KeyID, "admin"); err != nil {
		t.Fatal(err)
	}
	e.refusedUnchanged(c, req{method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["a:read"]}`}, "revoked")

	// A caller whose key never expires sets any expiry, or none, until
	// its own key expires.
	free := e.keyCaller("acme", "apikeys:write", "a:read")
	k = e.mustDo(free, req{method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["a:read"]}`}, http.StatusCreated)
	if k["expires_at"] != nil {
		t.Errorf("a key of a caller without expiry expires at %v", k["expires_at"])
	}
	e.mustDo(free, req{method: "PATCH", path: "/keys/" + k["id"].(string), body: `{"expires_at": "` + later + `"}`}, http.StatusOK)
	e.mustDo(free, req{method: "PATCH", path: "/keys/" + k["id"].(string), body: `{"expires_at": null}`}, http.StatusOK)
	e.mustDo(free, req{method: "PATCH", path: "/keys/" + free.KeyID, body: `{"expires_at": "` + later + `"}`}, http.StatusOK)
	e.refusedUnchanged(free, req{method: "PATCH", path: "/keys/" + free.KeyID, body: `{"expires_at": null}`}, later)
}

// TestKeyCallerChildrenInheritLimits: a key that a limited key caller
// creates or regenerates gets the caller's rate_limit and quota, and is
// limited by them when it is used; an exempt caller's exemption is not
// inherited.
func TestKeyCallerChildrenInheritLimits(t *testing.T) {
	e := newEnv(t)
	e.account("acme")
	rl := &keystore.RateLimit{Requests: 3, Window: "1h"}
	q := &keystore.Quota{Requests: 5, Period: "day"}
	c := e.keyCallerOf(keystore.NewKey{Name: "manager", Account: "acme", Scopes: []string{"apikeys:write", "a:read"}, RateLimit: rl, Quota: q})

	child := e.mustDo(c, req{method: "POST", path: "/keys", body: `{"name": "child", "scopes": ["a:read"]}`}, http.StatusCreated)
	gotRL, _ := child["rate_limit"].(map[string]any)
	gotQ, _ := child["quota"].(map[string]any)
	if gotRL["requests"] != float64(3) || gotRL["window"] != "1h" || gotQ["requests"] != float64(5) || gotQ["period"] != "day" {
		t.Fatalf("child limits: rate_limit %v quota %v, want the caller's", child["rate_limit"], child["quota"])
	}
	// The child is limited: 3 requests, then rate_limited.
	for i := range 3 {
		if got := e.verify(child["key"].(string)); got != "ok" {
			t.Fatalf("request %d: %s", i+1, got)
		}
	}
	if got := e.verify(child["key"].(string)); got != "rate_limited" {
		t.Fatalf("request 4 of a child limited to 3 an hour: %s", got)
	}

	// Regenerated by the limited caller, an unlimited key gets its limits.
	plain := e.createKey(map[string]any{"name": "plain", "account": "acme", "scopes": []string{"a:read"}})
	regen := e.mustDo(c, req{method: "POST", path: "/keys/" + plain["id"].(string) + "/regenerate"}, http.StatusOK)
	if regen["rate_limit"] == nil || regen["quota"] == nil {
		t.Fatalf("regenerated key: rate_limit %v quota %v, want the caller's", regen["rate_limit"], regen["quota"])
	}
	for range 3 {
		e.verify(regen["key"].(string))
	}
	if got := e.verify(regen["key"].(string)); got != "rate_limited" {
		t.Fatalf("request 4 of the regenerated key: %s", got)
	}
	// The operator's limits still keep a key from the caller's regenerate.
	limited := e.createKey(map[string]any{"name": "op", "account": "acme", "scopes": []string{"a:read"}, "rate_limit": map[string]any{"unlimited": true}})
	e.refusedUnchanged(c, req{method: "POST", path: "/keys/" + limited["id"].(string) + "/regenerate"}, "operator")

	// A quota alone is inherited alone.
	qc := e.keyCallerOf(keystore.NewKey{Name: "q", Account: "acme", Scopes: []string{"apikeys:write", "a:read"}, Quota: &keystore.Quota{Requests: 2, Period: "day"}})
	qchild := e.mustDo(qc, req{method: "POST", path: "/keys", body: `{"name": "qchild", "scopes": ["a:read"]}`}, http.StatusCreated)
	if qchild["rate_limit"] != nil || qchild["quota"] == nil {
		t.Fatalf("child of a quota-only caller: rate_limit %v quota %v", qchild["rate_limit"], qchild["quota"])
	}
	for range 2 {
		e.verify(qchild["key"].(string))
	}
	if got := e.verify(qchild["key"].(string)); got != "quota_exceeded" {
		t.Fatalf("request 3 of a child with a quota of 2: %s", got)
	}

	// Exempt callers' children get the default limit, not exemption.
	ex := e.keyCallerOf(keystore.NewKey{Name: "exempt", Account: "acme", Scopes: []string{"apikeys:write", "a:read"}, RateLimit: &keystore.RateLimit{Unlimited: true}})
	exchild := e.mustDo(ex, req{method: "POST", path: "/keys", body: `{"name": "exchild", "scopes": ["a:read"]}`}, http.StatusCreated)
	if exchild["rate_limit"] != nil {
		t.Fatalf("child of an exempt caller: rate_limit %v, want null (the default)", exchild["rate_limit"])
	}
}

// TestKeyCallerType: a key caller's keys are of its own key's type: a
// create without type gets it, another type is refused on create and
// PATCH, and a key of another type cannot be regenerated.
func TestKeyCallerType(t *testing.T) {
	e := newEnv(t)
	c := e.keyCallerOf(keystore.NewKey{Name: "manager", Type: "partner", Scopes: []string{"apikeys:write", "a:read"}})
	k := e.mustDo(c, req{method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["a:read"]}`}, http.StatusCreated)
	if k["type"] != "partner" {
		t.Fatalf("a key created without type has type %v, want the caller's partner", k["type"])
	}
	e.mustDo(c, req{method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["a:read"], "type": "partner"}`}, http.StatusCreated)
	for _, typ := range []string{"internal", "api"} {
		e.refusedUnchanged(c, req{method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["a:read"], "type": "` + typ + `"}`}, `"partner"`)
		e.refusedUnchanged(c, req{method: "PATCH", path: "/keys/" + k["id"].(string), body: `{"type": "` + typ + `"}`}, `"partner"`)
		e.refusedUnchanged(c, req{method: "PATCH", path: "/keys/" + c.KeyID, body: `{"type": "` + typ + `"}`}, `"partner"`)
	}
	// An operator's key of another type: its own type stays settable (no
	// change), the caller's is allowed, and it cannot be regenerated.
	internal := e.createKey(map[string]any{"name": "i", "scopes": []string{"a:read"}, "type": "internal"})
	path := "/keys/" + internal["id"].(string)
	e.mustDo(c, req{method: "PATCH", path: path, body: `{"type": "internal", "name": "renamed"}`}, http.StatusOK)
	e.refusedUnchanged(c, req{method: "POST", path: path + "/regenerate"}, `"internal"`)
	e.mustDo(c, req{method: "PATCH", path: path, body: `{"type": "partner"}`}, http.StatusOK)
	// The operator sets any type.
	e.mustDo(op, req{method: "PATCH", path: path, body: `{"type": "internal"}`}, http.StatusOK)
}
