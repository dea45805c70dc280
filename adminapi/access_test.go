package adminapi

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// TestKeyCallerScopes: apikeys:read to read, apikeys:write to change,
// apikeys:delete to delete, with the implication rules of every scope.
func TestKeyCallerScopes(t *testing.T) {
	e := newEnv(t)
	target := e.createKey(map[string]any{"name": "target", "scopes": []string{"a:read"}})
	id := target["id"].(string)
	endpoints := []struct {
		rq   req
		need string
	}{
		{req{method: "GET", path: "/keys"}, "apikeys:read"},
		{req{method: "HEAD", path: "/keys"}, "apikeys:read"},
		{req{method: "GET", path: "/keys/" + id}, "apikeys:read"},
		{req{method: "GET", path: "/keys/" + id + "/audit"}, "apikeys:read"},
		{req{method: "POST", path: "/keys", body: `{"name": "n", "scopes": ["a:read"]}`}, "apikeys:write"},
		{req{method: "PATCH", path: "/keys/" + id, body: `{"name": "n"}`}, "apikeys:write"},
		{req{method: "POST", path: "/keys/" + id + "/revoke"}, "apikeys:write"},
		{req{method: "POST", path: "/keys/" + id + "/activate"}, "apikeys:write"},
		{req{method: "POST", path: "/keys/" + id + "/regenerate"}, "apikeys:write"},
		{req{method: "DELETE", path: "/keys/" + id}, "apikeys:delete"},
	}
	callers := []struct {
		scopes  []string
		allowed []string // the scopes it satisfies
	}{
		{[]string{"contacts:read"}, nil},
		{[]string{"apikeys:read"}, []string{"apikeys:read"}},
		{[]string{"apikeys:write"}, []string{"apikeys:read", "apikeys:write"}},
		{[]string{"apikeys:delete"}, []string{"apikeys:read", "apikeys:delete"}},
		{[]string{"apikeys:read", "apikeys:delete"}, []string{"apikeys:read", "apikeys:delete"}},
		{[]string{"*:read"}, []string{"apikeys:read"}},
		{[]string{"*:write"}, []string{"apikeys:read", "apikeys:write"}},
		{[]string{"other:write", "apikeys:write", "apikeys:delete"}, []string{"apikeys:read", "apikeys:write", "apikeys:delete"}},
	}
	for _, cl := range callers {
		c := e.keyCaller("default", append(cl.scopes, "a:read")...)
		for _, ep := range endpoints {
			if ep.rq.method == "DELETE" {
				continue // would delete the target; checked below
			}
			t.Run(fmt.Sprintf("%v %s %s", cl.scopes, ep.rq.method, ep.rq.path), func(t *testing.T) {
				r := e.do(c, ep.rq)
				if slices.Contains(cl.allowed, ep.need) {
					if r.status >= 400 {
						t.Fatalf("allowed, but %d: %s", r.status, r.body)
					}
					return
				}
				if ep.rq.method == "HEAD" {
					if r.status != http.StatusForbidden {
						t.Fatalf("HEAD: %d", r.status)
					}
					return
				}
				errorIs(t, r, http.StatusForbidden, "insufficient_scope", "")
				m := r.obj(t)
				if m["required_scope"] != ep.need || m["message"] != "this request requires the "+ep.need+" scope" {
					t.Errorf("body %s", r.body)
				}
				if got, want := r.header.Get("WWW-Authenticate"), `Bearer error="insufficient_scope", scope="`+ep.need+`"`; got != want {
					t.Errorf("WWW-Authenticate %q, want %q", got, want)
				}
			})
		}
	}
	// Delete, with and without apikeys:delete.
	r := e.do(e.keyCaller("default", "apikeys:write", "a:read"), req{method: "DELETE", path: "/keys/" + id})
	errorIs(t, r, http.StatusForbidden, "insufficient_scope", "")
	if r.obj(t)["required_scope"] != "apikeys:delete" {
		t.Fatalf("%s", r.body)
	}
	if r := e.do(e.keyCaller("default", "apikeys:delete"), req{method: "DELETE", path: "/keys/" + id}); r.status != http.StatusNoContent {
		t.Fatalf("delete with apikeys:delete: %d %s", r.status, r.body)
	}
}

