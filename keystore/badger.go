package keystore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/ristretto/v2/z"
	"go.uber.org/zap"
)

// The persistence seam: everything that knows about Badger is in this file.
// Keys in the database:
//
//	k/<id>             key record (binary since schema 3, see record.go;
//	                   JSON with hashes in hex before)
//	h/<sha256>         for a key's current string: what verification needs
//	                   of the key (its hash entry, binary since schema 2; see
//	                   hashentry.go), so that a cache miss is one read; for
//	                   the string a regenerate with a grace period replaced:
//	                   the key's id (stores written before hash entries
//	                   existed have ids for current strings too; the next
//	                   change of the key rewrites them)
//	ak/<account>/<id>  index of keys by account (empty value)
//	a/<account>        account (JSON)
//	e/<id>/<event id>  audit event (binary since schema 3, see audit.go;
//	                   JSON before)
//	q/k/<id>           a key's quota count (JSON {period, used})
//	q/a/<account>      an account's quota count
//	u/<id>             a key's last use (unix nanos, 8 bytes big-endian):
//	                   the flush writes it apart from the record, so that
//	                   recording a use never re-encodes the record
//	r/<revoked>/<id>   index of revoked keys by revocation time (16 hex
//	                   digits of unix nanos), so that the purge reads only
//	                   the keys it deletes
//	d/<id>             a deleted key whose audit events are still being
//	                   deleted (too many for one transaction); the
//	                   purge sweep finishes what a crash interrupted
//	m/revoked-index    present once every revoked key is in r/
//	m/schema           the layout's version: "3" (binary key records and
//	                   audit events); Open marks a store of "2" (binary
//	                   hash entries, JSON records) or "1" (JSON
//	                   throughout) "3"
const (
	pfxKey      = "k/"
	pfxHash     = "h/"
	pfxAcctKey  = "ak/"
	pfxAccount  = "a/"
	pfxEvent    = "e/"
	pfxQuotaKey = "q/k/"
	pfxQuotaAcc = "q/a/"
	pfxLastUsed = "u/"
	pfxRevoked  = "r/"
	pfxDeleting = "d/"
	schemaKey   = "m/schema"
	schemaValue = "3" // binary key records and audit events
	schema2     = "2" // binary hash entries, JSON key records
	schema1     = "1" // JSON hash entries and key records
	revIndexKey = "m/revoked-index"
)

func keyK(id string) []byte  { return appendKeyK(make([]byte, 0, len(pfxKey)+len(id)), id) }
func keyA(id string) []byte  { return []byte(pfxAccount + id) }
func keyQK(id string) []byte { return []byte(pfxQuotaKey + id) }
func keyQA(id string) []byte { return []byte(pfxQuotaAcc + id) }
func keyU(id string) []byte  { return []byte(pfxLastUsed + id) }

func keyAK(acct, id string) []byte {
	return appendKeyAK(make([]byte, 0, len(pfxAcctKey)+len(acct)+1+len(id)), acct, id)
}

func keyE(id, eventID string) []byte {
	return appendKeyE(make([]byte, 0, len(pfxEvent)+len(id)+1+len(eventID)), id, eventID)
}

func keyH(h Hash) []byte {
	return appendKeyH(make([]byte, 0, len(pfxHash)+len(h)), h)
}

func keyR(at time.Time, id string) []byte {
	return fmt.Appendf(nil, "%s%016x/%s", pfxRevoked, uint64(unixNano(at)), id)
}

// parseKeyR returns the revocation time and id of an r/ key.
func parseKeyR(key []byte) (int64, string, bool) {
	rest := key[len(pfxRevoked):]
	if len(rest) < 18 || rest[16] != '/' {
		return 0, "", false
	}
	n, err := strconv.ParseUint(string(rest[:16]), 16, 64)
	if err != nil {
		return 0, "", false
	}
	return int64(n), string(rest[17:]), true
}

// appendKeyK, appendKeyAK, appendKeyE and appendKeyH append keyK, keyAK,
// keyE and keyH to b: for a bulk load's buffers, which hold a batch's
// entries together.
func appendKeyK(b []byte, id string) []byte {
	return append(append(b, pfxKey...), id...)
}

func appendKeyAK(b []byte, acct, id string) []byte {
	b = append(append(b, pfxAcctKey...), acct...)
	return append(append(b, '/'), id...)
}

func appendKeyE(b []byte, id, eventID string) []byte {
	b = append(append(b, pfxEvent...), id...)
	return append(append(b, '/'), eventID...)
}

func appendKeyH(b []byte, h Hash) []byte {
	return append(append(b, pfxHash...), h[:]...)
}

