package keystore

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// The persistence seam: everything that knows about Badger is in this file.
// Keys in the database:
//
//	k/<id>             key record (JSON, with hashes in hex)
//	h/<sha256>         id of the key whose current or grace-period string hashes to it
//	ak/<account>/<id>  index of keys by account (empty value)
//	a/<account>        account (JSON)
//	e/<id>/<event id>  audit event (JSON)
//	q/k/<id>           a key's quota count (JSON {period, used})
//	q/a/<account>      an account's quota count
const (
	pfxKey      = "k/"
	pfxHash     = "h/"
	pfxAcctKey  = "ak/"
	pfxAccount  = "a/"
	pfxEvent    = "e/"
	pfxQuotaKey = "q/k/"
	pfxQuotaAcc = "q/a/"
	schemaKey   = "m/schema"
	schemaValue = "1"
)

func keyK(id string) []byte          { return []byte(pfxKey + id) }
func keyA(id string) []byte          { return []byte(pfxAccount + id) }
func keyAK(acct, id string) []byte   { return []byte(pfxAcctKey + acct + "/" + id) }
func keyE(id, eventID string) []byte { return []byte(pfxEvent + id + "/" + eventID) }
func keyQK(id string) []byte         { return []byte(pfxQuotaKey + id) }
func keyQA(id string) []byte         { return []byte(pfxQuotaAcc + id) }
func keyH(h Hash) []byte {
	b := make([]byte, len(pfxHash)+len(h))
	copy(b, pfxHash)
	copy(b[len(pfxHash):], h[:])
	return b
}

// badgerOptions tunes Badger for this workload: tiny values (a few hundred
// bytes), read-mostly, every write durable.
//   - SyncWrites: every committed transaction is fsynced before the call
//     returns, so an acknowledged mutation survives a crash.
//   - MemTableSize 16 MiB (default 64): writes are rare and small; three
//     memtables of 64 MiB would be most of the process's memory.
//   - BlockCacheSize 32 MiB (default 256): hot keys are served from our own
//     cache; Badger's block cache only helps cache misses.
//   - ValueThreshold stays at its default (1 MiB), so every value lives in
//     the LSM tree and a lookup is one read, never a value-log seek.
//   - Bloom filters (default false positive rate 1%) make a lookup of an
//     unknown hash cheap: most tables are skipped without reading a block.
func badgerOptions(dir string, logger *zap.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(0).
		WithNumCompactors(2).
		WithLogger(badgerLogger{logger.Sugar()}).
		WithLoggingLevel(badger.WARNING)
}

type badgerLogger struct{ l *zap.SugaredLogger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Errorf("badger: "+f, a...) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warnf("badger: "+f, a...) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Infof("badger: "+f, a...) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.l.Debugf("badger: "+f, a...) }

func openBadger(dir string, logger *zap.Logger) (*badger.DB, error) {
	db, err := badger.Open(badgerOptions(dir, logger))
	if err != nil {
		return nil, fmt.Errorf("opening key store at %s: %w", dir, err)
	}
	return db, nil
}

// storedKey is a key record as persisted: the record plus its hashes.
type storedKey struct {
	*Key
	HashHex     string     `json:"hash"`
	PrevHashHex string     `json:"prev_hash,omitempty"`
	PrevUntil   *time.Time `json:"prev_until,omitempty"`
}

func encodeKey(k *Key) ([]byte, error) {
	sk := storedKey{Key: k, HashHex: k.Hash.String()}
	if k.PrevHash != nil {
		sk.PrevHashHex = k.PrevHash.String()
		t := k.PrevUntil
		sk.PrevUntil = &t
	}
	return json.Marshal(sk)
}

