package keystore

import (
	"math"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/time/rate"
)

func TestBucketArithmetic(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := &Limit{Requests: 10, Window: time.Second, Burst: 5}
	b := newBucket(l)
	for i := range 5 {
		st, ok := b.take(l, t0)
		if !ok || st.Limit != 5 || st.Remaining != 4-i {
			t.Fatalf("take %d: %+v ok=%v", i, st, ok)
		}
	}
	// Empty: refused, retry after 1 token = 100ms -> 1 whole second.
	st, ok := b.take(l, t0)
	if ok || st.Remaining != 0 || st.RetryAfter != 1 || st.Reset != 1 {
		t.Fatalf("empty bucket: %+v ok=%v", st, ok)
	}
	// 250ms later: 2.5 tokens.
	st, ok = b.take(l, t0.Add(250*time.Millisecond))
	if !ok || st.Remaining != 1 {
		t.Fatalf("after 250ms: %+v ok=%v", st, ok)
	}
	// A slow limit: 1 per minute, burst 1. Retry-After is whole seconds.
	slow := &Limit{Requests: 1, Window: time.Minute, Burst: 1}
	b = newBucket(slow)
	if _, ok := b.take(slow, t0); !ok {
		t.Fatal("first request of a fresh bucket refused")
	}
	st, ok = b.take(slow, t0.Add(15*time.Second))
	if ok || st.RetryAfter != 45 || st.Reset != 45 {
		t.Fatalf("slow: %+v ok=%v, want retry after 45s", st, ok)
	}
	// The limit changes: the next take adopts it, keeping what was used
	// (1 of 1, so 99 of 100 are left, and this request takes one).
	fast := &Limit{Requests: 100, Window: time.Second, Burst: 100}
	if st, ok = b.take(fast, t0.Add(16*time.Second)); !ok || st.Limit != 100 || st.Remaining != 98 {
		t.Fatalf("after raising the limit: %+v ok=%v", st, ok)
	}
	// Lowered below what was used: nothing left.
	tiny := &Limit{Requests: 1, Window: time.Hour, Burst: 1}
	if st, ok = b.take(tiny, t0.Add(16*time.Second)); ok || st.Remaining != 0 {
		t.Fatalf("after lowering the limit: %+v ok=%v", st, ok)
	}
	// Refund gives a token back.
	b = newBucket(&Limit{Requests: 1, Window: time.Hour, Burst: 1})
	one := b.cfg
	b.take(one, t0)
	b.refund(t0)
	if _, ok := b.take(one, t0); !ok {
		t.Fatal("refunded token not available")
	}
	if b.fullLocked(t0) {
		t.Fatal("empty bucket reported full")
	}
	if !b.fullLocked(t0.Add(2 * time.Hour)) {
		t.Fatal("refilled bucket not full")
	}
}

func TestRateLimitEffective(t *testing.T) {
	def := Limit{Requests: 100, Window: time.Second, Burst: 100}
	for i, tc := range []struct {
		rl   *RateLimit
		want Limit
	}{
		{nil, def},
		{&RateLimit{Unlimited: true}, Limit{}},
		{&RateLimit{Requests: 5, Window: "1m"}, Limit{Requests: 5, Window: time.Minute, Burst: 5}},
		{&RateLimit{Requests: 5, Window: "1m", Burst: 20}, Limit{Requests: 5, Window: time.Minute, Burst: 20}},
	} {
		if got := tc.rl.Effective(def); got != tc.want {
			t.Errorf("test %d: %+v, want %+v", i, got, tc.want)
		}
	}
}

