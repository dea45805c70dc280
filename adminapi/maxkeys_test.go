package adminapi

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// limitReached checks a 409 key_limit_reached that changed nothing.
func (e *env) limitReached(c Caller, rq req) {
	e.t.Helper()
	before := e.snapshot()
	r := e.do(c, rq)
	errorIs(e.t, r, http.StatusConflict, "key_limit_reached", "")
	if msg, _ := r.obj(e.t)["message"].(string); !strings.Contains(msg, "max_keys") {
		e.t.Errorf("message %q does not name max_keys", msg)
	}
	if e.snapshot() != before {
		e.t.Errorf("%s %s: refused, but the store changed", rq.method, rq.path)
	}
}

// importBody is an import of n keys (by sha256) into account.
func importBody(account string, n, from int) []map[string]any {
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = map[string]any{
			"sha256":  fmt.Sprintf("%064x", from+i+1),
			"name":    fmt.Sprintf("imported %d", from+i),
			"account": account,
			"scopes":  []string{"a:read"},
		}
	}
	return out
}

// TestAccountMaxKeys: an account's max_keys bounds the keys it holds
// (revoked ones included): a create or an import beyond it answers 409
// key_limit_reached and stores nothing, for every caller; it is set,
// lowered and cleared through the accounts endpoints.
func TestAccountMaxKeys(t *testing.T) {
	e := newEnv(t)
	acct := e.mustDo(op, req{method: "POST", path: "/accounts", body: `{"id": "acme", "max_keys": 3}`}, http.StatusCreated)
	if acct["max_keys"] != float64(3) {
		t.Fatalf("max_keys %v, want 3", acct["max_keys"])
	}
	if got := e.mustDo(op, req{method: "GET", path: "/accounts/acme"}, http.StatusOK); got["max_keys"] != float64(3) {
		t.Fatalf("GET: max_keys %v", got["max_keys"])
	}
	if got := e.mustDo(op, req{method: "GET", path: "/accounts/default"}, http.StatusOK); got["max_keys"] != nil {
		t.Fatalf("the default account: max_keys %v, want null", got["max_keys"])
	}
	create := req{method: "POST", path: "/keys", body: `{"name": "n", "account": "acme", "scopes": ["a:read"]}`}
	first := e.mustDo(op, create, http.StatusCreated)
	c := e.keyCaller("acme", "apikeys:write", "apikeys:delete", "a:read") // the second key
	e.mustDo(c, create, http.StatusCreated)                               // the third
	e.limitReached(op, create)
	e.limitReached(c, create)
	e.limitReached(op, req{method: "POST", path: "/keys/import", body: importBody("acme", 1, 0)})

	// Revoked keys count; deleted ones do not.
	e.mustDo(op, req{method: "POST", path: "/keys/" + first["id"].(string) + "/revoke"}, http.StatusOK)
	e.limitReached(c, create)
	e.mustDo(c, req{method: "DELETE", path: "/keys/" + first["id"].(string)}, http.StatusNoContent)
	e.mustDo(c, create, http.StatusCreated)
	e.limitReached(c, create)

	// Lowered below the count: the keys stay, new ones are refused.
	e.mustDo(op, req{method: "PATCH", path: "/accounts/acme", body: `{"max_keys": 1}`}, http.StatusOK)
	if list := e.mustDo(op, req{method: "GET", path: "/keys?account=acme"}, http.StatusOK); len(list["keys"].([]any)) != 3 {
		t.Fatalf("%d keys after lowering max_keys, want 3", len(list["keys"].([]any)))
	}
	e.limitReached(op, create)

	// Raised, and then cleared with null.
	e.mustDo(op, req{method: "PATCH", path: "/accounts/acme", body: `{"max_keys": 5}`}, http.StatusOK)
	e.mustDo(op, req{method: "POST", path: "/keys/import", body: importBody("acme", 2, 0)}, http.StatusCreated)
	e.limitReached(op, create)
	got := e.mustDo(op, req{method: "PATCH", path: "/accounts/acme", body: `{"max_keys": null}`}, http.StatusOK)
	if v, ok := got["max_keys"]; !ok || v != nil {
		t.Fatalf("after clearing: max_keys %v (present %v), want null", v, ok)
	}
	e.mustDo(op, create, http.StatusCreated)
	e.mustDo(op, req{method: "POST", path: "/keys/import", body: importBody("acme", 3, 10)}, http.StatusCreated)
	// Set again below the count (9): counted exactly from the store.
	e.mustDo(op, req{method: "PATCH", path: "/accounts/acme", body: `{"max_keys": 10}`}, http.StatusOK)
	e.mustDo(op, create, http.StatusCreated)
	e.limitReached(op, create)
}

