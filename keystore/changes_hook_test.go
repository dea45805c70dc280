package keystore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
)

// changeLog records what OnChange is told.
type changeLog struct {
	mu sync.Mutex
	ms []Mutation
}

func (l *changeLog) add(m Mutation) {
	l.mu.Lock()
	l.ms = append(l.ms, m)
	l.mu.Unlock()
}

func (l *changeLog) kinds(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, m := range l.ms {
		if m.Key != nil && m.Key.ID == id {
			out = append(out, m.Kind)
		}
	}
	return out
}

// TestExpiryNoticesOnce: a key is told expiring once within the notice,
// expired once past its expiry, again after its expiry is moved, never
// for a revoked key; a store opened again on the same data tells nothing
// again (the marker is stored).
func TestExpiryNoticesOnce(t *testing.T) {
	dir := t.TempDir()
	clock := newTestClock()
	var log changeLog
	s := openStoreOpts(t, Options{Dir: dir, Now: clock.Now, OnChange: log.add})
	exp := clock.Now().Add(10 * 24 * time.Hour)
	k, _, err := s.CreateKey(NewKey{Name: "k", Scopes: []string{"a:read"}, ExpiresAt: &exp}, DefaultFormat(), "admin")
	if err != nil {
		t.Fatal(err)
	}
	rv, _, err := s.CreateKey(NewKey{Name: "revoked", Scopes: []string{"a:read"}, ExpiresAt: &exp}, DefaultFormat(), "admin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeKey(rv.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	sweep := func(st *Store) {
		t.Helper()
		if err := st.SweepExpiry(context.Background(), DefaultExpiringNotice); err != nil {
			t.Fatal(err)
		}
	}
	sweep(s)
	clock.Advance(4 * 24 * time.Hour) // 6 days left
	sweep(s)
	sweep(s)
	clock.Advance(6*24*time.Hour + time.Second) // past it
	sweep(s)
	sweep(s)
	if got := log.kinds(k.ID); !equalStrings(got, []string{ChangeKeyCreated, ChangeKeyExpiring, ChangeKeyExpired}) {
		t.Fatalf("changes of the key: %v", got)
	}
	if got := log.kinds(rv.ID); !equalStrings(got, []string{ChangeKeyCreated, ChangeKeyRevoked}) {
		t.Fatalf("changes of the revoked key: %v", got)
	}
	if c := s.Stats().Keys; c == nil || c.Active != 0 || c.Expired != 1 || c.Revoked != 1 {
		t.Fatalf("key counts %+v", c)
	}
	// A store opened again on the same data tells nothing again.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var log2 changeLog
	s2 := openStoreOpts(t, Options{Dir: dir, Now: clock.Now, OnChange: log2.add})
	sweep(s2)
	if got := log2.kinds(k.ID); len(got) != 0 {
		t.Fatalf("after a restart: %v", got)
	}
	// A new expiry starts over.
	later := clock.Now().Add(24 * time.Hour)
	if _, err := s2.UpdateKey(k.ID, KeyPatch{ExpiresAt: &later}, "admin"); err != nil {
		t.Fatal(err)
	}
	sweep(s2)
	if got := log2.kinds(k.ID); !equalStrings(got, []string{ChangeKeyUpdated, ChangeKeyExpiring}) {
		t.Fatalf("after a new expiry: %v", got)
	}
	// Deleting the key deletes its marker.
	if err := s2.DeleteKeyBy(k.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if left := rawEntries(t, s2, pfxExpiryNotice); len(left) != 0 {
		t.Fatalf("markers left after the delete: %v", left)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestExpiryNoticesOncePerCluster: three replicas on one Redis sweep at
// the same time; each notice is told by exactly one of them, and each
// mutation only by the replica that made it.
func TestExpiryNoticesOncePerCluster(t *testing.T) {
	srv := redistest.Start(t)
	var log changeLog
	rs := replicas(t, srv, 3, Options{OnChange: log.add})
	var keys []*Key
	for i := range 20 {
		exp := time.Now().Add(time.Duration(i%2+1) * time.Hour) // all within the notice
		k, _, err := rs[i%3].CreateKey(NewKey{Name: "k", Scopes: []string{"a:read"}, ExpiresAt: &exp}, DefaultFormat(), "admin")
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	var wg sync.WaitGroup
	for _, s := range rs {
		wg.Go(func() {
			for range 3 {
				if err := s.SweepExpiry(context.Background(), DefaultExpiringNotice); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for _, k := range keys {
		if got := log.kinds(k.ID); !equalStrings(got, []string{ChangeKeyCreated, ChangeKeyExpiring}) {
			t.Errorf("key %s: %v, want created and expiring once each", k.ID, got)
		}
	}
}
