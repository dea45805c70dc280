package keystore

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// Cluster-wide rate limits (an engine with kv.Limits, shared by several
// processes): a key's and an account's bucket live in the engine, and each
// process spends leases, a few tokens it took from the engine in advance.
// A lease is refilled by one background refiller, which batches the
// refills of every bucket into one round trip, before it runs out; the
// request path reads memory only (and calls the engine only when a
// bucket has no lease and its state is unknown: a bucket's first request,
// and the first after its lease was dropped or its wait has passed).
//
// Tokens may be taken ahead (leaseAhead): the engine then grants tokens
// that its bucket will only have later, each with the time it is due, and
// the process spends each when it is due. So the engine's ledger decides
// every token, whoever asks: the process never spends a token the
// engine's bucket did not give, and over any interval all processes
// together pass at most burst + rate x elapsed. What they pass less is the
// tokens leased and not spent when the demand stops (at most a lease per
// process).

// Lease tuning. leaseSpan is how much of this process's demand a lease
// covers; a lease is at most leaseShare of the bucket (burst, and rate x
// leaseAhead) divided among the processes alive, and at least one token;
// leaseMin is the lease of a process whose demand is low, so that a key
// used a few times a second costs a round trip per leaseMin requests,
// not per request.
const (
	leaseSpan  = 200 * time.Millisecond
	leaseAhead = 500 * time.Millisecond
	leaseShare = 0.5
	leaseMin   = 5
	// leaseSmall is the part of a bucket's burst that the leases of all
	// processes together may hold for ever: a lease of at most
	// leaseSmall x burst / processes never expires (leaseExpire), and a
	// lease is at least that big. Held through a lull, such leases add at
	// most leaseSmall x 2 (a process holds two parts at most) to the
	// bucket's burst: 1%, the accuracy bound. So a key whose limit is far
	// above its traffic (the harness's: 1,000,000/s, a few requests a
	// second each) costs one Redis call per leaseSmall x burst requests,
	// not one per request as with leases that expire between its
	// requests. A bucket of 100 gets nothing of it (0.17 tokens).
	leaseSmall = 0.005
	// leaseKeptIdle is how long a bucket whose leases do not expire is
	// kept unused before the sweep drops it (and the lease it holds).
	leaseKeptIdle = time.Minute
	// heartbeatEvery is how often a process tells the engine it is alive
	// (and learns how many are); a heartbeat lasts heartbeatTTL.
	heartbeatEvery = time.Second
	heartbeatTTL   = 3 * time.Second
	// leaseExpire is how long after its last token is due a lease part
	// may be spent: a lease held through a lull would otherwise add its
	// tokens to a full bucket's burst (tokens taken before an interval,
	// spent in it). Expired tokens pass no one.
	leaseExpire = 250 * time.Millisecond
	// downProbe is how often the refiller tries the engine again while
	// it is unreachable.
	downProbe = 200 * time.Millisecond
	// quotaShare is the part of a quota that the leases of all processes
	// together may hold (1%).
	quotaShare = 0.01
	// quotaSpan is how much of this process's demand a quota lease
	// covers.
	quotaSpan = time.Second
)

// globalLimits is a store's side of its engine's kv.Limits: the
// refiller, the heartbeat, the engine's reachability.
type globalLimits struct {
	eng kv.Limits
	log *zap.Logger
	// tokens and counts queue the leases to refill (each at most once).
	tokens chan *tokenLease
	counts chan *quotaCounter
	// replicas is how many processes were alive at the last heartbeat.
	replicas atomic.Int64
	// down: the last call of the engine failed. Leases are then spent,
	// then a per-process share of each limit, until a call succeeds.
	down atomic.Bool
	// calls counts the round trips for leases (not heartbeats).
	calls atomic.Uint64
	stop  chan struct{}
	done  sync.WaitGroup
	// leased holds the quota counters that hold a lease, to give it back
	// on close.
	leasedMu sync.Mutex
	leased   map[*quotaCounter]struct{}
}

