package keystore

import (
	"encoding/binary"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore/badgerstore"
	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// rawEntries returns every Badger key (as a string) whose text contains
// sub, with its value.
func rawEntries(t *testing.T, s *Store, sub string) map[string]string {
	t.Helper()
	out := map[string]string{}
	all, err := kv.All(s.eng.(kv.Copier))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		if strings.Contains(string(e.Key), sub) {
			out[string(e.Key)] = string(e.Val)
		}
	}
	return out
}

// TestLastUsedApartFromRecord: a flush writes the last use under u/ and
// leaves the key record's bytes as they were; a delete leaves neither.
func TestLastUsedApartFromRecord(t *testing.T) {
	clock := newTestClock()
	s := openStoreOpts(t, Options{Now: clock.Now, LastUsedFlush: time.Hour})
	f := DefaultFormat()
	k, plain := mustCreate(t, s, f, NewKey{})
	record := rawEntries(t, s, pfxKey+k.ID)[pfxKey+k.ID]
	v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
	for range 3 {
		clock.Advance(time.Minute)
		if res, err := v.Verify(plain, Scope{}, false); err != nil || res.Outcome != OK {
			t.Fatalf("verify: %v %v", res.Outcome, err)
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	after := rawEntries(t, s, k.ID)
	if after[pfxKey+k.ID] != record {
		t.Errorf("the flush rewrote the key record:\n%s\n%s", record, after[pfxKey+k.ID])
	}
	u, ok := after[pfxLastUsed+k.ID]
	if !ok || len(u) != 8 || int64(binary.BigEndian.Uint64([]byte(u))) != clock.Now().UnixNano() {
		t.Errorf("u/ entry %q, want the last use %v", u, clock.Now())
	}
	got, err := s.Key(k.ID)
	if err != nil || got.LastUsedAt == nil || !got.LastUsedAt.Equal(clock.Now()) {
		t.Errorf("Key: last_used_at %v, %v", got.LastUsedAt, err)
	}
	list, _, err := s.ListKeys(ListQuery{Limit: 10})
	if err != nil || len(list) != 1 || list[0].LastUsedAt == nil || !list[0].LastUsedAt.Equal(clock.Now()) {
		t.Errorf("ListKeys: %v", err)
	}
	if _, err := s.RevokeKey(k.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKey(k.ID); err != nil {
		t.Fatal(err)
	}
	if left := rawEntries(t, s, k.ID); len(left) != 0 {
		t.Errorf("entries left after delete: %v", left)
	}
}

// revokedIndex returns the ids in r/.
func revokedIndex(t *testing.T, s *Store) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for key := range rawEntries(t, s, pfxRevoked) {
		if !strings.HasPrefix(key, pfxRevoked) {
			continue
		}
		_, id, ok := parseKeyR([]byte(key))
		if !ok {
			t.Fatalf("bad r/ key %q", key)
		}
		ids[id] = true
	}
	return ids
}

// TestRevokedIndex: r/ names exactly the revoked keys through revoke,
// activate, revoke again and delete, and a store written before r/ existed
// gets it built when it opens.
func TestRevokedIndex(t *testing.T) {
	badgerOnly(t) // an older Badger layout, or Badger's tables
	dir := t.TempDir()
	clock := newTestClock()
	s, err := Open(Options{Dir: dir, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f := DefaultFormat()
	var keys []*Key
	for range 6 {
		k, _ := mustCreate(t, s, f, NewKey{})
		keys = append(keys, k)
	}
	for _, i := range []int{0, 1, 2, 3} {
		clock.Advance(time.Minute)
		if _, err := s.RevokeKey(keys[i].ID, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ActivateKey(keys[1].ID, "test"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if _, err := s.RevokeKey(keys[2].ID, "test"); err != nil { // already revoked: no change
		t.Fatal(err)
	}
	if err := s.DeleteKey(keys[3].ID); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{keys[0].ID: true, keys[2].ID: true}
	if got := revokedIndex(t, s); !maps.Equal(got, want) {
		t.Fatalf("r/ = %v, want %v", got, want)
	}

	// A store from before the index: no r/, no marker.
	err = badgerDB(s).Update(func(tx *badger.Txn) error {
		for key := range rawEntries(t, s, pfxRevoked) {
			if err := tx.Delete([]byte(key)); err != nil {
				return err
			}
		}
		return tx.Delete([]byte(revIndexKey))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStoreOpts(t, Options{Dir: dir, Now: clock.Now})
	if got := revokedIndex(t, s); !maps.Equal(got, want) {
		t.Fatalf("r/ rebuilt on open = %v, want %v", got, want)
	}
	clock.Advance(time.Hour)
	n, err := s.PurgeRevoked(t.Context(), clock.Now())
	if err != nil || n != 2 {
		t.Fatalf("purge: %d, %v; want 2", n, err)
	}
	if got := revokedIndex(t, s); len(got) != 0 {
		t.Errorf("r/ after the purge: %v", got)
	}
}

// checkHashEntries asserts that the h/ entry of every key's current string
// holds the record's verification fields.
func checkHashEntries(t *testing.T, s *Store) {
	t.Helper()
	keys, _, err := s.ListKeys(ListQuery{Limit: MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range keys {
		var got *Key
		err := s.view(func(tx txn) error {
			b, err := tx.getRaw(keyH(rec.Hash))
			if err != nil {
				return err
			}
			if len(b) == 0 || b[0] != hashEntryV1 {
				return fmt.Errorf("h/ of key %s is %q, not a hash entry", rec.ID, b)
			}
			got, err = tx.keyForHash(rec.Hash)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		want := &Key{ID: rec.ID, Name: rec.Name, Account: rec.Account, Type: rec.Type, Scopes: rec.Scopes,
			ExpiresAt: rec.ExpiresAt, RevokedAt: rec.RevokedAt, RateLimit: rec.RateLimit, Quota: rec.Quota, Hash: rec.Hash}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("hash entry of %s:\n got %+v\nwant %+v", rec.ID, got, want)
		}
	}
}

// TestHashEntries: every mutation keeps the hash entry in step with the
// record, and a store whose h/ values are ids (written before hash entries
// existed) verifies, and gets entries as its keys change.
func TestHashEntries(t *testing.T) {
	clock := newTestClock()
	s := openStoreOpts(t, Options{Now: clock.Now})
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f}
	exp := clock.Now().Add(time.Hour)
	a, _ := mustCreate(t, s, f, NewKey{Name: "a", ExpiresAt: &exp, Quota: &Quota{Requests: 5, Period: "day"}})
	b, bPlain := mustCreate(t, s, f, NewKey{Name: "b", RateLimit: &RateLimit{Requests: 3, Window: "1s"}})
	in := []ImportKey{{SHA256: sha256Hex("imported"), NewKey: NewKey{Name: "imported", Scopes: []string{"orders:read"}}}}
	if _, err := s.ImportKeys(in, f, "test"); err != nil {
		t.Fatal(err)
	}
	checkHashEntries(t, s)

	name := "renamed"
	steps := []func() error{
		func() error {
			_, err := s.UpdateKey(a.ID, KeyPatch{Name: &name, Scopes: []string{"x:write"}}, "t")
			return err
		},
		func() error { _, err := s.RevokeKey(a.ID, "t"); return err },
		func() error { _, err := s.ActivateKey(a.ID, "t"); return err },
		func() error {
			_, err := s.UpdateKey(a.ID, KeyPatch{ClearExpires: true, ClearQuota: true}, "t")
			return err
		},
		func() error { _, _, err := s.RegenerateKey(b.ID, f, time.Hour, "t"); return err },
		func() error { _, _, err := s.RegenerateKey(a.ID, f, 0, "t"); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		checkHashEntries(t, s)
	}
	// The old string of b, in its grace period, still verifies.
	if res, err := v.Verify(bPlain, Scope{}, false); err != nil || res.Outcome != OK || res.Key.ID != b.ID {
		t.Fatalf("grace-period string: %v %v", res.Outcome, err)
	}

	// An entry as stores before hash entries wrote it: the key's id.
	c, cPlain := mustCreate(t, s, f, NewKey{Name: "c"})
	if err := s.update(func(tx txn) error { return tx.set(keyH(c.Hash), []byte(c.ID)) }); err != nil {
		t.Fatal(err)
	}
	s.cache.invalidate(c.Hash)
	res, err := v.Verify(cPlain, Scope{}, false)
	if err != nil || res.Outcome != OK || res.Key.ID != c.ID || res.Key.Name != "c" {
		t.Fatalf("id-valued entry: %v %v", res.Outcome, err)
	}
	if _, err := s.RevokeKey(c.ID, "t"); err != nil {
		t.Fatal(err)
	}
	checkHashEntries(t, s)
	if res, err := v.Verify(cPlain, Scope{}, false); err != nil || res.Outcome != KeyRevoked {
		t.Fatalf("after the revoke: %v %v", res.Outcome, err)
	}
}

// TestOpensCompressedStore: a store whose tables were written with
// Snappy and a block cache (as before tables were left uncompressed)
// opens and verifies with today's options.
func TestOpensCompressedStore(t *testing.T) {
	badgerOnly(t) // an older Badger layout, or Badger's tables
	dir := t.TempDir()
	f := DefaultFormat()
	eng, err := badgerstore.OpenWith(badgerstore.Options(dir, zap.NewNop()).WithCompression(options.Snappy).WithBlockCacheSize(32 << 20))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	var plains []string
	for range 50 {
		_, p := mustCreate(t, s, f, NewKey{})
		plains = append(plains, p)
	}
	if err := badgerDB(s).Flatten(1); err != nil { // into tables, not only the memtable
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStoreOpts(t, Options{Dir: dir})
	if len(badgerDB(s).Tables()) == 0 {
		t.Fatal("no tables: the test would not read a compressed table")
	}
	v := &Verifier{Store: s, Format: f}
	for _, p := range plains {
		if res, err := v.Verify(p, Scope{}, false); err != nil || res.Outcome != OK {
			t.Fatalf("verify: %v %v", res.Outcome, err)
		}
	}
}

// FuzzRevokedIndexKey: parseKeyR reads back what keyR writes, and never
// panics on any key.
func FuzzRevokedIndexKey(f *testing.F) {
	f.Add(int64(0), "0193e0a2-7c4e-7000-8000-000000000000", []byte("r/0000000000000000/x"))
	f.Add(time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano(), "id/with/slashes", []byte("r/zz"))
	f.Fuzz(func(t *testing.T, nanos int64, id string, raw []byte) {
		if len(raw) >= len(pfxRevoked) {
			parseKeyR(raw) // must not panic
		}
		if nanos < 0 || id == "" {
			return
		}
		at, gotID, ok := parseKeyR(keyR(time.Unix(0, nanos), id))
		if !ok || at != nanos || gotID != id {
			t.Fatalf("keyR(%d, %q) read back as %d, %q, %v", nanos, id, at, gotID, ok)
		}
	})
}
