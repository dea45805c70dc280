package keystore

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore/badgerstore"
	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// Errors the store returns; the admin API maps them to status codes.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// InvalidError is bad input: the named field is wrong. Nothing was changed.
type InvalidError struct {
	Field   string
	Message string
}

func (e *InvalidError) Error() string { return e.Message }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Options configure a Store.
type Options struct {
	// Dir is the Badger directory, opened with badgerstore when Engine is
	// nil.
	Dir string
	// Engine is the store's persistence; nil opens Badger in Dir. The
	// store closes it on Close, and on a failed Open.
	Engine kv.Engine
	// Logger receives Badger's warnings and the store's own messages.
	Logger *zap.Logger
	// CacheSize bounds the number of verified keys kept in memory; 0 means
	// DefaultCacheSize.
	CacheSize int
	// LastUsedFlush is how often in-memory last-used times are written to
	// Badger; 0 means 30s.
	LastUsedFlush time.Duration
	// UsageHourRetention is how long hourly usage points are kept after
	// their hour (0: DefaultUsageHourRetention, at most
	// MaxUsageHourRetention); UsageDayRetention is the same for daily
	// points (0: DefaultUsageDayRetention, at most MaxUsageDayRetention).
	// A point's retention is set when it is written.
	UsageHourRetention time.Duration
	UsageDayRetention  time.Duration
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
	// MaxStaleness applies to a shared engine (kv.Shared, as redisstore):
	// how long the store goes on verifying keys without confirming that
	// it knows every change the other processes made; after it, Verify
	// fails with ErrStale until the engine answers again. 0 means
	// DefaultMaxStaleness.
	MaxStaleness time.Duration
	// On an engine with kv.Limits (redisstore), rate limits and quotas
	// hold for every process of the engine together (globallimit.go),
	// unless Now is set: the engine's clock decides their refills, so a
	// store with a clock of its own (tests) counts them in its process.
	//
	// OnChange, if not nil, is told of every mutation this store commits
	// (not of the changes other processes of a shared engine make), after
	// it is durable and outside the store's locks; see Mutation. It runs
	// on the goroutine that made the change.
	OnChange func(Mutation)
}

// Store is the key store: Badger for persistence, memory for verification.
// It is safe for concurrent use. Every mutation is durable (fsynced) before
// it returns, and invalidates the cache before it returns.
type Store struct {
	eng    kv.Engine
	log    *zap.Logger
	now    func() time.Time
	cache  *cache
	limits *limiters
	quotas *quotas
	// global is the engine's side of the rate limits and quotas on an
	// engine with kv.Limits (cluster mode); nil counts in this process.
	global *globalLimits
	closed atomic.Bool

	// accounts are all held in memory; a key snapshot points at its
	// account's state, so a status change applies to the next request.
	// acctMu serializes account mutations and guards accounts; acctIndex
	// mirrors accounts for the lock-free reads of the verification path.
	acctMu    sync.RWMutex
	accounts  map[string]*accountState
	acctIndex sync.Map

	// pendingUse holds last-used times of cache entries dropped before a
	// flush wrote them (id -> unix nanos).
	pendingMu  sync.Mutex
	pendingUse map[string]int64

	// usage holds the usage points drained from the cache and not yet
	// written (see usage.go); hourRetention and dayRetention are how long
	// written ones are kept.
	usage         *usagePending
	hourRetention time.Duration
	dayRetention  time.Duration

	// commits counts the write transactions committed to Badger.
	commits atomic.Uint64
	// missReads counts the Badger reads of the verification path (cache
	// misses the hash filter let through).
	missReads atomic.Uint64

	// filters holds the filter of stored hashes that answers unknown keys.
	filters filters

	// importMu serializes imports: their hashes are checked before the
	// bulk write, which has no conflict detection.
	importMu sync.Mutex

	// lastPurge is when the last purge sweep started (unix nanos).
	lastPurge atomic.Int64

	// On a shared engine: maxStale is MaxStaleness (0 for an engine of
	// its own), confirmed when the store last confirmed that it knew
	// every change (unix nanos), stopFollow ends the following of
	// changes, and ready is closed once init has read the accounts, so
	// that followed changes apply after them.
	maxStale   int64
	confirmed  atomic.Int64
	isStale    atomic.Bool
	readsDown  atomic.Bool // a read on the request path failed: misses fail fast
	stopFollow func()
	ready      chan struct{}

	onChange func(Mutation)
	stats    counters

	flushEvery time.Duration
	flushMu    sync.Mutex // one flush at a time, and no delete during one
	stop       chan struct{}
	done       sync.WaitGroup
}