func newGlobalLimits(eng kv.Limits, log *zap.Logger) *globalLimits {
	gl := &globalLimits{
		eng:    eng,
		log:    log,
		tokens: make(chan *tokenLease, 4096),
		counts: make(chan *quotaCounter, 4096),
		stop:   make(chan struct{}),
		leased: make(map[*quotaCounter]struct{}),
	}
	gl.replicas.Store(1)
	if n, err := eng.Heartbeat(heartbeatTTL); err == nil {
		gl.replicas.Store(int64(max(n, 1)))
	}
	gl.done.Add(1)
	go gl.refiller()
	return gl
}

// close stops the refiller and gives back the unspent quota leases.
func (gl *globalLimits) close() {
	close(gl.stop)
	gl.done.Wait()
	gl.leasedMu.Lock()
	var adds []kv.CountAdd
	for c := range gl.leased {
		c.mu.Lock()
		if g := c.g; g.lease > 0 && g.counter != "" {
			adds = append(adds, kv.CountAdd{Counter: g.counter, Limit: g.limit, Add: -g.lease, ExpireAt: g.expire})
			g.lease = 0
		}
		c.mu.Unlock()
	}
	gl.leasedMu.Unlock()
	if len(adds) > 0 && !gl.down.Load() {
		if err := gl.eng.AddCounts(adds); err != nil {
			gl.log.Warn("giving back unspent quota leases", zap.Error(err))
		}
	}
}

// failed records a failed call of the engine.
func (gl *globalLimits) failed(err error) {
	if !gl.down.Swap(true) {
		gl.log.Error("cluster rate limits: the shared store is unreachable; spending leases, then a per-replica share of each limit",
			zap.Int64("replicas", gl.replicas.Load()), zap.Error(err))
	}
}

func (gl *globalLimits) takeTokens(takes []kv.TokenTake) error {
	gl.calls.Add(1)
	err := gl.eng.TakeTokens(takes)
	if err != nil {
		gl.failed(err)
		return err
	}
	gl.down.Store(false)
	return nil
}

func (gl *globalLimits) addCounts(adds []kv.CountAdd) error {
	gl.calls.Add(1)
	err := gl.eng.AddCounts(adds)
	if err != nil {
		gl.failed(err)
		return err
	}
	gl.down.Store(false)
	return nil
}

// refiller refills the queued leases, a batch per round trip, and sends
// the heartbeat.
func (gl *globalLimits) refiller() {
	defer gl.done.Done()
	beat := time.NewTimer(heartbeatEvery)
	defer beat.Stop()
	var tls []*tokenLease
	var takes []kv.TokenTake
	var qcs []*quotaCounter
	var adds []kv.CountAdd
	for {
		tls, qcs = tls[:0], qcs[:0]
		select {
		case <-gl.stop:
			return
		case <-beat.C:
			n, err := gl.eng.Heartbeat(heartbeatTTL)
			if err != nil {
				gl.failed(err)
				beat.Reset(downProbe)
				continue
			}
			if gl.down.Swap(false) {
				gl.log.Info("cluster rate limits: the shared store answers again")
			}
			gl.replicas.Store(int64(max(n, 1)))
			beat.Reset(heartbeatEvery)
			continue
		case l := <-gl.tokens:
			tls = append(tls, l)
		case c := <-gl.counts:
			qcs = append(qcs, c)
		}
	drain:
		for len(tls)+len(qcs) < 4096 {
			select {
			case l := <-gl.tokens:
				tls = append(tls, l)
			case c := <-gl.counts:
				qcs = append(qcs, c)
			default:
				break drain
			}
		}
		if len(tls) > 0 {
			takes = takes[:0]
			for _, l := range tls {
				l.mu.Lock()
				takes = append(takes, l.request())
				l.mu.Unlock()
			}
			err := gl.takeTokens(takes)
			at := time.Now().UnixNano()
			for i, l := range tls {
				l.refilled(&takes[i], at, err)
			}
		}
		if len(qcs) > 0 {
			adds = adds[:0]
			for _, c := range qcs {
				adds = append(adds, c.leaseRequest())
			}
			err := gl.addCounts(adds)
			for i, c := range qcs {
				c.leaseRefilled(&adds[i], err)
			}
		}
	}
}

// leaseKept is the largest lease of a bucket with limit l that does not
// expire, and the smallest lease taken (if leaseCap allows it): leaseSmall
// of the burst, divided among the processes alive.
func (gl *globalLimits) leaseKept(l *Limit) int64 {
	return int64(float64(l.Burst) * leaseSmall / float64(gl.replicas.Load()))
}

