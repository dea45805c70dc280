package keystore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
	"github.com/caddy-apikey/caddy-apikey/keystore/redisstore"
)

// heldEngine is a Redis engine whose process applies the changes of others
// only while hold is not locked: a replica whose follower is behind.
type heldEngine struct {
	*redisstore.Engine
	hold sync.RWMutex
}

func (h *heldEngine) Follow(ctx context.Context, apply func(keys [][]byte), confirmed func(at time.Time)) (func(), error) {
	return h.Engine.Follow(ctx, func(keys [][]byte) {
		h.hold.RLock()
		defer h.hold.RUnlock()
		apply(keys)
	}, confirmed)
}

// TestReplicaKnowsAccountsOfOthersAtOnce: an account created on B is
// usable by an admin request on A before A's follower has applied the
// change (a key created for it, the account updated, then deleted), as on
// B; CI once saw "account does not exist" from A in the Caddy cluster
// test, a few milliseconds after B created it.
func TestReplicaKnowsAccountsOfOthersAtOnce(t *testing.T) {
	srv := redistest.Shared(t)
	ns := "learn:"
	held := &heldEngine{Engine: openRedisEngine(t, srv, ns, "A")}
	a, err := Open(Options{Engine: held})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b := replicasNS(t, srv, 1, ns, Options{})[0]

	held.hold.Lock()
	if _, err := b.CreateAccount(Account{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	k, _ := mustCreate(t, a, DefaultFormat(), NewKey{Account: "acme"})
	if k.Account != "acme" {
		t.Fatalf("created for %q", k.Account)
	}
	name := "Acme Inc"
	if _, err := a.UpdateAccount("acme", AccountPatch{Name: &name}); err != nil {
		t.Fatalf("updating on A an account B created: %v", err)
	}
	if _, err := b.CreateAccount(Account{ID: "empty"}); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteAccount("empty"); err != nil {
		t.Fatalf("deleting on A an account B created: %v", err)
	}
	held.hold.Unlock()
	if err := a.learnAccounts("never"); err != nil || a.accountState("never") != nil {
		t.Fatalf("an account no one created: %v", err)
	}
}
