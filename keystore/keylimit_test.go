package keystore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// createN creates n keys in account and returns their ids.
func createN(t *testing.T, s *Store, account string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		k, _, err := s.CreateKey(NewKey{Name: fmt.Sprint("k", i), Account: account, Scopes: []string{"a:read"}}, DefaultFormat(), "admin")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
	}
	return ids
}

// atLimit checks that the account takes exactly room more keys.
func atLimit(t *testing.T, s *Store, account string, room int) {
	t.Helper()
	createN(t, s, account, room)
	_, _, err := s.CreateKey(NewKey{Name: "over", Account: account, Scopes: []string{"a:read"}}, DefaultFormat(), "admin")
	if !errors.Is(err, ErrKeyLimit) {
		t.Fatalf("a create past max_keys: %v, want ErrKeyLimit", err)
	}
}

func setMaxKeys(t *testing.T, s *Store, account string, n int) {
	t.Helper()
	if _, err := s.UpdateAccount(account, AccountPatch{MaxKeys: &n}); err != nil {
		t.Fatal(err)
	}
}

// TestKeyCountExact: the count behind max_keys is exact across what
// changes it: keys created before max_keys was set (and before the store
// was reopened), revoked keys (which count), deletes, purges, imports and
// a failed create.
func TestKeyCountExact(t *testing.T) {
	dir := t.TempDir()
	s, err := testOpen(t, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateAccount(Account{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	ids := createN(t, s, "acme", 3)
	createN(t, s, DefaultAccount, 2) // another account's keys do not count
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStoreOpts(t, Options{Dir: dir})
	setMaxKeys(t, s, "acme", 5)
	atLimit(t, s, "acme", 2) // counted from the store: 3 held
	if _, err := s.RevokeKey(ids[0], "admin"); err != nil {
		t.Fatal(err)
	}
	atLimit(t, s, "acme", 0) // a revoked key counts
	if err := s.DeleteKey(ids[1]); err != nil {
		t.Fatal(err)
	}
	atLimit(t, s, "acme", 1)
	if n, err := s.PurgeRevoked(context.Background(), time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	atLimit(t, s, "acme", 1)

	// An import past the limit stores nothing; one within it is counted.
	setMaxKeys(t, s, "acme", 7)
	batch := func(n, from int) []ImportKey {
		in := make([]ImportKey, n)
		for i := range in {
			in[i] = ImportKey{SHA256: fmt.Sprintf("%064x", from+i+1), NewKey: NewKey{Name: "i", Account: "acme", Scopes: []string{"a:read"}}}
		}
		return in
	}
	if _, err := s.ImportKeys(batch(3, 0), DefaultFormat(), "admin"); !errors.Is(err, ErrKeyLimit) {
		t.Fatalf("an import past max_keys: %v", err)
	}
	if _, err := s.ImportKeys(batch(2, 0), DefaultFormat(), "admin"); err != nil {
		t.Fatal(err)
	}
	atLimit(t, s, "acme", 0)

	// A create that fails for another reason counts nothing.
	setMaxKeys(t, s, "acme", 8)
	if _, _, err := s.CreateKey(NewKey{Name: "", Account: "acme", Scopes: []string{"a:read"}}, DefaultFormat(), "admin"); err == nil {
		t.Fatal("a create without name succeeded")
	}
	refused := errors.New("refused")
	by := &Issuer{KeyID: ids[2], Check: func(_, _ *Key) error { return refused }}
	if _, _, err := s.CreateKeyAs(NewKey{Name: "n", Account: "acme", Scopes: []string{"a:read"}}, DefaultFormat(), by, "admin"); !errors.Is(err, refused) {
		t.Fatalf("the issuer's refusal: %v", err)
	}
	atLimit(t, s, "acme", 1)

	// Cleared, the account takes any number; set again, it is counted.
	if _, err := s.UpdateAccount("acme", AccountPatch{ClearMaxKeys: true}); err != nil {
		t.Fatal(err)
	}
	createN(t, s, "acme", 3) // 11 held
	setMaxKeys(t, s, "acme", 12)
	atLimit(t, s, "acme", 1)
}

// TestLoadMaxKeys: a load that gives an account more keys than its
// max_keys is refused, and the store keeps what it held.
func TestLoadMaxKeys(t *testing.T) {
	badgerOnly(t) // Load writes Badger's tables
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	two := 2
	if _, err := s.CreateAccount(Account{ID: "acme", MaxKeys: &two}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	in := make([]ImportKey, 3)
	for i := range in {
		in[i] = ImportKey{SHA256: fmt.Sprintf("%064x", i+1), NewKey: NewKey{Name: "l", Account: "acme", Scopes: []string{"a:read"}}}
	}
	if _, err := Load(Options{Dir: dir}, in, DefaultFormat(), "migration"); !errors.Is(err, ErrKeyLimit) {
		t.Fatalf("a load past max_keys: %v, want ErrKeyLimit", err)
	}
	if _, err := Load(Options{Dir: dir}, in[:2], DefaultFormat(), "migration"); err != nil {
		t.Fatal(err)
	}
	s = openStoreOpts(t, Options{Dir: dir})
	atLimit(t, s, "acme", 0)
}
