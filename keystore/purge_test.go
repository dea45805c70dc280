package keystore

import (
	"context"
	"errors"
	"testing"
	"time"
)

// addEvents writes n audit events of key id, 1,000 a transaction (as n
// updates would, without n fsynced commits).
func addEvents(t *testing.T, s *Store, id string, n int) {
	t.Helper()
	for n > 0 {
		batch := min(n, 1000)
		err := s.update(func(tx txn) error {
			for range batch {
				if err := tx.putEvent(id, Event{At: s.now(), Action: ActionUpdated, Actor: "test"}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		n -= batch
	}
}

// countPrefix counts the store's entries under prefix.
func countPrefix(t *testing.T, s *Store, prefix string) int {
	t.Helper()
	n := 0
	err := s.view(func(tx txn) error {
		return tx.scan([]byte(prefix), nil, false, false, func(_, _ []byte) (bool, error) {
			n++
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDeleteKeyWithManyEvents: a key with more audit events than one
// Badger transaction can delete (about 25,000 with 16 MiB memtables) is
// deleted and purged all the same, events included, and such a key does
// not stop the purge of the keys after it. (One transaction for all of
// them failed with ErrTxnTooBig, for good.)
func TestDeleteKeyWithManyEvents(t *testing.T) {
	s := openTestStore(t)
	f := DefaultFormat()
	busy, _ := mustCreate(t, s, f, NewKey{})
	addEvents(t, s, busy.ID, 40_000)
	if err := s.DeleteKey(busy.ID); err != nil {
		t.Fatalf("DeleteKey of a key with 40,000 events: %v", err)
	}
	if n := countPrefix(t, s, pfxEvent+busy.ID+"/"); n != 0 {
		t.Errorf("%d events of the deleted key left", n)
	}
	if n := countPrefix(t, s, pfxDeleting); n != 0 {
		t.Errorf("%d deletion marks left", n)
	}

	first, _ := mustCreate(t, s, f, NewKey{})
	second, _ := mustCreate(t, s, f, NewKey{})
	addEvents(t, s, first.ID, 30_000)
	for _, k := range []*Key{first, second} {
		if _, err := s.RevokeKey(k.ID, "t"); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PurgeRevoked(t.Context(), time.Now().Add(time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("PurgeRevoked: %d, %v; want 2, nil", n, err)
	}
	for _, k := range []*Key{first, second} {
		if _, err := s.Key(k.ID); err != ErrNotFound {
			t.Errorf("purged key %s: %v", k.ID, err)
		}
		if n := countPrefix(t, s, pfxEvent+k.ID+"/"); n != 0 {
			t.Errorf("%d events of purged key %s left", n, k.ID)
		}
	}
}

// TestPurgeFinishesInterruptedDeletes: events that a deletion had not yet
// deleted when the process stopped (its d/<id> mark still there) are
// deleted by the next purge sweep, with the mark.
func TestPurgeFinishesInterruptedDeletes(t *testing.T) {
	dir := t.TempDir()
	s, err := testOpen(t, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	f := DefaultFormat()
	kept, _ := mustCreate(t, s, f, NewKey{})
	const gone = "01a20000-0000-7000-8000-000000000001" // a deleted key's id
	addEvents(t, s, gone, 12_000)
	if err := s.update(func(tx txn) error { return tx.set([]byte(pfxDeleting+gone), nil) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStoreOpts(t, Options{Dir: dir})
	if _, err := s.PurgeRevoked(t.Context(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := countPrefix(t, s, pfxEvent+gone+"/"); n != 0 {
		t.Errorf("%d events of the deleted key left", n)
	}
	if n := countPrefix(t, s, pfxDeleting); n != 0 {
		t.Errorf("%d deletion marks left", n)
	}
	if events, err := s.Audit(kept.ID); err != nil || len(events) != 1 {
		t.Errorf("another key's events: %d, %v; want its created event", len(events), err)
	}
}

// TestPurgeStopsWhenAsked: a sweep stops between two keys once its context
// is done (Stop must not wait for a sweep of many keys), and a sweep that
// was stopped leaves the next one due at once.
func TestPurgeStopsWhenAsked(t *testing.T) {
	s := openTestStore(t)
	f := DefaultFormat()
	var ids []string
	for range 3 {
		k, _ := mustCreate(t, s, f, NewKey{})
		if _, err := s.RevokeKey(k.ID, "t"); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
	}
	stopped, cancel := context.WithCancel(t.Context())
	cancel()
	n, ran, err := s.PurgeRevokedIfDue(stopped, 0, time.Hour)
	if !ran || n != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("a stopped sweep: %d deleted, ran %v, %v", n, ran, err)
	}
	for _, id := range ids {
		if _, err := s.Key(id); err != nil {
			t.Fatalf("a stopped sweep deleted %s: %v", id, err)
		}
	}
	n, ran, err = s.PurgeRevokedIfDue(t.Context(), 0, time.Hour)
	if !ran || n != 3 || err != nil {
		t.Fatalf("the sweep after a stopped one: %d deleted, ran %v, %v; want 3, due at once", n, ran, err)
	}
}