// TestKeyCallerIsolation: a key caller sees and changes only its own
// account's keys; another account's key answers exactly like an unknown
// id.
func TestKeyCallerIsolation(t *testing.T) {
	e := newEnv(t)
	e.account("acme")
	e.account("globex")
	mine := e.createKey(map[string]any{"name": "mine", "account": "acme", "scopes": []string{"a:read"}})
	theirs := e.createKey(map[string]any{"name": "theirs", "account": "globex", "scopes": []string{"a:read"}})
	c := e.keyCaller("acme", "apikeys:write", "apikeys:delete", "*:write", "*:delete")
	theirID := theirs["id"].(string)
	unknown := "0190b6a0-0000-7000-8000-000000000000"

	before := e.snapshot()
	for _, rq := range []func(id string) req{
		func(id string) req { return req{method: "GET", path: "/keys/" + id} },
		func(id string) req { return req{method: "GET", path: "/keys/" + id + "/audit"} },
		func(id string) req { return req{method: "PATCH", path: "/keys/" + id, body: `{"name": "pwned"}`} },
		func(id string) req { return req{method: "POST", path: "/keys/" + id + "/revoke"} },
		func(id string) req { return req{method: "POST", path: "/keys/" + id + "/activate"} },
		func(id string) req { return req{method: "POST", path: "/keys/" + id + "/regenerate"} },
		func(id string) req { return req{method: "DELETE", path: "/keys/" + id} },
	} {
		other, missing := e.do(c, rq(theirID)), e.do(c, rq(unknown))
		t.Run(rq(theirID).method+" "+rq("{id}").path, func(t *testing.T) {
			errorIs(t, other, http.StatusNotFound, "not_found", "")
			if string(other.body) != string(missing.body) || other.status != missing.status {
				t.Fatalf("another account's key %s differs from an unknown id %s", other.body, missing.body)
			}
		})
	}
	if e.snapshot() != before {
		t.Fatal("requests on another account's key changed the store")
	}
	if got := e.verify(theirs["key"].(string)); got != "ok" {
		t.Fatalf("their key: %s", got)
	}

	// Listing is confined to the caller's account.
	for _, q := range []string{"", "?account=acme", "?q=e"} {
		m := e.mustDo(c, req{method: "GET", path: "/keys" + q}, http.StatusOK)
		for _, rec := range m["keys"].([]any) {
			if acct := rec.(map[string]any)["account"]; acct != "acme" {
				t.Fatalf("list%s shows a key of %v", q, acct)
			}
		}
		if !strings.Contains(fmt.Sprint(ids(m["keys"])), mine["id"].(string)) {
			t.Fatalf("list%s misses the caller's key", q)
		}
	}
	for _, q := range []string{"?account=globex", "?account=nope", "?account=globex&status=active"} {
		m := e.mustDo(c, req{method: "GET", path: "/keys" + q}, http.StatusOK)
		if len(m["keys"].([]any)) != 0 || m["next_cursor"] != nil {
			t.Fatalf("list%s: %v", q, m)
		}
	}

	// Create: in its own account by default; another account is refused.
	m := e.mustDo(c, req{method: "POST", path: "/keys", body: `{"name": "new", "scopes": ["a:read"]}`}, http.StatusCreated)
	if m["account"] != "acme" {
		t.Fatalf("created in %v", m["account"])
	}
	e.mustDo(c, req{method: "POST", path: "/keys", body: `{"name": "new", "account": "acme", "scopes": ["a:read"]}`}, http.StatusCreated)
	before = e.snapshot()
	for _, acct := range []string{"globex", "default", "nope"} {
		r := e.do(c, req{method: "POST", path: "/keys", body: `{"name": "new", "account": "` + acct + `", "scopes": ["a:read"]}`})
		errorIs(t, r, http.StatusForbidden, "forbidden", "")
	}

	// Accounts and import are the operator's.
	for _, rq := range []req{
		{method: "GET", path: "/accounts"},
		{method: "POST", path: "/accounts", body: `{"id": "x"}`},
		{method: "GET", path: "/accounts/acme"},
		{method: "PATCH", path: "/accounts/acme", body: `{"status": "open"}`},
		{method: "DELETE", path: "/accounts/globex"},
		{method: "POST", path: "/keys/import", body: `[{"sha256": "` + sha("x") + `", "name": "n", "scopes": ["a:read"]}]`},
	} {
		errorIs(t, e.do(c, rq), http.StatusForbidden, "forbidden", "")
	}
	if e.snapshot() != before {
		t.Fatal("refused requests changed the store")
	}

	// Its own account's keys: every action works, audited as key:<id>.
	id := mine["id"].(string)
	e.mustDo(c, req{method: "PATCH", path: "/keys/" + id, body: `{"name": "renamed"}`}, http.StatusOK)
	e.mustDo(c, req{method: "POST", path: "/keys/" + id + "/revoke"}, http.StatusOK)
	e.mustDo(c, req{method: "POST", path: "/keys/" + id + "/activate"}, http.StatusOK)
	e.mustDo(c, req{method: "POST", path: "/keys/" + id + "/regenerate", body: `{"grace_period": "1m"}`}, http.StatusOK)
	ev := e.mustDo(c, req{method: "GET", path: "/keys/" + id + "/audit"}, http.StatusOK)["events"].([]any)
	for _, x := range ev[:4] {
		if x.(map[string]any)["actor"] != "key:"+c.KeyID {
			t.Fatalf("actor %v", x)
		}
	}
	e.mustDo(c, req{method: "DELETE", path: "/keys/" + id}, http.StatusNoContent)
}

