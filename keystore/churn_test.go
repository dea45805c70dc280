package keystore

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// TestChurnStorageBounded revokes, activates, regenerates, deletes and
// creates keys over and over, and checks that the store's directory
// (*.sst + *.vlog, in bytes allocated on disk) stays bounded.
//
// What bounds it: every value is far below Badger's value threshold
// (1 MiB), so values live in the LSM tree and the value log stays empty;
// RunValueLogGC (every 10 minutes in the store) has nothing to collect and
// is not what keeps the directory small. Each commit appends to the
// memtable's write-ahead log (.mem, a file of fixed size); a memtable is
// written out as a level-0 table (.sst) when it is full (16 MiB) or when
// the store closes; at 5 level-0 tables Badger compacts them into the
// next level, dropping the versions that later writes replaced and the
// deleted keys. The directory therefore grows in a saw-tooth: up to about
// 5 level-0 tables above the live data, then back down.
//
// The test requires:
//
//   - the value log never holds data (allocated < 1 MiB), and
//     RunValueLogGC finds nothing to rewrite;
//   - compactions happen (the number of level-0 tables falls), at least
//     twice;
//   - what each compaction leaves (the smallest size of the next few
//     samples) is at most 1.5 times what the first left, plus 1 MiB:
//     replaced and deleted records do not survive compactions, so the
//     size after a compaction does not grow with the number of commits;
//   - at most 15 level-0 tables at once (Badger stalls writes there), so
//     that the peaks between compactions are bounded too;
//   - after the last reopen, the store holds exactly the live keys, each
//     verifies, and the store opened without repair every time.
//
// Default run (CI; about 10 s with -race on a 2-core machine): 20 rounds
// of 150 commits with records as big as the API allows (4 KiB of random
// metadata, a 255-character name, 16 long scopes). The store is closed
// and reopened after each round, so that each round ends in a level-0
// table as a restart does and compactions come after 5 rounds rather than
// after 5 full memtables; after a reopen the test waits until the
// compactor has taken in 5 level-0 tables, as it would while a restarted
// server runs.
//
// Long suite (build tag long: go test -tags long ./...; read from the test
// binary's build settings, since this package has no file of its own for
// it): 250,000 commits of ordinary records in one run, where memtables
// fill and flush on their own, then a reopen.
//
// APIKEY_CHURN_COMMITS overrides the number of commits per round.
func TestChurnStorageBounded(t *testing.T) {
	badgerOnly(t) // an older Badger layout, or Badger's tables
	if testing.Short() {
		t.Skip("fills several level-0 tables; skipped in -short mode")
	}
	long := churnLongSuite()
	rounds, perRound, big, budget := 20, 150, true, 2*time.Minute
	if long {
		rounds, perRound, big, budget = 1, 250000, false, 30*time.Minute
	}
	if v, err := strconv.Atoi(os.Getenv("APIKEY_CHURN_COMMITS")); err == nil && v > 0 {
		perRound = v
	}
	const minCompactions = 2
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()

	c := &churner{f: DefaultFormat(), big: big, start: time.Now(), deadline: time.Now().Add(budget), dir: dir}
	if err := c.init(s, 8, 16); err != nil {
		t.Fatal(err)
	}
	c.sample(s)
	reopens := 0
	for r := 0; r < rounds; r++ {
		if err := c.run(s, uint64(perRound), max(perRound/200, 25)); err != nil {
			t.Fatal(err)
		}
		c.sample(s)
		if time.Now().After(c.deadline) {
			t.Logf("stopping after round %d: the time budget of %v is spent", r+1, budget)
			break
		}
		if r == rounds-1 {
			break
		}
		if err := s.Close(); err != nil {
			t.Fatalf("closing after round %d: %v", r+1, err)
		}
		if s, err = Open(Options{Dir: dir}); err != nil {
			t.Fatalf("reopening after round %d: %v", r+1, err)
		}
		reopens++
		c.reopened(s)
		// A server runs for a while after a restart: let Badger's compactor
		// take in the level-0 tables the closes left, as it does when it
		// finds 5 (5 s at most; the checks below tell if it did not).
		for wait := time.Now().Add(5 * time.Second); churnL0(s) >= 5 && time.Now().Before(wait); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	elapsed := time.Since(c.start)

	// The value log is empty: its garbage collection finds nothing.
	gcErr := badgerDB(s).RunValueLogGC(0.5)
	if !errors.Is(gcErr, badger.ErrNoRewrite) {
		t.Errorf("RunValueLogGC: %v, want ErrNoRewrite (the value log should hold nothing)", gcErr)
	}

	// Reopen: the live keys are exactly ours, and verify.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(Options{Dir: dir}); err != nil {
		t.Fatalf("reopening after the churn: %v", err)
	}
	reopens++
	c.reopened(s)
	time.Sleep(500 * time.Millisecond) // a compaction the reopen started
	c.sample(s)
	c.checkLive(t, s)

	// The shape of the size over time. A compaction shows as a fall of the
	// number of level-0 tables; right then its output and its inputs may
	// both be on disk, so what it reclaimed is the smallest size of the
	// next few samples.
	var (
		compactions     int
		firstPeak       int64 // largest sst+vlog up to the first compaction
		maxAfter        int64 // largest after it
		maxVlog, maxMem int64
		maxL0           int
		prevL0          = -1
		peak            int64 // largest since the last compaction
		reclaimed       []string
		afterSizes      []int64 // what each compaction left
		maxAll          int64
	)
	size := func(sm churnSample) int64 { return sm.sst + sm.vlog }
	for i, sm := range c.samples {
		maxVlog, maxMem, maxL0 = max(maxVlog, sm.vlog), max(maxMem, sm.mem), max(maxL0, sm.l0)
		if prevL0 >= 0 && sm.l0 < prevL0 {
			compactions++
			if compactions == 1 {
				firstPeak = peak
			}
			after := size(sm)
			for _, next := range c.samples[i:min(i+4, len(c.samples))] {
				after = min(after, size(next))
			}
			reclaimed = append(reclaimed, fmt.Sprintf("%s->%s", churnMiB(peak), churnMiB(after)))
			afterSizes = append(afterSizes, after)
			peak = 0
		} else {
			peak = max(peak, size(sm))
		}
		if compactions > 0 {
			maxAfter = max(maxAfter, size(sm))
		}
		maxAll = max(maxAll, size(sm))
		prevL0 = sm.l0
	}
	every := max(len(c.samples)/24, 1)
	for i, sm := range c.samples {
		if i%every == 0 || i == len(c.samples)-1 {
			t.Logf("%s", sm)
		}
	}
	t.Logf("%d commits (revoke, activate, regenerate, delete, create) in %v (%.0f/s), %d reopens, metadata of %d bytes per key; %d compactions (peak->reclaimed to: %s); first cycle's peak %s, largest after it (compactions' transients included) %s, largest overall %s, at most %d level-0 tables; largest value log %s, largest memtable log %s",
		c.total, elapsed.Round(time.Millisecond), float64(c.total)/elapsed.Seconds(), reopens, c.metaSize(),
		compactions, strings.Join(reclaimed, ", "), churnMiB(firstPeak), churnMiB(maxAfter), churnMiB(maxAll), maxL0, churnMiB(maxVlog), churnMiB(maxMem))

	if maxVlog >= 1<<20 {
		t.Errorf("the value log holds %s: values were expected to stay in the LSM tree", churnMiB(maxVlog))
	}
	if compactions < minCompactions {
		t.Errorf("%d compactions seen in %d commits, want at least %d: the LSM tree did not reclaim replaced and deleted records",
			compactions, c.total, minCompactions)
	}
	// What compactions leave is the live data: it must not grow with the
	// commits (garbage that survives compactions would). The peaks depend
	// on how many level-0 tables pile up before the compactor catches up
	// (Badger stalls writes at 15), not on how long the churn ran.
	for i, a := range afterSizes[min(1, len(afterSizes)):] {
		if a > afterSizes[0]*3/2+1<<20 {
			t.Errorf("compaction %d left %s, the first left %s: replaced and deleted records survive compactions",
				i+2, churnMiB(a), churnMiB(afterSizes[0]))
		}
	}
	if maxL0 > 15 {
		t.Errorf("%d level-0 tables at once: compactions did not keep up", maxL0)
	}
}

