package keystore

import (
	"fmt"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// Engine is the store's persistence, for tools that report on it (caddy
// apikey status: which backend, its connection and settings).
func (s *Store) Engine() kv.Engine { return s.eng }

// StatusCounts are the store's counts of keys and accounts, for caddy
// apikey status.
type StatusCounts struct {
	// Keys: Total and Revoked always; Active and Expired only when Full.
	Keys KeyCounts
	// Full: every key record was read, and Active and Expired are set.
	Full bool
	// Accounts is the number of accounts (held in memory).
	Accounts int
}

// Counts counts the keys and accounts. Without full, it reads no key
// record: the total is the number of keys of k/ and the revoked ones
// those of the revocation index r/, from the engine's count (kv.Counter:
// O(1) on Redis, a scan of keys without values on Badger). Active and
// expired keys differ only by their expiry, which is in the records: full
// reads every record (O(n) with the values) and counts each status at the
// store's clock.
func (s *Store) Counts(full bool) (StatusCounts, error) {
	out := StatusCounts{Full: full}
	s.acctMu.RLock()
	out.Accounts = len(s.accounts)
	s.acctMu.RUnlock()
	if full {
		now := s.now()
		var c Census
		err := s.view(func(t txn) error {
			return t.scan([]byte(pfxKey), nil, false, true, func(key, val []byte) (bool, error) {
				return true, c.add(kv.Entry{Key: key, Val: val}, now)
			})
		})
		out.Keys = c.Keys
		return out, err
	}
	var err error
	if out.Keys.Total, err = s.count(pfxKey); err != nil {
		return out, err
	}
	out.Keys.Revoked, err = s.count(pfxRevoked)
	return out, err
}

// count counts the keys of a prefix: with the engine's Count, or a scan of
// its keys.
func (s *Store) count(prefix string) (int64, error) {
	if c, ok := s.eng.(kv.Counter); ok {
		n, err := c.Count([]byte(prefix))
		if err != nil {
			return 0, fmt.Errorf("counting %s: %w", prefix, err)
		}
		return n, nil
	}
	var n int64
	err := s.view(func(t txn) error {
		return t.scan([]byte(prefix), nil, false, false, func([]byte, []byte) (bool, error) {
			n++
			return true, nil
		})
	})
	return n, err
}
