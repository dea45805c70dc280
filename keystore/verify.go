package keystore

import (
	"errors"
	"math"
	"time"
)

// Outcome is the result of verifying a credential, in the order the checks
// run.
type Outcome uint8

// Outcomes. OK is the only one that lets a request through.
const (
	OK Outcome = iota
	MissingKey
	MalformedKey
	InvalidKey
	KeyRevoked
	KeyExpired
	AccountInactive
	InsufficientScope
	RateLimited
	QuotaExceeded
)

var outcomeCodes = [...]string{
	OK:                "ok",
	MissingKey:        "missing_key",
	MalformedKey:      "malformed_key",
	InvalidKey:        "invalid_key",
	KeyRevoked:        "key_revoked",
	KeyExpired:        "key_expired",
	AccountInactive:   "account_inactive",
	InsufficientScope: "insufficient_scope",
	RateLimited:       "rate_limited",
	QuotaExceeded:     "quota_exceeded",
}

// Code is the machine-readable error code of the outcome.
func (o Outcome) Code() string {
	if int(o) < len(outcomeCodes) {
		return outcomeCodes[o]
	}
	return "unknown"
}

// Result is what a verification found. Key is the store's shared snapshot:
// callers must not modify it.
type Result struct {
	Outcome Outcome
	// Key is set from InvalidKey on (for every outcome after the lookup).
	// It holds what verification reads (id, name, account, type, scopes,
	// expiry, revocation, rate limit, quota), not the metadata, hint or
	// timestamps: a cache miss reads only the key's hash entry.
	Key *Key
	// Scopes are the key's granted scopes, parsed.
	Scopes []Scope
	// ScopeHeader is the granted scopes, sorted, space-separated.
	ScopeHeader string
	// Memo is the key's slot for a value derived from Key and
	// ScopeHeader, shared by the key's requests; set with Key.
	Memo *Memo
	// AccountStatus is the key's account's status.
	AccountStatus string
	// Required is the scope the request needed, if any.
	Required Scope
	// Rate is the state of the rate limit that applied (the key's, or
	// the account's when that one is tighter or refused the request).
	// Rate.Limit is 0 when no limit applied.
	Rate RateState
	// RetryAfter is the whole seconds (at least 1) after which a
	// RateLimited or QuotaExceeded request may succeed.
	RetryAfter int
	// ByAccount says that the account's limit, not the key's, refused a
	// RateLimited or QuotaExceeded request.
	ByAccount bool
}

// Verifier checks credentials of one key format against a store.
type Verifier struct {
	Store  *Store
	Format Format
	// AcceptForeign looks up credentials that do not match Format (but are
	// 16 to 256 printable ASCII characters) instead of refusing them as
	// malformed: for keys imported from another system.
	AcceptForeign bool
	// DefaultLimit is the rate limit of keys without their own; nil means
	// DefaultLimit (100 per second), a zero Limit no limit.
	DefaultLimit *Limit
}

// Foreign key bounds for AcceptForeign.
const (
	MinForeignLen = 16
	MaxForeignLen = 256
)

// Verify runs the checks in order: format, lookup by SHA-256, revoked,
// expired, account standing, scope, the key's rate limit, the account's
// rate limit, the key's quota, the account's quota. req is checked only if
// needScope. A refused request spends no token and counts against no
// quota. A non-nil error is a storage failure, not a refusal.
//
// The SHA-256 is computed for every credential of the format's shape
// (prefix, length, alphabet), known or not, and the lookup is by hash:
// there is no string comparison of secrets whose timing could tell an
// attacker how much of a guess was right.
//
// The checksum is checked after the cache: a cached hash is a stored key's,
// proved exactly by its SHA-256, whose checksum was checked when the key was
// first verified, so a request for a cached key does not read the
// checksum's tables. A key not in the cache has its checksum checked
// before the filter and the store are asked: a mistyped or made-up key
// never reaches them, as before.
func (v *Verifier) Verify(cred string, req Scope, needScope bool) (Result, error) {
	if cred == "" {
		return Result{Outcome: MissingKey}, nil
	}
	if v.Format.CheckShape(cred) != nil && !(v.AcceptForeign && foreignShaped(cred)) {
		return Result{Outcome: MalformedKey}, nil
	}
	t := v.Store.now()
	if v.Store.isStale.Load() {
		return Result{}, ErrStale
	}
	e, h := v.Store.lookup(HashKey(cred))
	var err error
	if e == nil || e.vouched != v.vouch() {
		// Not cached, or not checked by this format policy (cached by
		// VerifyHash, which never saw the plaintext, or under another
		// config): the whole format, checksum included.
		if v.Format.Check(cred) != nil && !(v.AcceptForeign && foreignShaped(cred)) {
			return Result{Outcome: MalformedKey}, nil
		}
		if e == nil {
			e, err = v.Store.lookupMiss(h, v.vouch())
		}
	}
	return v.decideEntry(e, err, t, req, needScope)
}