// accountState is an account as the verification path sees it, shared by
// reference with every snapshot of its keys: a change applies to their next
// request.
type accountState struct {
	acct  atomic.Pointer[Account]
	limit atomic.Pointer[Limit]  // the account's own limit; nil = none
	rate  atomic.Pointer[bucket] // its bucket, created on first use
	quota *quotaCounter          // its quota count
	keys  keyCount               // the keys it holds, for max_keys
	// global, if not nil, makes the bucket and the quota count the
	// engine's (kv.Limits).
	global *globalLimits
}

// newAccountState is the state of account a, with its persisted quota
// count.
func (s *Store) newAccountState(a *Account, persistedQuota []byte) *accountState {
	st := &accountState{quota: newQuotaCounter(persistedQuota), global: s.global}
	if s.global != nil {
		s.global.attach(st.quota, accountLimitID(a))
	}
	st.set(a)
	return st
}

// set installs a new version of the account.
func (st *accountState) set(a *Account) {
	if a.RateLimit != nil && !a.RateLimit.Unlimited {
		l := a.RateLimit.Effective(Limit{})
		st.limit.Store(&l)
	} else {
		st.limit.Store(nil)
	}
	st.acct.Store(a)
}

// Open opens (creating if needed) the store in opts.Dir, ensures the
// default account exists, and starts the background flush of last-used
// times and value-log garbage collection.
func Open(opts Options) (*Store, error) {
	if opts.Engine == nil && opts.Dir == "" {
		return nil, errors.New("key store directory is required")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	ownClock := opts.Now != nil
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.LastUsedFlush <= 0 {
		opts.LastUsedFlush = 30 * time.Second
	}
	if err := checkRetention(&opts); err != nil {
		if opts.Engine != nil {
			opts.Engine.Close()
		}
		return nil, err
	}
	eng := opts.Engine
	if eng == nil {
		b, err := badgerstore.Open(opts.Dir, opts.Logger)
		if err != nil {
			return nil, err
		}
		eng = b
	}
	s := &Store{
		eng:        eng,
		log:        opts.Logger,
		now:        opts.Now,
		accounts:   make(map[string]*accountState),
		pendingUse: make(map[string]int64),
		flushEvery: opts.LastUsedFlush,
		stop:       make(chan struct{}),
		limits:     newLimiters(),
		quotas:     &quotas{m: make(map[string]*quotaCounter)},
		onChange:   opts.OnChange,

		usage:         newUsagePending(),
		hourRetention: opts.UsageHourRetention,
		dayRetention:  opts.UsageDayRetention,
	}
	if lim, ok := eng.(kv.Limits); ok && !ownClock {
		s.global = newGlobalLimits(lim, s.log)
		s.limits.global, s.quotas.global = s.global, s.global
	}
	s.cache = newCache(opts.CacheSize, s.keepPendingUse)
	s.cache.retired = s.retireUsage
	s.filters.built = make(chan struct{})
	s.ready = make(chan struct{})
	if err := s.follow(opts.MaxStaleness); err != nil {
		s.closeGlobal()
		eng.Close()
		return nil, err
	}
	if err := s.init(); err != nil {
		close(s.ready) // before stopFollow, which waits for a change that waits for it
		if s.stopFollow != nil {
			s.stopFollow()
		}
		s.closeGlobal()
		eng.Close()
		return nil, err
	}
	close(s.ready)
	s.startFilterBuild()
	s.done.Add(1)
	go s.background()
	return s, nil
}

// init checks the schema, loads the accounts and creates the default one.
func (s *Store) init() error {
	err := s.update(func(t txn) error {
		b, err := t.getRaw([]byte(schemaKey))
		if err != nil {
			return err
		}
		if b == nil {
			if err := t.set([]byte(revIndexKey), []byte{}); err != nil {
				return err
			}
			return t.set([]byte(schemaKey), []byte(schemaValue))
		}
		schema := string(b)
		switch schema {
		case schemaValue:
			return nil
		case schema1, schema2:
			// Schema 3 reads everything schemas 1 and 2 wrote; the marker
			// keeps their builds, which cannot read binary key records (nor,
			// schema 1, binary hash entries), from opening the store once
			// this one has written them.
			return t.set([]byte(schemaKey), []byte(schemaValue))
		}
		return fmt.Errorf("key store schema %q is not supported (want %s)", schema, schemaValue)
	})
	if err != nil {
		return err
	}
	if err := s.indexRevoked(); err != nil {
		return fmt.Errorf("indexing revoked keys: %w", err)
	}
	err = s.view(func(t txn) error {
		return t.scan([]byte(pfxAccount), nil, false, true, func(_, val []byte) (bool, error) {
			a, err := decodeAccount(val)
			if err != nil {
				return false, err
			}
			q, err := t.getRaw(keyQA(a.ID))
			if err != nil {
				return false, err
			}
			st := s.newAccountState(a, q)
			s.accounts[a.ID] = st
			s.acctIndex.Store(a.ID, st)
			return true, nil
		})
	})
	if err != nil {
		return err
	}
	if _, ok := s.accounts[DefaultAccount]; ok {
		return nil
	}
	_, err = s.CreateAccountBy(Account{ID: DefaultAccount, Name: "Default", Status: AccountOpen}, ActorSystem)
	return err
}

// closeGlobal stops the refiller of the rate limits' and quotas' leases
// and gives back the unspent quota leases.
func (s *Store) closeGlobal() {
	if s.global != nil {
		s.global.close()
	}
}

// Closed reports whether Close was called.
func (s *Store) Closed() bool { return s.closed.Load() }

// Close flushes last-used times, stops the background work and closes
// Badger. It is safe to call more than once.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.stop)
	if s.stopFollow != nil {
		s.stopFollow()
	}
	s.done.Wait()
	s.stopFilterBuilds()
	s.closeGlobal()
	flushErr := s.Flush()
	return errors.Join(flushErr, s.eng.Close())
}