func decodeKey(b []byte) (*Key, error) {
	sk := storedKey{Key: new(Key)}
	if err := json.Unmarshal(b, &sk); err != nil {
		return nil, fmt.Errorf("decoding key record: %w", err)
	}
	h, err := ParseHash(sk.HashHex)
	if err != nil {
		return nil, fmt.Errorf("decoding key record %s: %w", sk.ID, err)
	}
	sk.Key.Hash = h
	if sk.PrevHashHex != "" && sk.PrevUntil != nil {
		ph, err := ParseHash(sk.PrevHashHex)
		if err != nil {
			return nil, fmt.Errorf("decoding key record %s: %w", sk.ID, err)
		}
		sk.Key.PrevHash = &ph
		sk.Key.PrevUntil = *sk.PrevUntil
	}
	return sk.Key, nil
}

// txn wraps a Badger transaction with the record-level operations.
type txn struct{ tx *badger.Txn }

func (t txn) getJSON(key []byte, v any) error {
	item, err := t.tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	return item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
}

func (t txn) getKey(id string) (*Key, error) {
	item, err := t.tx.Get(keyK(id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var k *Key
	err = item.Value(func(b []byte) error {
		k, err = decodeKey(b)
		return err
	})
	return k, err
}

// idForHash returns the id the hash index names, or ErrNotFound.
func (t txn) idForHash(h Hash) (string, error) {
	item, err := t.tx.Get(keyH(h))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", err
	}
	v, err := item.ValueCopy(nil)
	return string(v), err
}

// getRaw returns a value, or nil if the key is absent.
func (t txn) getRaw(key []byte) ([]byte, error) {
	item, err := t.tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func (t txn) putKey(k *Key) error {
	b, err := encodeKey(k)
	if err != nil {
		return err
	}
	return t.tx.Set(keyK(k.ID), b)
}

func (t txn) putJSON(key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return t.tx.Set(key, b)
}

func (t txn) set(key, val []byte) error { return t.tx.Set(key, val) }

// setHashTTL indexes a grace-period hash; Badger drops it after ttl.
func (t txn) setHashTTL(h Hash, id string, ttl time.Duration) error {
	return t.tx.SetEntry(badger.NewEntry(keyH(h), []byte(id)).WithTTL(ttl))
}

func (t txn) del(key []byte) error { return t.tx.Delete(key) }

// scan calls fn for each key with the prefix, in order (or reverse order),
// starting at start if not empty. fn returns false to stop.
func (t txn) scan(prefix, start []byte, reverse, values bool, fn func(key, val []byte) (bool, error)) error {
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

// view runs fn in a read-only transaction.
func (s *Store) view(fn func(t txn) error) error {
	return s.db.View(func(tx *badger.Txn) error { return fn(txn{tx}) })
}

// update runs fn in a read-write transaction and commits it durably
// (SyncWrites). A conflicting concurrent commit is retried.
func (s *Store) update(fn func(t txn) error) error {
	for attempt := 0; ; attempt++ {
		err := s.db.Update(func(tx *badger.Txn) error { return fn(txn{tx}) })
		if errors.Is(err, badger.ErrConflict) && attempt < 10 {
			continue
		}
		if err == nil {
			s.commits.Add(1)
		}
		return err
	}
}

// bulk writes many entries with Badger's WriteBatch (pipelined, without a
// transaction per entry) and syncs them to disk before it returns. It is
// not atomic: after a crash, a prefix of the entries may be stored.
func (s *Store) bulk(fn func(set func(key, val []byte) error) error) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	if err := fn(wb.Set); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	s.commits.Add(1)
	return s.db.Sync()
}

func (s *Store) runGC() {
	// RunValueLogGC rewrites at most one file per call; loop until there is
	// nothing worth rewriting.
	for s.db.RunValueLogGC(0.5) == nil {
	}
}

// readQuota returns a persisted quota count, or nil if there is none.
func (s *Store) readQuota(key []byte) ([]byte, error) {
	var b []byte
	err := s.view(func(t txn) error {
		var err error
		b, err = t.getRaw(key)
		return err
	})
	return b, err
}

// isTxnTooBig reports whether a transaction exceeded Badger's size bound.
func isTxnTooBig(err error) bool { return errors.Is(err, badger.ErrTxnTooBig) }
