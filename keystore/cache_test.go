package keystore

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// importPlainKeys stores n new keys of format f in one import and returns
// them with their plaintexts.
func importPlainKeys(t testing.TB, s *Store, f Format, n int, nk NewKey) ([]*Key, []string) {
	t.Helper()
	in, plains := plainEntries(t, f, n, nk)
	keys, err := s.ImportKeys(in, f, "test")
	if err != nil {
		t.Fatal(err)
	}
	return keys, plains
}

// plainEntries makes n import entries of new keys of format f, named
// "key <i>", with nk's other fields (scopes contacts:read if nk has none),
// and returns their plaintexts.
func plainEntries(t testing.TB, f Format, n int, nk NewKey) ([]ImportKey, []string) {
	t.Helper()
	if nk.Scopes == nil {
		nk.Scopes = []string{"contacts:read"}
	}
	in := make([]ImportKey, n)
	plains := make([]string, n)
	for i := range in {
		p, err := f.Generate()
		if err != nil {
			t.Fatal(err)
		}
		plains[i] = p
		in[i] = ImportKey{Key: p, NewKey: nk}
		in[i].Name = fmt.Sprintf("key %d", i)
	}
	return in, plains
}

func TestCacheBound(t *testing.T) {
	for i, tc := range []struct {
		size, perShard int
	}{
		{1, 1},
		{63, 1},
		{64, 1},
		{128, 2},
		{1000, 15},
		{DefaultCacheSize, DefaultCacheSize / cacheShards},
	} {
		if got := newCache(tc.size, nil).perShard; got != tc.perShard {
			t.Errorf("test %d: size %d: perShard %d, want %d", i, tc.size, got, tc.perShard)
		}
	}
}

// TestCacheEviction verifies many more keys than the cache holds: every
// key keeps verifying (read back from Badger) and the cache stays within
// its bound.
func TestCacheEviction(t *testing.T) {
	const size, n = 64, 1000
	s := openStoreOpts(t, Options{CacheSize: size})
	f := DefaultFormat()
	keys, plains := importPlainKeys(t, s, f, n, NewKey{})
	v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
	req := mustScope(t, "contacts:read")
	for round := range 3 {
		for _, j := range rand.Perm(n) {
			res, err := v.Verify(plains[j], req, true)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != OK || res.Key.ID != keys[j].ID {
				t.Fatalf("round %d: key %d: %s", round, j, res.Outcome.Code())
			}
			if l := s.cache.len(); l > size {
				t.Fatalf("round %d: cache holds %d entries, bound %d", round, l, size)
			}
		}
	}
	if l := s.cache.len(); l < size/2 {
		t.Errorf("cache holds only %d entries after %d verifications", l, 3*n)
	}
	// Mutations still reach keys whether or not they are cached.
	for _, j := range []int{0, n / 2, n - 1} {
		if _, err := s.RevokeKey(keys[j].ID, "t"); err != nil {
			t.Fatal(err)
		}
		verifyOutcome(t, v, plains[j], "", KeyRevoked)
	}
}

