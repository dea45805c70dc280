package keystore

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// ErrKeyLimit is the error of a create or import that would take an
// account past its max_keys. Nothing was stored.
var ErrKeyLimit = errors.New("key limit reached")

// keyCount is the number of keys an account holds. Revoked keys count:
// they are stored keys until deleted (or purged). It is counted the first
// time an insert into the account has a max_keys to check, by a scan of
// the account's index (ak/<account>/, keys only), and then kept by every
// insert and delete, so a store whose accounts have no max_keys never
// scans. A new account starts counted at 0.
//
// Exactness: an insert into an account with max_keys holds mu from the
// check to the count's increment after its commit, so two inserts never
// both pass the check at max_keys - 1; a delete holds mu from its
// transaction to the decrement, so a count never misses a delete that
// committed during its scan. An insert into an account without max_keys
// does not take mu: it holds acctMu (read), so max_keys cannot be set
// meanwhile, and with none set nothing checks or scans the count.
//
// Lock order: acctMu, then mu (inserts); flushMu, then mu (deletes). No
// one takes another lock while holding mu.
//
// On a shared engine (kv.Shared: several processes insert into one
// account) a count in one process's memory misses the others' inserts, so
// none is kept: each insert counts the account's keys inside its own
// transaction (sharedKeyLimits), and mu only keeps one process's inserts
// into an account from conflicting with each other.
type keyCount struct {
	mu      sync.Mutex
	n       atomic.Int64
	counted atomic.Bool
}

// countKeys scans an account's index and installs the count in c. The caller holds
// c.mu.
func (s *Store) countKeys(c *keyCount, account string) error {
	var n int64
	err := s.view(func(t txn) error {
		return t.scan([]byte(pfxAcctKey+account+"/"), nil, false, false, func(_, _ []byte) (bool, error) {
			n++
			return true, nil
		})
	})
	if err != nil {
		return err
	}
	c.n.Store(n)
	c.counted.Store(true)
	return nil
}

// keyReservation is what reserveKeys holds for an insert: the accounts it
// locked and the keys it adds to each.
type keyReservation struct {
	s      *Store
	added  map[string]int64
	locked []*keyCount
}

// reserveKeys checks that adding keys keeps each of their accounts within
// its max_keys, and locks the counts of the accounts that have one. The
// caller holds acctMu (read) until it has called the reservation's done,
// and has checked that the accounts exist. An account past its max_keys
// refuses the whole insert with ErrKeyLimit.
func (s *Store) reserveKeys(keys []*Key) (*keyReservation, error) {
	r := &keyReservation{s: s, added: make(map[string]int64, 1)}
	for _, k := range keys {
		r.added[k.Account]++
	}
	// Locked in the order of the ids, so that two inserts never deadlock.
	for _, id := range slices.Sorted(maps.Keys(r.added)) {
		st := s.accounts[id]
		if st == nil {
			continue // the caller refuses an unknown account
		}
		limit := st.acct.Load().MaxKeys
		if limit == nil {
			continue
		}
		c := &st.keys
		c.mu.Lock()
		r.locked = append(r.locked, c)
		if s.sharedEngine() {
			continue // counted in the insert's transaction
		}
		if !c.counted.Load() {
			if err := s.countKeys(c, id); err != nil {
				r.done(notStored)
				return nil, err
			}
		}
		if n, add := c.n.Load(), r.added[id]; n+add > int64(*limit) {
			r.done(notStored)
			return nil, keyLimitError(id, *limit, n, add)
		}
	}
	return r, nil
}

// sharedEngine reports whether other processes write the store's engine.
func (s *Store) sharedEngine() bool {
	_, ok := s.eng.(kv.Shared)
	return ok
}

// sharedKeyLimits checks, in an insert's transaction on a shared engine,
// that adding added keys to each account keeps it within its max_keys, as
// the account is stored (another process may have changed it), by
// counting the account's keys in its index. The engine watches the
// account and the index's scan bucket, so an insert, delete or max_keys
// change that another process commits meanwhile makes the transaction
// conflict and run again: the count is exact when it commits. It returns
// the accounts that have a max_keys.
func (s *Store) sharedKeyLimits(t txn, added map[string]int64) (limited map[string]bool, err error) {
	for _, id := range slices.Sorted(maps.Keys(added)) {
		var a Account
		if err := t.getJSON(keyA(id), &a); errors.Is(err, ErrNotFound) {
			return nil, invalid("account", "account %q does not exist", id)
		} else if err != nil {
			return nil, err
		}
		if a.MaxKeys == nil {
			continue
		}
		var n int64
		err := t.scan([]byte(pfxAcctKey+id+"/"), nil, false, false, func(_, _ []byte) (bool, error) {
			n++
			return true, nil
		})
		if err != nil {
			return nil, err
		}
		if n+added[id] > int64(*a.MaxKeys) {
			return nil, keyLimitError(id, *a.MaxKeys, n, added[id])
		}
		if limited == nil {
			limited = map[string]bool{}
		}
		limited[id] = true
	}
	return limited, nil
}

// insertOutcome is what became of a reservation's keys.
type insertOutcome uint8

const (
	notStored   insertOutcome = iota // the insert failed and wrote nothing
	stored                           // every key was stored
	maybeStored                      // a bulk write failed midway: some may be
)

// done records what became of the reserved keys and unlocks the counts.
// After maybeStored the counts of the insert's accounts are scanned again
// at their next check.
func (r *keyReservation) done(o insertOutcome) {
	for id, add := range r.added {
		st := r.s.accounts[id]
		if st == nil {
			continue
		}
		switch {
		case o == maybeStored:
			st.keys.counted.Store(false)
		case o == stored && st.keys.counted.Load():
			st.keys.n.Add(add)
		}
	}
	for _, c := range r.locked {
		c.mu.Unlock()
	}
	r.locked = nil
}

// keyLimitError is the refusal of add keys more to an account that holds n
// of its max.
func keyLimitError(account string, max int, n, add int64) error {
	what := "a key"
	if add > 1 {
		what = fmt.Sprintf("%d keys", add)
	}
	return fmt.Errorf("account %q holds %d keys (revoked keys included) and its max_keys is %d: %s more would exceed it; delete keys or raise max_keys: %w",
		account, n, max, what, ErrKeyLimit)
}

// lockKeyCount locks the key count of the account of key id for a delete
// and returns a function that records the delete (if deleted) and unlocks
// it. A key that cannot be read is left to the delete's transaction to
// report.
func (s *Store) lockKeyCount(id string) func(deleted bool) {
	var account string
	_ = s.view(func(t txn) error {
		k, err := t.getRecord(id)
		if err == nil {
			account = k.Account
		}
		return err
	})
	st := s.accountState(account)
	if st == nil {
		return func(bool) {}
	}
	st.keys.mu.Lock()
	return func(deleted bool) {
		if deleted && st.keys.counted.Load() {
			st.keys.n.Add(-1)
		}
		st.keys.mu.Unlock()
	}
}

// checkLoadLimits refuses a load that gives an account more keys than its
// max_keys (the store holds none before a load).
func (s *Store) checkLoadLimits(keys []*Key) error {
	added := map[string]int64{}
	for _, k := range keys {
		added[k.Account]++
	}
	for _, id := range slices.Sorted(maps.Keys(added)) {
		st := s.accounts[id]
		if st == nil {
			continue
		}
		if limit := st.acct.Load().MaxKeys; limit != nil && added[id] > int64(*limit) {
			return keyLimitError(id, *limit, 0, added[id])
		}
	}
	return nil
}