// TestImportMaxKeysAllOrNothing: an import that would take any of its
// accounts past max_keys stores none of its keys, in any account.
func TestImportMaxKeysAllOrNothing(t *testing.T) {
	e := newEnv(t)
	e.mustDo(op, req{method: "POST", path: "/accounts", body: `{"id": "acme", "max_keys": 2}`}, http.StatusCreated)
	e.account("globex")
	batch := append(importBody("globex", 5, 0), importBody("acme", 3, 100)...)
	e.limitReached(op, req{method: "POST", path: "/keys/import", body: batch})
	e.mustDo(op, req{method: "POST", path: "/keys/import", body: batch[:7]}, http.StatusCreated)
	e.limitReached(op, req{method: "POST", path: "/keys/import", body: importBody("acme", 1, 200)})
}

// TestMaxKeysConcurrentCreates: creates that race for an account's last
// place never take it past max_keys: of many concurrent creates (by the
// operator and a key caller) with one place left, exactly one succeeds,
// and every other answers key_limit_reached.
func TestMaxKeysConcurrentCreates(t *testing.T) {
	e := newEnv(t)
	const max, racers, rounds = 4, 8, 5
	for round := range rounds {
		id := fmt.Sprintf("acme-%d", round)
		e.mustDo(op, req{method: "POST", path: "/accounts", body: fmt.Sprintf(`{"id": %q, "max_keys": %d}`, id, max)}, http.StatusCreated)
		c := e.keyCaller(id, "apikeys:write", "a:read") // the first key
		create := req{method: "POST", path: "/keys", body: `{"name": "n", "account": "` + id + `", "scopes": ["a:read"]}`}
		for range max - 2 {
			e.mustDo(op, create, http.StatusCreated)
		}
		var wg sync.WaitGroup
		results := make([]resp, racers)
		for i := range racers {
			caller := op
			if i%2 == 1 {
				caller = c
			}
			wg.Go(func() { results[i] = e.do(caller, create) })
		}
		wg.Wait()
		created := 0
		for _, r := range results {
			switch {
			case r.status == http.StatusCreated:
				created++
			case r.status == http.StatusConflict && strings.Contains(string(r.body), `"key_limit_reached"`):
			default:
				t.Fatalf("status %d: %s", r.status, r.body)
			}
		}
		list := e.mustDo(op, req{method: "GET", path: "/keys?account=" + id}, http.StatusOK)
		if n := len(list["keys"].([]any)); created != 1 || n != max {
			t.Fatalf("round %d: %d concurrent creates for the last place stored %d; the account holds %d keys of max_keys %d", round, racers, created, n, max)
		}
	}
}

// TestMaxKeysValidation: max_keys is an integer of at least 1, or null; a
// bad one is a 400 naming the field that changes nothing.
func TestMaxKeysValidation(t *testing.T) {
	e := newEnv(t)
	e.mustDo(op, req{method: "POST", path: "/accounts", body: `{"id": "acme", "max_keys": 2}`}, http.StatusCreated)
	for _, v := range []string{`0`, `-1`, `"3"`, `1.5`, `true`, `{}`, `1e30`} {
		before := e.snapshot()
		errorIs(t, e.do(op, req{method: "POST", path: "/accounts", body: `{"id": "globex", "max_keys": ` + v + `}`}), http.StatusBadRequest, "invalid_request", "max_keys")
		errorIs(t, e.do(op, req{method: "PATCH", path: "/accounts/acme", body: `{"max_keys": ` + v + `}`}), http.StatusBadRequest, "invalid_request", "max_keys")
		if e.snapshot() != before {
			t.Errorf("max_keys %s changed the store", v)
		}
	}
	// A key caller reaches none of it.
	c := e.keyCaller("acme", "apikeys:write", "a:read")
	errorIs(t, e.do(c, req{method: "PATCH", path: "/accounts/acme", body: `{"max_keys": 100}`}), http.StatusForbidden, "forbidden", "")
}
