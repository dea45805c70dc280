package keystore

import (
	"bytes"
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// ErrStale is Verify's error when the store runs on a shared engine and
// has not confirmed within MaxStaleness that it knows every change the
// other processes made: a revoked key might still be in its cache, so a
// key check must not pass. Callers answer 503 (unavailable) and need not
// log it: the store logs the outage once.
var ErrStale = errors.New("the key store has not confirmed that it is current (shared engine unreachable)")

// DefaultMaxStaleness is how long a store on a shared engine goes on
// verifying without confirming that it is current.
const DefaultMaxStaleness = time.Second

// ScanBucket is the store's scan layout for engines that index keys for
// ordered scans (redisstore): the keys that one scan reads are in one
// bucket. Keys that are only ever read one at a time (last uses, quota
// counts, markers, page sessions) are in none.
func ScanBucket(key []byte) []byte {
	for _, p := range [...]string{pfxKey, pfxHash, pfxAccount, pfxRevoked, pfxDeleting} {
		if bytes.HasPrefix(key, []byte(p)) {
			return key[:len(p)]
		}
	}
	for _, p := range [...]string{pfxAcctKey, pfxEvent, pfxUsageKey, pfxUsageAcct, pfxKeySessions} {
		if bytes.HasPrefix(key, []byte(p)) {
			// ak/<account>/, e/<id>/, s/k/<id>/, s/a/<account>/ and
			// wk/<id>/: one bucket per account and per key, so that a
			// scan of one key's events, usage points or page sessions
			// watches only them.
			if i := bytes.IndexByte(key[len(p):], '/'); i >= 0 {
				return key[:len(p)+i+1]
			}
			return nil
		}
	}
	return nil
}

// Watched says which writes other processes must learn of: hash entries
// (what verification reads), key records (the string a grace period keeps
// is read from the record) and accounts (held in memory).
func Watched(key []byte) bool {
	return bytes.HasPrefix(key, []byte(pfxHash)) || bytes.HasPrefix(key, []byte(pfxKey)) || bytes.HasPrefix(key, []byte(pfxAccount))
}

// follow starts following the changes of the other processes of a shared
// engine. It runs before init, so that nothing committed after the
// accounts and the filter are read is missed; the changes it passes wait
// until init is done (s.ready).
func (s *Store) follow(maxStale time.Duration) error {
	sh, ok := s.eng.(kv.Shared)
	if !ok {
		return nil
	}
	if maxStale <= 0 {
		maxStale = DefaultMaxStaleness
	}
	s.maxStale = int64(maxStale)
	ctx, cancel := context.WithCancel(context.Background())
	wait, err := sh.Follow(ctx, s.applyChanges, func(at time.Time) {
		s.confirmed.Store(at.UnixNano())
		s.readsDown.Store(false)
		if time.Since(at) <= maxStale {
			s.isStale.Store(false)
		}
	})
	if err != nil {
		cancel()
		return err
	}
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		s.watchStaleness(ctx)
	}()
	s.stopFollow = func() { cancel(); wait(); <-watched }
	return nil
}

// staleCheck is how often the store compares its last confirmation with
// MaxStaleness: the request path reads the result, one atomic flag, and
// no clock.
const staleCheck = 50 * time.Millisecond

// watchStaleness sets isStale while the last confirmation is older than
// MaxStaleness (by the wall clock: the store's own clock may be a test's).
func (s *Store) watchStaleness(ctx context.Context) {
	t := time.NewTicker(staleCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		stale := time.Since(time.Unix(0, s.confirmed.Load())) > time.Duration(s.maxStale)
		if stale && !s.isStale.Load() {
			s.log.Error("refusing key checks: the shared key store has not been confirmed current within max_staleness", zap.Duration("max_staleness", time.Duration(s.maxStale)))
		}
		s.isStale.Store(stale)
	}
}

// readFailed is told of a failed read on the request path. On a shared
// engine, later cache misses then fail at once (ErrStale) instead of each
// waiting for a read timeout, until the engine confirms again that it is
// current; cached keys go on being verified while the store is within
// MaxStaleness, as an operator who raised it asked.
func (s *Store) readFailed() {
	if s.maxStale > 0 {
		s.readsDown.Store(true)
	}
}

// Stale reports whether the store refuses key checks because it has not
// confirmed within MaxStaleness that it knows every change of its shared
// engine.
func (s *Store) Stale() bool { return s.isStale.Load() }

