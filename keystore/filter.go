package keystore

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// hashFilter is a Bloom filter of the hashes in the store's hash index, so
// that a well-formed but unknown key is refused from memory, without a
// Badger read. It never answers "absent" for a stored hash; a false
// "maybe" (about 0.1% at the design load) costs one Badger lookup, as every
// unknown key did without the filter. It is bounded by the number of
// stored keys (16 bits per key), not by what clients send: unlike a cache
// of negative lookups, a flood of random keys cannot grow it.
//
// It is a blocked filter: the bits of one hash are all in one 64-byte
// block, so a test reads one cache line. Its input is a SHA-256, already
// uniform, so the bit positions are taken from the hash itself rather than
// hashed again. Words are atomic: tests run on the request path without a
// lock while admin mutations add. (A library filter such as
// bits-and-blooms/bloom needs a lock around concurrent Add and Test and
// rehashes its input.)
type hashFilter struct {
	words []atomic.Uint64
	// blockMask selects a block: the number of blocks is a power of two.
	blockMask uint64
	// capacity is the number of hashes the filter is sized for; added
	// counts the hashes added, deleted keys' included (past capacity, the
	// store rebuilds the filter for its current count).
	capacity int
	added    atomic.Int64
}

const (
	filterBitsPerKey = 16
	filterBlockWords = 8 // 512 bits, one cache line
	filterProbes     = 8
	filterMinKeys    = 1 << 14
)

// newHashFilter sizes a filter for n hashes (at least filterMinKeys).
func newHashFilter(n int) *hashFilter {
	n = max(n, filterMinKeys)
	blocks := uint64(1) << bits.Len64(uint64(n*filterBitsPerKey/512-1))
	return &hashFilter{
		words:     make([]atomic.Uint64, blocks*filterBlockWords),
		blockMask: blocks - 1,
		capacity:  int(blocks * 512 / filterBitsPerKey),
	}
}

// probes returns the first word of h's block and h's bit positions in it:
// 9 bits each, from bytes the block index does not use.
func (f *hashFilter) probes(h *Hash) (base uint64, pos [filterProbes]uint16) {
	base = (binary.LittleEndian.Uint64(h[0:8]) & f.blockMask) * filterBlockWords
	for i := range pos {
		pos[i] = binary.LittleEndian.Uint16(h[8+2*i:]) & 511
	}
	return base, pos
}

func (f *hashFilter) add(h Hash) {
	base, pos := f.probes(&h)
	for _, p := range pos {
		f.words[base+uint64(p>>6)].Or(1 << (p & 63))
	}
	f.added.Add(1)
}

// mayContain reports false only for a hash that was never added.
func (f *hashFilter) mayContain(h *Hash) bool {
	base, pos := f.probes(h)
	for _, p := range pos {
		if f.words[base+uint64(p>>6)].Load()&(1<<(p&63)) == 0 {
			return false
		}
	}
	return true
}

// full reports whether the filter holds more hashes than it was sized for.
func (f *hashFilter) full() bool { return f.added.Load() > int64(f.capacity) }

// filters keeps the store's hash filter current: built in the background
// when the store opens, added to after every commit that indexes a hash,
// and rebuilt, sized for the count of stored hashes plus a quarter, when
// more were added than it was sized for (a rebuild also sheds the hashes
// of deleted keys).
type filters struct {
	// cur is the filter lookups consult; nil until the first build ends,
	// and until then every cache miss reads Badger.
	cur atomic.Pointer[hashFilter]

	mu sync.Mutex
	// next receives every hash added while a build scans the index.
	next     *hashFilter
	building bool
	stopped  bool
	wg       sync.WaitGroup
	// built is closed when the first build has ended (tests wait on it).
	built     chan struct{}
	builtOnce sync.Once
}

// mayContain reports whether a lookup of h must read Badger.
func (fs *filters) mayContain(h *Hash) bool {
	f := fs.cur.Load()
	return f == nil || f.mayContain(h)
}

// indexed adds the hashes of a committed mutation. It runs after the
// commit and before the mutation is acknowledged: a build whose scan
// started before the commit would miss the hashes otherwise, and nobody
// has the key string before the acknowledgment.
func (s *Store) indexed(hs ...Hash) {
	fs := &s.filters
	fs.mu.Lock()
	defer fs.mu.Unlock()
	cur := fs.cur.Load()
	for _, h := range hs {
		if cur != nil {
			cur.add(h)
		}
		if fs.next != nil {
			fs.next.add(h)
		}
	}
	if cur != nil && cur.full() {
		s.startFilterBuildLocked()
	}
}

// startFilterBuild builds the filter in the background.
func (s *Store) startFilterBuild() {
	s.filters.mu.Lock()
	defer s.filters.mu.Unlock()
	s.startFilterBuildLocked()
}

func (s *Store) startFilterBuildLocked() {
	fs := &s.filters
	if fs.building || fs.stopped {
		return
	}
	fs.building = true
	fs.wg.Add(1)
	go func() {
		defer fs.wg.Done()
		if err := s.buildFilter(); err != nil && !s.closed.Load() {
			s.log.Error("building the filter of stored key hashes; unknown keys are looked up in Badger until the next build", zap.Error(err))
		}
	}()
}

// errStopped ends a build when the store closes.
var errStopped = errors.New("store closing")

// buildFilter counts the hash index, then fills a filter sized for it from
// a second scan and installs it. Hashes indexed from the moment the new
// filter exists go to it directly, so none committed during the scan is
// missed.
func (s *Store) buildFilter() error {
	fs := &s.filters
	defer func() {
		fs.mu.Lock()
		fs.next = nil
		fs.building = false
		fs.mu.Unlock()
		fs.builtOnce.Do(func() { close(fs.built) })
	}()
	n := 0
	if err := s.scanHashes(func(Hash) { n++ }); err != nil {
		return err
	}
	f := newHashFilter(n + n/4)
	fs.mu.Lock()
	fs.next = f
	fs.mu.Unlock()
	if err := s.scanHashes(f.add); err != nil {
		return err
	}
	fs.mu.Lock()
	fs.cur.Store(f)
	fs.mu.Unlock()
	return nil
}

// scanHashes calls fn for every hash in the index, in a read transaction
// that starts after the call.
func (s *Store) scanHashes(fn func(Hash)) error {
	n := 0
	return s.view(func(t txn) error {
		return t.scan([]byte(pfxHash), nil, false, false, func(key, _ []byte) (bool, error) {
			if n++; n%4096 == 0 && s.closed.Load() {
				return false, errStopped
			}
			var h Hash
			if len(key) != len(pfxHash)+len(h) {
				return true, nil
			}
			copy(h[:], key[len(pfxHash):])
			fn(h)
			return true, nil
		})
	})
}

// stopFilterBuilds waits for a running build to end and starts no other.
func (s *Store) stopFilterBuilds() {
	fs := &s.filters
	fs.mu.Lock()
	fs.stopped = true
	fs.mu.Unlock()
	fs.wg.Wait()
}