func (s *Store) background() {
	defer s.done.Done()
	flush := time.NewTicker(s.flushEvery)
	defer flush.Stop()
	gc := time.NewTicker(10 * time.Minute)
	defer gc.Stop()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	// The usage counters are drained at least this often, however far
	// apart the flushes are (see usageSlots).
	drain := time.NewTicker(usageDrainEvery)
	defer drain.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-flush.C:
			if err := s.Flush(); err != nil {
				s.log.Error("flushing last-used times and quota counts", zap.Error(err))
			}
		case <-gc.C:
			s.eng.Maintain()
		case <-sweep.C:
			s.limits.sweep(s.now())
		case <-drain.C:
			s.drainAllUsage()
		}
	}
}

// Commits is the number of write transactions committed to Badger since
// the store was opened: tests use it to show that verification writes
// nothing.
func (s *Store) Commits() uint64 { return s.commits.Load() }

func (s *Store) keepPendingUse(id string, lastUsed int64) {
	s.pendingMu.Lock()
	if lastUsed > s.pendingUse[id] {
		s.pendingUse[id] = lastUsed
	}
	s.pendingMu.Unlock()
}

// Flush writes to Badger what the verification path keeps in memory: the
// last-used times and quota counts that changed since the last flush, and
// the usage counts. It runs every LastUsedFlush, on Close, and never on
// the request path. A crash loses at most what changed since the last
// flush.
func (s *Store) Flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	err := s.flushLastUsed()
	if err == nil {
		err = s.flushQuotas()
	}
	err = errors.Join(err, s.flushUsage())
	s.stats.flushed(err)
	return err
}

// checkRetention applies the usage retentions' defaults and bounds.
func checkRetention(opts *Options) error {
	for _, r := range []struct {
		d        *time.Duration
		def, max time.Duration
		name     string
	}{
		{&opts.UsageHourRetention, DefaultUsageHourRetention, MaxUsageHourRetention, "hourly"},
		{&opts.UsageDayRetention, DefaultUsageDayRetention, MaxUsageDayRetention, "daily"},
	} {
		switch {
		case *r.d == 0:
			*r.d = r.def
		case *r.d < 0 || *r.d > r.max:
			return fmt.Errorf("the retention of %s usage points must be from 0 to %s, not %s", r.name, r.max, *r.d)
		}
	}
	return nil
}

