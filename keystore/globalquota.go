package keystore

import (
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// Cluster-wide quotas (an engine with kv.Limits): a key's and an
// account's count of the period is a counter in the engine, which grants
// counts capped at the quota. Each process takes a lease of counts (at
// most quotaShare of the quota divided among the processes alive, at
// least one) and spends it; the refiller takes the next lease before it
// runs out. The counts granted never exceed the quota, so the cluster
// never passes more than the quota; what it passes less is the leases
// unspent when the quota runs out (at most 1% of the quota or one count
// per process, whichever is larger). A store that closes gives its
// unspent leases back.

// quotaLease is the engine's side of a quotaCounter; the counter's mu
// guards it. The counter's used is the engine's count at the last call
// less the lease this process holds, plus what it spent since: the
// cluster's count as this process knows it.
type quotaLease struct {
	gl *globalLimits
	id string // k/<key id> or a/<account id>/<created>
	// counter is the engine's counter of the period
	// (id/<day|month>/<period start>), expire when the engine may drop
	// it, kind the period (day or month).
	counter string
	expire  time.Time
	kind    string
	// limit is the quota the lease was taken for.
	limit int64
	// lease is the counts held, unspent; queued says a refill is queued
	// or in flight.
	lease  int64
	queued bool
	// known: the engine answered in this period; exhausted: it granted
	// less than asked for (the quota is used up).
	known, exhausted bool
	// seed is the count persisted before the engine held one (an older
	// version's flush): the engine's counter starts from it.
	seed int64
	// outage counts what was passed on the per-process share while the
	// engine was unreachable, to count it there when it answers;
	// outageBudget is that share (set when the outage began).
	outage, outageBudget int64
	inOutage             bool
	demand, demandAt     int64
	// fetch serializes the request path's own takes of the counter.
	fetch sync.Mutex
}

// attach makes c count against the engine; id is k/<key id> or
// accountLimitID.
func (gl *globalLimits) attach(c *quotaCounter, id string) {
	c.mu.Lock()
	c.g = &quotaLease{gl: gl, id: id}
	c.mu.Unlock()
	gl.leasedMu.Lock()
	gl.leased[c] = struct{}{}
	gl.leasedMu.Unlock()
}

// detach stops tracking c (its key or account was deleted).
func (gl *globalLimits) detach(c *quotaCounter) {
	gl.leasedMu.Lock()
	delete(gl.leased, c)
	gl.leasedMu.Unlock()
}

// forgetAccountLimits stops tracking the quota lease of a deleted
// account. s.acctMu is held.
func (s *Store) forgetAccountLimits(id string) {
	if st := s.accounts[id]; st != nil && s.global != nil {
		s.global.detach(st.quota)
	}
}

// globalPeriod moves the lease to the period of kind (day or month)
// starting at start. c.mu is held.
func (c *quotaCounter) globalPeriod(kind string, start, end time.Time) {
	g := c.g
	if c.period != start.Unix() {
		c.period, c.used = start.Unix(), 0
	}
	if g.counter != "" && g.kind == kind && g.expire.After(end) {
		return
	}
	g.seed, g.kind = c.used, kind
	g.counter = g.id + "/" + kind + "/" + strconv.FormatInt(start.Unix(), 10)
	g.expire = end.Add(24 * time.Hour)
	g.lease, g.known, g.exhausted, g.outage, g.inOutage = 0, false, false, 0, false
}

// takeGlobal is take on the engine's counter (the request path): it
// spends the lease, and calls the engine only when it holds none and the
// counter's state is unknown.
func (c *quotaCounter) takeGlobal(q *Quota, now time.Time) (bool, time.Time) {
	start, end := periodBounds(q.Period, now)
	c.mu.Lock()
	c.g.demand++
	if ok, decided := c.spendGlobal(q, start, end); decided {
		c.mu.Unlock()
		return ok, end
	}
	g := c.g
	c.mu.Unlock()
	g.fetch.Lock()
	defer g.fetch.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	// A refill in flight lands first (within the read timeout): a take of
	// our own meanwhile would hold two leases, more than the bound.
	for wait := 0; g.queued && wait < 300; wait++ {
		c.mu.Unlock()
		time.Sleep(time.Millisecond)
		c.mu.Lock()
	}
	if ok, decided := c.spendGlobal(q, start, end); decided {
		return ok, end
	}
	add := []kv.CountAdd{c.leaseRequestLocked()}
	c.mu.Unlock()
	err := g.gl.addCounts(add)
	c.mu.Lock()
	c.applyLease(&add[0], err)
	ok, _ := c.spendGlobal(q, start, end)
	return ok, end
}

// spendGlobal decides a request from what the process holds; decided is
// false when only the engine can tell. c.mu is held.
func (c *quotaCounter) spendGlobal(q *Quota, start, end time.Time) (ok, decided bool) {
	g := c.g
	c.globalPeriod(q.Period, start, end)
	if g.limit != q.Requests {
		g.limit, g.exhausted = q.Requests, false
		g.lease = min(g.lease, max(q.Requests-c.used, 0))
	}
	if g.lease > 0 {
		g.lease--
		c.used++
		c.refillIfLow()
		return true, true
	}
	if g.gl.down.Load() {
		if !g.inOutage {
			g.inOutage = true
			g.outageBudget = max(q.Requests-c.used, 0) / g.gl.replicas.Load()
		}
		if g.outage >= g.outageBudget {
			return false, true
		}
		g.outage++
		c.used++
		return true, true
	}
	if g.exhausted {
		return false, true
	}
	return false, false
}

// quotaLeaseCap is the most counts a lease of the quota may hold.
func (gl *globalLimits) quotaLeaseCap(limit int64) int64 {
	return max(1, int64(float64(limit)*quotaShare/float64(gl.replicas.Load())))
}

// wantLocked is the size of the next lease. c.mu is held.
func (c *quotaCounter) wantLocked(t int64) int64 {
	g := c.g
	most := g.gl.quotaLeaseCap(g.limit)
	el := t - g.demandAt
	if g.demandAt == 0 || el <= 0 {
		return min(leaseMin, most)
	}
	d := int64(math.Ceil(float64(g.demand) * float64(quotaSpan) / float64(el)))
	return min(max(d, leaseMin), most)
}

// refillIfLow queues a refill when the lease runs low. c.mu is held.
func (c *quotaCounter) refillIfLow() {
	g := c.g
	if g.queued || g.exhausted || g.gl.down.Load() || g.lease > c.wantLocked(time.Now().UnixNano())/2 {
		return
	}
	g.queued = true
	select {
	case g.gl.counts <- c:
	default:
		g.queued = false
	}
}

// leaseRequest is the engine call for the next lease of a queued
// counter: the refiller's side.
func (c *quotaCounter) leaseRequest() kv.CountAdd {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaseRequestLocked()
}

// leaseRequestLocked is the engine call for the next lease, with the
// counts passed during an outage. c.mu is held.
func (c *quotaCounter) leaseRequestLocked() kv.CountAdd {
	g := c.g
	top := max(c.wantLocked(time.Now().UnixNano())-g.lease, 1) // a lease tops up to the wanted size
	return kv.CountAdd{Counter: g.counter, Limit: g.limit, Add: top + g.outage, Seed: g.seed, ExpireAt: g.expire}
}

// leaseRefilled records the engine's answer to a queued request.
func (c *quotaCounter) leaseRefilled(add *kv.CountAdd, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.g.queued = false
	c.applyLease(add, err)
}

// applyLease records the engine's answer to a request. c.mu is held.
func (c *quotaCounter) applyLease(add *kv.CountAdd, err error) {
	g := c.g
	if err != nil || add.Counter != g.counter || add.Limit != g.limit {
		return // failed, or for a period or quota that changed meanwhile
	}
	g.known = true
	g.demand, g.demandAt = 0, time.Now().UnixNano()
	counted := min(add.Granted, g.outage) // the outage's counts come first
	g.outage -= counted
	if g.outage == 0 {
		g.inOutage = false
	}
	g.lease += add.Granted - counted
	g.exhausted = add.Granted < add.Add
	c.used = add.Used - g.lease + g.outage
}

// refundGlobal gives back a count a later check refused.
func (c *quotaCounter) refundGlobal(q *Quota, now time.Time) {
	start, _ := periodBounds(q.Period, now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.period != start.Unix() || c.used == 0 {
		return
	}
	c.used--
	if c.g.inOutage && c.g.outage > 0 {
		c.g.outage--
		return
	}
	c.g.lease++
}

// globalUsage is the cluster's count of the period holding now: the
// engine's counter less this process's unspent lease (the leases other
// processes hold count as used). It calls the engine (the admin path).
func (c *quotaCounter) globalUsage(q *Quota, now time.Time) (int64, time.Time) {
	start, end := periodBounds(q.Period, now)
	c.mu.Lock()
	c.globalPeriod(q.Period, start, end)
	g := c.g
	add := []kv.CountAdd{{Counter: g.counter, Limit: q.Requests, Seed: g.seed, ExpireAt: g.expire}}
	c.mu.Unlock()
	if err := g.gl.addCounts(add); err != nil {
		return c.usage(q, now) // what this process knows
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if add[0].Counter == g.counter {
		c.used = add[0].Used - g.lease + g.outage
	}
	return c.used, end
}
