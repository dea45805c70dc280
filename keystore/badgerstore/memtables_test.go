package badgerstore

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// crashWriterEnv makes the test binary the child of TestSettleMemtables:
// it writes crashWriterEntries entries with the memtable size (MiB) the
// variable names into the store at APIKEY_CRASH_DIR and exits without
// closing the store, as a killed process leaves it.
const crashWriterEnv = "APIKEY_CRASH_MEMTABLE_MIB"

const crashWriterEntries = 8000 // of 1 KiB: 8 MiB in the memtable log

func TestMain(m *testing.M) {
	if v := os.Getenv(crashWriterEnv); v != "" {
		os.Exit(crashWriter(v, os.Getenv("APIKEY_CRASH_DIR")))
	}
	os.Exit(m.Run())
}

func crashWriter(mib, dir string) int {
	var size int64
	if _, err := fmt.Sscan(mib, &size); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	size <<= 20
	// Without fsyncs (fast): the log is mapped, and what the process wrote
	// is in the file when it exits.
	o := Options(dir, zap.NewNop()).WithMemTableSize(size).WithValueThreshold(min(size*15/100, 1<<20)).WithSyncWrites(false)
	db, err := badger.Open(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	for i := 0; i < crashWriterEntries; i += 100 {
		err := db.Update(func(tx *badger.Txn) error {
			for j := i; j < i+100; j++ {
				if err := tx.Set(crashKey(j), crashValue(j)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
	}
	return 0 // without db.Close: the memtable log stays
}

func crashKey(i int) []byte { return fmt.Appendf(nil, "t/%06d", i) }

func crashValue(i int) []byte {
	v := make([]byte, 1024)
	for j := range v {
		v[j] = byte(i + j)
	}
	return v
}

// TestSettleMemtables: a store that a process with larger memtables left
// with a full memtable log (a crash of an earlier version, which used
// 16 MiB) opens with this version's 4 MiB memtables, with every entry;
// without settleMemtables Badger's replay overflows the smaller arena and
// stops the process. A store this version left is opened directly.
func TestSettleMemtables(t *testing.T) {
	for _, tc := range []struct {
		name       string
		writtenMiB int64
		settles    bool
	}{
		{"written with 16 MiB memtables", 16, true},
		{"written with Badger's default 64 MiB", 64, true},
		{"written with this version's memtables", memTableSize >> 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", crashWriterEnv, tc.writtenMiB), "APIKEY_CRASH_DIR="+dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("writer: %v: %s", err, out)
			}
			logs, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
			if len(logs) == 0 {
				t.Fatal("the writer left no memtable log")
			}

			core, seen := observer.New(zap.DebugLevel)
			eng, err := Open(dir, zap.New(core))
			if err != nil {
				t.Fatal(err)
			}
			defer eng.Close()
			db := eng.DB()
			if got := seen.FilterMessageSnippet("replaying memtable logs").FilterLevelExact(zap.WarnLevel).Len(); (got > 0) != tc.settles {
				t.Errorf("settled %d times, want settled: %v", got, tc.settles)
			}
			// Badger's own messages (its replay of the log) reach the
			// store's logger, not Badger's logger on standard error.
			if seen.FilterMessageSnippet("badger: ").FilterLevelExact(zap.DebugLevel).Len() == 0 {
				t.Errorf("Badger's log did not reach the store's logger: %v", seen.All())
			}
			err = db.View(func(tx *badger.Txn) error {
				for i := range crashWriterEntries {
					item, err := tx.Get(crashKey(i))
					if err != nil {
						return fmt.Errorf("entry %d: %w", i, err)
					}
					v, err := item.ValueCopy(nil)
					if err != nil {
						return err
					}
					if string(v) != string(crashValue(i)) {
						return fmt.Errorf("entry %d: wrong value", i)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