// TestKeyCallerNoEscalation: a key caller cannot create or edit a key with
// a scope it does not hold, nor take a new string for a key more powerful
// than itself.
func TestKeyCallerNoEscalation(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name   string
		caller []string
		scopes []string
		denied string // the first scope not held, or "" if allowed
	}{
		{"same scope", []string{"contacts:read"}, []string{"contacts:read"}, ""},
		{"read cannot grant write", []string{"contacts:read"}, []string{"contacts:write"}, "contacts:write"},
		{"write grants read", []string{"contacts:write"}, []string{"contacts:read"}, ""},
		{"write does not grant delete", []string{"contacts:write"}, []string{"contacts:delete"}, "contacts:delete"},
		{"delete grants read", []string{"contacts:delete"}, []string{"contacts:read"}, ""},
		{"delete does not grant write", []string{"contacts:delete"}, []string{"contacts:write"}, "contacts:write"},
		{"other resource", []string{"contacts:write"}, []string{"billing:read"}, "billing:read"},
		{"wildcard covers resources", []string{"*:write"}, []string{"contacts:write", "billing:read"}, ""},
		{"wildcard write is not delete", []string{"*:write"}, []string{"contacts:delete"}, "contacts:delete"},
		{"cannot grant wildcard", []string{"contacts:write"}, []string{"*:read"}, "*:read"},
		{"first not held in order", []string{"a:read"}, []string{"a:read", "c:read", "b:read"}, "c:read"},
		{"cannot grant apikeys:delete", []string{}, []string{"apikeys:delete"}, "apikeys:delete"},
		{"can grant its own apikeys:write", []string{}, []string{"apikeys:write"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.keyCaller("default", append(tt.caller, "apikeys:write")...)
			body := map[string]any{"name": "n", "scopes": tt.scopes}
			mine := e.createKey(map[string]any{"name": "mine", "scopes": []string{"apikeys:write"}})
			before := e.snapshot()
			create := e.do(c, req{method: "POST", path: "/keys", body: body})
			patch := e.do(c, req{method: "PATCH", path: "/keys/" + mine["id"].(string), body: map[string]any{"scopes": tt.scopes}})
			if tt.denied == "" {
				if create.status != http.StatusCreated || patch.status != http.StatusOK {
					t.Fatalf("create %d %s; patch %d %s", create.status, create.body, patch.status, patch.body)
				}
				return
			}
			for _, r := range []resp{create, patch} {
				errorIs(t, r, http.StatusForbidden, "insufficient_scope", "")
				if got := r.obj(t)["required_scope"]; got != tt.denied {
					t.Errorf("required_scope %v, want %s", got, tt.denied)
				}
				if !strings.Contains(r.header.Get("WWW-Authenticate"), `scope="`+tt.denied+`"`) {
					t.Errorf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
				}
			}
			if e.snapshot() != before {
				t.Fatal("a refused escalation changed the store")
			}
		})
	}
}