// TestCacheConcurrentMutations verifies keys from many goroutines while
// others mutate them. After a mutation returns, the mutating goroutine's
// next verification must reflect it, whatever the readers filled the cache
// with in the meantime. Run it with -race.
func TestCacheConcurrentMutations(t *testing.T) {
	s := openTestStore(t)
	f := DefaultFormat()
	const (
		mutators = 4
		readers  = 4
		rounds   = 8
	)
	if _, err := s.CreateAccount(Account{ID: "shared"}); err != nil {
		t.Fatal(err)
	}
	for m := range mutators {
		if _, err := s.CreateAccount(Account{ID: fmt.Sprintf("acct%d", m)}); err != nil {
			t.Fatal(err)
		}
	}

	// live holds every string the readers hammer: current ones and old ones.
	var liveMu sync.RWMutex
	var live []string
	addLive := func(p ...string) {
		liveMu.Lock()
		live = append(live, p...)
		liveMu.Unlock()
	}
	_, shared := mustCreate(t, s, f, NewKey{Account: "shared"})
	addLive(shared)

	stop := make(chan struct{})
	var readersWG sync.WaitGroup
	var reads atomic.Int64
	for r := range readers {
		readersWG.Add(1)
		go func() {
			defer readersWG.Done()
			v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				liveMu.RLock()
				p := live[rng.IntN(len(live))]
				liveMu.RUnlock()
				res, err := v.Verify(p, Scope{Resource: "contacts", Access: AccessRead}, rng.IntN(2) == 0)
				if err != nil {
					t.Errorf("reader: %v", err)
					return
				}
				switch res.Outcome {
				case OK, KeyRevoked, InvalidKey, AccountInactive, InsufficientScope:
				default:
					t.Errorf("reader: unexpected %s", res.Outcome.Code())
					return
				}
				reads.Add(1)
			}
		}()
	}

	var mutatorsWG sync.WaitGroup
	for m := range mutators {
		mutatorsWG.Add(1)
		go func() {
			defer mutatorsWG.Done()
			acct := fmt.Sprintf("acct%d", m)
			v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
			expect := func(step, cred string, req string, want Outcome) bool {
				var sc Scope
				if req != "" {
					var err error
					if sc, err = ParseScope(req); err != nil {
						t.Error(err)
						return false
					}
				}
				res, err := v.Verify(cred, sc, req != "")
				if err != nil {
					t.Errorf("mutator %d, %s: %v", m, step, err)
					return false
				}
				if res.Outcome != want {
					t.Errorf("mutator %d, %s: %s, want %s", m, step, res.Outcome.Code(), want.Code())
					return false
				}
				return true
			}
			try := func(step string, err error) bool {
				if err != nil {
					t.Errorf("mutator %d, %s: %v", m, step, err)
				}
				return err == nil
			}
			for range rounds {
				k, plain, err := s.CreateKey(NewKey{Name: "k", Account: acct, Scopes: []string{"contacts:read"}}, f, "t")
				if !try("create", err) {
					return
				}
				addLive(plain)
				steps := []func() bool{
					func() bool { return expect("created", plain, "contacts:read", OK) },
					func() bool {
						_, err := s.RevokeKey(k.ID, "t")
						return try("revoke", err) && expect("revoked", plain, "", KeyRevoked)
					},
					func() bool {
						_, err := s.ActivateKey(k.ID, "t")
						return try("activate", err) && expect("activated", plain, "", OK)
					},
					func() bool {
						_, err := s.UpdateKey(k.ID, KeyPatch{Scopes: []string{"orders:read"}}, "t")
						return try("narrow", err) && expect("narrowed", plain, "contacts:read", InsufficientScope)
					},
					func() bool {
						_, err := s.UpdateKey(k.ID, KeyPatch{Scopes: []string{"contacts:write"}}, "t")
						return try("widen", err) && expect("widened", plain, "contacts:read", OK)
					},
					func() bool {
						st := AccountSuspended
						_, err := s.UpdateAccount(acct, AccountPatch{Status: &st})
						return try("suspend", err) && expect("suspended", plain, "", AccountInactive)
					},
					func() bool {
						st := AccountOpen
						_, err := s.UpdateAccount(acct, AccountPatch{Status: &st})
						return try("reopen", err) && expect("reopened", plain, "", OK)
					},
					func() bool {
						_, next, err := s.RegenerateKey(k.ID, f, time.Hour, "t")
						if !try("regenerate with grace", err) {
							return false
						}
						addLive(next)
						old := plain
						plain = next
						return expect("regenerated with grace, old", old, "", OK) &&
							expect("regenerated with grace, new", next, "", OK)
					},
					func() bool {
						old := plain
						_, next, err := s.RegenerateKey(k.ID, f, 0, "t")
						if !try("regenerate", err) {
							return false
						}
						addLive(next)
						plain = next
						return expect("regenerated, old", old, "", InvalidKey) &&
							expect("regenerated, new", next, "", OK)
					},
					func() bool {
						_, err := s.RevokeKey(k.ID, "t")
						return try("revoke again", err) && expect("revoked again", plain, "", KeyRevoked)
					},
					func() bool {
						return try("delete", s.DeleteKey(k.ID)) && expect("deleted", plain, "", InvalidKey)
					},
				}
				for _, step := range steps {
					if !step() {
						return
					}
				}
			}
		}()
	}
	mutatorsWG.Wait()
	close(stop)
	readersWG.Wait()
	if reads.Load() == 0 {
		t.Error("the readers verified nothing")
	}
	t.Logf("%d concurrent verifications", reads.Load())
}