// churner mutates a fixed population of keys: 8 workers, each owning 16.
type churner struct {
	f        Format
	big      bool
	dir      string
	start    time.Time
	deadline time.Time

	ids, strs [][]string
	revoked   [][]bool
	rngs      []*rand.Rand

	// Commits of the churn so far, over every open of the store: offset
	// (at the last open) + s.Commits() - base.
	base, offset uint64
	total        uint64

	mu      sync.Mutex
	samples []churnSample
}

func (c *churner) newKey(rng *rand.Rand) NewKey {
	if !c.big {
		return NewKey{Name: "churn", Scopes: []string{"contacts:read", "contacts:write"}, Metadata: map[string]string{"owner": "crm-team"}}
	}
	var scopes []string
	for i := 0; i < 16; i++ {
		scopes = append(scopes, fmt.Sprintf("resource%02d.%s:write", i, strings.Repeat("r", 50)))
	}
	// Random metadata: Badger compresses its tables, and a repeated
	// character would shrink to nothing.
	blob := make([]byte, MaxMetadataSize-len("blob"))
	for i := range blob {
		blob[i] = churnAlphabet[rng.IntN(len(churnAlphabet))]
	}
	return NewKey{Name: strings.Repeat("n", MaxNameLen), Scopes: scopes, Metadata: map[string]string{"blob": string(blob)}}
}

const churnAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func (c *churner) metaSize() int {
	n := 0
	for k, v := range c.newKey(rand.New(rand.NewPCG(0, 0))).Metadata {
		n += len(k) + len(v)
	}
	return n
}

// reopened notes a reopen: Commits counts from zero again.
func (c *churner) reopened(s *Store) { c.base, c.offset = s.Commits(), c.total }

func (c *churner) commits(s *Store) uint64 { return c.offset + s.Commits() - c.base }

// init creates the population.
func (c *churner) init(s *Store, workers, perWorker int) error {
	c.base = s.Commits()
	for w := 0; w < workers; w++ {
		rng := rand.New(rand.NewPCG(uint64(w), 42))
		ids, strs := make([]string, perWorker), make([]string, perWorker)
		for i := range ids {
			k, plain, err := s.CreateKey(c.newKey(rng), c.f, "admin")
			if err != nil {
				return err
			}
			ids[i], strs[i] = k.ID, plain
		}
		c.ids, c.strs = append(c.ids, ids), append(c.strs, strs)
		c.revoked = append(c.revoked, make([]bool, perWorker))
		c.rngs = append(c.rngs, rng)
	}
	c.total = c.commits(s)
	return nil
}

// run makes about n more commits (a loop step makes one or two), sampling
// the directory every step loop steps.
func (c *churner) run(s *Store, n uint64, step int) error {
	target := c.total + n
	var (
		wg    sync.WaitGroup
		steps atomic.Int64
		stop  atomic.Bool
		errMu sync.Mutex
		errs  []error
	)
	for w := range c.ids {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			ids, strs, revoked, rng := c.ids[w], c.strs[w], c.revoked[w], c.rngs[w]
			for !stop.Load() && c.commits(s) < target && time.Now().Before(c.deadline) {
				if steps.Add(1)%int64(step) == 0 {
					c.sample(s)
				}
				j := rng.IntN(len(ids))
				var err error
				switch r := rng.IntN(10); {
				case r < 3:
					if revoked[j] {
						_, err = s.ActivateKey(ids[j], "admin")
					} else {
						_, err = s.RevokeKey(ids[j], "admin")
					}
					revoked[j] = !revoked[j]
				case r < 7:
					var plain string
					if _, plain, err = s.RegenerateKey(ids[j], c.f, 0, "admin"); err == nil {
						strs[j] = plain
					}
				default:
					if err = s.DeleteKey(ids[j]); err == nil {
						var k *Key
						var plain string
						if k, plain, err = s.CreateKey(c.newKey(rng), c.f, "admin"); err == nil {
							ids[j], strs[j], revoked[j] = k.ID, plain, false
						}
					}
				}
				if err != nil {
					errMu.Lock()
					errs = append(errs, err)
					errMu.Unlock()
					stop.Store(true)
				}
			}
		}(w)
	}
	wg.Wait()
	c.total = c.commits(s)
	return errors.Join(errs...)
}

