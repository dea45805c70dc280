package keystore

import (
	"errors"
	"time"
)

// PurgeRevoked deletes keys revoked at or before cutoff, with their audit
// events, and returns how many it deleted.
func (s *Store) PurgeRevoked(cutoff time.Time) (int, error) {
	var ids []string
	err := s.view(func(t txn) error {
		return t.scan([]byte(pfxKey), nil, false, true, func(_, val []byte) (bool, error) {
			k, err := decodeKey(val)
			if err != nil {
				return false, err
			}
			if k.RevokedAt != nil && !k.RevokedAt.After(cutoff) {
				ids = append(ids, k.ID)
			}
			return true, nil
		})
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		err := s.deleteKeyIf(id, func(k *Key) bool {
			return k.RevokedAt != nil && !k.RevokedAt.After(cutoff)
		})
		switch {
		case errors.Is(err, ErrNotFound), errors.Is(err, errSkipped):
		case err != nil:
			return n, err
		default:
			n++
		}
	}
	return n, nil
}

// PurgeRevokedIfDue runs PurgeRevoked for keys revoked at least after ago,
// unless a purge of this store ran less than interval ago: the store is
// shared by configs, and a reload must not rescan it every time. It
// reports whether it ran.
func (s *Store) PurgeRevokedIfDue(after, interval time.Duration) (n int, ran bool, err error) {
	now := s.now()
	last := s.lastPurge.Load()
	if last != 0 && now.Sub(time.Unix(0, last)) < interval {
		return 0, false, nil
	}
	if !s.lastPurge.CompareAndSwap(last, now.UnixNano()) {
		return 0, false, nil // another config's sweep took it
	}
	n, err = s.PurgeRevoked(now.Add(-after))
	return n, true, err
}