// TestCacheSharedIndex: two hashes whose probes start at the same slot
// (the same bytes 8 to 16, the same shard) are both cached and never
// answer for each other; invalidating one leaves the other. A second fill
// of the same hash replaces the first, which is retired with its
// unflushed use.
func TestCacheSharedIndex(t *testing.T) {
	var evicted []string
	c := newCache(64*cacheShards, func(id string, _ int64) { evicted = append(evicted, id) })
	var a, b Hash
	a[0], a[8], a[31] = 7, 3, 1
	b[0], b[8], b[31] = 7, 3, 2
	ea := &entry{snap: snapshot{key: Key{ID: "a"}}}
	eb := &entry{snap: snapshot{key: Key{ID: "b"}}}
	c.put(a, ea, c.gen.Load())
	ea.lastUsed.Store(1)
	if c.get(a) != ea || c.get(b) != nil {
		t.Fatal("a: not cached alone")
	}
	c.put(b, eb, c.gen.Load())
	if c.get(b) != eb || c.get(a) != ea {
		t.Fatal("a and b are not both cached, or one answers for the other")
	}
	c.invalidate(a)
	if c.get(b) != eb || c.get(a) != nil {
		t.Fatal("invalidating a dropped b, or kept a")
	}
	if !slices.Equal(evicted, []string{"a"}) {
		t.Fatalf("retired %q, want a's unflushed use", evicted)
	}
	eb2 := &entry{snap: snapshot{key: Key{ID: "b"}}}
	eb.lastUsed.Store(1)
	c.put(b, eb2, c.gen.Load())
	if c.get(b) != eb2 || c.len() != 1 {
		t.Fatal("a second fill of b did not replace the first")
	}
	if !slices.Equal(evicted, []string{"a", "b"}) {
		t.Fatalf("retired %q, want b's first entry too", evicted)
	}
	c.invalidate(b)
	if c.get(b) != nil || c.len() != 0 {
		t.Fatal("invalidate kept b")
	}
}

// TestCacheTableConcurrent: readers probe the tables without a lock while
// writers fill, invalidate, evict and rebuild them. A reader never gets an
// entry of another hash; once invalidate returns, no lookup finds the
// hash; each visits every cached entry once; the size bound holds; and
// the tables' bookkeeping matches their slots.
func TestCacheTableConcurrent(t *testing.T) {
	const perShard, keys = 40, 4000 // 64 shards: 2,560 entries at most, so eviction runs
	c := newCache(perShard*cacheShards, nil)
	hashes := make([]Hash, keys)
	for i := range hashes {
		hashes[i] = HashKey(fmt.Sprint("key-", i))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				h := hashes[n*7919%keys]
				if e := c.get(h); e != nil && e.hash != h {
					wrong.Add(1)
				}
			}
		}()
	}
	for round := range 20 {
		for i, h := range hashes {
			c.put(h, &entry{snap: snapshot{key: Key{ID: fmt.Sprint(i)}}}, c.gen.Load())
			if i%3 == round%3 {
				c.invalidate(h)
				if c.get(h) != nil {
					t.Fatalf("round %d: %d found after its invalidation", round, i)
				}
			}
		}
	}
	close(stop)
	wg.Wait()
	if n := wrong.Load(); n != 0 {
		t.Fatalf("%d lookups returned an entry of another hash", n)
	}
	seen := map[*entry]bool{}
	c.each(func(e *entry) {
		if seen[e] {
			t.Errorf("each visited %s twice", e.snap.key.ID)
		}
		seen[e] = true
	})
	if n := c.len(); n != len(seen) || n > perShard*cacheShards || n == 0 {
		t.Fatalf("len %d, each saw %d, bound %d", n, len(seen), perShard*cacheShards)
	}
	for i := range c.shards {
		sh := &c.shards[i]
		live, dead := 0, 0
		for j := range sh.tab.Load().slots {
			slot := &sh.tab.Load().slots[j]
			switch e := slot.live(); {
			case slot.tag.Load() == tombTag:
				dead++
			case e != nil:
				live++
				if c.get(e.hash) != e {
					t.Fatalf("shard %d: a cached entry is not found by its hash", i)
				}
			}
		}
		if live != sh.n || dead != sh.dead || 4*(live+dead) > 3*len(sh.tab.Load().slots) {
			t.Fatalf("shard %d: %d live, %d dead in %d slots; counted %d and %d", i, live, dead, len(sh.tab.Load().slots), sh.n, sh.dead)
		}
	}
	c.clear()
	if c.len() != 0 || c.get(hashes[0]) != nil {
		t.Fatal("clear kept entries")
	}
}