// leaseCap is the most tokens a lease of a bucket with limit l may hold.
func (gl *globalLimits) leaseCap(l *Limit) int64 {
	n := float64(gl.replicas.Load())
	byBurst := float64(l.Burst) * leaseShare / n
	byRate := float64(l.perSecond()) * leaseAhead.Seconds() * leaseShare / n
	return max(1, int64(math.Min(byBurst, byRate)))
}

// tokenLease is a bucket's tokens this process took from the engine, for
// a bucket (key's or account's) of the store; see the top of the file.
// mu guards it; fetch serializes the request path's own takes of the
// bucket, so that requests that find no lease wait for one take instead
// of each making one.
type tokenLease struct {
	gl    *globalLimits
	id    string // the engine's bucket name: k/<key id> or a/<account id>/<created>
	fetch sync.Mutex
	mu    sync.Mutex
	cfg   Limit // the limit the leases were taken for
	// parts are the leases, spent in order: a second is taken before the
	// first runs out.
	parts [2]leasePart
	// queued: a refill is queued or in flight.
	queued bool
	// known: the engine answered since the leases were dropped;
	// emptyUntil is when its bucket has a token again after it granted
	// none (unix nanos).
	known      bool
	emptyUntil int64
	// level and levelAt are the engine's bucket level after the last take
	// (maybe negative) and when it was (unix nanos), for the headers.
	level   float64
	levelAt int64
	// demand counts the requests since demandAt, to size the next lease.
	demand   int64
	demandAt int64
	lastUse  int64
	// share is the per-process share of the limit while the engine is
	// unreachable (nil otherwise); owed counts the requests it passed,
	// taken from the engine's bucket (into debt) when it answers again,
	// so that an outage's passes count against the limit after all.
	share *rate.Limiter
	owed  int64
}

// leasePart is one grant of the engine: n tokens, token i (from 0) due
// (i + 1 - before) / rate after at (unix nanos).
type leasePart struct {
	n, spent int64
	before   float64
	at       int64
	perNano  float64
	// kept: the part was at most leaseKept when granted, and its tokens
	// do not expire.
	kept bool
}

// due is how many of the part's tokens are due at t.
func (p *leasePart) due(t int64) int64 {
	d := math.Floor(p.before + float64(t-p.at)*p.perNano)
	return min(max(int64(d), 0), p.n)
}

// dueAt is when token i of the part is due (unix nanos).
func (p *leasePart) dueAt(i int64) int64 {
	return p.at + max(int64(math.Ceil((float64(i+1)-p.before)/p.perNano)), 0)
}

func (gl *globalLimits) newTokenLease(id string, l *Limit) *tokenLease {
	return &tokenLease{gl: gl, id: id, cfg: *l}
}

// take spends a token of the lease (the request path). It reads memory
// only unless the bucket has no lease and its state is unknown.
func (tl *tokenLease) take(l *Limit, now time.Time) (RateState, bool) {
	t := now.UnixNano()
	tl.mu.Lock()
	if tl.cfg != *l {
		tl.adopt(l)
	}
	tl.demand++
	tl.lastUse = t
	if st, ok, decided := tl.spend(t); decided {
		tl.mu.Unlock()
		return st, ok
	}
	tl.mu.Unlock()
	// No lease and the engine's state unknown: take one, one request at
	// a time (the others find it when they get fetch).
	tl.fetch.Lock()
	defer tl.fetch.Unlock()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if st, ok, decided := tl.spend(t); decided {
		return st, ok
	}
	tk := []kv.TokenTake{tl.request()}
	tl.mu.Unlock()
	err := tl.gl.takeTokens(tk)
	tl.mu.Lock()
	at := time.Now().UnixNano()
	tl.apply(&tk[0], at, err)
	st, ok, _ := tl.spend(max(t, at))
	return st, ok
}