// vouch names what the whole format check of v accepts beyond the shape
// (which every request checks): the checksum, and foreign keys. An entry
// filled after such a check is vouched for by it (entry.vouched); 0 is no
// check.
func (v *Verifier) vouch() uint8 {
	p := uint8(1)
	if v.Format.Checksum {
		p |= 2
	}
	if v.AcceptForeign {
		p |= 4
	}
	return p
}

// VerifyHash runs Verify's checks after the format's, from the lookup on,
// for the key whose SHA-256 is h: for a caller that keeps a key's hash and
// never its plaintext, such as a web page's session, and checks the key
// again on every request as if it were sent.
func (v *Verifier) VerifyHash(h Hash, req Scope, needScope bool) (Result, error) {
	t := v.Store.now()
	if v.Store.isStale.Load() {
		return Result{}, ErrStale
	}
	e, _ := v.Store.lookup(h)
	var err error
	if e == nil {
		e, err = v.Store.lookupMiss(h, 0)
	}
	return v.decideEntry(e, err, t, req, needScope)
}

// decideEntry is Verify's decision on the entry a lookup at t found (nil:
// none) or its error.
func (v *Verifier) decideEntry(e *entry, err error, t time.Time, req Scope, needScope bool) (Result, error) {
	now := t.UnixNano()
	if err != nil {
		return Result{}, err
	}
	if e == nil || (e.until != 0 && now >= e.until) {
		return Result{Outcome: InvalidKey}, nil
	}
	sn := &e.snap
	acct := sn.account.acct.Load()
	res := Result{
		Key:           &sn.key,
		Scopes:        sn.scopes,
		ScopeHeader:   sn.scopeHeader,
		Memo:          &sn.memo,
		AccountStatus: acct.Status,
		Required:      req,
	}
	res.Outcome = decide(sn, acct.Status, now, req, needScope)
	if res.Outcome == OK {
		res.Outcome = v.limit(e, t, &res)
	}
	if res.Outcome == OK {
		// Seconds are precise enough for last-used, and skipping the store
		// within a second keeps hot keys' cache lines clean.
		if now-e.lastUsed.Load() >= int64(time.Second) {
			e.lastUsed.Store(now)
		}
	}
	v.Store.countUsage(e, res.Outcome, now)
	return res, nil
}

// limit applies the rate limits, then the quotas. What an earlier check
// took is given back when a later one refuses.
func (v *Verifier) limit(e *entry, t time.Time, res *Result) Outcome {
	sn := &e.snap
	kb, ab, ok := v.allow(e, t, res)
	if !ok {
		res.RetryAfter = res.Rate.RetryAfter
		return RateLimited
	}
	end, byAccount, ok := count(sn, t)
	if ok {
		return OK
	}
	res.ByAccount = byAccount
	for _, b := range [2]*bucket{kb, ab} {
		if b != nil {
			b.refund(t)
		}
	}
	res.RetryAfter = max(int(math.Ceil(end.Sub(t).Seconds())), 1)
	return QuotaExceeded
}

// count counts the request against the key's quota, then the account's.
// On refusal it returns the end of the refusing quota's period, and
// whether that quota is the account's.
func count(sn *snapshot, t time.Time) (end time.Time, byAccount, ok bool) {
	if sn.qc != nil {
		ok, end := sn.qc.take(sn.quota, t)
		if !ok {
			return end, false, false
		}
	}
	if aq := sn.account.acct.Load().Quota; aq != nil {
		ok, end := sn.account.quota.take(aq, t)
		if !ok {
			if sn.qc != nil {
				sn.qc.refund(sn.quota, t)
			}
			return end, true, false
		}
	}
	return time.Time{}, false, true
}

