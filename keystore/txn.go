package keystore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// txn is a transaction of the store's engine with the record-level
// operations: what the store reads and writes, in the layout of layout.go.
type txn struct{ tx kv.Txn }

func (t txn) getJSON(key []byte, v any) error {
	err := t.tx.Get(key, func(b []byte) error { return json.Unmarshal(b, v) })
	if errors.Is(err, kv.ErrNotFound) {
		return ErrNotFound
	}
	return err
}

// getKey returns a key's record with its last use.
func (t txn) getKey(id string) (*Key, error) {
	k, err := t.getRecord(id)
	if err != nil {
		return nil, err
	}
	return k, t.mergeStoredUse(k)
}

// mergeStoredUse sets k.LastUsedAt from u/ if that is later.
func (t txn) mergeStoredUse(k *Key) error {
	at, err := t.getLastUsed(k.ID)
	if err != nil || at == 0 {
		return err
	}
	if ts := time.Unix(0, at).UTC(); k.LastUsedAt == nil || ts.After(*k.LastUsedAt) {
		k.LastUsedAt = &ts
	}
	return nil
}

// getLastUsed returns a key's stored last use (unix nanos), or 0.
func (t txn) getLastUsed(id string) (int64, error) {
	b, err := t.getRaw(keyU(id))
	if err != nil || len(b) != 8 {
		return 0, err
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

func (t txn) putLastUsed(id string, at int64) error {
	return t.tx.Set(keyU(id), binary.BigEndian.AppendUint64(nil, uint64(at)))
}

// getRecord returns a key's record as stored, without reading u/: the
// verification path does not need the last use.
func (t txn) getRecord(id string) (*Key, error) {
	var k *Key
	err := t.tx.Get(keyK(id), func(b []byte) error {
		var err error
		k, err = decodeKey(b)
		return err
	})
	if errors.Is(err, kv.ErrNotFound) {
		return nil, ErrNotFound
	}
	return k, err
}

// putHashEntry writes h/<hash> of the key's current string.
func (t txn) putHashEntry(k *Key) error {
	return t.tx.Set(keyH(k.Hash), encodeHashEntry(k))
}

// keyForHash returns the key a hash names, for verification: from the
// hash entry alone (a key with only the hash entry's fields, and Hash),
// or, for a grace-period string or an entry written before hash entries
// existed, the whole record. ErrNotFound if the hash is unknown.
func (t txn) keyForHash(h Hash) (*Key, error) {
	var k *Key
	var id string
	err := t.tx.Get(keyH(h), func(b []byte) error {
		var err error
		k, id, err = decodeHashValue(b, h)
		return err
	})
	if errors.Is(err, kv.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil || k != nil {
		return k, err
	}
	return t.getRecord(id)
}

// exists reports whether a key is present, without reading its value.
func (t txn) exists(key []byte) (bool, error) { return t.tx.Exists(key) }

// getRaw returns a copy of a value, or nil if the key is absent.
func (t txn) getRaw(key []byte) ([]byte, error) {
	var out []byte
	err := t.tx.Get(key, func(b []byte) error {
		out = append(make([]byte, 0, len(b)), b...)
		return nil
	})
	if errors.Is(err, kv.ErrNotFound) {
		return nil, nil
	}
	return out, err
}

func (t txn) putKey(k *Key) error {
	return t.tx.Set(keyK(k.ID), encodeKey(k))
}

func (t txn) putJSON(key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return t.tx.Set(key, b)
}

func (t txn) set(key, val []byte) error { return t.tx.Set(key, val) }

// reindexRevoked keeps r/ in step with a key's revocation: before is the
// record as stored, after the one replacing it (nil for a delete).
func (t txn) reindexRevoked(before, after *Key) error {
	var was, is *time.Time
	if before != nil {
		was = before.RevokedAt
	}
	if after != nil {
		is = after.RevokedAt
	}
	if was != nil && (is == nil || !was.Equal(*is)) {
		if err := t.del(keyR(*was, before.ID)); err != nil {
			return err
		}
	}
	if is != nil && (was == nil || !was.Equal(*is)) {
		return t.set(keyR(*is, after.ID), []byte{})
	}
	return nil
}

// setHashTTL indexes a grace-period hash; the engine drops it after ttl.
func (t txn) setHashTTL(h Hash, id string, ttl time.Duration) error {
	return t.tx.SetTTL(keyH(h), []byte(id), ttl)
}

// setTTL writes a value that the engine drops after ttl.
func (t txn) setTTL(key, val []byte, ttl time.Duration) error { return t.tx.SetTTL(key, val, ttl) }

func (t txn) del(key []byte) error { return t.tx.Delete(key) }

// delOwnedHash deletes h/<h> if it names the key id. A key's record can
// name a hash whose entry is no longer its own: the entry of a
// grace-period string expires (TTL) while the record keeps PrevHash, and
// the same string may then be imported as another key, whose entry it
// must not take away.
func (t txn) delOwnedHash(h Hash, id string) error {
	b, err := t.getRaw(keyH(h))
	if err != nil || b == nil {
		return err
	}
	k, owner, err := decodeHashValue(b, h)
	if err != nil {
		return err
	}
	if k != nil {
		owner = k.ID
	}
	if owner != id {
		return nil
	}
	return t.del(keyH(h))
}

// scan calls fn for each key with the prefix, in order (or reverse order),
// starting at start if not empty. fn returns false to stop.
func (t txn) scan(prefix, start []byte, reverse, values bool, fn func(key, val []byte) (bool, error)) error {
	return t.tx.Scan(prefix, start, reverse, values, fn)
}

// view runs fn in a read-only transaction.
func (s *Store) view(fn func(t txn) error) error {
	var fnErr error
	err := s.eng.View(func(tx kv.Txn) error {
		fnErr = fn(txn{countingTxn{tx, &s.stats}})
		return fnErr
	})
	s.countTxnErr(err, fnErr)
	return err
}

// maxConflictRetries bounds how often update runs a conflicting
// transaction again (the pauses add up to about a quarter of a second).
const maxConflictRetries = 50

// update runs fn in a read-write transaction and commits it durably. A
// commit that conflicts with a concurrent one (something fn read was
// written meanwhile) runs fn again, on fresh reads, after a short random
// pause that grows with the attempts: writers of the same key take turns
// rather than failing each other.
func (s *Store) update(fn func(t txn) error) error {
	for attempt := 0; ; attempt++ {
		var fnErr error
		err := s.eng.Update(func(tx kv.Txn) error {
			fnErr = fn(txn{countingTxn{tx, &s.stats}})
			return fnErr
		})
		s.countTxnErr(err, fnErr)
		if errors.Is(err, kv.ErrConflict) && attempt < maxConflictRetries {
			time.Sleep(rand.N(time.Duration(attempt+1) * 200 * time.Microsecond))
			continue
		}
		if err == nil {
			s.commits.Add(1)
		}
		return err
	}
}

// bulk writes many entries with the engine's batch writer, durably before
// it returns. It is not atomic: after a crash, a prefix of the entries may
// be stored.
func (s *Store) bulk(fn func(set func(key, val []byte) error) error) error {
	var fnErr error
	err := s.eng.Batch(func(set func(key, val []byte) error) error {
		fnErr = fn(set)
		return fnErr
	})
	if err != nil {
		s.countTxnErr(err, fnErr)
		return err
	}
	s.commits.Add(1)
	return nil
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

// isTxnTooBig reports whether a transaction exceeded the engine's size
// bound.
func isTxnTooBig(err error) bool { return errors.Is(err, kv.ErrTxnTooBig) }
