package badgerstore

import (
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"go.uber.org/zap"
)

// Options are the Badger options of a key store. They tune Badger for
// this workload: small values (a few hundred bytes), read-mostly, every
// write durable, and a verification path that reads Badger only on a
// cache miss.
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
func Options(dir string, logger *zap.Logger) badger.Options {
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

// memTableSize is the size of Badger's memtables (see Options).
const memTableSize = 4 << 20
