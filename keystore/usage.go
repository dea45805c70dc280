package keystore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Usage history: per key and per account, per hour and per day, the
// requests that passed and those refused, by outcome.
//
// The request path adds to counters of the key's cache entry (usageSlots,
// two slots indexed by the hour's parity); every flush drains them into
// the store's pending points (usagePending), and writes those: each
// stored point is read, added to and written back with a TTL (its
// retention) in one transaction, so that on a shared engine the points of
// several processes sum (a concurrent add conflicts, and runs again on the
// fresh value). A point is written only while its key (or account)
// exists: the flush and a key's deletion do not leave orphans.

// Usage layout (see layout.go): s/k/<id>/<interval>/<start> and
// s/a/<account>/<interval>/<start>, interval h or d, start the interval's
// start as 16 hex digits of unix seconds; the value is usageCounts,
// encoded by appendUsage.
const (
	pfxUsageKey  = "s/k/"
	pfxUsageAcct = "s/a/"
)

// Usage intervals.
const (
	UsageHour = "hour"
	UsageDay  = "day"
)

// Retention defaults and bounds of the usage points (Options).
const (
	DefaultUsageHourRetention = 7 * 24 * time.Hour
	DefaultUsageDayRetention  = 90 * 24 * time.Hour
	// MaxUsageHourRetention and MaxUsageDayRetention bound the points a
	// key or account can hold (744 hourly and 1,830 daily): a deletion
	// removes them in one transaction.
	MaxUsageHourRetention = 31 * 24 * time.Hour
	MaxUsageDayRetention  = 1830 * 24 * time.Hour
	// MaxUsagePoints is the most points one query returns.
	MaxUsagePoints = 2000
)

// usageDrainEvery is how often the entries' counters are drained into
// the pending points besides the flushes: a slot must be drained within
// the hour after its own (see usageSlots), and last_used_flush may be
// longer than that.
const usageDrainEvery = 15 * time.Minute

// usageOutcomes is how many outcomes name a key, and so are counted: OK,
// and every refusal from KeyRevoked on (the lookup found the key).
const usageOutcomes = len(outcomeCodes) - int(KeyRevoked) + 1

// usageIndex is an outcome's counter in usageCounts, or -1 for an outcome
// that names no key.
func usageIndex(o Outcome) int {
	switch {
	case o == OK:
		return 0
	case o >= KeyRevoked && int(o) < len(outcomeCodes):
		return int(o-KeyRevoked) + 1
	}
	return -1
}

// usageOutcome is the outcome of counter i.
func usageOutcome(i int) Outcome {
	if i == 0 {
		return OK
	}
	return KeyRevoked + Outcome(i-1)
}

// usageSlots are a cache entry's counts since the last drain, by outcome,
// in two slots: a request adds to the slot of its hour's parity. A drain
// takes both slots (Swap) and then reads the clock: the slot of the
// current hour's parity holds that hour's requests, the other the previous
// hour's, as long as every slot is drained within the hour after its own
// (flushes and drains are minutes apart). The counts are 32-bit: a slot
// holds one drain period's requests of one key in one process.
type usageSlots [2][usageOutcomes]atomic.Uint32

// add counts one request of outcome o at now (unix nanos). It allocates
// nothing and takes no lock.
func (u *usageSlots) add(o Outcome, now int64) {
	if i := usageIndex(o); i >= 0 {
		u[(now/int64(time.Hour))&1][i].Add(1)
	}
}

// usageCounts are the requests of one interval, by outcome (usageIndex),
// as the store keeps them until a flush writes them.
type usageCounts [usageOutcomes]uint64

func (c *usageCounts) add(o *usageCounts) {
	for i := range c {
		c[i] += o[i]
	}
}

// usageSlot names a point of one key or account: its interval ('h' or
// 'd') and start (unix seconds).
type usageSlot struct {
	interval byte
	start    int64
}

