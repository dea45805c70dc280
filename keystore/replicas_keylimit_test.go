package keystore

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
)

// TestReplicasMaxKeys: two replicas on one Redis create keys in one
// account with max_keys concurrently; together they never store more than
// max_keys, and every create either succeeded or was refused with
// ErrKeyLimit. (A count kept in each process's memory lets both pass the
// check at max_keys - 1.)
func TestReplicasMaxKeys(t *testing.T) {
	srv := redistest.Start(t)
	rs := replicas(t, srv, 2, Options{})
	const limit, perReplica = 10, 15
	n := limit
	if _, err := rs[0].CreateAccount(Account{ID: "acme", MaxKeys: &n}); err != nil {
		t.Fatal(err)
	}
	within(t, "the account on B", time.Second, func() bool { return rs[1].accountState("acme") != nil })
	for round := range 3 {
		account := "acme"
		if round > 0 {
			// Rounds after the first start from counts each replica
			// already holds in memory.
			account = fmt.Sprint("acme", round)
			if _, err := rs[1].CreateAccount(Account{ID: account, MaxKeys: &n}); err != nil {
				t.Fatal(err)
			}
			within(t, "the account on A", time.Second, func() bool { return rs[0].accountState(account) != nil })
			// Each replica counts the account in memory at its first
			// insert: A holds limit-2 by its count, B sees limit-1.
			createN(t, rs[0], account, limit-2)
			createN(t, rs[1], account, 1)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := 0
		start := make(chan struct{})
		for _, s := range rs {
			for range perReplica {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, _, err := s.CreateKey(NewKey{Name: "race", Account: account, Scopes: []string{"a:read"}}, DefaultFormat(), "admin")
					switch {
					case err == nil:
						mu.Lock()
						created++
						mu.Unlock()
					case !errors.Is(err, ErrKeyLimit):
						t.Errorf("a create: %v", err)
					}
				}()
			}
		}
		close(start)
		wg.Wait()
		stored := storedKeys(t, rs[0], account)
		want := limit
		if round > 0 {
			want = 1
		}
		if stored != limit || created != want {
			t.Errorf("round %d: %d keys stored for max_keys %d (%d creates acknowledged, want %d)", round, stored, limit, created, want)
		}
	}

	// A key created on each replica (each counts the account), then two
	// imports of 5 keys into the account with max_keys 10, one on each
	// replica at once: one is stored, the other refused whole.
	if _, err := rs[0].CreateAccount(Account{ID: "imp", MaxKeys: &n}); err != nil {
		t.Fatal(err)
	}
	within(t, "the account on B", time.Second, func() bool { return rs[1].accountState("imp") != nil })
	createN(t, rs[0], "imp", 1)
	createN(t, rs[1], "imp", 1)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range rs {
		in := make([]ImportKey, 5)
		for j := range in {
			in[j] = ImportKey{SHA256: fmt.Sprintf("%064x", 100*(i+1)+j), NewKey: NewKey{Name: "i", Account: "imp", Scopes: []string{"a:read"}}}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.ImportKeys(in, DefaultFormat(), "admin")
		}()
	}
	wg.Wait()
	refused := 0
	for _, err := range errs {
		if errors.Is(err, ErrKeyLimit) {
			refused++
		} else if err != nil {
			t.Errorf("an import: %v", err)
		}
	}
	if got := storedKeys(t, rs[0], "imp"); got != 7 || refused != 1 {
		t.Errorf("two imports of 5 keys at max_keys 10 (2 held): %d stored, %d refused", got, refused)
	}
}

// storedKeys counts an account's keys in the store.
func storedKeys(t *testing.T, s *Store, account string) int {
	t.Helper()
	n := 0
	err := s.view(func(tx txn) error {
		return tx.scan([]byte(pfxAcctKey+account+"/"), nil, false, false, func(_, _ []byte) (bool, error) {
			n++
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
