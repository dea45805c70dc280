package keystore

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// Quota periods: calendar periods in UTC.
const (
	PeriodDay   = "day"
	PeriodMonth = "month"
)

// Quota is a usage quota of a key or an account: Requests per calendar
// Period (day or month, UTC). Requests that a rate limit or another check
// refused do not count.
type Quota struct {
	Requests int64  `json:"requests"`
	Period   string `json:"period"`
}

// Validate checks a quota's fields.
func (q *Quota) Validate() error {
	if q == nil {
		return nil
	}
	if q.Requests < 1 {
		return fmt.Errorf("quota.requests must be at least 1")
	}
	if q.Period != PeriodDay && q.Period != PeriodMonth {
		return fmt.Errorf("quota.period must be day or month")
	}
	return nil
}

// periodBounds returns the start and end of the period that holds t.
func periodBounds(period string, t time.Time) (start, end time.Time) {
	t = t.UTC()
	if period == PeriodMonth {
		start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
	start = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	return start, start.AddDate(0, 0, 1)
}

// quotaCounter counts a key's or account's requests in the current
// period. It is persisted in batches by the flush loop.
type quotaCounter struct {
	mu      sync.Mutex
	period  int64 // start of the counted period, unix seconds
	used    int64
	flushed quotaCount // what Badger holds
	// g, on an engine with kv.Limits, counts against the engine's
	// counter (globalquota.go); nil counts in this process.
	g *quotaLease
}

// quotaCount is a counter as persisted.
type quotaCount struct {
	Period int64 `json:"period"`
	Used   int64 `json:"used"`
}

// take counts one request if the quota allows it. It returns the end of
// the period, for Retry-After.
func (c *quotaCounter) take(q *Quota, now time.Time) (bool, time.Time) {
	if c.g != nil {
		return c.takeGlobal(q, now)
	}
	start, end := periodBounds(q.Period, now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.period != start.Unix() {
		c.period, c.used = start.Unix(), 0
	}
	if c.used >= q.Requests {
		return false, end
	}
	c.used++
	return true, end
}

// refund uncounts a request that a later check refused.
func (c *quotaCounter) refund(q *Quota, now time.Time) {
	if c.g != nil {
		c.refundGlobal(q, now)
		return
	}
	start, _ := periodBounds(q.Period, now)
	c.mu.Lock()
	if c.period == start.Unix() && c.used > 0 {
		c.used--
	}
	c.mu.Unlock()
}

// usage returns the count of the period holding now and when it resets.
func (c *quotaCounter) usage(q *Quota, now time.Time) (int64, time.Time) {
	start, end := periodBounds(q.Period, now)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.period != start.Unix() {
		return 0, end
	}
	return c.used, end
}

// dirty returns the count to persist, if it changed since the last flush.
func (c *quotaCounter) dirty() (quotaCount, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	qc := quotaCount{Period: c.period, Used: c.used}
	return qc, qc != c.flushed
}

func (c *quotaCounter) markFlushed(qc quotaCount) {
	c.mu.Lock()
	c.flushed = qc
	c.mu.Unlock()
}

func newQuotaCounter(persisted []byte) *quotaCounter {
	c := new(quotaCounter)
	if persisted != nil {
		var qc quotaCount
		if json.Unmarshal(persisted, &qc) == nil {
			c.period, c.used, c.flushed = qc.Period, qc.Used, qc
		}
	}
	return c
}

// quotas holds the key counters by key id. A counter lives as long as its
// key: it survives cache evictions and reloads.
type quotas struct {
	mu sync.Mutex
	m  map[string]*quotaCounter
	// global, if not nil, makes the counters count against the engine.
	global *globalLimits
}

// counter returns the key's counter, loading the persisted count with load
// the first time.
func (qs *quotas) counter(id string, load func() ([]byte, error)) (*quotaCounter, error) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if c, ok := qs.m[id]; ok {
		return c, nil
	}
	b, err := load()
	if err != nil {
		return nil, err
	}
	c := newQuotaCounter(b)
	if qs.global != nil {
		qs.global.attach(c, "k/"+id)
	}
	qs.m[id] = c
	return c, nil
}

func (qs *quotas) get(id string) *quotaCounter {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	return qs.m[id]
}

func (qs *quotas) drop(id string) {
	qs.mu.Lock()
	if c := qs.m[id]; c != nil && qs.global != nil {
		qs.global.detach(c)
	}
	delete(qs.m, id)
	qs.mu.Unlock()
}

func (qs *quotas) each(fn func(id string, c *quotaCounter)) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	for id, c := range qs.m {
		fn(id, c)
	}
}

// QuotaUsage returns how much of its quota a key has used in the current
// period and when the period resets; ok is false for a key without quota.
func (s *Store) QuotaUsage(k *Key) (used int64, resetsAt time.Time, ok bool) {
	if k.Quota == nil {
		return 0, time.Time{}, false
	}
	// Peek: a listing must not load every key's counter into memory.
	c := s.quotas.get(k.ID)
	if c == nil {
		b, err := s.readQuota(keyQK(k.ID))
		if err != nil {
			_, end := periodBounds(k.Quota.Period, s.now())
			return 0, end, true
		}
		c = newQuotaCounter(b)
		if s.global != nil {
			c.g = &quotaLease{gl: s.global, id: "k/" + k.ID}
		}
	}
	if c.g != nil {
		used, resetsAt = c.globalUsage(k.Quota, s.now())
		return used, resetsAt, true
	}
	used, resetsAt = c.usage(k.Quota, s.now())
	return used, resetsAt, true
}

// AccountQuotaUsage is QuotaUsage for an account.
func (s *Store) AccountQuotaUsage(id string) (used int64, resetsAt time.Time, ok bool) {
	st := s.accountState(id)
	if st == nil {
		return 0, time.Time{}, false
	}
	a := st.acct.Load()
	if a.Quota == nil {
		return 0, time.Time{}, false
	}
	if st.quota.g != nil {
		used, resetsAt = st.quota.globalUsage(a.Quota, s.now())
		return used, resetsAt, true
	}
	used, resetsAt = st.quota.usage(a.Quota, s.now())
	return used, resetsAt, true
}