// allow applies the key's rate limit, then its account's; it records the
// state in res.Rate and returns the buckets that gave a token. A token the
// key's bucket gave is returned if the account's refuses.
func (v *Verifier) allow(e *entry, t time.Time, res *Result) (kb, ab *bucket, ok bool) {
	sn := &e.snap
	lim := v.DefaultLimit
	switch {
	case sn.ownLimit:
		lim = &sn.limit
	case lim == nil:
		lim = &DefaultLimit
	}
	if !lim.IsZero() {
		var st RateState
		kb, st, ok = v.Store.limits.take(e, lim, t)
		res.Rate = st
		if !ok {
			return nil, nil, false
		}
	}
	al := sn.account.limit.Load()
	if al == nil {
		return kb, nil, true
	}
	ab = sn.account.bucket(al)
	st, ok := ab.take(al, t)
	if !ok {
		if kb != nil {
			kb.refund(t)
		}
		res.Rate = st
		res.ByAccount = true
		return nil, nil, false
	}
	if res.Rate.Limit == 0 || st.Remaining < res.Rate.Remaining {
		res.Rate = st
	}
	return kb, ab, true
}

// decide is the verification decision after the lookup. It does no I/O.
func decide(sn *snapshot, accountStatus string, now int64, req Scope, needScope bool) Outcome {
	switch {
	case sn.revoked:
		return KeyRevoked
	case sn.expires != 0 && now >= sn.expires:
		return KeyExpired
	case !AccountActive(accountStatus):
		return AccountInactive
	case needScope && !Granted(sn.scopes, req):
		return InsufficientScope
	}
	return OK
}

func foreignShaped(cred string) bool {
	if len(cred) < MinForeignLen || len(cred) > MaxForeignLen {
		return false
	}
	for i := 0; i < len(cred); i++ {
		if cred[i] <= ' ' || cred[i] > '~' {
			return false
		}
	}
	return true
}

// lookup finds the cache entry for a hash, in memory only; nil if the
// hash is not cached. It returns the hash too, for lookupMiss.
func (s *Store) lookup(h Hash) (*entry, Hash) {
	e := s.cache.get(h)
	if e != nil {
		s.cache.hit()
	}
	return e, h
}

// lookupMiss finds a hash that is not cached: the filter of stored hashes,
// then the store, and caches what it read. It returns nil for an unknown
// hash. Unknown hashes are not cached (that would be memory an attacker
// could fill): the filter answers nearly all of them from memory. vouched
// is the format policy that checked the key (entry.vouched), 0 for a
// caller that never saw its plaintext (VerifyHash). It is a function of its own so that h, which
// the engine's transaction captures (and so moves to the heap), is copied
// there only on a miss, never on a cache hit.
func (s *Store) lookupMiss(h Hash, vouched uint8) (*entry, error) {
	s.stats.cacheMisses.Add(1)
	if !s.filters.mayContain(&h) {
		return nil, nil
	}
	if s.readsDown.Load() {
		return nil, ErrStale // a shared engine that just failed a read
	}
	s.missReads.Add(1)
	gen := s.cache.gen.Load()
	var k *Key
	err := s.view(func(t txn) error {
		var err error
		k, err = t.keyForHash(h)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		s.readFailed()
		return nil, err
	}
	e := &entry{vouched: vouched}
	switch {
	case k.Hash == h:
	case k.PrevHash != nil && *k.PrevHash == h:
		e.until = unixNano(k.PrevUntil)
	default:
		return nil, nil // a stale index entry
	}
	acct := s.accountState(k.Account)
	if acct == nil {
		return nil, nil
	}
	var qc *quotaCounter
	if k.Quota != nil {
		qc, err = s.quotas.counter(k.ID, func() ([]byte, error) { return s.readQuota(keyQK(k.ID)) })
		if err != nil {
			return nil, err
		}
	}
	e.snap.init(k, acct, qc)
	if k.LastUsedAt != nil {
		e.flushed.Store(k.LastUsedAt.UnixNano())
		e.lastUsed.Store(k.LastUsedAt.UnixNano())
	}
	if testHookBeforeFill != nil {
		testHookBeforeFill()
	}
	s.cache.put(h, e, gen)
	return e, nil
}

// testHookBeforeFill, when set by a test, runs between a cache miss's read
// and its fill: the moment a concurrent change must not be lost in.
var testHookBeforeFill func()