// TestVerifyRateLimits covers the per-key default, a key's own limit, an
// exempt key, the account-wide limit shared by several keys, and that a
// refused request (scope, account limit) spends nothing.
func TestVerifyRateLimits(t *testing.T) {
	clock := newTestClock()
	s := openStoreOpts(t, Options{Now: clock.Now})
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{Requests: 3, Window: time.Second, Burst: 3}}
	mk := func(acct string, rl *RateLimit) string {
		_, plain, err := s.CreateKey(NewKey{Name: "k", Account: acct, Scopes: []string{"a:read"}, RateLimit: rl}, f, "admin")
		if err != nil {
			t.Fatal(err)
		}
		return plain
	}
	passes := func(key string, n int, req Scope, need bool) (int, Result) {
		ok := 0
		var last Result
		for range n {
			res, err := v.Verify(key, req, need)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome == OK {
				ok++
			}
			last = res
		}
		return ok, last
	}

	def := mk("default", nil)
	if n, last := passes(def, 10, Scope{}, false); n != 3 || last.Outcome != RateLimited || last.Rate.RetryAfter != 1 {
		t.Errorf("default limit: %d passed, last %s %+v", n, last.Outcome.Code(), last.Rate)
	}
	own := mk("default", &RateLimit{Requests: 5, Window: "1m"})
	if n, _ := passes(own, 10, Scope{}, false); n != 5 {
		t.Errorf("own limit: %d passed, want 5", n)
	}
	free := mk("default", &RateLimit{Unlimited: true})
	if n, last := passes(free, 1000, Scope{}, false); n != 1000 || last.Rate.Limit != 0 {
		t.Errorf("unlimited: %d passed, rate %+v", n, last.Rate)
	}

	// Refused for scope: no token spent.
	scoped := mk("default", nil)
	if n, _ := passes(scoped, 10, Scope{Resource: "b", Access: AccessRead}, true); n != 0 {
		t.Fatalf("scope refusals passed %d", n)
	}
	if n, _ := passes(scoped, 10, Scope{}, false); n != 3 {
		t.Errorf("after scope refusals: %d passed, want the full 3", n)
	}

	// Account-wide: 4 per second across its keys.
	if _, err := s.CreateAccount(Account{ID: "acme", RateLimit: &RateLimit{Requests: 4, Window: "1s"}}); err != nil {
		t.Fatal(err)
	}
	k1, k2, k3 := mk("acme", nil), mk("acme", nil), mk("acme", &RateLimit{Unlimited: true})
	total := 0
	for _, k := range []string{k1, k2, k3, k1, k2, k3} {
		n, _ := passes(k, 2, Scope{}, false)
		total += n
	}
	if total != 4 {
		t.Errorf("account-wide: %d passed across 3 keys, want 4", total)
	}
	// The account refused k1 and k2 after they had tokens left: refunded,
	// so once the account refills they get their own full share.
	clock.Advance(time.Second)
	if _, err := s.UpdateAccount("acme", AccountPatch{ClearRateLimit: true}); err != nil {
		t.Fatal(err)
	}
	if n, _ := passes(k1, 10, Scope{}, false); n != 3 {
		t.Errorf("k1 after the account limit was removed: %d passed, want 3", n)
	}

	// An admin change of a key's limit applies to the next request.
	id := mustKeyID(t, s, own)
	if _, err := s.UpdateKey(id, KeyPatch{RateLimit: &RateLimit{Requests: 50, Window: "1m"}}, "admin"); err != nil {
		t.Fatal(err)
	}
	if n, last := passes(own, 1, Scope{}, false); n != 1 || last.Rate.Limit != 50 {
		t.Errorf("after raising the key's limit: %d passed, rate %+v", n, last.Rate)
	}

	// Idle buckets are dropped once full, and only then.
	if left := s.limits.sweep(clock.Now()); left == 0 {
		t.Error("sweep dropped buckets that are not full")
	}
	clock.Advance(time.Hour)
	if left := s.limits.sweep(clock.Now()); left != 0 {
		t.Errorf("sweep kept %d full buckets", left)
	}
}

func mustKeyID(t *testing.T, s *Store, plain string) string {
	t.Helper()
	e, err := s.find(HashKey(plain))
	if err != nil || e == nil {
		t.Fatalf("lookup: %v", err)
	}
	return e.snap.key.ID
}

func TestVerifyLimitedDoesNotAllocate(t *testing.T) {
	s := openTestStore(t)
	f := DefaultFormat()
	_, plain, err := s.CreateKey(NewKey{Name: "k", Scopes: []string{"a:read"}}, f, "admin")
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{Requests: 1 << 30, Window: time.Second, Burst: 1 << 30}}
	if res, _ := v.Verify(plain, Scope{}, false); res.Outcome != OK {
		t.Fatal(res.Outcome.Code())
	}
	if n := testing.AllocsPerRun(1000, func() { v.Verify(plain, Scope{}, false) }); n != 0 {
		t.Errorf("Verify with a rate limit allocates %.1f times", n)
	}
}

