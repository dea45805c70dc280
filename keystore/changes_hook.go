package keystore

import (
	"slices"
	"time"
)

// The kinds of committed change that Options.OnChange is told of (the
// apikey app emits them as Caddy events of the same names).
const (
	ChangeKeyCreated           = "key_created"
	ChangeKeyUpdated           = "key_updated"
	ChangeKeyRevoked           = "key_revoked"
	ChangeKeyActivated         = "key_activated"
	ChangeKeyRegenerated       = "key_regenerated"
	ChangeKeyDeleted           = "key_deleted"
	ChangeKeyPurged            = "key_purged"
	ChangeKeyExpiring          = "key_expiring"
	ChangeKeyExpired           = "key_expired"
	ChangeAccountCreated       = "account_created"
	ChangeAccountUpdated       = "account_updated"
	ChangeAccountStatusChanged = "account_status_changed"
)

// Actors of the changes the store makes by itself.
const (
	// ActorPurge is the purge sweep of revoked keys.
	ActorPurge = "purge"
	// ActorExpiry is the sweep that notices expiring and expired keys.
	ActorExpiry = "expiry"
	// ActorSystem is the store itself (the default account, created by
	// Open).
	ActorSystem = "system"
)

// KeyInfo names a key in a Mutation: never its string or hash.
type KeyInfo struct {
	ID        string
	Name      string
	Account   string
	Type      string
	Hint      string
	Scopes    []string
	ExpiresAt *time.Time
}

// Mutation is a committed change, as Options.OnChange is told of it.
type Mutation struct {
	// Kind is one of the constants above (ChangeKeyCreated, ...).
	Kind string
	// At is when the change was made.
	At time.Time
	// Actor made the change, as audit events name it: "admin",
	// "key:<id>", or one of the Actor constants.
	Actor string
	// Key is the key changed (after the change; before it for a delete
	// or purge); nil for an account change.
	Key *KeyInfo
	// Account is the account changed, after the change; nil for a key
	// change.
	Account *Account
	// Changes are the fields changed, from and to, as the audit event
	// holds them (key updates, revokes, activations, regenerates) or as
	// an account's JSON names them (account updates). Nil for creates,
	// deletes, purges and expiry notices.
	Changes map[string]Change
}

// changed tells Options.OnChange of a committed change. It is called
// after the change is durable and outside the store's locks, so that a
// hook may call the store.
func (s *Store) changed(m Mutation) {
	if s.onChange != nil {
		s.onChange(m)
	}
}

// keyInfo is what a Mutation tells of k.
func keyInfo(k *Key) *KeyInfo {
	var exp *time.Time
	if k.ExpiresAt != nil {
		t := *k.ExpiresAt
		exp = &t
	}
	return &KeyInfo{ID: k.ID, Name: k.Name, Account: k.Account, Type: k.Type, Hint: k.Hint, Scopes: slices.Clone(k.Scopes), ExpiresAt: exp}
}

// actionKinds maps audit actions to change kinds.
var actionKinds = map[string]string{
	ActionCreated:     ChangeKeyCreated,
	ActionUpdated:     ChangeKeyUpdated,
	ActionRevoked:     ChangeKeyRevoked,
	ActionActivated:   ChangeKeyActivated,
	ActionRegenerated: ChangeKeyRegenerated,
}

// accountChanges lists the fields that differ between two versions of an
// account, by their JSON names.
func accountChanges(a, b *Account) map[string]Change {
	ch := changeSet{}
	add := ch.add
	add("name", a.Name, b.Name)
	add("status", a.Status, b.Status)
	add("rate_limit", a.RateLimit, b.RateLimit)
	add("quota", a.Quota, b.Quota)
	add("max_keys", a.MaxKeys, b.MaxKeys)
	return ch
}

// accountMutations are the changes an account update makes:
// account_updated, and account_status_changed too when the status
// changed.
func accountMutations(before, after *Account, actor string) []Mutation {
	ch := accountChanges(before, after)
	ms := []Mutation{{Kind: ChangeAccountUpdated, At: after.UpdatedAt, Actor: actor, Account: after, Changes: ch}}
	if st, ok := ch["status"]; ok {
		ms = append(ms, Mutation{Kind: ChangeAccountStatusChanged, At: after.UpdatedAt, Actor: actor, Account: after,
			Changes: map[string]Change{"status": st}})
	}
	return ms
}
