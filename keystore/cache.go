package keystore

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/percpu"
)

// snapshot is an immutable view of a key prepared for verification: the
// record, its parsed scopes, and the identity values the proxy forwards.
// The fields a request reads come first, then the record (key), whose
// identity fields lead.
type snapshot struct {
	account *accountState
	expires int64 // unix nanos; 0 = never
	revoked bool
	// limShard is the shard of the key's rate-limit bucket.
	limShard uint8
	// ownLimit: the key has a rate limit of its own, limit (the zero
	// Limit if unlimited); without one the verifier's default applies.
	// Held in the snapshot, not behind a pointer: one cache line less
	// to fetch for a request.
	ownLimit    bool
	scopes      []Scope
	scopeHeader string // granted scopes, space-separated, sorted
	// memo is the caller's value derived from the key (see Memo).
	memo Memo
	// quota and its counter; nil without a quota.
	qc    *quotaCounter
	quota *Quota
	// key is the snapshot's own copy of the record; its first fields (id,
	// name, account, type) are the identity a passing request forwards.
	key   Key
	limit Limit
	// inline holds the parsed scopes of a key with at most len(inline)
	// (scopes is then inline[:n]), so that checking a scope reads the
	// entry's own memory (and, the resources being interned, no other
	// memory of the key's).
	inline [3]Scope
}

// init fills sn from k (copied: the snapshot owns its record).
func (sn *snapshot) init(k *Key, acct *accountState, qc *quotaCounter) {
	*sn = snapshot{key: *k, account: acct, revoked: k.RevokedAt != nil, quota: k.Quota, qc: qc}
	sn.scopeHeader = strings.Join(k.Scopes, " ")
	sn.scopes = sn.inline[:0]
	for _, s := range k.Scopes {
		if sc, err := ParseScope(s); err == nil {
			sn.scopes = append(sn.scopes, sc)
		}
	}
	if len(sn.scopes) == 0 {
		sn.scopes = nil // as a key without scopes always had
	}
	if k.ExpiresAt != nil {
		sn.expires = unixNano(*k.ExpiresAt)
	}
	if k.RateLimit != nil {
		sn.limit, sn.ownLimit = k.RateLimit.Effective(Limit{}), true
	}
	sn.limShard = limiterShard(k.ID)
}

// Memo is a slot of a cached key for one value that a caller derives from
// the key's Result (the Caddy handler keeps the key's placeholder provider
// there): made by the first request that needs it, then shared by every
// later request of the key. It lives exactly as long as the key's cache
// entry, whose snapshot never changes: an edit of the key makes a new
// entry, with an empty memo. The value must be immutable, and always of
// the same type (Store panics otherwise: the slot has one user); two
// requests racing to make it store equal values, and either is kept. The
// value is held in the entry itself (a pointer-shaped one, such as a func,
// needs no other memory to load).
type Memo struct{ v atomic.Value }

// Load returns the value, or nil before one is stored.
func (m *Memo) Load() any { return m.v.Load() }

// Store sets the value.
func (m *Memo) Store(v any) { m.v.Store(v) }

// unixNano is t.UnixNano, saturated to the int64 range: UnixNano is
// undefined after 2262, and an expiry in 2300 must not wrap into the past.
func unixNano(t time.Time) int64 {
	switch {
	case t.After(maxUnixNano):
		return math.MaxInt64
	case t.Before(minUnixNano):
		return math.MinInt64
	}
	return t.UnixNano()
}

var (
	maxUnixNano = time.Unix(0, math.MaxInt64)
	minUnixNano = time.Unix(0, math.MinInt64)
)

