package badgerstore

import (
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// Each calls fn with every entry of the database, in key order, from one
// read transaction (a snapshot), with the expiry of entries written with
// a TTL (Badger keeps it in whole seconds).
func (e *Engine) Each(fn func(kv.Entry) error) error {
	return e.db.View(func(tx *badger.Txn) error {
		it := tx.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			val, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			en := kv.Entry{Key: item.KeyCopy(nil), Val: val}
			if at := item.ExpiresAt(); at > 0 {
				en.ExpiresAt = time.Unix(int64(at), 0)
			}
			if err := fn(en); err != nil {
				return err
			}
		}
		return nil
	})
}

// Put writes entries with Badger's WriteBatch, each with its expiry
// (rounded up to the second, as Badger keeps it: a copied TTL never
// ends early), and syncs them to disk before it returns. Entries whose
// expiry has passed are skipped.
func (e *Engine) Put(entries []kv.Entry) error {
	wb := e.db.NewWriteBatch()
	defer wb.Cancel()
	now := time.Now()
	for _, en := range entries {
		be := badger.NewEntry(en.Key, en.Val)
		if !en.ExpiresAt.IsZero() {
			if !en.ExpiresAt.After(now) {
				continue
			}
			sec := en.ExpiresAt.Unix()
			if en.ExpiresAt.After(time.Unix(sec, 0)) {
				sec++
			}
			be.ExpiresAt = uint64(sec)
		}
		if err := wb.SetEntry(be); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	return e.db.Sync()
}

// Count counts the keys with the prefix, reading keys only (Badger keeps
// no count: this is a scan of the prefix's keys, O(n)).
func (e *Engine) Count(prefix []byte) (int64, error) {
	var n int64
	err := e.db.View(func(tx *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = prefix
		opts.PrefetchValues = false
		it := tx.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// Interface guards.
var (
	_ kv.Copier  = (*Engine)(nil)
	_ kv.Counter = (*Engine)(nil)
)