// TestCachePutAfterMutation checks the generation guard directly: a fill
// that read Badger before a mutation is not cached after it.
func TestCachePutAfterMutation(t *testing.T) {
	c := newCache(64, nil)
	var h Hash
	h[0] = 7
	e := &entry{snap: snapshot{key: Key{ID: "x"}}}
	gen := c.gen.Load()
	c.invalidate(h) // a mutation commits between the read and the fill
	c.put(h, e, gen)
	if c.get(h) != nil {
		t.Fatal("a stale fill was cached")
	}
	c.put(h, e, c.gen.Load())
	if c.get(h) != e {
		t.Fatal("a current fill was not cached")
	}
	c.invalidate(h)
	if c.get(h) != nil {
		t.Fatal("invalidate kept the entry")
	}
}

func TestLastUsed(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	// A flush interval longer than the test: flushes happen when asked.
	opts := Options{Dir: dir, Now: clock.Now, LastUsedFlush: time.Hour}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
	k, plain := mustCreate(t, s, f, NewKey{})
	_, unused := mustCreate(t, s, f, NewKey{Name: "unused"})
	_ = unused

	lastUsed := func(id string) *time.Time {
		t.Helper()
		got, err := s.Key(id)
		if err != nil {
			t.Fatal(err)
		}
		return got.LastUsedAt
	}
	if lu := lastUsed(k.ID); lu != nil {
		t.Fatalf("LastUsedAt of a new key = %v", lu)
	}

	t0 := clock.Now()
	verifyOutcome(t, v, plain, "", OK)
	if lu := lastUsed(k.ID); lu == nil || !lu.Equal(t0) {
		t.Fatalf("LastUsedAt after a verification = %v, want %v", lu, t0)
	}
	// Refusals are not uses.
	clock.Advance(time.Hour)
	verifyOutcome(t, v, plain, "orders:delete", InsufficientScope)
	if lu := lastUsed(k.ID); lu == nil || !lu.Equal(t0) {
		t.Fatalf("LastUsedAt after a refusal = %v, want %v", lu, t0)
	}
	// Within a second of the last recorded use, uses are not recorded again.
	t1 := clock.Now()
	verifyOutcome(t, v, plain, "", OK)
	clock.Advance(500 * time.Millisecond)
	verifyOutcome(t, v, plain, "", OK)
	if lu := lastUsed(k.ID); lu == nil || !lu.Equal(t1) {
		t.Fatalf("LastUsedAt = %v, want %v", lu, t1)
	}
	clock.Advance(time.Second)
	t2 := clock.Now()
	verifyOutcome(t, v, plain, "", OK)
	if lu := lastUsed(k.ID); lu == nil || !lu.Equal(t2) {
		t.Fatalf("LastUsedAt = %v, want %v", lu, t2)
	}

	// Not yet in Badger: a restart without a flush would need Close's.
	var stored *Key
	if err := s.view(func(tx txn) error { var err error; stored, err = tx.getKey(k.ID); return err }); err != nil {
		t.Fatal(err)
	}
	if stored.LastUsedAt != nil {
		t.Fatalf("last-used written to Badger before a flush: %v", stored.LastUsedAt)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.view(func(tx txn) error { var err error; stored, err = tx.getKey(k.ID); return err }); err != nil {
		t.Fatal(err)
	}
	if stored.LastUsedAt == nil || !stored.LastUsedAt.Equal(t2) {
		t.Fatalf("last-used in Badger after a flush: %v, want %v", stored.LastUsedAt, t2)
	}

	// A use after the flush is written by Close.
	clock.Advance(time.Minute)
	t3 := clock.Now()
	verifyOutcome(t, v, plain, "", OK)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if lu := lastUsed(k.ID); lu == nil || !lu.Equal(t3) {
		t.Fatalf("LastUsedAt after reopening = %v, want %v", lu, t3)
	}
	if lu := lastUsed(k.ID); lu.Location() != time.UTC {
		t.Errorf("LastUsedAt is not UTC: %v", lu)
	}

	// A mutation keeps the in-memory last-used time.
	v = &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
	clock.Advance(time.Minute)
	t4 := clock.Now()
	verifyOutcome(t, v, plain, "", OK)
	name := "renamed"
	if _, err := s.UpdateKey(k.ID, KeyPatch{Name: &name}, "t"); err != nil {
		t.Fatal(err)
	}
	if err := s.view(func(tx txn) error { var err error; stored, err = tx.getKey(k.ID); return err }); err != nil {
		t.Fatal(err)
	}
	if stored.LastUsedAt == nil || !stored.LastUsedAt.Equal(t4) {
		t.Fatalf("last-used in Badger after an update: %v, want %v", stored.LastUsedAt, t4)
	}
}

// TestLastUsedEvicted checks that the last-used time of an entry evicted
// from the cache before a flush is kept (pendingUse), shown by Key and
// written by the next flush.
func TestLastUsedEvicted(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	// 64 entries: one per shard, so a second key of a shard evicts the first.
	opts := Options{Dir: dir, Now: clock.Now, CacheSize: 64, LastUsedFlush: time.Hour}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
	keys, plains := importPlainKeys(t, s, f, 300, NewKey{})

	// Find two keys in the same shard.
	first := map[uint8]int{}
	a, b := -1, -1
	for i, p := range plains {
		sh := HashKey(p)[0] % cacheShards
		if j, ok := first[sh]; ok {
			a, b = j, i
			break
		}
		first[sh] = i
	}
	if a < 0 {
		t.Fatal("no two keys share a shard") // impossible with 300 keys and 64 shards
	}

	ta := clock.Now()
	verifyOutcome(t, v, plains[a], "", OK)
	clock.Advance(time.Minute)
	tb := clock.Now()
	verifyOutcome(t, v, plains[b], "", OK) // evicts a
	if s.cache.get(HashKey(plains[a])) != nil {
		t.Fatal("the first key was not evicted")
	}
	s.pendingMu.Lock()
	pending := s.pendingUse[keys[a].ID]
	s.pendingMu.Unlock()
	if pending != ta.UnixNano() {
		t.Fatalf("pendingUse = %d, want %d", pending, ta.UnixNano())
	}
	for _, c := range []struct {
		id   string
		want time.Time
	}{{keys[a].ID, ta}, {keys[b].ID, tb}} {
		k, err := s.Key(c.id)
		if err != nil {
			t.Fatal(err)
		}
		if k.LastUsedAt == nil || !k.LastUsedAt.Equal(c.want) {
			t.Errorf("LastUsedAt of %s = %v, want %v", c.id, k.LastUsedAt, c.want)
		}
	}
	// The list shows it too.
	list, _, err := s.ListKeys(ListQuery{Limit: MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range list {
		if k.ID == keys[a].ID {
			found = true
			if k.LastUsedAt == nil || !k.LastUsedAt.Equal(ta) {
				t.Errorf("ListKeys: LastUsedAt = %v, want %v", k.LastUsedAt, ta)
			}
		}
	}
	if !found {
		t.Error("ListKeys did not return the key")
	}

	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s.pendingMu.Lock()
	left := len(s.pendingUse)
	s.pendingMu.Unlock()
	if left != 0 {
		t.Errorf("%d pending uses after a flush", left)
	}
	// Evicting a flushed entry adds nothing to pendingUse.
	clock.Advance(time.Minute)
	verifyOutcome(t, v, plains[a], "", OK) // evicts b, flushed
	s.pendingMu.Lock()
	_, bPending := s.pendingUse[keys[b].ID]
	s.pendingMu.Unlock()
	if bPending {
		t.Error("an entry evicted after its flush was queued again")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id   string
		want time.Time
	}{{keys[a].ID, ta.Add(2 * time.Minute)}, {keys[b].ID, tb}} {
		k, err := s.Key(c.id)
		if err != nil {
			t.Fatal(err)
		}
		if k.LastUsedAt == nil || !k.LastUsedAt.Equal(c.want) {
			t.Errorf("after reopening: LastUsedAt of %s = %v, want %v", c.id, k.LastUsedAt, c.want)
		}
	}
}

// TestLastUsedDeleted checks that a deleted key's pending use is dropped
// and does not fail the flush.
func TestLastUsedDeleted(t *testing.T) {
	s := openStoreOpts(t, Options{LastUsedFlush: time.Hour})
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
	k, plain := mustCreate(t, s, f, NewKey{})
	verifyOutcome(t, v, plain, "", OK)
	if err := s.DeleteKey(k.ID); err != nil {
		t.Fatal(err)
	}
	s.pendingMu.Lock()
	n := len(s.pendingUse)
	s.pendingMu.Unlock()
	if n != 0 {
		t.Errorf("pending uses of a deleted key: %d", n)
	}
	// A use recorded for a key deleted since is skipped by the flush.
	s.keepPendingUse("no-such-key", time.Now().UnixNano())
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestCacheShardSize(t *testing.T) {
	if n := unsafe.Sizeof(cacheShard{}); n%64 != 0 {
		t.Errorf("cacheShard is %d bytes, not a multiple of a 64-byte cache line", n)
	}
}

// find is the request path's lookup of a hash, cache then store, for the
// tests that need an entry (Verify adds the format check between them).
func (s *Store) find(h Hash) (*entry, error) {
	if e, _ := s.lookup(h); e != nil {
		return e, nil
	}
	return s.lookupMiss(h, 0)
}