// entry is what the cache holds for one hash: one allocation (entry,
// snapshot and record, and room for the key's rate-limit bucket). The
// fields a request reads or writes come first, in as few cache lines as
// possible: the first line holds what the lookup reads, the second the
// checks' flags and the key's bucket, the third the usage counters a
// request adds to, then the snapshot (the fields it reads first, the
// key's identity strings next). With 10,000 keys in random order, each
// request meets its entry out of the CPU's caches: every line it touches
// is a fetch (the CPU fetches a line's neighbour with it).
//
// The lines are the allocation's, not the struct's: an entry is an object
// of over 512 bytes with pointers, which Go's allocator puts 8 bytes into
// a slot of its size class (704 bytes, a multiple of 64) after a header of
// its type, so the first line of an entry holds its first 56 bytes.
// TestEntryLayout checks where the lines fall in allocated entries.
type entry struct {
	// hash is the hash the entry is cached under.
	hash Hash
	// until is when this hash stops working (unix nanos): set for the old
	// string of a key regenerated with a grace period; 0 = no end.
	until int64
	// lastUsed is the last successful verification (unix nanos), updated
	// at most once a second; flushed is the value last written to Badger.
	lastUsed atomic.Int64
	// bucket is the key's rate-limit bucket once a request has used it
	// (see limiters.take); nil until then.
	bucket atomic.Pointer[bucket]
	// usageRetired: the entry was dropped from the cache; a request that
	// found it before and counts in it afterwards keeps it for the next
	// drain (keepUsage), so that its count is not lost.
	usageRetired atomic.Bool
	// vouched is the format policy (Verifier.vouch) that checked the
	// whole format of the key when the entry was filled, 0 if none did
	// (VerifyHash never sees a plaintext). Verify checks the whole format
	// of a key found in an entry that its own policy did not vouch for,
	// as it does on a miss: after a reload that turned the checksum on
	// or foreign keys off, a cached key is checked as a new one would be.
	vouched uint8
	// own is room for the key's rate-limit bucket, on the line after the
	// first: a request then fetches its bucket with the entry, where a
	// bucket of its own allocation was one more line to fetch, and only
	// once the entry's line had told where. Buckets are the limiters', by
	// key id, and outlive entries: the entry that needs one when the key
	// has none (or only a dead one, which the sweep dropped) lends its own
	// (limiters.get), and a later entry of the key points into it, which
	// keeps its first entry allocated for as long as the bucket lives.
	own bucket
	// usage counts the requests that named the key since the last drain.
	usage usageSlots
	// usageKept: the entry is in the store's list of retired entries to
	// drain (see usageRetired).
	usageKept atomic.Bool
	snap      snapshot
	flushed   atomic.Int64
}

const (
	cacheShards = 64
	// DefaultCacheSize is how many verified keys are kept in memory.
	DefaultCacheSize = 1 << 20
)

// cacheShard is one of the cache's shards: an open-addressing table of
// entries that readers probe without a lock (atomic loads), and writers
// (fills, invalidations, evictions) change under mu. A request's lookup
// so writes no shared memory: with a read lock, each lookup wrote the
// lock's counter, a line that the two cores passed between them.
type cacheShard struct {
	mu  sync.Mutex
	tab atomic.Pointer[cacheTable]
	// n is the live entries, dead the tombstones, in tab; under mu.
	n, dead int
	_       [32]byte // pad to 64 bytes: shards on separate cache lines
}

// cacheTable is a shard's table: a power-of-two array of slots, probed
// linearly from the hash's second 8 bytes (the first byte picks the
// shard). A slot holds a tag and an entry: tag 0 is a free slot (a probe
// stops there), tombTag a dropped entry (a probe goes on), any other tag
// is those 8 bytes of the entry's hash with the low bit set, so that a
// probe reads an entry only when the tag matches: a probe that passed
// other entries by their pointers would fetch each one's line. A table is
// never resized in place: a writer builds a new one and publishes it, and
// a reader that still holds the old one sees the entries as they were
// when it loaded it.
type cacheTable struct {
	mask  uint64
	slots []cacheSlot
}

type cacheSlot struct {
	tag atomic.Uint64
	e   atomic.Pointer[entry]
}

// tombTag marks a slot whose entry was dropped.
const tombTag = 2

// minCacheTable is the slots of a new shard's table.
const minCacheTable = 8

func newCacheTable(slots int) *cacheTable {
	return &cacheTable{mask: uint64(slots - 1), slots: make([]cacheSlot, slots)}
}