// TestSweptBucketIsForgotten: a cache entry remembers its key's bucket; once
// the sweep drops the (full) bucket, the next request takes from a new one
// that the limiters hold, and the limit still counts every request.
func TestSweptBucketIsForgotten(t *testing.T) {
	clock := newTestClock()
	s := openStoreOpts(t, Options{Now: clock.Now})
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f}
	_, plain, err := s.CreateKey(NewKey{Name: "k", Scopes: []string{"a:read"}, RateLimit: &RateLimit{Requests: 2, Window: "1m"}}, f, "admin")
	if err != nil {
		t.Fatal(err)
	}
	outcome := func() Outcome {
		res, err := v.Verify(plain, Scope{}, false)
		if err != nil {
			t.Fatal(err)
		}
		return res.Outcome
	}
	if o := outcome(); o != OK {
		t.Fatalf("first request: %s", o.Code())
	}
	e, _ := s.find(HashKey(plain))
	first := e.bucket.Load()
	if first == nil {
		t.Fatal("the entry did not remember its bucket")
	}
	clock.Advance(time.Hour)
	if left := s.limits.sweep(clock.Now()); left != 0 {
		t.Fatalf("sweep kept %d full buckets", left)
	}
	if !first.dead {
		t.Fatal("the dropped bucket is not marked dead")
	}
	if o, o2, o3 := outcome(), outcome(), outcome(); o != OK || o2 != OK || o3 != RateLimited {
		t.Fatalf("after the sweep: %s %s %s, want ok ok rate_limited", o.Code(), o2.Code(), o3.Code())
	}
	now := e.bucket.Load()
	sh := &s.limits.shards[e.snap.limShard]
	if sh.m[e.snap.key.ID] != now || now.dead {
		t.Fatalf("the entry's bucket %p (dead: %v) is not the limiters' %p", now, now.dead, sh.m[e.snap.key.ID])
	}
	// The entry lent its room for a bucket (entry.own) again: the dropped
	// bucket was made new in place, not allocated.
	if now != &e.own || first != &e.own {
		t.Fatalf("the buckets %p and %p are not the entry's own %p", first, now, &e.own)
	}
}

// TestSweepRacesRequests: requests and sweeps at once never let a key with
// a burst of one pass twice (a token taken from a bucket as the sweep drops
// it would be lost, and the next request would find a full bucket). The
// window is narrow, so this mostly runs the protocol under the race
// detector; TestSweptBucketIsForgotten takes the interleaving step by step
// (a request that holds a bucket the sweep has dropped).
func TestSweepRacesRequests(t *testing.T) {
	s := openTestStore(t)
	f := DefaultFormat()
	v := &Verifier{Store: s, Format: f}
	const keys, clients = 200, 4
	for i := range keys {
		_, plain, err := s.CreateKey(NewKey{Name: "k", Scopes: []string{"a:read"}, RateLimit: &RateLimit{Requests: 1, Window: "24h"}}, f, "admin")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.find(HashKey(plain)); err != nil { // cached: no Badger read in the race
			t.Fatal(err)
		}
		stopSweeps := repeatUntilStopped(func() { s.limits.sweep(time.Now()) })
		var passed atomic.Int32
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				res, err := v.Verify(plain, Scope{}, false)
				if err != nil {
					t.Error(err)
				}
				if res.Outcome == OK {
					passed.Add(1)
				}
			})
		}
		wg.Wait()
		stopSweeps()
		if n := passed.Load(); n != 1 {
			t.Fatalf("key %d: %d of %d requests passed a limit of 1 a day", i, n, clients)
		}
	}
}

// refBucket is the bucket as it was built on golang.org/x/time/rate's
// Limiter: the reference that the inline arithmetic must match.
type refBucket struct {
	lim *rate.Limiter
	cfg *Limit
}

func (b *refBucket) take(l *Limit, now time.Time) (RateState, bool) {
	if *b.cfg != *l {
		lim := rate.NewLimiter(l.perSecond(), l.Burst)
		if used := math.Ceil(float64(b.cfg.Burst) - b.lim.TokensAt(now)); used > 0 {
			lim.ReserveN(now, min(int(used), l.Burst))
		}
		b.lim, b.cfg = lim, l
	}
	ok := b.lim.AllowN(now, 1)
	tokens := b.lim.TokensAt(now)
	st := RateState{Limit: l.Burst, Remaining: max(int(tokens), 0)}
	perSec := float64(l.perSecond())
	st.Reset = int(math.Ceil((float64(l.Burst) - tokens) / perSec))
	if !ok {
		st.RetryAfter = max(int(math.Ceil((1-tokens)/perSec)), 1)
	}
	return st, ok
}

