package keystore

import (
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/caddy-apikey/caddy-apikey/keystore/badgerstore"
)

func openTestStore(t *testing.T) *Store {
	t.Helper()
	s, err := testOpen(t, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestCreateVerifyRevoke(t *testing.T) {
	s := openTestStore(t)
	f := DefaultFormat()
	k, plain, err := s.CreateKey(NewKey{Name: "n", Scopes: []string{"contacts:write"}}, f, "admin")
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Store: s, Format: f}
	req := Scope{Resource: "contacts", Access: AccessRead}
	res, err := v.Verify(plain, req, true)
	if err != nil || res.Outcome != OK || res.Key.ID != k.ID {
		t.Fatalf("verify: %v %v", res.Outcome, err)
	}
	if _, err := s.RevokeKey(k.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	res, _ = v.Verify(plain, req, true)
	if res.Outcome != KeyRevoked {
		t.Fatalf("after revoke: %v", res.Outcome.Code())
	}
	got, err := s.Key(k.ID)
	if err != nil || got.LastUsedAt == nil || time.Since(*got.LastUsedAt) > time.Minute {
		t.Fatalf("last used: %+v %v", got, err)
	}
}

// badgerDB is the Badger database of a store opened on Badger, for tests
// that inspect its tables and write old layouts.
func badgerDB(s *Store) *badger.DB { return s.eng.(*badgerstore.Engine).DB() }
