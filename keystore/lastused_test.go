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
)

// TestLastUsedBatching shows that verification never writes to Badger:
// last-used times are kept in memory, shown at once, and written by one
// flush transaction, which survives a reopen.
func TestLastUsedBatching(t *testing.T) {
	dir := t.TempDir()
	clock := &testClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s, err := Open(Options{Dir: dir, Now: clock.Now, LastUsedFlush: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
	var ids []string
	var plains []string
	for i := 0; i < 5; i++ {
		k, plain, err := s.CreateKey(NewKey{Name: "k", Scopes: []string{"a:read"}}, f, "admin")
		if err != nil {
			t.Fatal(err)
		}
		ids, plains = append(ids, k.ID), append(plains, plain)
	}

	before := s.Commits()
	for i := 0; i < 1000; i++ {
		clock.Advance(time.Second)
		res, err := v.Verify(plains[i%len(plains)], Scope{}, false)
		if err != nil || res.Outcome != OK {
			t.Fatalf("verify %d: %v %v", i, res.Outcome.Code(), err)
		}
	}
	if got := s.Commits() - before; got != 0 {
		t.Fatalf("1000 verifications made %d Badger commits, want 0", got)
	}
	lastUse := clock.Now()
	for i, id := range ids {
		k, err := s.Key(id)
		if err != nil {
			t.Fatal(err)
		}
		want := lastUse.Add(-time.Duration(len(ids)-1-i) * time.Second)
		if k.LastUsedAt == nil || !k.LastUsedAt.Equal(want) {
			t.Errorf("key %d: last_used_at %v, want %v (shown before any flush)", i, k.LastUsedAt, want)
		}
	}

	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := s.Commits() - before; got != 1 {
		t.Errorf("flush made %d commits, want 1", got)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := s.Commits() - before; got != 1 {
		t.Errorf("a flush with nothing new made a commit (%d in all)", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(Options{Dir: dir, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k, err := s.Key(ids[len(ids)-1])
	if err != nil {
		t.Fatal(err)
	}
	if k.LastUsedAt == nil || !k.LastUsedAt.Equal(lastUse) {
		t.Errorf("after reopen: last_used_at %v, want %v", k.LastUsedAt, lastUse)
	}
}

// TestLastUsedFlushedOnClose: uses that no flush wrote yet are written when
// the store closes (Caddy's graceful stop).
func TestLastUsedFlushedOnClose(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, LastUsedFlush: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	f := DefaultFormat()
	k, plain, err := s.CreateKey(NewKey{Name: "k", Scopes: []string{"a:read"}}, f, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := (&Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}).Verify(plain, Scope{}, false); res.Outcome != OK {
		t.Fatal(res.Outcome.Code())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Key(k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.LastUsedAt == nil {
		t.Error("last_used_at lost on close")
	}
}

func TestPurgeRevoked(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, err := Open(Options{Dir: t.TempDir(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := DefaultFormat()
	mk := func(name string) *Key {
		k, _, err := s.CreateKey(NewKey{Name: name, Scopes: []string{"a:read"}}, f, "admin")
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	old, recent, active, reactivated := mk("old"), mk("recent"), mk("active"), mk("reactivated")
	for _, k := range []*Key{old, reactivated} {
		if _, err := s.RevokeKey(k.ID, "admin"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ActivateKey(reactivated.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(31 * 24 * time.Hour)
	if _, err := s.RevokeKey(recent.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)

	n, ran, err := s.PurgeRevokedIfDue(720*time.Hour, time.Hour)
	if err != nil || !ran || n != 1 {
		t.Fatalf("purge: n=%d ran=%v err=%v, want 1 deleted", n, ran, err)
	}
	if _, err := s.Key(old.ID); err != ErrNotFound {
		t.Errorf("old revoked key: %v, want not found", err)
	}
	if _, err := s.Audit(old.ID); err != ErrNotFound {
		t.Errorf("old revoked key's audit: %v, want not found", err)
	}
	for _, k := range []*Key{recent, active, reactivated} {
		if _, err := s.Key(k.ID); err != nil {
			t.Errorf("%s: %v", k.Name, err)
		}
	}
	// Not due again within the interval.
	if _, ran, _ := s.PurgeRevokedIfDue(720*time.Hour, time.Hour); ran {
		t.Error("purge ran again within its interval")
	}
	clock.Advance(31 * 24 * time.Hour)
	n, ran, err = s.PurgeRevokedIfDue(720*time.Hour, time.Hour)
	if err != nil || !ran || n != 1 {
		t.Fatalf("second purge: n=%d ran=%v err=%v, want 1 (the recent one)", n, ran, err)
	}
}

// rawEntries returns every Badger key (as a string) whose text contains
// sub, with its value.
func rawEntries(t *testing.T, s *Store, sub string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := s.view(func(tx txn) error {
		return tx.scan(nil, nil, false, true, func(key, val []byte) (bool, error) {
			if strings.Contains(string(key), sub) {
				out[string(key)] = string(val)
			}
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
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
	err = s.db.Update(func(tx *badger.Txn) error {
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
	n, err := s.PurgeRevoked(clock.Now())
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
			if len(b) == 0 || b[0] != '{' {
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
	dir := t.TempDir()
	f := DefaultFormat()
	openOptions = func(dir string, l *zap.Logger) badger.Options {
		return badgerOptions(dir, l).WithCompression(options.Snappy).WithBlockCacheSize(32 << 20)
	}
	s, err := Open(Options{Dir: dir})
	openOptions = badgerOptions
	if err != nil {
		t.Fatal(err)
	}
	var plains []string
	for range 50 {
		_, p := mustCreate(t, s, f, NewKey{})
		plains = append(plains, p)
	}
	if err := s.db.Flatten(1); err != nil { // into tables, not only the memtable
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStoreOpts(t, Options{Dir: dir})
	if len(s.db.Tables()) == 0 {
		t.Fatal("no tables: the test would not read a compressed table")
	}
	v := &Verifier{Store: s, Format: f}
	for _, p := range plains {
		if res, err := v.Verify(p, Scope{}, false); err != nil || res.Outcome != OK {
			t.Fatalf("verify: %v %v", res.Outcome, err)
		}
	}
}