// TestBucketMatchesRateLimiter drives the bucket and the Limiter-based
// reference through the same random takes, refunds, limit changes and
// clock steps (backwards too): every answer and every RateState must be
// the same, and the bucket must read full exactly when the reference does.
func TestBucketMatchesRateLimiter(t *testing.T) {
	limits := []*Limit{
		{Requests: 5, Window: time.Second, Burst: 5},
		{Requests: 3, Window: time.Minute, Burst: 10},
		{Requests: 100, Window: time.Second, Burst: 100},
		{Requests: 1, Window: time.Hour, Burst: 1},
		{Requests: 7, Window: 250 * time.Millisecond, Burst: 2},
		{Requests: 1 << 20, Window: time.Second, Burst: 1 << 20},
	}
	r := mrand.New(mrand.NewPCG(7, 22))
	for seq := range 200 {
		l := limits[r.IntN(len(limits))]
		b, ref := newBucket(l), &refBucket{lim: rate.NewLimiter(l.perSecond(), l.Burst), cfg: l}
		now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
		for step := range 300 {
			switch d := r.IntN(100); {
			case d < 60:
				now = now.Add(time.Duration(r.Int64N(int64(50 * time.Millisecond))))
			case d < 65:
				now = now.Add(time.Duration(r.Int64N(int64(2 * time.Minute))))
			case d < 68:
				now = now.Add(-time.Duration(r.Int64N(int64(time.Second)))) // the clock steps back
			}
			switch op := r.IntN(100); {
			case op < 5:
				l = limits[r.IntN(len(limits))]
			case op < 12:
				b.refund(now)
				ref.lim.AllowN(now, -1)
				continue
			}
			got, gotOK := b.take(l, now)
			want, wantOK := ref.take(l, now)
			if got != want || gotOK != wantOK {
				t.Fatalf("sequence %d, step %d, limit %+v: bucket %+v %v, reference %+v %v", seq, step, *l, got, gotOK, want, wantOK)
			}
			b.mu.Lock()
			full := b.fullLocked(now)
			b.mu.Unlock()
			if refFull := ref.lim.TokensAt(now) >= float64(ref.cfg.Burst); full != refFull {
				t.Fatalf("sequence %d, step %d: full %v, reference %v", seq, step, full, refFull)
			}
		}
	}
}

// TestBucketFitsALine: a bucket is one 64-byte allocation (Go aligns
// objects of that size class to 64 bytes), so that a request's take
// touches one cache line of it. At 72 bytes (a time.Time of 24 bytes)
// it was an 80-byte object, which straddles two lines in most places.
func TestBucketFitsALine(t *testing.T) {
	if n := unsafe.Sizeof(bucket{}); n > 64 {
		t.Fatalf("a bucket is %d bytes, more than a cache line", n)
	}
}

// TestEntryLayout: in an allocated entry (whose first 8 bytes follow the
// allocator's header), the lookup's fields share a line, the checks'
// flags and the key's bucket (entry.own) the next, the usage counters the
// next, and the snapshot's first fields the next: a request for a key out
// of the CPU's caches fetches the first two lines as a pair, where a
// bucket of its own allocation was a fetch of its own.
func TestEntryLayout(t *testing.T) {
	line := func(p unsafe.Pointer, size uintptr) [2]uintptr {
		return [2]uintptr{uintptr(p) / 64, (uintptr(p) + size - 1) / 64}
	}
	keep := make([]*entry, 64)
	for i := range keep {
		e := new(entry)
		keep[i] = e
		groups := []struct {
			name        string
			first, last [2]uintptr
		}{
			{"hash..bucket", line(unsafe.Pointer(&e.hash), 1), line(unsafe.Pointer(&e.bucket), 8)},
			{"usageRetired..own", line(unsafe.Pointer(&e.usageRetired), 1), line(unsafe.Pointer(&e.own), unsafe.Sizeof(e.own))},
			{"usage..usageKept", line(unsafe.Pointer(&e.usage), 1), line(unsafe.Pointer(&e.usageKept), 4)},
			{"snap.account..snap.scopeHeader", line(unsafe.Pointer(&e.snap.account), 1), line(unsafe.Pointer(&e.snap.scopeHeader), 16)},
		}
		for j, g := range groups {
			if g.first[0] != g.last[1] {
				t.Fatalf("entry at %#x: %s spans lines %d..%d", uintptr(unsafe.Pointer(e)), g.name, g.first[0], g.last[1])
			}
			if j > 0 && g.first[0] != groups[j-1].first[0]+1 {
				t.Fatalf("entry at %#x: %s is not on the line after %s", uintptr(unsafe.Pointer(e)), g.name, groups[j-1].name)
			}
		}
	}
}
