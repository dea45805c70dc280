package keystore

import (
	"errors"
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
	Key *Key
	// Scopes are the key's granted scopes, parsed.
	Scopes []Scope
	// ScopeHeader is the granted scopes, sorted, space-separated.
	ScopeHeader string
	// AccountStatus is the key's account's status.
	AccountStatus string
	// Required is the scope the request needed, if any.
	Required Scope
}

// Verifier checks credentials of one key format against a store.
type Verifier struct {
	Store  *Store
	Format Format
	// AcceptForeign looks up credentials that do not match Format (but are
	// 16 to 256 printable ASCII characters) instead of refusing them as
	// malformed: for keys imported from another system.
	AcceptForeign bool
}

// Foreign key bounds for AcceptForeign.
const (
	MinForeignLen = 16
	MaxForeignLen = 256
)

// Verify runs the checks in order: format, lookup by SHA-256, revoked,
// expired, account standing, scope. req is checked only if needScope. A
// non-nil error is a storage failure, not a refusal.
//
// The SHA-256 is computed for every well-formed credential, known or not, and
// the lookup is by hash: there is no string comparison of secrets whose
// timing could tell an attacker how much of a guess was right.
func (v *Verifier) Verify(cred string, req Scope, needScope bool) (Result, error) {
	if cred == "" {
		return Result{Outcome: MissingKey}, nil
	}
	if v.Format.Check(cred) != nil && !(v.AcceptForeign && foreignShaped(cred)) {
		return Result{Outcome: MalformedKey}, nil
	}
	now := v.Store.now().UnixNano()
	e, err := v.Store.lookup(HashKey(cred))
	if err != nil {
		return Result{}, err
	}
	if e == nil || (e.until != 0 && now >= e.until) {
		return Result{Outcome: InvalidKey}, nil
	}
	sn := e.snap
	acct := sn.account.acct.Load()
	res := Result{
		Key:           sn.key,
		Scopes:        sn.scopes,
		ScopeHeader:   sn.scopeHeader,
		AccountStatus: acct.Status,
		Required:      req,
	}
	res.Outcome = decide(sn, acct.Status, now, req, needScope)
	if res.Outcome == OK {
		// Seconds are precise enough for last-used, and skipping the store
		// within a second keeps hot keys' cache lines clean.
		if now-e.lastUsed.Load() >= int64(time.Second) {
			e.lastUsed.Store(now)
		}
	}
	return res, nil
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

// lookup finds the cache entry for a hash, reading Badger on a miss. It
// returns nil for an unknown hash. Unknown hashes are not cached: Badger's
// bloom filters answer them from memory, and a negative cache would be
// memory an attacker could fill.
func (s *Store) lookup(h Hash) (*entry, error) {
	if e := s.cache.get(h); e != nil {
		return e, nil
	}
	gen := s.cache.gen.Load()
	var k *Key
	err := s.view(func(t txn) error {
		id, err := t.idForHash(h)
		if err != nil {
			return err
		}
		k, err = t.getKey(id)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	e := &entry{}
	switch {
	case k.Hash == h:
	case k.PrevHash != nil && *k.PrevHash == h:
		e.until = k.PrevUntil.UnixNano()
	default:
		return nil, nil // a stale index entry
	}
	acct := s.accountState(k.Account)
	if acct == nil {
		return nil, nil
	}
	e.snap = newSnapshot(k, acct)
	if k.LastUsedAt != nil {
		e.flushed.Store(k.LastUsedAt.UnixNano())
		e.lastUsed.Store(k.LastUsedAt.UnixNano())
	}
	s.cache.put(h, e, gen)
	return e, nil
}
