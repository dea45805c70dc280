package keystore

import (
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestLastUsedBatching shows that verification never writes to Badger:
// last-used times are kept in memory, shown at once, and written by one
// flush transaction, which survives a reopen.
func TestLastUsedBatching(t *testing.T) {
	dir := t.TempDir()
	clock := &testClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s, err := testOpen(t, Options{Dir: dir, Now: clock.Now, LastUsedFlush: time.Hour})
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
	// One commit of the last uses, one of the usage points.
	if got := s.Commits() - before; got != 2 {
		t.Errorf("flush made %d commits, want 2", got)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := s.Commits() - before; got != 2 {
		t.Errorf("a flush with nothing new made a commit (%d in all)", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = testOpen(t, Options{Dir: dir, Now: clock.Now})
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
	s, err := testOpen(t, Options{Dir: dir, LastUsedFlush: time.Hour})
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
	s, err = testOpen(t, Options{Dir: dir})
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
	clock := newTestClock()
	s := openStoreOpts(t, Options{Now: clock.Now})
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

	n, ran, err := s.PurgeRevokedIfDue(t.Context(), 720*time.Hour, time.Hour)
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
	if _, ran, _ := s.PurgeRevokedIfDue(t.Context(), 720*time.Hour, time.Hour); ran {
		t.Error("purge ran again within its interval")
	}
	clock.Advance(31 * 24 * time.Hour)
	n, ran, err = s.PurgeRevokedIfDue(t.Context(), 720*time.Hour, time.Hour)
	if err != nil || !ran || n != 1 {
		t.Fatalf("second purge: n=%d ran=%v err=%v, want 1 (the recent one)", n, ran, err)
	}
}

// TestDeleteDuringFlushLeavesNoLastUse: keys are used and deleted while
// flushes run back to back; no last use (u/) outlives its key, since a
// delete waits for a running flush and drops the key's pending use.
func TestDeleteDuringFlushLeavesNoLastUse(t *testing.T) {
	clock := newTestClock()
	s := openStoreOpts(t, Options{Now: clock.Now, LastUsedFlush: time.Hour})
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
	const n = 300
	type key struct{ id, plain string }
	keys := make([]key, n)
	for i := range keys {
		k, plain := mustCreate(t, s, f, NewKey{})
		keys[i] = key{k.ID, plain}
	}
	stopFlushes := repeatUntilStopped(func() {
		if err := s.Flush(); err != nil {
			t.Error(err)
		}
	})
	var wg sync.WaitGroup
	for part := range 3 {
		wg.Go(func() {
			for i := part; i < n; i += 3 {
				clock.Advance(time.Second)
				if res, err := v.Verify(keys[i].plain, Scope{}, false); err != nil || res.Outcome != OK {
					t.Errorf("verify: %v %v", res.Outcome, err)
				}
				if err := s.DeleteKey(keys[i].id); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	stopFlushes()
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if left := rawEntries(t, s, pfxLastUsed); len(left) != 0 {
		t.Errorf("%d last uses outlived their keys: %v", len(left), slices.Collect(maps.Keys(left)))
	}
}
