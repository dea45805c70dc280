package keystore

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
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
	// Dir is the Badger directory.
	Dir string
	// Logger receives Badger's warnings and the store's own messages.
	Logger *zap.Logger
	// CacheSize bounds the number of verified keys kept in memory; 0 means
	// DefaultCacheSize.
	CacheSize int
	// LastUsedFlush is how often in-memory last-used times are written to
	// Badger; 0 means 30s.
	LastUsedFlush time.Duration
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
}

// Store is the key store: Badger for persistence, memory for verification.
// It is safe for concurrent use. Every mutation is durable (fsynced) before
// it returns, and invalidates the cache before it returns.
type Store struct {
	db     *badger.DB
	log    *zap.Logger
	now    func() time.Time
	cache  *cache
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

	// commits counts the write transactions committed to Badger.
	commits atomic.Uint64

	// lastPurge is when the last purge sweep started (unix nanos).
	lastPurge atomic.Int64

	flushEvery time.Duration
	flushMu    sync.Mutex // one flush at a time
	stop       chan struct{}
	done       sync.WaitGroup
}

type accountState struct {
	acct atomic.Pointer[Account]
}

// Open opens (creating if needed) the store in opts.Dir, ensures the
// default account exists, and starts the background flush of last-used
// times and value-log garbage collection.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("key store directory is required")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.LastUsedFlush <= 0 {
		opts.LastUsedFlush = 30 * time.Second
	}
	db, err := openBadger(opts.Dir, opts.Logger)
	if err != nil {
		return nil, err
	}
	s := &Store{
		db:         db,
		log:        opts.Logger,
		now:        opts.Now,
		accounts:   make(map[string]*accountState),
		pendingUse: make(map[string]int64),
		flushEvery: opts.LastUsedFlush,
		stop:       make(chan struct{}),
	}
	s.cache = newCache(opts.CacheSize, s.keepPendingUse)
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	s.done.Add(1)
	go s.background()
	return s, nil
}

// init checks the schema, loads the accounts and creates the default one.
func (s *Store) init() error {
	err := s.update(func(t txn) error {
		item, err := t.tx.Get([]byte(schemaKey))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return t.set([]byte(schemaKey), []byte(schemaValue))
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if string(v) != schemaValue {
				return fmt.Errorf("key store schema %q is not supported (want %s)", v, schemaValue)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	err = s.view(func(t txn) error {
		return t.scan([]byte(pfxAccount), nil, false, true, func(_, val []byte) (bool, error) {
			a, err := decodeAccount(val)
			if err != nil {
				return false, err
			}
			st := new(accountState)
			st.acct.Store(a)
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
	_, err = s.CreateAccount(Account{ID: DefaultAccount, Name: "Default", Status: AccountOpen})
	return err
}

// Close flushes last-used times, stops the background work and closes
// Badger. It is safe to call more than once.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.stop)
	s.done.Wait()
	flushErr := s.FlushLastUsed()
	return errors.Join(flushErr, s.db.Close())
}

func (s *Store) background() {
	defer s.done.Done()
	flush := time.NewTicker(s.flushEvery)
	defer flush.Stop()
	gc := time.NewTicker(10 * time.Minute)
	defer gc.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-flush.C:
			if err := s.FlushLastUsed(); err != nil {
				s.log.Error("flushing last-used times", zap.Error(err))
			}
		case <-gc.C:
			s.runGC()
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

// FlushLastUsed writes the in-memory last-used times that changed since the
// last flush to Badger, in one durable transaction per batch. It never runs
// on the request path.
func (s *Store) FlushLastUsed() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()

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
	if len(uses) == 0 {
		return nil
	}
	err := s.update(func(t txn) error {
		for id, at := range uses {
			k, err := t.getKey(id)
			if errors.Is(err, ErrNotFound) {
				continue // deleted since it was used
			}
			if err != nil {
				return err
			}
			ts := time.Unix(0, at).UTC()
			if k.LastUsedAt != nil && !ts.After(*k.LastUsedAt) {
				continue
			}
			k.LastUsedAt = &ts
			if err := t.putKey(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err // the pending uses stay for the next flush
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