// usagePending are the points drained from the cache and not yet written,
// by key id and by account id, and the entries dropped from the cache
// with counts not yet drained.
type usagePending struct {
	mu    sync.Mutex
	keys  map[string]map[usageSlot]*usageCounts
	accts map[string]map[usageSlot]*usageCounts
	// retired are entries dropped from the cache (evicted, invalidated)
	// with counts: the next drain drains them. Keeping the entry, not its
	// counts, costs the request that evicts it one append, and a request
	// still counting on it meanwhile is not lost.
	retired []*entry
}

func newUsagePending() *usagePending {
	return &usagePending{keys: map[string]map[usageSlot]*usageCounts{}, accts: map[string]map[usageSlot]*usageCounts{}}
}

// addTo adds c to the point of id at slot in m.
func addTo(m map[string]map[usageSlot]*usageCounts, id string, slot usageSlot, c *usageCounts) {
	pts := m[id]
	if pts == nil {
		pts = make(map[usageSlot]*usageCounts, 2)
		m[id] = pts
	}
	if p := pts[slot]; p != nil {
		p.add(c)
		return
	}
	cp := *c
	pts[slot] = &cp
}

// add adds the counts of hour (unix seconds of its start) to the hourly
// and daily points of the key and its account.
func (p *usagePending) add(id, account string, hour int64, c *usageCounts) {
	h := usageSlot{'h', hour}
	d := usageSlot{'d', hour - hour%secondsPerDay}
	p.mu.Lock()
	defer p.mu.Unlock()
	addTo(p.keys, id, h, c)
	addTo(p.keys, id, d, c)
	addTo(p.accts, account, h, c)
	addTo(p.accts, account, d, c)
}

// take returns the pending points and starts anew.
func (p *usagePending) take() (keys, accts map[string]map[usageSlot]*usageCounts) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys, accts = p.keys, p.accts
	p.keys, p.accts = map[string]map[usageSlot]*usageCounts{}, map[string]map[usageSlot]*usageCounts{}
	return keys, accts
}

// giveBack returns points a flush could not write, for the next flush.
func (p *usagePending) giveBack(writes []usageWrite) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range writes {
		into := p.keys
		if w.account {
			into = p.accts
		}
		addTo(into, w.id, w.slot, w.c)
	}
}

// dropKey forgets a deleted key's pending points (its account's stay;
// counts of its entries still to drain are written for the account only,
// since a key's points are written only while it exists).
func (p *usagePending) dropKey(id string) {
	p.mu.Lock()
	delete(p.keys, id)
	p.mu.Unlock()
}

const secondsPerHour, secondsPerDay = 3600, 86400

// any reports whether a slot holds a count.
func (u *usageSlots) any() bool {
	for slot := range u {
		for i := range u[slot] {
			if u[slot][i].Load() != 0 {
				return true
			}
		}
	}
	return false
}

// retireUsage keeps an entry dropped from the cache until the next drain,
// if it holds counts. It runs on the request path when a fill evicts an
// entry: no allocation but the list's growth.
//
// A request that found the entry before it was dropped may count in it
// after: the flag set first here and the count's check of it after its
// add (countUsage) make sure that one of the two keeps the entry.
func (s *Store) retireUsage(e *entry) {
	e.usageRetired.Store(true)
	if !e.usage.any() {
		return
	}
	s.keepUsage(e)
}

// keepUsage puts a retired entry in the list the next drain reads, once.
func (s *Store) keepUsage(e *entry) {
	if !e.usageKept.CompareAndSwap(false, true) {
		return
	}
	s.usage.mu.Lock()
	s.usage.retired = append(s.usage.retired, e)
	s.usage.mu.Unlock()
}

// countUsage counts a request's outcome in its key's entry (the request
// path: an atomic add, and a load of a flag that is false unless the
// entry was dropped from the cache meanwhile).
func (s *Store) countUsage(e *entry, o Outcome, now int64) {
	e.usage.add(o, now)
	if e.usageRetired.Load() {
		s.keepUsage(e)
	}
}