// TestKeyCallerNoEscalationRace: while the operator switches a key's
// scopes between ones the caller holds and ones it lacks, the caller's
// regenerate, activate and PATCH never change the key while it is the
// stronger one: the check runs again inside the store's transaction. (A
// check made only before the write let a weaker caller take a new string
// for the stronger key within the first few requests.)
func TestKeyCallerNoEscalationRace(t *testing.T) {
	e := newEnv(t)
	e.account("acme")
	target := e.createKey(map[string]any{"name": "target", "account": "acme", "scopes": []string{"contacts:read"}})["id"].(string)
	c := e.keyCaller("acme", "apikeys:write", "contacts:read")
	weak, strong := []string{"contacts:read"}, []string{"billing:write", "contacts:read"}
	done := make(chan struct{})
	flips := make(chan int, 1)
	stop := sync.OnceValue(func() int { close(done); return <-flips })
	defer stop() // the operator stops before the store closes
	go func() {  // the operator, meanwhile
		n := 0
		defer func() { flips <- n }()
		for ; ; n++ {
			select {
			case <-done:
				return
			default:
			}
			sc := weak
			if n%2 == 1 {
				sc = strong
			}
			if _, err := e.store.UpdateKey(target, keystore.KeyPatch{Scopes: sc}, "admin"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	requests := []req{
		{method: "POST", path: "/keys/" + target + "/regenerate"},
		{method: "POST", path: "/keys/" + target + "/activate"},
		{method: "PATCH", path: "/keys/" + target, body: map[string]any{"active": true, "name": "renamed"}},
	}
	changed := 0
	for i := 0; i < 600; i++ {
		r := e.do(c, requests[i%len(requests)])
		switch r.status {
		case http.StatusOK:
			changed++
			if slices.Contains(r.obj(t)["scopes"].([]any), any("billing:write")) {
				t.Fatalf("%s %s by a caller without billing:write changed the key while it had billing:write: %s", requests[i%3].method, requests[i%3].path, r.body)
			}
		case http.StatusForbidden:
			errorIs(t, r, http.StatusForbidden, "insufficient_scope", "")
		default:
			t.Fatalf("%s %s: %d %s", requests[i%3].method, requests[i%3].path, r.status, r.body)
		}
		if i%3 == 0 { // revoke it again, so that activate has work to do
			e.mustDo(c, req{method: "POST", path: "/keys/" + target + "/revoke"}, http.StatusOK)
		}
	}
	n := stop()
	if changed == 0 || n < 10 {
		t.Fatalf("the race did not run: %d changes by the caller, %d scope changes by the operator", changed, n)
	}
	t.Logf("%d changes by the caller, %d scope changes by the operator, none to the stronger key", changed, n)
}

// TestKeyCallerPowerfulKey: a key with a scope the caller lacks can be
// read, revoked and deleted by it (that only takes access away), but not
// patched, activated or regenerated.
func TestKeyCallerPowerfulKey(t *testing.T) {
	e := newEnv(t)
	c := e.keyCaller("default", "apikeys:write", "apikeys:delete", "contacts:read")
	strong := e.createKey(map[string]any{"name": "admin", "scopes": []string{"contacts:read", "contacts:delete"}})
	id := strong["id"].(string)

	e.mustDo(c, req{method: "GET", path: "/keys/" + id}, http.StatusOK)
	before := e.snapshot()
	for _, rq := range []req{
		{method: "PATCH", path: "/keys/" + id, body: `{"name": "mine now"}`},
		{method: "PATCH", path: "/keys/" + id, body: `{"scopes": ["contacts:read"]}`},
		{method: "POST", path: "/keys/" + id + "/regenerate"},
	} {
		r := e.do(c, rq)
		errorIs(t, r, http.StatusForbidden, "insufficient_scope", "")
		if r.obj(t)["required_scope"] != "contacts:delete" {
			t.Fatalf("%s", r.body)
		}
	}
	if e.snapshot() != before {
		t.Fatal("refused requests changed the store")
	}
	e.mustDo(c, req{method: "POST", path: "/keys/" + id + "/revoke"}, http.StatusOK)
	r := e.do(c, req{method: "POST", path: "/keys/" + id + "/activate"})
	errorIs(t, r, http.StatusForbidden, "insufficient_scope", "")
	if got := e.verify(strong["key"].(string)); got != "key_revoked" {
		t.Fatalf("after a refused activate: %s", got)
	}
	e.mustDo(c, req{method: "DELETE", path: "/keys/" + id}, http.StatusNoContent)
}

// TestKeyCallerRegenerateOperatorLimits: a key caller cannot take a new
// string for a key whose rate_limit or quota the operator set (it could be
// exempt from the limits of the keys the caller creates), though it holds
// the key's scopes and may change the key otherwise. The operator can.
func TestKeyCallerRegenerateOperatorLimits(t *testing.T) {
	e := newEnv(t)
	c := e.keyCaller("default", "apikeys:write", "contacts:read")
	for _, limits := range []map[string]any{
		{"rate_limit": map[string]any{"unlimited": true}},
		{"rate_limit": map[string]any{"requests": 1, "window": "1s"}},
		{"quota": map[string]any{"requests": 1000000, "period": "day"}},
	} {
		body := map[string]any{"name": "batch", "scopes": []string{"contacts:read"}}
		for k, v := range limits {
			body[k] = v
		}
		target := e.createKey(body)
		id := target["id"].(string)
		before := e.snapshot()
		r := e.do(c, req{method: "POST", path: "/keys/" + id + "/regenerate"})
		errorIs(t, r, http.StatusForbidden, "forbidden", "")
		if e.snapshot() != before {
			t.Fatalf("a refused regenerate of a key with %v changed the store", limits)
		}
		if got := e.verify(target["key"].(string)); got != "ok" {
			t.Fatalf("the key's string after the refused regenerate: %s", got)
		}
		e.mustDo(c, req{method: "PATCH", path: "/keys/" + id, body: `{"name": "renamed"}`}, http.StatusOK)
		e.mustDo(op, req{method: "POST", path: "/keys/" + id + "/regenerate"}, http.StatusOK)
	}
	// A key with the default limits: the caller can regenerate it.
	plain := e.createKey(map[string]any{"name": "plain", "scopes": []string{"contacts:read"}})
	e.mustDo(c, req{method: "POST", path: "/keys/" + plain["id"].(string) + "/regenerate"}, http.StatusOK)
}

// TestKeyCallerWithoutAccount: a malformed key caller (no account) is
// refused rather than seeing every account.
func TestKeyCallerWithoutAccount(t *testing.T) {
	e := newEnv(t)
	e.createKey(map[string]any{"name": "k", "scopes": []string{"a:read"}})
	c := Caller{KeyID: "x", Scopes: []keystore.Scope{{Resource: "*", Access: keystore.AccessDelete}, {Resource: "*", Access: keystore.AccessWrite}}}
	errorIs(t, e.do(c, req{method: "GET", path: "/keys"}), http.StatusForbidden, "forbidden", "")
}

func TestActor(t *testing.T) {
	if got := OperatorCaller().Actor(); got != "admin" {
		t.Errorf("operator actor %q", got)
	}
	if got := (Caller{KeyID: "abc", Account: "x"}).Actor(); got != "key:abc" {
		t.Errorf("key actor %q", got)
	}
	if !OperatorCaller().Operator {
		t.Error("OperatorCaller is not an operator")
	}
}
