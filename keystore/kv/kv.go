// Package kv is the persistence seam of the key store: an ordered,
// transactional key-value engine. The keystore package holds every rule
// (records, indexes, audit, limits) and reaches storage only through these
// interfaces; each engine (badgerstore, the embedded default, and engines
// shared by several processes) lives in a package of its own under
// keystore and knows nothing of keys or accounts.
//
// What the key store needs of an engine:
//   - Update runs a read-write transaction with snapshot isolation: it
//     commits all of its writes or none, durably (a committed transaction
//     survives a crash of the process), or fails with ErrConflict when
//     something it read was written by another transaction meanwhile, so
//     that the caller runs it again on fresh reads.
//   - Scan returns keys of a prefix in byte order (or reverse order).
//   - SetTTL writes an entry that disappears by itself after a time.
//   - Batch writes many entries fast and durably, without atomicity.
package kv

import (
	"context"
	"errors"
	"time"
)

// Errors an engine returns. Engines wrap their own errors in these, so
// that the key store can tell them apart with errors.Is.
var (
	// ErrNotFound: the key has no value.
	ErrNotFound = errors.New("kv: key not found")
	// ErrConflict: a transaction read something that another one wrote
	// before it committed; nothing of it was written.
	ErrConflict = errors.New("kv: transaction conflict")
	// ErrTxnTooBig: a transaction holds more writes than the engine
	// commits at once; nothing of it was written.
	ErrTxnTooBig = errors.New("kv: transaction too big")
)

// Txn is a transaction's view of the engine. A key or value passed to Set,
// SetTTL or Delete must not be changed until the transaction has ended
// (Badger keeps the slices until it commits).
type Txn interface {
	// Get calls fn with a key's value, or returns ErrNotFound. The value
	// is valid only during the call (an engine may lend its own memory:
	// Badger's mapped tables), so that a read that decodes it copies
	// nothing.
	Get(key []byte, fn func(val []byte) error) error
	// Exists reports whether a key has a value, without reading it.
	Exists(key []byte) (bool, error)
	// Set writes a value.
	Set(key, val []byte) error
	// SetTTL writes a value that the engine drops after ttl.
	SetTTL(key, val []byte, ttl time.Duration) error
	// Delete removes a key; deleting an absent key is not an error.
	Delete(key []byte) error
	// Scan calls fn for each key with the prefix, in byte order (reverse
	// order if reverse), from start if it is not empty (start includes
	// the prefix). val is nil unless values. fn returns false to stop;
	// key and val are valid only during the call.
	Scan(prefix, start []byte, reverse, values bool, fn func(key, val []byte) (bool, error)) error
}

// Engine is a store's persistence.
type Engine interface {
	// View runs fn in a read-only transaction.
	View(fn func(Txn) error) error
	// Update runs fn in a read-write transaction and commits it durably,
	// once: a conflict is ErrConflict, and the caller decides whether to
	// run it again.
	Update(fn func(Txn) error) error
	// Batch writes the entries fn sets, durably when it returns, but not
	// atomically: after a crash a part of them may be stored.
	Batch(fn func(set func(key, val []byte) error) error) error
	// Maintain does the engine's periodic housekeeping (garbage
	// collection); the key store calls it every few minutes.
	Maintain()
	// Close releases the engine.
	Close() error
}

// Entry is one key and value, and when the engine drops it.
type Entry struct {
	Key, Val []byte
	// ExpiresAt is when an entry written with SetTTL disappears; zero for
	// an entry without a TTL. Engines may round it up to their own
	// precision (Badger: whole seconds).
	ExpiresAt time.Time
}

// Loader is an engine that can replace its whole contents in one fast
// pass (the offline bulk load, `caddy apikey load`).
type Loader interface {
	Engine
	// All returns every entry.
	All() ([]Entry, error)
	// ReplaceAll makes the entries of parts the engine's whole contents.
	// Each part returns its entries in byte order, a batch per call, and
	// nil at its end; every key of a part sorts after every key of the
	// parts before it. A batch's memory may be reused by the part's next
	// call. If it fails after dropping the contents, it writes back
	// existing (what All returned before).
	ReplaceAll(existing []Entry, parts []func() ([]Entry, error)) error
}

// Copier is an engine whose whole contents can be read and written entry
// by entry, TTLs included: caddy apikey migrate copies a store from one
// engine to another with it. Nothing else may write the engine while Each
// runs (it may not be a snapshot).
type Copier interface {
	Engine
	// Each calls fn with every entry, in byte order of the keys, each
	// once, with its ExpiresAt; an entry whose TTL passes meanwhile may be
	// left out. The entry's slices are fn's to keep.
	Each(fn func(Entry) error) error
	// Put writes entries durably, but not atomically (as Batch), each
	// with its ExpiresAt: zero is no TTL, and an entry whose ExpiresAt has
	// passed is not written.
	Put(entries []Entry) error
}

// All returns every entry of c, in byte order of the keys (Each, into a
// slice).
func All(c Copier) ([]Entry, error) {
	var out []Entry
	err := c.Each(func(en Entry) error {
		out = append(out, en)
		return nil
	})
	return out, err
}

// Counter is an engine that counts the keys of a scan prefix without
// reading them one by one (or at least without their values).
type Counter interface {
	Engine
	// Count returns the number of keys with the prefix; the prefix must
	// be one that Txn.Scan accepts.
	Count(prefix []byte) (int64, error)
}

// Shared is an engine that several processes use at once: each must learn
// of the changes the others commit, to drop what it keeps in memory.
type Shared interface {
	Engine
	// Follow starts following the changes that other processes commit
	// from now on, and returns once it knows where "now" is (an error if
	// the engine cannot be reached), with a function that waits, after
	// ctx is done, until the following has stopped. From then until ctx is done it calls
	// apply, in commit order, with the watched keys each transaction
	// wrote or deleted, or with nil when changes may have been missed (the
	// engine lost them, or this process fell too far behind): the caller
	// then drops everything it keeps. It calls confirmed(at) whenever the
	// engine has confirmed that every change committed before at has been
	// passed to apply. Calls of apply and confirmed come from one
	// goroutine, one at a time.
	Follow(ctx context.Context, apply func(keys [][]byte), confirmed func(at time.Time)) (wait func(), err error)
}