// flushChunk bounds the writes of one flush transaction.
const flushChunk = 1000

func (s *Store) flushLastUsed() error {
	// Copy the pending uses; they stay visible to Key until written.
	s.pendingMu.Lock()
	uses := make(map[string]int64, len(s.pendingUse))
	for id, at := range s.pendingUse {
		uses[id] = at
	}
	s.pendingMu.Unlock()

	type mark struct {
		e  *entry
		at int64
	}
	var marks []mark
	s.cache.each(func(e *entry) {
		lu := e.lastUsed.Load()
		if lu <= e.flushed.Load() {
			return
		}
		marks = append(marks, mark{e, lu})
		if lu > uses[e.snap.key.ID] {
			uses[e.snap.key.ID] = lu
		}
	})
	ids := make([]string, 0, len(uses))
	for id := range uses {
		ids = append(ids, id)
	}
	for start := 0; start < len(ids); start += flushChunk {
		chunk := ids[start:min(start+flushChunk, len(ids))]
		err := s.update(func(t txn) error {
			for _, id := range chunk {
				if err := s.writeLastUsed(t, id, uses[id]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err // the pending uses stay for the next flush
		}
	}
	for _, m := range marks {
		m.e.flushed.Store(m.at)
	}
	s.pendingMu.Lock()
	for id, at := range s.pendingUse {
		if at <= uses[id] {
			delete(s.pendingUse, id)
		}
	}
	s.pendingMu.Unlock()
	return nil
}

// writeLastUsed stores a key's last use in u/, apart from the record: a
// flush of many keys writes 8 bytes each instead of re-encoding records.
//
// It does not read the record to check that the key still exists: deletes
// hold flushMu, as the flush does, and remove the key's pending use and
// cache entries before they release it, so every id a flush writes is of a
// stored key. (Reading each record would touch one page of the record
// table per used key and flush.)
func (s *Store) writeLastUsed(t txn, id string, at int64) error {
	stored, err := t.getLastUsed(id)
	if err != nil || at <= stored {
		return err
	}
	if stored == 0 {
		// A key's first use, or a use of a key deleted meanwhile (a
		// delete removes the last use with the key; a request that found
		// the key before may note its use after): written only while the
		// key exists.
		if ok, err := t.exists(keyK(id)); err != nil || !ok {
			return err
		}
	}
	return t.putLastUsed(id, at)
}

func (s *Store) flushQuotas() error {
	var keys []quotaWrite
	s.quotas.each(func(id string, c *quotaCounter) {
		if qc, dirty := c.dirty(); dirty {
			keys = append(keys, quotaWrite{keyQK(id), keyK(id), c, qc})
		}
	})
	if err := s.writeQuotas(keys); err != nil {
		return err
	}
	// The accounts' counts are collected and written under acctMu: an
	// account deleted and created again with the same id in between would
	// otherwise get the old account's count (read back at the next start).
	s.acctMu.RLock()
	defer s.acctMu.RUnlock()
	var accts []quotaWrite
	for id, st := range s.accounts {
		if qc, dirty := st.quota.dirty(); dirty {
			accts = append(accts, quotaWrite{keyQA(id), keyA(id), st.quota, qc})
		}
	}
	return s.writeQuotas(accts)
}

// quotaWrite is a dirty quota count to write. owner is the record the
// count belongs to: a count is written only while it exists, so a flush
// racing with a delete leaves no orphan.
type quotaWrite struct {
	key, owner []byte
	c          *quotaCounter
	qc         quotaCount
}

// writeQuotas writes counts, flushChunk a transaction, and marks them
// flushed.
func (s *Store) writeQuotas(writes []quotaWrite) error {
	for start := 0; start < len(writes); start += flushChunk {
		chunk := writes[start:min(start+flushChunk, len(writes))]
		err := s.update(func(t txn) error {
			for _, w := range chunk {
				if owner, err := t.getRaw(w.owner); err != nil || owner == nil {
					if err != nil {
						return err
					}
					continue
				}
				if err := t.putJSON(w.key, w.qc); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, w := range chunk {
			w.c.markFlushed(w.qc)
		}
	}
	return nil
}
