package badgerstore

import (
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/ristretto/v2/z"
	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// loadTableSize is the base table size of the Badger that a load writes
// with. Badger's StreamWriter writes to the last level, whose tables are
// the base size times 2 for each level below the second (2 MiB times 32:
// 64 MiB by default), and holds two table builders of twice that: 256 MiB
// of the load's memory, about a quarter of it with a million keys. At 512
// KiB the tables are 16 MiB (about 40 of them for a million keys) and the
// builders 64 MiB. Only the tables of the load are that size: later opens
// use the defaults, and compactions rewrite tables at their own sizes.
const loadTableSize = 512 << 10

// OpenForLoad opens the Badger database in dir for a bulk load
// (ReplaceAll): Options with loadTableSize.
func OpenForLoad(dir string, logger *zap.Logger) (*Engine, error) {
	return OpenWith(Options(dir, logger).WithBaseTableSize(loadTableSize))
}

// All returns every entry of the database (for a store that holds no keys
// yet: its accounts and markers), with Each.
func (e *Engine) All() ([]kv.Entry, error) { return kv.All(e) }

// ReplaceAll writes the parts' entries as the database's whole contents
// (streamLoad). If that fails after Badger's writer dropped the contents,
// it writes back existing, what the database held before (a store without
// keys: its accounts and markers).
func (e *Engine) ReplaceAll(existing []kv.Entry, parts []func() ([]kv.Entry, error)) error {
	err := streamLoad(e.db, parts)
	if err == nil {
		return nil
	}
	werr := e.Batch(func(set func(key, val []byte) error) error {
		for _, en := range existing {
			if err := set(en.Key, en.Val); err != nil {
				return err
			}
		}
		return nil
	})
	if werr != nil {
		return errors.Join(err, fmt.Errorf("writing back the store's accounts: %w", werr))
	}
	return err
}

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
func streamLoad(db *badger.DB, parts []func() ([]kv.Entry, error)) error {
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
				msg := &pb.KV{Version: 1, StreamId: 1}
				for _, e := range entries {
					msg.Key, msg.Value = e.Key, e.Val
					badger.KVToBuffer(msg, buf)
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