// cacheIndex is where h's probe starts in a table.
func cacheIndex(h *Hash) uint64 { return binary.LittleEndian.Uint64(h[8:16]) }

// cacheTag is h's tag: never 0 (free) or tombTag.
func cacheTag(h *Hash) uint64 { return cacheIndex(h) | 1 }

// find returns the slot of h in t and its entry, or the slot where a probe
// for h stopped (nil entry: not there). A writer stores a slot's entry
// before its tag, and a dropped slot's tag before its entry: a reader that
// meets a slot in between misses, or finds the entry as it was before the
// drop, as if it had come a moment earlier.
func (t *cacheTable) find(h *Hash) (*cacheSlot, *entry) {
	tag := cacheTag(h)
	for i, n := cacheIndex(h)&t.mask, uint64(0); n <= t.mask; i, n = (i+1)&t.mask, n+1 {
		slot := &t.slots[i]
		switch st := slot.tag.Load(); {
		case st == 0:
			return slot, nil
		case st == tag:
			if e := slot.e.Load(); e != nil && e.hash == *h {
				return slot, e
			}
		}
	}
	return nil, nil // full of tombstones and other hashes: writers rebuild before
}

// set puts e in a slot (a writer, under the shard's lock).
func (sl *cacheSlot) set(e *entry) {
	sl.e.Store(e)
	sl.tag.Store(cacheTag(&e.hash))
}

// live is the slot's entry, nil if it is free or dropped (a writer, or
// each, under the shard's lock).
func (sl *cacheSlot) live() *entry {
	if tag := sl.tag.Load(); tag == 0 || tag == tombTag {
		return nil
	}
	return sl.e.Load()
}

// drop makes a slot a tombstone (a writer, under the shard's lock).
func (sl *cacheSlot) drop() {
	sl.tag.Store(tombTag)
	sl.e.Store(nil)
}

// cache maps key hashes to verified records. Fills are guarded by a
// generation counter: a fill that read Badger before a mutation committed
// is dropped, so a stale record is never cached after the mutation's
// invalidation.
type cache struct {
	shards [cacheShards]cacheShard
	// hitCount is the request path's cache hits, counted per P: a count
	// per shard still moved its line between the cores that looked up
	// keys of that shard.
	hitCount *percpu.Counter
	perShard int
	gen      atomic.Uint64
	// evicted receives the last-used times of entries dropped before they
	// were flushed, so that no use is lost.
	evicted func(id string, lastUsed int64)
	// retired, if set, is told of every entry dropped, after evicted: the
	// store keeps it until its usage counts are drained.
	retired func(*entry)
}

func newCache(size int, evicted func(string, int64)) *cache {
	c := &cache{perShard: max(size/cacheShards, 1), evicted: evicted, hitCount: percpu.NewCounter()}
	for i := range c.shards {
		c.shards[i].tab.Store(newCacheTable(minCacheTable))
	}
	return c
}

func (c *cache) shard(h Hash) *cacheShard {
	return &c.shards[h[0]%cacheShards]
}

// get returns the entry cached under h, or nil. It takes no lock and
// writes nothing.
func (c *cache) get(h Hash) *entry {
	_, e := c.shard(h).tab.Load().find(&h)
	return e
}

// hit counts a request path's lookup that found h.
func (c *cache) hit() { c.hitCount.Inc() }

// put caches e under h unless a mutation happened since generation gen was
// read. A full shard drops an entry from a random place; an entry that e
// replaces (a concurrent fill of the same hash) is retired. An entry not
// cached is retired too: the request that read it still answers from it,
// and counts its use in it.
func (c *cache) put(h Hash, e *entry, gen uint64) {
	e.hash = h
	sh := c.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c.gen.Load() != gen {
		c.retire(e)
		return
	}
	t := sh.tab.Load()
	if slot, old := t.find(&h); old != nil {
		if old != e {
			slot.set(e)
			c.retire(old)
		}
		return
	}
	if sh.n >= c.perShard {
		c.evictOne(sh)
	}
	t = sh.grow()
	// The first free or dropped slot of h's probe: h is not in the table.
	for i := cacheIndex(&h) & t.mask; ; i = (i + 1) & t.mask {
		switch t.slots[i].tag.Load() {
		case 0:
			t.slots[i].set(e)
			sh.n++
			return
		case tombTag:
			t.slots[i].set(e)
			sh.n++
			sh.dead--
			return
		}
	}
}

