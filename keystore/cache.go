package keystore

import (
	"encoding/binary"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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
// snapshot and record). The fields a request reads or writes come first,
// in as few cache lines as possible (the allocation's size class, 640
// bytes, is a multiple of 128, so an entry starts on a pair of lines,
// which the CPU fetches together): the first line holds what the lookup
// and the checks read, the second the usage counters a request adds to,
// then the snapshot (the fields it reads first, the key's identity
// strings next). With 10,000 keys in random order, each request meets
// its entry out of the CPU's caches: every line it touches is a fetch.
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
	// drain (keepUsage), so that its count is not lost. usageKept: it is
	// in the store's list of retired entries to drain.
	usageRetired atomic.Bool
	// byHash: the entry was filled by VerifyHash, which never sees a
	// plaintext; Verify checks the whole format of a key found in such an
	// entry, as it does on a miss.
	byHash bool
	// usage counts the requests that named the key since the last drain.
	usage     usageSlots
	usageKept atomic.Bool
	snap      snapshot
	flushed   atomic.Int64
}

const (
	cacheShards = 64
	// DefaultCacheSize is how many verified keys are kept in memory.
	DefaultCacheSize = 1 << 20
)

type cacheShard struct {
	mu sync.RWMutex
	// m is keyed by the hash's first 8 bytes, as random as the hash: a
	// map of 16-byte slots instead of 40-byte ones, so that more of it
	// stays in the CPU's caches under random keys. The entry holds the
	// whole hash, which get compares; two cached hashes that share their
	// first 8 bytes take turns in the slot.
	m map[uint64]*entry
	// hits counts the request path's lookups answered by this shard: a
	// counter per shard, on the line the lookup's read lock writes
	// anyway, rather than one counter that every request on every core
	// writes (a cache line passed between the cores at each request).
	hits atomic.Uint64
	_    [24]byte // pad to 64 bytes: shards on separate cache lines
}

func cacheIndex(h *Hash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

// cache maps key hashes to verified records. Fills are guarded by a
// generation counter: a fill that read Badger before a mutation committed
// is dropped, so a stale record is never cached after the mutation's
// invalidation.
type cache struct {
	shards   [cacheShards]cacheShard
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
	c := &cache{perShard: max(size/cacheShards, 1), evicted: evicted}
	for i := range c.shards {
		c.shards[i].m = make(map[uint64]*entry)
	}
	return c
}

func (c *cache) shard(h Hash) *cacheShard {
	return &c.shards[h[0]%cacheShards]
}

func (c *cache) get(h Hash) *entry {
	sh := c.shard(h)
	sh.mu.RLock()
	e := sh.m[cacheIndex(&h)]
	sh.mu.RUnlock()
	if e == nil || e.hash != h {
		return nil
	}
	return e
}

// put caches e under h unless a mutation happened since generation gen was
// read. A full shard drops an arbitrary entry (Go's map order is random);
// an entry that e replaces (a concurrent fill of the same hash, or a hash
// with the same first 8 bytes) is retired. An entry not cached is retired
// too: the request that read it still answers from it, and counts its use
// in it.
func (c *cache) put(h Hash, e *entry, gen uint64) {
	e.hash = h
	i := cacheIndex(&h)
	sh := c.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c.gen.Load() != gen {
		c.retire(e)
		return
	}
	old, ok := sh.m[i]
	if !ok && len(sh.m) >= c.perShard {
		for victim, ve := range sh.m {
			delete(sh.m, victim)
			c.retire(ve)
			break
		}
	}
	if ok && old != e {
		c.retire(old)
	}
	sh.m[i] = e
}

// invalidate drops the hashes after a mutation committed, and bumps the
// generation so that fills racing with the mutation are not cached.
func (c *cache) invalidate(hashes ...Hash) {
	c.gen.Add(1)
	for _, h := range hashes {
		sh := c.shard(h)
		sh.mu.Lock()
		i := cacheIndex(&h)
		if e := sh.m[i]; e != nil && e.hash == h {
			delete(sh.m, i)
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

// each calls fn for every cached entry, shard by shard, under a read lock.
func (c *cache) each(fn func(*entry)) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		for _, e := range sh.m {
			fn(e)
		}
		sh.mu.RUnlock()
	}
}

// hits is the sum of the shards' hit counts.
func (c *cache) hits() uint64 {
	var n uint64
	for i := range c.shards {
		n += c.shards[i].hits.Load()
	}
	return n
}

func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
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
		for k, e := range sh.m {
			delete(sh.m, k)
			c.retire(e)
		}
		c.gen.Add(1)
		sh.mu.Unlock()
	}
}