// badgerOptions tunes Badger for this workload: small values (a few
// hundred bytes), read-mostly, every write durable, and a verification
// path that reads Badger only on a cache miss.
//   - SyncWrites: every committed transaction is fsynced before the call
//     returns, so an acknowledged mutation survives a crash.
//   - MemTableSize 4 MiB (default 64), two of them, and a level-0 table
//     compacted as soon as it is written (NumLevelZeroTables 1, default
//     5): writes are rare and small, and what the write path holds is
//     what the process's memory swings by between flushes: the memtable's
//     arena (about 5 MiB of Go heap), its mapped log (up to 4 MiB) and
//     the level-0 tables waiting for compaction (mapped as they are
//     written). With 16 MiB memtables and five level-0 tables that was up
//     to 21 + 16 + 70 MiB, and a process that served the same load read
//     97 MiB or 150 MiB depending on where in the cycle it stood. The
//     cost is bulk writes through transactions (ImportKeys): Badger
//     commits, and fsyncs, a batch every 15% of a memtable, four times as
//     often as with 16 MiB, and compacts each level-0 table at once, so
//     100,000 keys import at about 30,000 keys/s instead of 50,000 (see
//     bench/RESULTS.md). Load's writer builds tables directly and does
//     not go through memtables. A store whose memtable log was written
//     with larger memtables is opened once with them first
//     (settleMemtables).
//   - ValueThreshold 15% of a memtable (default 1 MiB, which Badger refuses
//     above its largest batch): every value of this store (records are
//     at most a few KiB) still lives in the LSM tree, so a lookup is one
//     read, never a value-log seek.
//   - No compression, so no block cache: a block is read in place from
//     the memory-mapped table, without a copy or a decompression (a
//     Snappy block costs a 4 KiB allocation and about 3 µs to decompress
//     on every cache miss, or a block cache of its own). The store takes
//     more disk: 0.63 GiB for a million keys with the hash entries (0.39
//     GiB with Snappy, id-only entries and JSON records). Tables written
//     compressed by earlier versions stay readable (Badger records each
//     table's compression) until compaction rewrites them.
//   - Bloom filters at 0.1% false positives (default 1%): a lookup checks
//     one filter per level, and a false positive costs a block search.
func badgerOptions(dir string, logger *zap.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithMemTableSize(memTableSize).
		WithValueThreshold(memTableSize * 15 / 100).
		WithNumMemtables(2).
		WithNumLevelZeroTables(1).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithBloomFalsePositive(0.001).
		WithNumCompactors(2).
		WithLogger(badgerLogger{logger.Sugar()})
}

// badgerLogger passes Badger's log to the store's logger: errors and
// warnings as such, its chatty information (compactions, replays) at debug
// level. (Badger's WithLoggingLevel would replace it with Badger's own
// logger on standard error.)
type badgerLogger struct{ l *zap.SugaredLogger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Errorf("badger: "+f, a...) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warnf("badger: "+f, a...) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debugf("badger: "+f, a...) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.l.Debugf("badger: "+f, a...) }

// memTableSize is the size of Badger's memtables (see badgerOptions).
const memTableSize = 4 << 20

// openOptions gives the options Open uses; tests replace it to write
// stores as earlier versions did.
var openOptions = badgerOptions

func openBadger(dir string, logger *zap.Logger) (*badger.DB, error) {
	return openBadgerWith(openOptions(dir, logger))
}

