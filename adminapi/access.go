package adminapi

import (
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
