package adminapi

import (
	"strconv"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// The scopes a key caller needs, by route.
var (
	scopeRead   = keystore.Scope{Resource: "apikeys", Access: keystore.AccessRead}
	scopeWrite  = keystore.Scope{Resource: "apikeys", Access: keystore.AccessWrite}
	scopeDelete = keystore.Scope{Resource: "apikeys", Access: keystore.AccessDelete}
)

// authorize checks that c may call a route that requires p. The operator
// may call every route.
func authorize(c Caller, p perm) error {
	if c.Operator {
		return nil
	}
	if c.Account == "" {
		// A key caller without an account would otherwise list every
		// account's keys (an empty account filter means all).
		return forbidden("the calling key has no account")
	}
	var need keystore.Scope
	switch p {
	case permOperator:
		return forbidden("this endpoint is only available on the admin endpoint")
	case permRead:
		need = scopeRead
	case permWrite:
		need = scopeWrite
	case permDelete:
		need = scopeDelete
	}
	if !keystore.Granted(c.Scopes, need) {
		return insufficientScope(need.String(), "this request requires the "+need.String()+" scope")
	}
	return nil
}

// canGrant checks that a key caller holds every scope it asks to give a
// key: no escalation. An invalid scope is a 400.
func (c Caller) canGrant(scopes []string, field string) error {
	if c.Operator {
		return nil
	}
	for _, s := range scopes {
		sc, err := keystore.ParseScope(s)
		if err != nil {
			return invalidRequest(field, "%v", err)
		}
		if !keystore.Granted(c.Scopes, sc) {
			return insufficientScope(sc.String(), "the calling key cannot grant the "+sc.String()+" scope, which it does not hold")
		}
	}
	return nil
}

// canChange checks that a key caller holds every scope of k, which it is
// about to patch, activate or regenerate: otherwise it could give itself a
// string for a key more powerful than its own.
func (c Caller) canChange(k *keystore.Key) error {
	if c.Operator {
		return nil
	}
	for _, s := range k.Scopes {
		// A scope that does not parse (never stored: scopes are
		// validated on the way in) counts as not held: fail closed.
		sc, err := keystore.ParseScope(s)
		if err != nil || !keystore.Granted(c.Scopes, sc) {
			return insufficientScope(s, "the key has the "+s+" scope, which the calling key does not hold, so it cannot change the key")
		}
	}
	return nil
}

// canRegenerate is canChange, and a key caller cannot regenerate a key
// that has a rate_limit or quota of its own: those are the operator's
// (canSetLimits), and such a key may be exempt from the limits every key
// the caller creates gets, so a new string for it would be a way around
// them.
func (c Caller) canRegenerate(k *keystore.Key) error {
	if err := c.canChange(k); err != nil {
		return err
	}
	if !c.Operator && (k.RateLimit != nil || k.Quota != nil) {
		return forbidden("the key has a rate_limit or quota set by the operator; only the operator can regenerate it")
	}
	return nil
}

// changeGuard is what patchKey and activateKey check before the call
// (regenerateKey: can, canRegenerate), checked again by the store inside
// the mutation's transaction: the key is c's to see and passes can.
// Without it, a scope added to the key between the check and the write
// would let a weaker key re-activate, un-expire or take a new string for a
// stronger one.
func (c Caller) changeGuard(can func(*keystore.Key) error) keystore.Guard {
	if c.Operator {
		return nil
	}
	return func(k *keystore.Key) error {
		if k.Account != c.Account {
			return errKeyNotFound
		}
		return can(k)
	}
}

// ownKey returns the key with this id if c may see it: another account's
// key is not found, exactly like an unknown id.
func (a *API) ownKey(c Caller, id string) (*keystore.Key, error) {
	k, err := a.store.Key(id)
	if err != nil {
		return nil, keyErr(err)
	}
	if !c.Operator && k.Account != c.Account {
		return nil, errKeyNotFound
	}
	return k, nil
}

// keyErr names the key in the store's not-found.
func keyErr(err error) error {
	if isNotFound(err) {
		return errKeyNotFound
	}
	return err
}

// canSetLimits refuses a key caller that sets a key's rate_limit or quota:
// those are what the operator sells, and a key that could lift its own
// would make them meaningless. Only the operator sets them.
func (c Caller) canSetLimits(rateLimit, quota bool) error {
	if c.Operator || (!rateLimit && !quota) {
		return nil
	}
	field := "rate_limit"
	if !rateLimit {
		field = "quota"
	}
	return forbidden("only the operator can set a key's " + field)
}

// issuer returns what a key caller's create or change keeps to, checked
// by the store inside the transaction that writes it, on the caller's own
// key as it is then (an operator may have shortened its expiry or revoked
// it since the request was authenticated): the calling key must still be
// active, and rule (nil: none) must pass. The operator has no issuer.
func (a *API) issuer(c Caller, rule func(iss, k *keystore.Key) error) *keystore.Issuer {
	if c.Operator {
		return nil
	}
	return &keystore.Issuer{KeyID: c.KeyID, Check: func(iss, k *keystore.Key) error {
		if iss == nil {
			return forbidden("the calling key no longer exists")
		}
		if st := iss.Status(a.store.Now()); st != keystore.StatusActive {
			return forbidden("the calling key is " + st)
		}
		if rule == nil {
			return nil
		}
		return rule(iss, k)
	}}
}

// A key caller's rules, against its own key (iss): what it creates,
// changes or regenerates never outlives it, is never less limited, and is
// of its own type.
//
//   - Expiry: a key caller whose key expires can set no expires_at later
//     than its own, and cannot clear one (null), on any key, its own
//     included (403 naming the latest time it may set). A key it creates
//     without expires_at gets its own: inheriting is friendlier than a
//     refusal and mirrors the limits. It cannot regenerate a key that
//     expires later than its own (or never): it would get a string that
//     outlives it; it can shorten the key's expiry first.
//   - Limits: a key it creates or regenerates gets its own rate_limit and
//     quota, when its key has them (a key caller still cannot set either).
//     An exempt caller's (rate_limit unlimited) is not inherited: the new
//     key gets the configured default limit, as every key without its own
//     does. An inherited quota is the key's own count of the same size.
//   - Type: a key it creates gets its own key's type, and it may give no
//     other, on create or PATCH (the backend receives the type as
//     X-Api-Key-Type and may trust it); it cannot regenerate a key of
//     another type.

// latestExpiry is the latest expires_at a key caller whose key expires at
// t may set, as messages name it: RFC 3339 in UTC, to the second below.
func latestExpiry(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// expiryWithin refuses an expires_at (nil: never) later than the calling
// key's.
func expiryWithin(iss *keystore.Key, at *time.Time) error {
	if iss.ExpiresAt == nil {
		return nil
	}
	latest := latestExpiry(*iss.ExpiresAt)
	switch {
	case at == nil:
		return expiryForbidden("expires_at cannot be null (never): the calling key expires at " + latest + ", the latest expires_at it can set")
	case at.After(*iss.ExpiresAt):
		return expiryForbidden("expires_at is later than the calling key's own expiry: the latest expires_at it can set is " + latest)
	}
	return nil
}

func expiryForbidden(msg string) *apiError {
	e := forbidden(msg)
	e.Field = "expires_at"
	return e
}

// typeAllowed refuses a type other than the calling key's.
func typeAllowed(iss *keystore.Key, typ string) error {
	if typ == iss.Type {
		return nil
	}
	e := forbidden("a key can give keys only its own type, " + strconv.Quote(iss.Type) + ", not " + strconv.Quote(typ))
	e.Field = "type"
	return e
}

// inheritLimits gives k the calling key's rate_limit and quota where k
// has none; an exempt caller's rate_limit is not inherited.
func inheritLimits(iss, k *keystore.Key) {
	if k.RateLimit == nil && iss.RateLimit != nil && !iss.RateLimit.Unlimited {
		rl := *iss.RateLimit
		k.RateLimit = &rl
	}
	if k.Quota == nil && iss.Quota != nil {
		q := *iss.Quota
		k.Quota = &q
	}
}

// createRule is a key caller's rule for a key it creates: k as asked for
// with typ the type it gave ("" for none).
func createRule(typ string) func(iss, k *keystore.Key) error {
	return func(iss, k *keystore.Key) error {
		if k.ExpiresAt == nil && iss.ExpiresAt != nil {
			at := *iss.ExpiresAt
			k.ExpiresAt = &at
		}
		if err := expiryWithin(iss, k.ExpiresAt); err != nil {
			return err
		}
		if typ == "" {
			k.Type = iss.Type
		} else if err := typeAllowed(iss, typ); err != nil {
			return err
		}
		inheritLimits(iss, k)
		return nil
	}
}

// patchRule is a key caller's rule for p applied to k (as it is before).
func patchRule(p keystore.KeyPatch) func(iss, k *keystore.Key) error {
	return func(iss, k *keystore.Key) error {
		switch {
		case p.ClearExpires:
			if err := expiryWithin(iss, nil); err != nil {
				return err
			}
		case p.ExpiresAt != nil:
			if err := expiryWithin(iss, p.ExpiresAt); err != nil {
				return err
			}
		}
		if p.Type != nil && *p.Type != k.Type {
			return typeAllowed(iss, *p.Type)
		}
		return nil
	}
}

// regenerateRule is a key caller's rule for a key it regenerates.
func regenerateRule(iss, k *keystore.Key) error {
	if iss.ExpiresAt != nil && (k.ExpiresAt == nil || k.ExpiresAt.After(*iss.ExpiresAt)) {
		latest := latestExpiry(*iss.ExpiresAt)
		return forbidden("the key expires later than the calling key, which expires at " + latest +
			": a new string for it would outlive the calling key; set the key's expires_at to " + latest + " or earlier first")
	}
	if k.Type != iss.Type {
		return forbidden("the key's type is " + strconv.Quote(k.Type) + ": a key can regenerate only keys of its own type, " + strconv.Quote(iss.Type))
	}
	inheritLimits(iss, k)
	return nil
}