// openBadgerWith opens Badger with the given options (Load's differ).
func openBadgerWith(o badger.Options) (*badger.DB, error) {
	if err := settleMemtables(o); err != nil {
		return nil, fmt.Errorf("opening key store at %s: %w", o.Dir, err)
	}
	db, err := badger.Open(o)
	if err != nil {
		return nil, fmt.Errorf("opening key store at %s: %w", o.Dir, err)
	}
	return db, nil
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

// putHashEntry writes h/<hash> of the key's current string.
func (t txn) putHashEntry(k *Key) error {
	return t.tx.Set(keyH(k.Hash), encodeHashEntry(k))
}

// keyForHash returns the key a hash names, for verification: from the
// hash entry alone (a key with only the hash entry's fields, and Hash),
// or, for a grace-period string or an entry written before hash entries
// existed, the whole record. ErrNotFound if the hash is unknown.
func (t txn) keyForHash(h Hash) (*Key, error) {
	item, err := t.tx.Get(keyH(h))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var k *Key
	var id string
	err = item.Value(func(b []byte) error {
		k, id, err = decodeHashValue(b, h)
		return err
	})
	if err != nil || k != nil {
		return k, err
	}
	return t.getRecord(id)
}

// exists reports whether a key is present, without reading its value.
func (t txn) exists(key []byte) (bool, error) {
	_, err := t.tx.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
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

// setHashTTL indexes a grace-period hash; Badger drops it after ttl.
func (t txn) setHashTTL(h Hash, id string, ttl time.Duration) error {
	return t.tx.SetEntry(badger.NewEntry(keyH(h), []byte(id)).WithTTL(ttl))
}

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

// maxConflictRetries bounds how often update runs a conflicting
// transaction again (the pauses add up to about a quarter of a second).
const maxConflictRetries = 50

// update runs fn in a read-write transaction and commits it durably
// (SyncWrites). A commit that conflicts with a concurrent one (something fn
// read was written meanwhile) runs fn again, on fresh reads, after a short
// random pause that grows with the attempts: writers of the same key take
// turns rather than failing each other.
func (s *Store) update(fn func(t txn) error) error {
	for attempt := 0; ; attempt++ {
		err := s.db.Update(func(tx *badger.Txn) error { return fn(txn{tx}) })
		if errors.Is(err, badger.ErrConflict) && attempt < maxConflictRetries {
			time.Sleep(rand.N(time.Duration(attempt+1) * 200 * time.Microsecond))
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
	if err := writeBatch(s.db, fn); err != nil {
		return err
	}
	s.commits.Add(1)
	return nil
}

// writeBatch is bulk on a bare database (Load's, which has no Store).
func writeBatch(db *badger.DB, fn func(set func(key, val []byte) error) error) error {
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	if err := fn(wb.Set); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	return db.Sync()
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

// kv is one key and value for streamLoad.
type kv struct{ key, val []byte }

// streamLoad replaces the whole database with the entries the parts
// give, with Badger's StreamWriter: it builds sorted tables directly into
// the last level (no write-ahead log, no memtable, no compaction), which
// is how Badger bootstraps a database. Each part returns its entries in
// sorted order, a batch per call, and nil at its end (a batch's memory may
// be reused by the part's next call: each batch is copied into a buffer
// before the part is called again), and every key of a part sorts after
// every key of the parts before it: together they are one sorted stream
// (one stream, because each stream of a StreamWriter holds table builders
// of twice the last level's table size: see loadTableSize). The parts are
// encoded concurrently, one goroutine each, and written in order by this
// one. Nobody else may use db meanwhile. The tables and the manifest are
// synced before it returns. Prepare drops everything first: an error or a
// crash before the end leaves the database empty.
func streamLoad(db *badger.DB, parts []func() ([]kv, error)) error {
	sw := db.NewStreamWriter()
	if err := sw.Prepare(); err != nil {
		return err
	}
	type batch struct {
		buf *z.Buffer
		err error
	}
	// Each part encodes into its own two buffers, which come back after
	// the write (a new z.Buffer is zeroed memory).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	outs := make([]chan batch, len(parts))
	frees := make([]chan *z.Buffer, len(parts))
	for i, next := range parts {
		out, free := make(chan batch, 1), make(chan *z.Buffer, 2)
		outs[i], frees[i] = out, free
		for range cap(free) {
			free <- z.NewBuffer(4<<20, "apikey.load")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(out)
			for {
				entries, err := next()
				if err != nil || len(entries) == 0 {
					if err != nil {
						select {
						case out <- batch{err: err}:
						case <-stop:
						}
					}
					return
				}
				var buf *z.Buffer
				select {
				case buf = <-free:
				case <-stop:
					return
				}
				buf.Reset()
				// One message for the batch: KVToBuffer only marshals it,
				// and a new one per entry was 0.6 GB of garbage for 1M keys.
				kv := &pb.KV{Version: 1, StreamId: 1}
				for _, e := range entries {
					kv.Key, kv.Value = e.key, e.val
					badger.KVToBuffer(kv, buf)
				}
				select {
				case out <- batch{buf: buf}:
				case <-stop:
					free <- buf
					return
				}
			}
		}()
	}
	var err error
	for i := range parts {
		for b := range outs[i] {
			if err = b.err; err == nil {
				err = sw.Write(b.buf)
			}
			if b.buf != nil {
				frees[i] <- b.buf
			}
			if err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	close(stop)
	wg.Wait()
	for _, out := range outs { // batches encoded ahead of an error
		for b := range out {
			if b.buf != nil {
				_ = b.buf.Release()
			}
		}
	}
	for _, free := range frees {
		close(free)
		for buf := range free {
			_ = buf.Release()
		}
	}
	if err != nil {
		sw.Cancel()
		return err
	}
	return sw.Flush()
}

// allEntries returns every entry of the database (for a store that holds
// no keys yet: its accounts and markers).
func allEntries(db *badger.DB) ([]kv, error) {
	var out []kv
	err := db.View(func(tx *badger.Txn) error {
		return txn{tx}.scan(nil, nil, false, true, func(key, val []byte) (bool, error) {
			out = append(out, kv{append([]byte(nil), key...), val})
			return true, nil
		})
	})
	return out, err
}