// spend decides a request from what the process holds: decided is false
// when only the engine can tell (no lease, no known wait). tl.mu is held.
func (tl *tokenLease) spend(t int64) (st RateState, ok, decided bool) {
	if tl.gl.down.Load() {
		if tl.spendPart(t) == 0 {
			return tl.state(t), true, true
		}
		return tl.spendShare(t)
	}
	tl.share = nil
	wait := tl.spendPart(t)
	switch {
	case wait == 0:
		tl.refillIfLow(t)
		return tl.state(t), true, true
	case wait > 0:
		st = tl.state(t)
		st.RetryAfter = retryAfter(wait - t)
		return st, false, true
	case tl.emptyUntil > t:
		st = tl.state(t)
		st.RetryAfter = retryAfter(tl.emptyUntil - t)
		return st, false, true
	}
	return RateState{}, false, false
}

// spendPart spends a due token of the leases and returns 0; or returns
// when the next token of the leases is due (unix nanos), or -1 when they
// hold no token. tl.mu is held.
func (tl *tokenLease) spendPart(t int64) int64 {
	p := &tl.parts[0]
	for range tl.parts {
		if p.spent < p.n && !p.kept && t-p.dueAt(p.n-1) > int64(leaseExpire) {
			p.spent = p.n // expired: tokens taken too long ago to spend now
		}
		if p.spent < p.n {
			break
		}
		tl.parts[0], tl.parts[1] = tl.parts[1], leasePart{}
	}
	if p.spent >= p.n {
		return -1
	}
	if p.spent < p.due(t) {
		p.spent++
		return 0
	}
	return p.dueAt(p.spent)
}

// unspent is the tokens the leases hold, due or not. tl.mu is held.
func (tl *tokenLease) unspent() int64 {
	return tl.parts[0].n - tl.parts[0].spent + tl.parts[1].n - tl.parts[1].spent
}

// refillIfLow queues a refill when the leases run low. tl.mu is held.
func (tl *tokenLease) refillIfLow(t int64) {
	if tl.queued || tl.parts[1].n > tl.parts[1].spent || tl.gl.down.Load() {
		return
	}
	if tl.unspent() > tl.want(t)/2 {
		return
	}
	tl.queued = true
	select {
	case tl.gl.tokens <- tl:
	default:
		tl.queued = false // the refiller is behind: a later request asks again
	}
}

// want is the size of the next lease: this process's demand over
// leaseSpan, at least leaseMin and leaseKept, at most leaseCap. tl.mu is
// held.
func (tl *tokenLease) want(t int64) int64 {
	most := tl.gl.leaseCap(&tl.cfg)
	least := max(leaseMin, tl.gl.leaseKept(&tl.cfg))
	el := t - tl.demandAt
	if el <= 0 || tl.demandAt == 0 {
		return min(least, most)
	}
	// Demand seen over less than leaseSpan is counted as over leaseSpan:
	// one request a microsecond after a take is not a rate of a million a
	// second, and must not ask for the largest lease.
	el = max(el, int64(leaseSpan))
	d := int64(math.Ceil(float64(tl.demand) * float64(leaseSpan) / float64(el)))
	return min(max(d, least), most)
}

// request is the engine call for the next lease. tl.mu is held.
func (tl *tokenLease) request() kv.TokenTake {
	return kv.TokenTake{Bucket: tl.id, Rate: float64(tl.cfg.perSecond()), Burst: int64(tl.cfg.Burst), Want: tl.want(time.Now().UnixNano()) + tl.owed, Ahead: leaseAhead}
}

// refilled records the engine's answer to a queued request, received
// at (unix nanos): the refiller's side.
func (tl *tokenLease) refilled(tk *kv.TokenTake, at int64, err error) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.queued = false
	tl.apply(tk, at, err)
}

// apply records the engine's answer to a request. tl.mu is held.
func (tl *tokenLease) apply(tk *kv.TokenTake, at int64, err error) {
	if err != nil || tk.Rate != float64(tl.cfg.perSecond()) || tk.Burst != int64(tl.cfg.Burst) {
		return // failed, or taken for a limit that changed meanwhile
	}
	tl.known = true
	tl.level, tl.levelAt = tk.Before-float64(tk.Granted), at
	tl.demand, tl.demandAt = 0, at
	if tk.Granted == 0 {
		tl.emptyUntil = at + int64(tk.Wait)
		return
	}
	tl.emptyUntil = 0
	// The first tokens pay what an outage passed.
	paid := min(tk.Granted, tl.owed)
	tl.owed -= paid
	if paid == tk.Granted {
		return
	}
	part := leasePart{n: tk.Granted - paid, before: tk.Before - float64(paid), at: at, perNano: tk.Rate / 1e9}
	part.kept = part.n <= tl.gl.leaseKept(&tl.cfg)
	if tl.parts[0].spent >= tl.parts[0].n {
		tl.parts[0] = part
	} else {
		tl.parts[1] = part
	}
}