// sample measures the directory and the LSM tree.
func (c *churner) sample(s *Store) {
	sm := churnDirSize(c.dir)
	sm.commits = c.commits(s)
	sm.at = time.Since(c.start)
	for _, ti := range badgerDB(s).Tables() {
		sm.tables++
		if ti.Level == 0 {
			sm.l0++
		}
	}
	c.mu.Lock()
	c.samples = append(c.samples, sm)
	c.mu.Unlock()
}

func churnL0(s *Store) int {
	n := 0
	for _, ti := range badgerDB(s).Tables() {
		if ti.Level == 0 {
			n++
		}
	}
	return n
}

// checkLive checks that the store holds exactly the churner's keys, and
// that each string verifies as its key (revoked or not).
func (c *churner) checkLive(t *testing.T, s *Store) {
	t.Helper()
	want := map[string]string{}
	revoked := map[string]bool{}
	for w := range c.ids {
		for i, id := range c.ids[w] {
			want[id] = c.strs[w][i]
			revoked[id] = c.revoked[w][i]
		}
	}
	got, after := 0, ""
	for {
		keys, next, err := s.ListKeys(ListQuery{Limit: MaxListLimit, After: after})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			got++
			if _, ok := want[k.ID]; !ok {
				t.Errorf("key %s is in the store but was deleted", k.ID)
			}
		}
		if next == "" {
			break
		}
		after = next
	}
	if got != len(want) {
		t.Errorf("%d keys in the store after the churn, want %d", got, len(want))
	}
	v := &Verifier{Store: s, Format: c.f, DefaultLimit: &Limit{}}
	for id, plain := range want {
		res, err := v.Verify(plain, Scope{}, false)
		wantOutcome := OK
		if revoked[id] {
			wantOutcome = KeyRevoked
		}
		if err != nil || res.Outcome != wantOutcome {
			t.Errorf("key %s after the churn: %s %v, want %s", id, res.Outcome.Code(), err, wantOutcome.Code())
		}
	}
}

// churnLongSuite reports whether the test binary was built with the tag
// "long" (go test -tags long).
func churnLongSuite() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-tags" {
			for _, tag := range strings.Split(s.Value, ",") {
				if tag == "long" {
					return true
				}
			}
		}
	}
	return false
}

// churnSample is one measurement of the directory: bytes allocated on
// disk by kind (the value log is a sparse file of 2 GiB apparent size, so
// apparent sizes would mislead), and the LSM tree's shape.
type churnSample struct {
	commits              uint64 // of the churn so far
	at                   time.Duration
	sst, vlog, mem, rest int64
	l0, tables           int
}

func (sm churnSample) String() string {
	return fmt.Sprintf("%6.1fs %7d commits: sst+vlog %8s (sst %8s in %2d tables, %d in level 0; vlog %s), memtable log %8s, other %s",
		sm.at.Seconds(), sm.commits, churnMiB(sm.sst+sm.vlog), churnMiB(sm.sst), sm.tables, sm.l0, churnMiB(sm.vlog), churnMiB(sm.mem), churnMiB(sm.rest))
}

func churnMiB(n int64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }

func churnDirSize(dir string) churnSample {
	var sm churnSample
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil // removed by a compaction meanwhile
		}
		n := fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n = st.Blocks * 512
		}
		switch filepath.Ext(path) {
		case ".sst":
			sm.sst += n
		case ".vlog":
			sm.vlog += n
		case ".mem":
			sm.mem += n
		default:
			sm.rest += n
		}
		return nil
	})
	return sm
}
