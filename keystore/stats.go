package keystore

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// counters are the store's running counts, for Stats.
type counters struct {
	cacheMisses atomic.Uint64 // the hits are counted by the cache's shards
	purgeRuns   atomic.Uint64
	keysPurged  atomic.Uint64
	flushes     atomic.Uint64
	flushErrors atomic.Uint64
	engineErrs  atomic.Uint64
	keyCounts   atomic.Pointer[SweptKeyCounts]
}

func (c *counters) flushed(err error) {
	c.flushes.Add(1)
	if err != nil {
		c.flushErrors.Add(1)
	}
}

func (c *counters) purged(n int) {
	c.purgeRuns.Add(1)
	c.keysPurged.Add(uint64(n))
}

// SweptKeyCounts are the stored keys by status, as the last expiry sweep
// counted them.
type SweptKeyCounts struct {
	Active, Revoked, Expired int
	// At is when the sweep counted them.
	At time.Time
}

// Stats are the store's counts since it was opened (the key counts: as of
// the last expiry sweep; nil before the first).
type Stats struct {
	// CacheHits and CacheMisses count the verification path's lookups of
	// well-formed keys: found in memory, or not.
	CacheHits, CacheMisses uint64
	// StoreReads counts the verification path's reads of the engine (the
	// misses that the filter of stored hashes did not answer).
	StoreReads uint64
	// PurgeRuns and KeysPurged count the purge sweeps of revoked keys and
	// the keys they deleted.
	PurgeRuns, KeysPurged uint64
	// Flushes and FlushErrors count the writes of last-used times and
	// quota counts, and those that failed.
	Flushes, FlushErrors uint64
	// EngineErrors counts the errors of the engine (Badger, or Redis in
	// cluster mode): failed reads, writes and commits, not conflicts
	// retried or keys not found.
	EngineErrors uint64
	// Keys are the stored keys by status; nil before the first sweep.
	Keys *SweptKeyCounts
	// Accounts is the number of accounts.
	Accounts int
	// Shared says the store runs on a shared engine (cluster mode); Lag
	// and Stale are then those of Store.Lag and Store.Stale.
	Shared bool
	Lag    time.Duration
	Stale  bool
	// LeaseRefills counts the round trips to the shared engine for the
	// leases of cluster-wide rate limits and quotas (refills, and the
	// request path's takes when a bucket had no lease); Replicas is how
	// many replicas the last heartbeat found alive. Both 0 unless the
	// limits are cluster-wide.
	LeaseRefills uint64
	Replicas     int
}

// Stats returns the store's counts. It reads memory only.
func (s *Store) Stats() Stats {
	s.acctMu.RLock()
	accounts := len(s.accounts)
	s.acctMu.RUnlock()
	var refills uint64
	var replicas int
	if s.global != nil {
		refills, replicas = s.global.calls.Load(), int(s.global.replicas.Load())
	}
	return Stats{
		LeaseRefills: refills,
		Replicas:     replicas,
		CacheHits:    s.cache.hits(),
		CacheMisses:  s.stats.cacheMisses.Load(),
		StoreReads:   s.missReads.Load(),
		PurgeRuns:    s.stats.purgeRuns.Load(),
		KeysPurged:   s.stats.keysPurged.Load(),
		Flushes:      s.stats.flushes.Load(),
		FlushErrors:  s.stats.flushErrors.Load(),
		EngineErrors: s.stats.engineErrs.Load(),
		Keys:         s.stats.keyCounts.Load(),
		Accounts:     accounts,
		Shared:       s.maxStale > 0,
		Lag:          s.Lag(),
		Stale:        s.Stale(),
	}
}

// countingTxn counts the errors of an engine's transaction.
type countingTxn struct {
	kv.Txn
	c *counters
}

func (t countingTxn) count(err error) error {
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		t.c.engineErrs.Add(1)
		return &engineError{err}
	}
	return err
}

func (t countingTxn) Get(key []byte, fn func(val []byte) error) error {
	var fnErr error
	err := t.Txn.Get(key, func(val []byte) error {
		fnErr = fn(val)
		return fnErr
	})
	if err != nil && err == fnErr {
		return err // fn's own error (a decoding error), not the engine's
	}
	return t.count(err)
}

func (t countingTxn) Exists(key []byte) (bool, error) {
	ok, err := t.Txn.Exists(key)
	return ok, t.count(err)
}

func (t countingTxn) Set(key, val []byte) error { return t.count(t.Txn.Set(key, val)) }

func (t countingTxn) SetTTL(key, val []byte, ttl time.Duration) error {
	return t.count(t.Txn.SetTTL(key, val, ttl))
}

func (t countingTxn) Delete(key []byte) error { return t.count(t.Txn.Delete(key)) }

func (t countingTxn) Scan(prefix, start []byte, reverse, values bool, fn func(key, val []byte) (bool, error)) error {
	var fnErr error
	err := t.Txn.Scan(prefix, start, reverse, values, func(key, val []byte) (bool, error) {
		ok, err := fn(key, val)
		fnErr = err
		return ok, err
	})
	if err != nil && err == fnErr {
		return err
	}
	return t.count(err)
}

// engineError marks an engine error already counted, so that the
// transaction that returns it is not counted again.
type engineError struct{ err error }

func (e *engineError) Error() string { return e.err.Error() }
func (e *engineError) Unwrap() error { return e.err }

// countTxnErr counts the error of a transaction's begin or commit: not
// one the transaction's function returned (counted when the engine
// returned it, or not the engine's), not a conflict the store retries.
func (s *Store) countTxnErr(err, fnErr error) {
	var ee *engineError
	if err == nil || err == fnErr || errors.As(err, &ee) || errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrNotFound) {
		return
	}
	s.stats.engineErrs.Add(1)
}
