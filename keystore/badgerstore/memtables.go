package badgerstore

import (
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
)

// settleMemtableSize is the memtable size settleMemtables replays a
// foreign memtable log with: Badger's default, the largest any version of
// this store has used (earlier versions used 16 MiB).
const settleMemtableSize = 64 << 20

// settleMemtables makes a store's leftover memtable logs safe to open
// with o. Badger replays a memtable log (*.mem) into an arena sized for
// o.MemTableSize, and a log written with larger memtables may not fit: a
// store that earlier versions (16 MiB memtables) left after a crash
// would stop the process at open. A clean close leaves no log, and a log
// this configuration writes is 2 × MemTableSize until a replay truncates
// it; if any other is there, the store is opened once with memtables of
// settleMemtableSize (or of the largest log's size) and closed, which
// writes the replayed memtables to level-0 tables and deletes their logs.
func settleMemtables(o badger.Options) error {
	if o.InMemory || o.ReadOnly {
		return nil
	}
	logs, err := filepath.Glob(filepath.Join(o.Dir, "*.mem"))
	if err != nil || len(logs) == 0 {
		return err
	}
	size := max(o.MemTableSize, settleMemtableSize)
	foreign := false
	for _, l := range logs {
		fi, err := os.Stat(l)
		if err != nil {
			return err
		}
		if fi.Size() != 2*o.MemTableSize {
			foreign = true
			size = max(size, fi.Size())
		}
	}
	if !foreign {
		return nil
	}
	if o.Logger != nil {
		o.Logger.Warningf("replaying memtable logs %v with %d MiB memtables before opening with %d MiB", logs, size>>20, o.MemTableSize>>20)
	}
	db, err := badger.Open(o.WithMemTableSize(size))
	if err != nil {
		return err
	}
	return db.Close()
}
