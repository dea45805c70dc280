package badgerstore

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// Engine is a key store's Badger database.
type Engine struct{ db *badger.DB }

// Open opens (creating if needed) the Badger database in dir with Options.
func Open(dir string, logger *zap.Logger) (*Engine, error) {
	return OpenWith(Options(dir, logger))
}

// OpenWith opens Badger with the given options (Load's, and tests', differ
// from Options). A memory-table log left by a crash of a configuration
// with other memtables is replayed first (settleMemtables).
func OpenWith(o badger.Options) (*Engine, error) {
	if err := settleMemtables(o); err != nil {
		return nil, fmt.Errorf("opening key store at %s: %w", o.Dir, err)
	}
	db, err := badger.Open(o)
	if err != nil {
		return nil, fmt.Errorf("opening key store at %s: %w", o.Dir, err)
	}
	return &Engine{db: db}, nil
}

// DB is the Badger database, for tests and tools that inspect its tables.
func (e *Engine) DB() *badger.DB { return e.db }

// View runs fn in a read-only transaction.
func (e *Engine) View(fn func(kv.Txn) error) error {
	return e.db.View(func(tx *badger.Txn) error { return fn(txn{tx}) })
}

// Update runs fn in a read-write transaction and commits it, fsynced
// (SyncWrites), once.
func (e *Engine) Update(fn func(kv.Txn) error) error {
	return mapErr(e.db.Update(func(tx *badger.Txn) error { return fn(txn{tx}) }))
}

// Batch writes many entries with Badger's WriteBatch (pipelined, without a
// transaction per entry) and syncs them to disk before it returns. It is
// not atomic: after a crash, a prefix of the entries may be stored.
func (e *Engine) Batch(fn func(set func(key, val []byte) error) error) error {
	wb := e.db.NewWriteBatch()
	defer wb.Cancel()
	if err := fn(wb.Set); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	return e.db.Sync()
}

// Maintain garbage-collects the value log.
func (e *Engine) Maintain() {
	// RunValueLogGC rewrites at most one file per call; loop until there is
	// nothing worth rewriting.
	for e.db.RunValueLogGC(0.5) == nil {
	}
}

// Close closes Badger.
func (e *Engine) Close() error { return e.db.Close() }

// mapErr gives Badger's transaction errors the kv seam's names.
func mapErr(err error) error {
	switch {
	case errors.Is(err, badger.ErrConflict):
		return fmt.Errorf("%w: %w", kv.ErrConflict, err)
	case errors.Is(err, badger.ErrTxnTooBig):
		return fmt.Errorf("%w: %w", kv.ErrTxnTooBig, err)
	}
	return err
}

// txn is a Badger transaction as a kv.Txn.
type txn struct{ tx *badger.Txn }

func (t txn) Get(key []byte, fn func(val []byte) error) error {
	item, err := t.tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return kv.ErrNotFound
	}
	if err != nil {
		return err
	}
	return item.Value(fn)
}

func (t txn) Exists(key []byte) (bool, error) {
	_, err := t.tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (t txn) Set(key, val []byte) error { return mapErr(t.tx.Set(key, val)) }

func (t txn) SetTTL(key, val []byte, ttl time.Duration) error {
	// Badger keeps expiry in whole seconds. Its WithTTL truncates, so an
	// entry could disappear up to a second before its TTL; round up
	// instead, as kv.Entry documents: an entry lives at least ttl.
	e := badger.NewEntry(key, val)
	e.ExpiresAt = uint64((time.Now().Add(ttl).UnixNano() + int64(time.Second) - 1) / int64(time.Second))
	return mapErr(t.tx.SetEntry(e))
}

func (t txn) Delete(key []byte) error { return mapErr(t.tx.Delete(key)) }

func (t txn) Scan(prefix, start []byte, reverse, values bool, fn func(key, val []byte) (bool, error)) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.Reverse = reverse
	opts.PrefetchValues = values
	it := t.tx.NewIterator(opts)
	defer it.Close()
	seek := start
	if len(seek) == 0 {
		seek = prefix
		if reverse {
			seek = append(append([]byte(nil), prefix...), 0xff)
		}
	}
	for it.Seek(seek); it.Valid(); it.Next() {
		item := it.Item()
		var val []byte
		if values {
			var err error
			if val, err = item.ValueCopy(nil); err != nil {
				return err
			}
		}
		more, err := fn(item.Key(), val)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// Interface guards.
var (
	_ kv.Loader = (*Engine)(nil)
	_ kv.Txn    = txn{}
)