// drainUsage moves an entry's counts into the pending points.
func (s *Store) drainUsage(e *entry) {
	var c [2]usageCounts
	var counted [2]bool
	for slot := range e.usage {
		for i := range e.usage[slot] {
			if n := e.usage[slot][i].Swap(0); n != 0 {
				c[slot][i] = uint64(n)
				counted[slot] = true
			}
		}
	}
	if !counted[0] && !counted[1] {
		return
	}
	// The clock is read after the swaps: every request counted happened
	// before it.
	hour := s.now().Unix() / secondsPerHour
	for slot := range c {
		if !counted[slot] {
			continue
		}
		h := hour
		if int64(slot) != hour&1 {
			h--
		}
		s.usage.add(e.snap.key.ID, e.snap.key.Account, h*secondsPerHour, &c[slot])
	}
}

// drainAllUsage drains the entries dropped from the cache since the last
// drain, and every cached entry.
func (s *Store) drainAllUsage() {
	s.usage.mu.Lock()
	retired := s.usage.retired
	s.usage.retired = nil
	s.usage.mu.Unlock()
	for _, e := range retired {
		// Unmarked before the drain: a count added after it keeps the
		// entry again, for the next drain.
		e.usageKept.Store(false)
		s.drainUsage(e)
		// A use after the entry was dropped (a request that found it
		// before, or whose fill was not cached) is written by the next
		// last-used flush.
		if lu := e.lastUsed.Load(); lu > e.flushed.Load() {
			e.flushed.Store(lu)
			s.keepPendingUse(e.snap.key.ID, lu)
		}
	}
	s.cache.each(s.drainUsage)
}

// usagePointsPerTxn bounds the points one flush transaction writes.
const usagePointsPerTxn = 250

// flushUsage writes the pending usage points of keys and accounts. A
// point it could not write waits for the next flush.
func (s *Store) flushUsage() error {
	s.drainAllUsage()
	keys, accts := s.usage.take()
	var writes []usageWrite
	for _, m := range []struct {
		points  map[string]map[usageSlot]*usageCounts
		account bool
	}{{keys, false}, {accts, true}} {
		for _, id := range slices.Sorted(maps.Keys(m.points)) {
			for slot, c := range m.points[id] {
				writes = append(writes, usageWrite{m.account, id, slot, c})
			}
		}
	}
	return s.writeUsage(writes)
}

// usageWrite is one point to add to: of an account's, or of a key's.
type usageWrite struct {
	account bool
	id      string
	slot    usageSlot
	c       *usageCounts
}

