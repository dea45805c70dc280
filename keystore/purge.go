package keystore

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// PurgeRevoked deletes keys revoked at or before cutoff, with their audit
// events, and returns how many it deleted. It reads the index of revoked
// keys up to cutoff, not the records of every key. A key it fails to
// delete does not stop it: it goes on with the others and returns the
// errors joined. It first finishes deletions of audit events that a crash
// interrupted. It stops between two keys once ctx is done (a sweep of
// many keys, a fsynced transaction each, must not hold up a reload or a
// shutdown), returning ctx's error with the count so far.
func (s *Store) PurgeRevoked(ctx context.Context, cutoff time.Time) (n int, err error) {
	defer func() { s.stats.purged(n) }()
	errs := s.finishDeletes()
	var ids []string
	end := unixNano(cutoff)
	err = s.view(func(t txn) error {
		return t.scan([]byte(pfxRevoked), nil, false, false, func(key, _ []byte) (bool, error) {
			at, id, ok := parseKeyR(key)
			if !ok {
				return true, nil
			}
			if at > end {
				return false, nil
			}
			ids = append(ids, id)
			return true, nil
		})
	})
	if err != nil {
		return 0, errors.Join(errs, err)
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return n, errors.Join(errs, err)
		}
		err := s.deleteKeyIf(id, func(k *Key) bool {
			return k.RevokedAt != nil && !k.RevokedAt.After(cutoff)
		}, ChangeKeyPurged, ActorPurge)
		switch {
		case errors.Is(err, ErrNotFound), errors.Is(err, errSkipped):
		case err != nil:
			errs = errors.Join(errs, fmt.Errorf("purging key %s: %w", id, err))
		default:
			n++
		}
	}
	return n, errs
}

// PurgeRevokedIfDue runs PurgeRevoked for keys revoked at least after ago,
// unless a purge of this store ran less than interval ago: the store is
// shared by configs, and a reload must not rescan it every time. It
// reports whether it ran.
func (s *Store) PurgeRevokedIfDue(ctx context.Context, after, interval time.Duration) (n int, ran bool, err error) {
	now := s.now()
	last := s.lastPurge.Load()
	if last != 0 && now.Sub(time.Unix(0, last)) < interval {
		return 0, false, nil
	}
	if !s.lastPurge.CompareAndSwap(last, now.UnixNano()) {
		return 0, false, nil // another config's sweep took it
	}
	n, err = s.PurgeRevoked(ctx, now.Add(-after))
	if ctx.Err() != nil {
		// Interrupted: the next sweep (the next config's, after a
		// reload) is due at once rather than an interval later.
		s.lastPurge.CompareAndSwap(now.UnixNano(), last)
	}
	return n, true, err
}

// indexRevoked builds the index of revoked keys of a store written before
// the index existed: one scan of the records, once.
func (s *Store) indexRevoked() error {
	var done bool
	err := s.view(func(t txn) error {
		var err error
		done, err = t.exists([]byte(revIndexKey))
		return err
	})
	if err != nil || done {
		return err
	}
	var revoked []*Key
	err = s.view(func(t txn) error {
		return t.scan([]byte(pfxKey), nil, false, true, func(_, val []byte) (bool, error) {
			k, err := decodeKey(val)
			if err != nil {
				return false, err
			}
			if k.RevokedAt != nil {
				revoked = append(revoked, k)
			}
			return true, nil
		})
	})
	if err != nil {
		return err
	}
	for start := 0; start < len(revoked); start += flushChunk {
		chunk := revoked[start:min(start+flushChunk, len(revoked))]
		err := s.update(func(t txn) error {
			for _, k := range chunk {
				if err := t.set(keyR(*k.RevokedAt, k.ID), []byte{}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return s.update(func(t txn) error { return t.set([]byte(revIndexKey), []byte{}) })
}
