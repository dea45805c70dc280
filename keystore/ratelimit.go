package keystore

import (
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limit is an effective token-bucket limit: Requests per Window, with a
// bucket of Burst tokens. The zero Limit is no limit.
type Limit struct {
	Requests int
	Window   time.Duration
	Burst    int
}

// DefaultLimit is every key's limit unless configured: 100 requests per
// second, burst 100.
var DefaultLimit = Limit{Requests: 100, Window: time.Second, Burst: 100}

// IsZero reports whether the limit is "no limit".
func (l Limit) IsZero() bool { return l.Requests == 0 }

// Validate checks a limit's fields.
func (l Limit) Validate() error {
	if l.IsZero() {
		return nil
	}
	if l.Requests < 1 || l.Window <= 0 || l.Burst < 1 {
		return fmt.Errorf("a rate limit needs requests >= 1, a positive window and burst >= 1")
	}
	return nil
}

func (l Limit) perSecond() rate.Limit {
	return rate.Limit(float64(l.Requests) / l.Window.Seconds())
}

// Effective turns a record's rate_limit into the limit that applies, with
// def for a nil one. An unlimited record gives the zero Limit.
func (rl *RateLimit) Effective(def Limit) Limit {
	switch {
	case rl == nil:
		return def
	case rl.Unlimited:
		return Limit{}
	}
	w, _ := time.ParseDuration(rl.Window) // validated on write
	b := rl.Burst
	if b == 0 {
		b = rl.Requests
	}
	return Limit{Requests: rl.Requests, Window: w, Burst: b}
}

// RateState is what a rate limit check found, for the RateLimit-* headers.
type RateState struct {
	// Limit is the bucket size (the most requests that can be made at
	// once); 0 means no limit applied.
	Limit int
	// Remaining is how many requests can be made now.
	Remaining int
	// Reset is the whole seconds until the bucket is full again.
	Reset int
	// RetryAfter is the whole seconds (at least 1) until the next request
	// can pass; set when the request was refused.
	RetryAfter int
}

// bucket is one key's or account's token bucket. mu guards it: requests
// take tokens under it, and the sweep drops a key's bucket only after
// marking it dead under it, so a token is never taken from a bucket that
// is being dropped (a request that meets a dead bucket takes from the
// live one instead).
//
// The bucket is its own token bucket, with the arithmetic of
// golang.org/x/time/rate's Limiter (AllowN, TokensAt, ReserveN) inline:
// 56 bytes within one cache line (a key's bucket in its cache entry's
// second line, entry.own; an account's an allocation of 64 bytes, which
// are 64-byte aligned), one cache line and one lock per request,
// where a Limiter behind a pointer was a second allocation, a second
// cache line and a second lock (its own), and TokensAt a third locking.
// Under requests spread over many keys, each bucket is out of the CPU's
// caches, and every line costs a miss.
type bucket struct {
	mu   sync.Mutex
	dead bool
	cfg  *Limit // the limit the bucket follows (a key's own points into its cache entry)
	// perSec is cfg's rate in tokens per second.
	perSec float64
	// tokens is the bucket's content at last; it refills at perSec up to
	// cfg.Burst. last is a time as nanoseconds since bucketEpoch (on the
	// monotonic clock when the times have one): 8 bytes where a time.Time
	// is 24, which keeps the bucket within one line. lastNew (a new or
	// adopted bucket) reads as full.
	tokens float64
	last   int64
	// g, on an engine with kv.Limits, is the bucket's lease of the
	// engine's bucket (globallimit.go), which decides instead.
	g *tokenLease
}

func newBucket(l *Limit) *bucket {
	return new(bucket).reset(l, nil) // starts full
}

// bucketEpoch is the origin of the buckets' times.
var bucketEpoch = time.Now()

// lastNew is the last of a bucket that no request has taken from: so far
// in the past that any time refills it completely, and far enough from
// math.MinInt64 that the difference cannot overflow.
const lastNew = math.MinInt64 / 2

// bucketTime is t as a bucket keeps it.
func bucketTime(t time.Time) int64 { return int64(t.Sub(bucketEpoch)) }

// take spends one token if there is one. If the limit changed since the
// last request (an admin edit), the bucket adopts it first.
func (b *bucket) take(l *Limit, now time.Time) (RateState, bool) {
	st, ok, _ := b.takeLive(l, now)
	return st, ok
}

// takeLive is take on a bucket that the sweep may have dropped: then live
// is false and nothing was taken.
func (b *bucket) takeLive(l *Limit, now time.Time) (st RateState, ok, live bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dead {
		return RateState{}, false, false
	}
	if b.g != nil {
		st, ok = b.g.take(l, now)
		return st, ok, true
	}
	if b.cfg != l && *b.cfg != *l {
		b.adopt(l, now)
	}
	tokens := b.advance(now)
	if ok = b.admits(tokens - 1); ok {
		tokens--
		b.tokens, b.last = tokens, bucketTime(now)
	}
	st = RateState{Limit: l.Burst, Remaining: max(int(tokens), 0)}
	st.Reset = int(math.Ceil((float64(l.Burst) - tokens) / b.perSec))
	if !ok {
		st.RetryAfter = max(int(math.Ceil((1-tokens)/b.perSec)), 1)
	}
	return st, ok, true
}

// advance is the bucket's content at now (Limiter.advance): what it held
// at last, refilled for the time since, up to the burst. A time before
// last refills nothing. It changes nothing. b.mu is held.
func (b *bucket) advance(now time.Time) float64 {
	elapsed := time.Duration(bucketTime(now) - b.last)
	if elapsed < 0 {
		elapsed = 0
	}
	return min(b.tokens+elapsed.Seconds()*b.perSec, float64(b.cfg.Burst))
}

// admits reports whether a bucket left with after tokens may give them
// (Limiter.reserveN without waiting): none owed, or less than a
// nanosecond's worth, which the Limiter rounds to no wait. b.mu is held.
func (b *bucket) admits(after float64) bool {
	return after >= 0 || time.Duration(-after/b.perSec*float64(time.Second)) <= 0
}

// adopt makes the bucket follow l, keeping what was consumed: a client
// that used 5 of 5 and gets a limit of 50 has 45 left, and one that used
// 10 of 50 and gets a limit of 5 has none. b.mu is held.
func (b *bucket) adopt(l *Limit, now time.Time) {
	used := math.Ceil(float64(b.cfg.Burst) - b.advance(now))
	b.cfg, b.perSec = l, float64(l.perSecond())
	b.tokens, b.last = float64(l.Burst), lastNew
	if used > 0 {
		b.tokens, b.last = float64(l.Burst-min(int(used), l.Burst)), bucketTime(now)
	}
}

// refund gives back a token taken by a request that a later check refused.
func (b *bucket) refund(now time.Time) {
	if b.g != nil {
		b.g.refund()
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if tokens := b.advance(now) + 1; b.admits(tokens) {
		b.tokens, b.last = tokens, bucketTime(now)
	}
}

// fullLocked reports whether the bucket is full: then it is
// indistinguishable from a new one and can be dropped. b.mu is held.
func (b *bucket) fullLocked(now time.Time) bool {
	if b.g != nil {
		return b.g.idle(now)
	}
	return b.advance(now) >= float64(b.cfg.Burst)
}

// retireIfFull marks a full bucket dead and reports whether it did.
func (b *bucket) retireIfFull(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.fullLocked(now) {
		return false
	}
	b.dead = true
	return true
}

const limiterShards = 64

// limiters holds the key buckets, by key id. Buckets live as long as the
// store (across reloads); a bucket that has refilled completely is dropped
// by sweep, which changes nothing (a new bucket starts full), so memory is
// bounded by the keys active within their refill time.
type limiters struct {
	// global, if not nil, makes the buckets leases of the engine's.
	global *globalLimits
	shards [limiterShards]struct {
		mu sync.RWMutex
		m  map[string]*bucket
		_  [32]byte
	}
}

func newLimiters() *limiters {
	ls := new(limiters)
	for i := range ls.shards {
		ls.shards[i].m = make(map[string]*bucket)
	}
	return ls
}

func limiterShard(id string) uint8 {
	// FNV-1a, inline: the id is hashed once per snapshot, not per request.
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return uint8(h % limiterShards)
}

// get returns the bucket of the key of cache entry e, creating it (full)
// in e's room for one (entry.own) if the key has none.
func (ls *limiters) get(e *entry, l *Limit) *bucket {
	id := e.snap.key.ID
	sh := &ls.shards[e.snap.limShard]
	sh.mu.RLock()
	b := sh.m[id]
	sh.mu.RUnlock()
	if b != nil {
		return b
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if b = sh.m[id]; b == nil {
		var g *tokenLease
		if ls.global != nil {
			g = ls.global.newTokenLease("k/"+id, l)
		}
		b = e.own.reset(l, g)
		sh.m[id] = b
	}
	return b
}

// reset makes b a new (full) bucket of limit l and lease g (nil without
// kv.Limits): a new bucket (newBucket), or an entry's room for its key's
// bucket when the key has no bucket in its limiters' shard, whose lock is
// held: b is then unused, or the sweep dropped it (dead). A request that
// still holds the dead b takes from it once it is live again, as it would
// from the key's new bucket: it is that bucket.
func (b *bucket) reset(l *Limit, g *tokenLease) *bucket {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dead, b.cfg, b.perSec, b.tokens, b.last, b.g = false, l, float64(l.perSecond()), float64(l.Burst), lastNew, g
	return b
}

// take takes a token from the bucket of the key of cache entry e: the
// bucket the entry remembers, or the key's bucket in ls (then remembered),
// so that a request does not look the bucket up by id. A remembered bucket
// that the sweep dropped is forgotten and the token taken from the live
// one.
func (ls *limiters) take(e *entry, l *Limit, now time.Time) (*bucket, RateState, bool) {
	for {
		b := e.bucket.Load()
		if b == nil {
			b = ls.get(e, l)
			e.bucket.Store(b)
		}
		if st, ok, live := b.takeLive(l, now); live {
			return b, st, ok
		}
		e.bucket.CompareAndSwap(b, nil)
	}
}

// sweep drops full buckets and returns how many remain.
func (ls *limiters) sweep(now time.Time) int {
	n := 0
	for i := range ls.shards {
		sh := &ls.shards[i]
		sh.mu.Lock()
		for id, b := range sh.m {
			if b.retireIfFull(now) {
				delete(sh.m, id)
			}
		}
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// accountBucket returns the account's bucket, creating it if needed.
func (st *accountState) bucket(l *Limit) *bucket {
	if b := st.rate.Load(); b != nil {
		return b
	}
	b := newBucket(l)
	if st.global != nil {
		b.g = st.global.newTokenLease(accountLimitID(st.acct.Load()), l)
	}
	if st.rate.CompareAndSwap(nil, b) {
		return b
	}
	return st.rate.Load()
}