// grow makes room for one more entry in sh's table when live entries and
// tombstones would fill more than three quarters of it: a new table
// without the tombstones, twice as large if the live entries alone would
// fill more than half. The cache's size bounds the live entries, so a
// table is at most four times that many slots. sh.mu is held.
func (sh *cacheShard) grow() *cacheTable {
	t := sh.tab.Load()
	size := len(t.slots)
	if 4*(sh.n+sh.dead+1) <= 3*size {
		return t
	}
	if 2*(sh.n+1) > size {
		size *= 2
	}
	nt := newCacheTable(size)
	for i := range t.slots {
		e := t.slots[i].live()
		if e == nil {
			continue
		}
		for j := cacheIndex(&e.hash) & nt.mask; ; j = (j + 1) & nt.mask {
			if nt.slots[j].tag.Load() == 0 {
				nt.slots[j].set(e)
				break
			}
		}
	}
	sh.dead = 0
	sh.tab.Store(nt)
	return nt
}

// evictOne drops the first entry from a random slot on. sh.mu is held.
func (c *cache) evictOne(sh *cacheShard) {
	t := sh.tab.Load()
	start := rand.Uint64() & t.mask
	for n := uint64(0); n <= t.mask; n++ {
		slot := &t.slots[(start+n)&t.mask]
		if e := slot.live(); e != nil {
			slot.drop()
			sh.n--
			sh.dead++
			c.retire(e)
			return
		}
	}
}

// invalidate drops the hashes after a mutation committed, and bumps the
// generation so that fills racing with the mutation are not cached.
func (c *cache) invalidate(hashes ...Hash) {
	c.gen.Add(1)
	for _, h := range hashes {
		sh := c.shard(h)
		sh.mu.Lock()
		if slot, e := sh.tab.Load().find(&h); e != nil {
			slot.drop()
			sh.n--
			sh.dead++
			c.retire(e)
		}
		c.gen.Add(1)
		sh.mu.Unlock()
	}
}

func (c *cache) retire(e *entry) {
	if lu := e.lastUsed.Load(); lu > e.flushed.Load() && c.evicted != nil {
		e.flushed.Store(lu) // handed over: a later drain hands over only newer uses
		c.evicted(e.snap.key.ID, lu)
	}
	if c.retired != nil {
		c.retired(e)
	}
}

// lastUsed returns the latest in-memory use of any cached string of the key.
func (c *cache) lastUsed(k *Key) int64 {
	var best int64
	hashes := []Hash{k.Hash}
	if k.PrevHash != nil {
		hashes = append(hashes, *k.PrevHash)
	}
	for _, h := range hashes {
		if e := c.get(h); e != nil && e.snap.key.ID == k.ID {
			best = max(best, e.lastUsed.Load())
		}
	}
	return best
}

// each calls fn for every cached entry, shard by shard, with the shard's
// writers held off (a fill or an invalidation of the shard waits).
func (c *cache) each(fn func(*entry)) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		t := sh.tab.Load()
		for j := range t.slots {
			if e := t.slots[j].live(); e != nil {
				fn(e)
			}
		}
		sh.mu.Unlock()
	}
}

// hits is the request path's cache hits.
func (c *cache) hits() uint64 { return c.hitCount.Load() }

func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}

// clear drops every entry (another process's changes may have been
// missed) and bumps the generation, as invalidate does.
func (c *cache) clear() {
	c.gen.Add(1)
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		t := sh.tab.Load()
		sh.tab.Store(newCacheTable(minCacheTable))
		sh.n, sh.dead = 0, 0
		for j := range t.slots {
			if e := t.slots[j].live(); e != nil {
				c.retire(e)
			}
		}
		c.gen.Add(1)
		sh.mu.Unlock()
	}
}