// adopt takes a changed limit: the leases (taken for the old one) are
// dropped, and the next request takes for the new one, which the engine
// adopts keeping what was consumed. tl.mu is held.
func (tl *tokenLease) adopt(l *Limit) {
	tl.cfg = *l
	tl.parts = [2]leasePart{}
	tl.known, tl.emptyUntil, tl.share, tl.owed = false, 0, nil, 0
}

// spendShare decides a request while the engine is unreachable, after
// the leases are spent: a per-process share of the limit, the limit
// divided by the processes last seen alive. tl.mu is held.
func (tl *tokenLease) spendShare(t int64) (RateState, bool, bool) {
	n := tl.gl.replicas.Load()
	if tl.share == nil {
		tl.share = rate.NewLimiter(tl.cfg.perSecond()/rate.Limit(n), max(1, tl.cfg.Burst/int(n)))
	}
	now := time.Unix(0, t)
	ok := tl.share.AllowN(now, 1)
	if ok {
		tl.owed++
	}
	tokens := tl.share.TokensAt(now)
	st := RateState{Limit: tl.cfg.Burst, Remaining: max(int(tokens), 0)}
	perSec := float64(tl.share.Limit())
	st.Reset = int(math.Ceil((float64(tl.share.Burst()) - tokens) / perSec))
	if !ok {
		st.RetryAfter = max(int(math.Ceil((1-tokens)/perSec)), 1)
	}
	return st, ok, true
}

// state is the RateState for the headers: the engine's level at the last
// take, refilled since, plus the tokens of the leases due now. tl.mu is
// held.
func (tl *tokenLease) state(t int64) RateState {
	perSec := float64(tl.cfg.perSecond())
	level := math.Min(float64(tl.cfg.Burst), tl.level+float64(t-tl.levelAt)/1e9*perSec)
	held := int64(0)
	for i := range tl.parts {
		p := &tl.parts[i]
		held += max(p.due(t)-p.spent, 0)
	}
	rem := min(max(int(level), 0)+int(held), tl.cfg.Burst)
	return RateState{Limit: tl.cfg.Burst, Remaining: rem, Reset: int(math.Ceil(float64(tl.cfg.Burst-rem) / perSec))}
}

// refund gives back a token a later check refused.
func (tl *tokenLease) refund() {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	switch {
	case tl.share != nil && tl.owed > 0:
		tl.share.AllowN(time.Now(), -1)
		tl.owed--
	case tl.parts[0].spent > 0:
		tl.parts[0].spent--
	}
}

// accountLimitID is the engine's name of an account's bucket and quota
// counter: an account deleted and created again with the same id starts
// afresh, as on one node.
func accountLimitID(a *Account) string {
	return "a/" + a.ID + "/" + strconv.FormatInt(a.CreatedAt.UnixNano(), 36)
}

// idle reports whether the lease can be dropped with its bucket: no
// refill is in flight, and it was not used for as long as the bucket
// takes to fill and its tokens take to expire.
func (tl *tokenLease) idle(now time.Time) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	full := time.Duration(float64(tl.cfg.Burst) / float64(tl.cfg.perSecond()) * float64(time.Second))
	keep := full + leaseAhead + leaseExpire // what it held has expired
	if tl.gl.leaseKept(&tl.cfg) >= leaseMin {
		// Its leases do not expire: dropping it would only make the next
		// request take a lease again, synchronously.
		keep = max(keep, leaseKeptIdle)
	}
	return !tl.queued && now.UnixNano()-tl.lastUse > int64(keep)
}

// retryAfter is whole seconds, at least 1, for a wait in nanoseconds.
func retryAfter(wait int64) int {
	return max(int(math.Ceil(float64(wait)/1e9)), 1)
}
