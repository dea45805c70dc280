package keystore

import (
	"crypto/rand"
	"fmt"
	"sync"
	"testing"
	"time"
)

func randomHash(t testing.TB) Hash {
	var h Hash
	if _, err := rand.Read(h[:]); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestHashFilterRates: no false negative, and the false positive rate at the
// design load and at twice it.
func TestHashFilterRates(t *testing.T) {
	for _, tc := range []struct {
		sizedFor, added int
		maxFP           float64
	}{
		{100_000, 100_000, 0.004},
		{100_000, 200_000, 0.05}, // overfull: degrades, stays usable
	} {
		t.Run(fmt.Sprintf("%d_of_%d", tc.added, tc.sizedFor), func(t *testing.T) {
			f := newHashFilter(tc.sizedFor)
			added := make([]Hash, tc.added)
			for i := range added {
				added[i] = randomHash(t)
				f.add(added[i])
			}
			for i := range added {
				if !f.mayContain(&added[i]) {
					t.Fatalf("false negative for hash %d", i)
				}
			}
			const probes = 1_000_000
			fp := 0
			for range probes {
				h := randomHash(t)
				if f.mayContain(&h) {
					fp++
				}
			}
			rate := float64(fp) / probes
			t.Logf("%d bytes for %d hashes (capacity %d): false positive rate %.4f%%", len(f.words)*8, tc.added, f.capacity, rate*100)
			if rate > tc.maxFP {
				t.Errorf("false positive rate %.4f > %.4f", rate, tc.maxFP)
			}
			if f.full() != (tc.added > f.capacity) {
				t.Errorf("full() = %v with %d added, capacity %d", f.full(), tc.added, f.capacity)
			}
		})
	}
}

func TestHashFilterSize(t *testing.T) {
	for _, tc := range []struct{ n, wantBytes int }{
		{0, 32 << 10}, // filterMinKeys
		{1_000_000, 2 << 20},
		{1_250_000, 4 << 20},
	} {
		f := newHashFilter(tc.n)
		if got := len(f.words) * 8; got != tc.wantBytes {
			t.Errorf("newHashFilter(%d): %d bytes, want %d", tc.n, got, tc.wantBytes)
		}
		if f.capacity < tc.n {
			t.Errorf("newHashFilter(%d): capacity %d", tc.n, f.capacity)
		}
	}
}

func waitFilter(t testing.TB, s *Store) {
	t.Helper()
	select {
	case <-s.filters.built:
	case <-time.After(10 * time.Second):
		t.Fatal("the hash filter was not built within 10s")
	}
	if s.filters.cur.Load() == nil {
		t.Fatal("the first build ended without a filter")
	}
}

// rebuildFilter starts a build (or joins a running one) and waits for it.
func rebuildFilter(s *Store) {
	s.startFilterBuild()
	for {
		s.filters.mu.Lock()
		building := s.filters.building
		s.filters.mu.Unlock()
		if !building {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// TestUnknownKeysSkipBadger: once the filter is built, well-formed unknown
// keys are refused without a Badger read; known keys (stored before the
// store opened, and created after) verify.
func TestUnknownKeysSkipBadger(t *testing.T) {
	dir := t.TempDir()
	f := DefaultFormat()
	s1, err := testOpen(t, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var before []string
	for range 20 {
		_, plain := mustCreate(t, s1, f, NewKey{})
		before = append(before, plain)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s := openStoreOpts(t, Options{Dir: dir})
	waitFilter(t, s)
	v := &Verifier{Store: s, Format: f}
	_, after := mustCreate(t, s, f, NewKey{})
	for _, plain := range append(before, after) {
		if res, err := v.Verify(plain, Scope{}, false); err != nil || res.Outcome != OK {
			t.Fatalf("known key: %v, %v", res.Outcome, err)
		}
	}
	reads := s.missReads.Load()
	const unknown = 20_000
	for range unknown {
		plain, err := f.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if res, err := v.Verify(plain, Scope{}, false); err != nil || res.Outcome != InvalidKey {
			t.Fatalf("unknown key: %v, %v", res.Outcome, err)
		}
	}
	if got := s.missReads.Load() - reads; got > unknown/200 {
		t.Errorf("%d of %d unknown keys read Badger; want at most 0.5%%", got, unknown)
	}
}

// TestFilterRebuildKeepsNewKeys: keys created and regenerated while the
// filter is rebuilt over and over, and imported past its capacity, verify
// at once.
func TestFilterRebuildKeepsNewKeys(t *testing.T) {
	s := openTestStore(t)
	waitFilter(t, s)
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			rebuildFilter(s)
		}
	}()
	for i := range 200 {
		k, plain := mustCreate(t, s, f, NewKey{})
		if i%2 == 1 {
			var err error
			if _, plain, err = s.RegenerateKey(k.ID, f, 0, "test"); err != nil {
				t.Fatal(err)
			}
		}
		if res, err := v.Verify(plain, Scope{}, false); err != nil || res.Outcome != OK {
			t.Fatalf("key %d during rebuilds: %v, %v", i, res.Outcome, err)
		}
	}
	close(stop)
	wg.Wait()

	// Past the capacity: the import triggers a rebuild at a larger size.
	small := s.filters.cur.Load()
	in := make([]ImportKey, small.capacity+1)
	plains := make([]string, len(in))
	for i := range in {
		p, err := f.Generate()
		if err != nil {
			t.Fatal(err)
		}
		plains[i] = p
		in[i] = ImportKey{Key: p, NewKey: NewKey{Name: "imported", Scopes: []string{"contacts:read"}}}
	}
	if _, err := s.ImportKeys(in, f, "test"); err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		if res, err := v.Verify(plains[i*len(plains)/2000], Scope{}, false); err != nil || res.Outcome != OK {
			t.Fatalf("imported key: %v, %v", res.Outcome, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.filters.cur.Load() == small {
		if time.Now().After(deadline) {
			t.Fatal("the full filter was not rebuilt")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if big := s.filters.cur.Load(); big.capacity < len(in)+200 {
		t.Errorf("rebuilt filter capacity %d for %d keys", big.capacity, len(in)+200)
	}
	for _, p := range plains[:1000] {
		if res, err := v.Verify(p, Scope{}, false); err != nil || res.Outcome != OK {
			t.Fatalf("imported key after the rebuild: %v, %v", res.Outcome, err)
		}
	}
}

// BenchmarkHashFilter is the cost of the filter on an unknown key.
func BenchmarkHashFilter(b *testing.B) {
	f := newHashFilter(1_000_000)
	for range 1_000_000 {
		f.add(randomHash(b))
	}
	probes := make([]Hash, 4096)
	for i := range probes {
		probes[i] = randomHash(b)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		f.mayContain(&probes[i%len(probes)])
	}
}