// writeUsage adds the points to the stored ones, usagePointsPerTxn a
// transaction. A point is written only while its key (or account)
// exists; on a failure the points not written are given back.
func (s *Store) writeUsage(writes []usageWrite) error {
	for start := 0; start < len(writes); start += usagePointsPerTxn {
		chunk := writes[start:min(start+usagePointsPerTxn, len(writes))]
		now := s.now()
		err := s.update(func(t txn) error {
			owners := map[string]bool{}
			for _, w := range chunk {
				pfx, owner := pfxUsageKey, keyK(w.id)
				if w.account {
					pfx, owner = pfxUsageAcct, keyA(w.id)
				}
				ok, seen := owners[string(owner)]
				if !seen {
					var err error
					if ok, err = t.exists(owner); err != nil {
						return err
					}
					owners[string(owner)] = ok
				}
				if !ok {
					continue // deleted meanwhile (by another process)
				}
				ttl := s.usageTTL(w.slot, now)
				if ttl <= 0 {
					continue // past its retention
				}
				key := usageKey(pfx, w.id, w.slot)
				old, err := t.getRaw(key)
				if err != nil {
					return err
				}
				stored, err := decodeUsage(old)
				if err != nil {
					return fmt.Errorf("usage point %s: %w", key, err)
				}
				for i, n := range w.c {
					if n != 0 {
						stored[usageOutcome(i).Code()] += n
					}
				}
				if err := t.setTTL(key, appendUsage(nil, stored), ttl); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			s.usage.giveBack(writes[start:])
			return err
		}
	}
	return nil
}

// usageTTL is how long a point is kept from now: until its interval's end
// plus the interval's retention.
func (s *Store) usageTTL(slot usageSlot, now time.Time) time.Duration {
	length, keep := time.Hour, s.hourRetention
	if slot.interval == 'd' {
		length, keep = 24*time.Hour, s.dayRetention
	}
	return time.Unix(slot.start, 0).Add(length + keep).Sub(now)
}

// usageKey is the key of a point.
func usageKey(pfx, id string, slot usageSlot) []byte {
	b := make([]byte, 0, len(pfx)+len(id)+3+16)
	b = append(append(append(b, pfx...), id...), '/', slot.interval, '/')
	return fmt.Appendf(b, "%016x", uint64(slot.start))
}

// usagePrefix is the prefix of every point of id (interval 0) or of its
// points of one interval.
func usagePrefix(pfx, id string, interval byte) []byte {
	b := append([]byte(pfx+id), '/')
	if interval != 0 {
		b = append(b, interval, '/')
	}
	return b
}

// appendUsage encodes a point's counts: a version byte (1), then for each
// outcome code with a count, in code order, the code's length (a byte),
// the code and the count (uvarint). Codes, not outcome numbers, are
// stored, so that a build with more outcomes reads the points of another.
func appendUsage(b []byte, counts map[string]uint64) []byte {
	b = append(b, 1)
	for _, code := range slices.Sorted(maps.Keys(counts)) {
		if n := counts[code]; n != 0 && len(code) <= 255 {
			b = append(b, byte(len(code)))
			b = append(b, code...)
			b = binary.AppendUvarint(b, n)
		}
	}
	return b
}

var errUsageValue = errors.New("malformed usage value")

// decodeUsage decodes appendUsage's encoding (nil: no counts).
func decodeUsage(b []byte) (map[string]uint64, error) {
	out := map[string]uint64{}
	if len(b) == 0 {
		return out, nil
	}
	if b[0] != 1 {
		return nil, errUsageValue
	}
	for rest := b[1:]; len(rest) > 0; {
		l := int(rest[0])
		if len(rest) < 1+l {
			return nil, errUsageValue
		}
		code := string(rest[1 : 1+l])
		n, size := binary.Uvarint(rest[1+l:])
		if size <= 0 {
			return nil, errUsageValue
		}
		out[code] += n
		rest = rest[1+l+size:]
	}
	return out, nil
}

// UsageQuery selects a usage series.
type UsageQuery struct {
	// Interval is UsageHour (the default) or UsageDay.
	Interval string
	// From is the start of the series, rounded down to its interval
	// (UTC); zero means 24 hours before To for hourly points, 30 days
	// for daily ones.
	From time.Time
	// To is the end of the series (exclusive: the last point is the
	// interval that contains the instant before it); zero means now.
	To time.Time
}

// UsagePoint is one interval of a usage series.
type UsagePoint struct {
	// Start is the interval's start (UTC).
	Start time.Time
	// Passed counts the requests the key let through (outcome ok).
	Passed uint64
	// Refused counts the refused requests that named the key, by outcome
	// code: every refusal code that names a key is present, zeros
	// included.
	Refused map[string]uint64
}

// Usage is a dense usage series: a point per interval from From to To,
// zeros included.
type Usage struct {
	Interval string
	From, To time.Time
	Points   []UsagePoint
}

// RefusalCodes are the refusal codes a usage point counts: the outcomes
// after the lookup, which name a key.
func RefusalCodes() []string {
	codes := make([]string, 0, usageOutcomes-1)
	for i := 1; i < usageOutcomes; i++ {
		codes = append(codes, usageOutcome(i).Code())
	}
	return codes
}

// normalize checks q and applies its defaults: the interval's length and
// letter, and From rounded down.
func (q *UsageQuery) normalize(now time.Time) (length time.Duration, interval byte, err error) {
	switch q.Interval {
	case "", UsageHour:
		q.Interval, length, interval = UsageHour, time.Hour, 'h'
	case UsageDay:
		length, interval = 24*time.Hour, 'd'
	default:
		return 0, 0, invalid("interval", "interval must be hour or day")
	}
	if q.To.IsZero() {
		q.To = now
	}
	q.To = q.To.UTC()
	if q.From.IsZero() {
		back := 24 * time.Hour
		if interval == 'd' {
			back = 30 * 24 * time.Hour
		}
		q.From = q.To.Add(-back)
	}
	q.From = q.From.UTC().Truncate(length)
	if !q.From.Before(q.To) {
		return 0, 0, invalid("from", "from must be before to")
	}
	if n := usagePoints(q.From, q.To, length); n > MaxUsagePoints {
		return 0, 0, invalid("from", "the series would have %d points; at most %d are returned at once (narrow from and to)", n, MaxUsagePoints)
	}
	return length, interval, nil
}

// usagePoints is the number of points of length from from to to (from
// before to): more than MaxUsagePoints for a span longer than they cover,
// without overflowing on the longest spans (time.Time.Sub saturates).
func usagePoints(from, to time.Time, length time.Duration) int {
	d := to.Sub(from)
	if d > time.Duration(MaxUsagePoints)*length {
		return MaxUsagePoints + 1
	}
	return int((d + length - 1) / length)
}

// KeyUsage returns a key's usage series. The points are what flushes have
// written: this process's requests of the last LastUsedFlush are not in
// them yet (nor, on a shared engine, the other processes'). ErrNotFound
// if the key does not exist; *InvalidError for a bad query.
func (s *Store) KeyUsage(id string, q UsageQuery) (*Usage, error) {
	return s.usageSeries(pfxUsageKey, id, keyK(id), q)
}

// AccountUsage returns the usage series of an account: the sum of its
// keys' (those deleted since included). ErrNotFound if the account does
// not exist.
func (s *Store) AccountUsage(id string, q UsageQuery) (*Usage, error) {
	return s.usageSeries(pfxUsageAcct, id, keyA(id), q)
}

func (s *Store) usageSeries(pfx, id string, owner []byte, q UsageQuery) (*Usage, error) {
	length, interval, err := q.normalize(s.now())
	if err != nil {
		return nil, err
	}
	u := &Usage{Interval: q.Interval, From: q.From, To: q.To}
	n := usagePoints(q.From, q.To, length)
	u.Points = make([]UsagePoint, n)
	codes := RefusalCodes()
	for i := range u.Points {
		p := &u.Points[i]
		p.Start = q.From.Add(time.Duration(i) * length)
		p.Refused = make(map[string]uint64, len(codes))
		for _, c := range codes {
			p.Refused[c] = 0
		}
	}
	prefix := usagePrefix(pfx, id, interval)
	startKey := usageKey(pfx, id, usageSlot{interval, q.From.Unix()})
	endKey := usageKey(pfx, id, usageSlot{interval, q.To.Unix()})
	err = s.view(func(t txn) error {
		ok, err := t.exists(owner)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		return t.scan(prefix, startKey, false, true, func(key, val []byte) (bool, error) {
			if bytes.Compare(key, endKey) >= 0 {
				return false, nil
			}
			start, err := strconv.ParseUint(string(key[len(prefix):]), 16, 64)
			if err != nil {
				return true, nil // not a point of this layout
			}
			i := int(time.Unix(int64(start), 0).Sub(q.From) / length)
			if i < 0 || i >= n {
				return true, nil
			}
			counts, err := decodeUsage(val)
			if err != nil {
				return false, fmt.Errorf("usage point %s: %w", key, err)
			}
			p := &u.Points[i]
			for code, c := range counts {
				if code == OK.Code() {
					p.Passed += c
				} else {
					p.Refused[code] += c
				}
			}
			return true, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}