// Lag is how long ago the store last confirmed that it knows every change
// of its shared engine (0 for an engine of its own).
func (s *Store) Lag() time.Duration {
	if s.maxStale == 0 {
		return 0
	}
	return time.Since(time.Unix(0, s.confirmed.Load()))
}

// applyChanges applies another process's committed changes to what this
// store keeps in memory: cached verifications, the filter of stored
// hashes, the accounts. nil means that changes may have been missed:
// everything is dropped and read again.
func (s *Store) applyChanges(keys [][]byte) {
	<-s.ready
	if keys == nil {
		s.reloadAll()
		return
	}
	// The change's hashes enter the filter after every invalidation of
	// the change is done: a request that finds a new key's hash in the
	// filter then fills the cache with the key as the change left it.
	var added []Hash
	defer func() { s.indexed(added...) }()
	for _, k := range keys {
		switch {
		case bytes.HasPrefix(k, []byte(pfxHash)) && len(k) == len(pfxHash)+len(Hash{}):
			var h Hash
			copy(h[:], k[len(pfxHash):])
			s.cache.invalidate(h)
			added = append(added, h)
		case bytes.HasPrefix(k, []byte(pfxKey)):
			// A key's strings: the current one has its own hash entry
			// (above), a grace-period one is verified from the record.
			var rec *Key
			err := s.view(func(t txn) error {
				var err error
				rec, err = t.getRecord(string(k[len(pfxKey):]))
				return err
			})
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				s.log.Error("reading a key changed by another process; dropping every cached key", zap.Error(err))
				s.cache.clear()
			default:
				s.cache.invalidate(hashesOf(rec)...)
			}
		case bytes.HasPrefix(k, []byte(pfxAccount)):
			if err := s.reloadAccount(string(k[len(pfxAccount):])); err != nil {
				s.log.Error("reading an account changed by another process", zap.Error(err))
			}
		}
	}
}

// reloadAccount reads an account again after another process changed it.
func (s *Store) reloadAccount(id string) error {
	s.acctMu.Lock()
	defer s.acctMu.Unlock()
	var a *Account
	var q []byte
	err := s.view(func(t txn) error {
		a = new(Account)
		if err := t.getJSON(keyA(id), a); err != nil {
			return err
		}
		var err error
		q, err = t.getRaw(keyQA(id))
		return err
	})
	if errors.Is(err, ErrNotFound) {
		s.forgetAccountLimits(id)
		delete(s.accounts, id)
		s.acctIndex.Delete(id)
		return nil
	}
	if err != nil {
		return err
	}
	if st, ok := s.accounts[id]; ok {
		st.set(a)
		return nil
	}
	st := s.newAccountState(a, q)
	s.accounts[id] = st
	s.acctIndex.Store(id, st)
	return nil
}

// reloadAll drops every cached verification, reads every account again
// and rebuilds the filter: after changes may have been missed.
func (s *Store) reloadAll() {
	s.cache.clear()
	var ids []string
	err := s.view(func(t txn) error {
		return t.scan([]byte(pfxAccount), nil, false, false, func(key, _ []byte) (bool, error) {
			ids = append(ids, string(key[len(pfxAccount):]))
			return true, nil
		})
	})
	if err != nil {
		s.log.Error("reloading the accounts", zap.Error(err))
	}
	s.acctMu.RLock()
	for id := range s.accounts {
		ids = append(ids, id) // deleted ones are dropped by reloadAccount
	}
	s.acctMu.RUnlock()
	for _, id := range ids {
		if err := s.reloadAccount(id); err != nil {
			s.log.Error("reloading an account", zap.String("account", id), zap.Error(err))
		}
	}
	s.startFilterBuild()
}

// learnAccounts reads from a shared engine the accounts of ids that this
// process does not know yet: one another process created a moment ago,
// whose change this process's follower has not applied. An admin request
// that names such an account (a key created for it, its update) then
// behaves as on the process that created it, instead of answering that
// it does not exist for the few milliseconds of propagation. An id the
// engine does not hold stays unknown. Callers must not hold acctMu.
func (s *Store) learnAccounts(ids ...string) error {
	if !s.sharedEngine() {
		return nil
	}
	for _, id := range ids {
		if s.accountState(id) != nil {
			continue
		}
		if err := s.reloadAccount(id); err != nil {
			return err
		}
	}
	return nil
}
