package keystore

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Audit actions.
const (
	ActionCreated     = "created"
	ActionUpdated     = "updated"
	ActionRevoked     = "revoked"
	ActionActivated   = "activated"
	ActionRegenerated = "regenerated"
)

// Change is one field's old and new value in an audit event.
type Change struct {
	From any `json:"from"`
	To   any `json:"to"`
}

// Event is one audit event of a key.
type Event struct {
	At      time.Time         `json:"at"`
	Action  string            `json:"action"`
	Actor   string            `json:"actor"`
	Changes map[string]Change `json:"changes"`
}

func (t txn) putEvent(keyID string, ev Event) error {
	return t.putJSON(keyE(keyID, newEventID()), ev)
}

// newEventID orders a key's events by time (UUIDv7).
func newEventID() string { return uuid.Must(uuid.NewV7()).String() }

// Audit returns a key's events, newest first.
func (s *Store) Audit(id string) ([]Event, error) {
	var events []Event
	err := s.view(func(t txn) error {
		if _, err := t.getKey(id); err != nil {
			return err
		}
		return t.scan([]byte(pfxEvent+id+"/"), nil, true, true, func(_, val []byte) (bool, error) {
			var ev Event
			if err := json.Unmarshal(val, &ev); err != nil {
				return false, err
			}
			events = append(events, ev)
			return true, nil
		})
	})
	return events, err
}

// createdEvent encodes a new key's created event: an Event whose changes
// are the key's fields, each from null, with typed fields instead of a map
// of interfaces (a bulk load encodes one per key).
// TestCreatedEventJSON holds it to the Event a map would give.
func createdEvent(k *Key, action, actor string) ([]byte, error) {
	type change[T any] struct {
		From *struct{} `json:"from"` // always null
		To   T         `json:"to"`
	}
	type changes struct {
		ExpiresAt *change[*time.Time]        `json:"expires_at,omitempty"`
		Hint      change[string]             `json:"hint"`
		Metadata  *change[map[string]string] `json:"metadata,omitempty"`
		Name      change[string]             `json:"name"`
		Quota     *change[*Quota]            `json:"quota,omitempty"`
		RateLimit *change[*RateLimit]        `json:"rate_limit,omitempty"`
		Scopes    change[[]string]           `json:"scopes"`
		Type      change[string]             `json:"type"`
	}
	ev := struct {
		At      time.Time `json:"at"`
		Action  string    `json:"action"`
		Actor   string    `json:"actor"`
		Changes changes   `json:"changes"`
	}{At: k.CreatedAt, Action: action, Actor: actor, Changes: changes{
		Hint:   change[string]{To: k.Hint},
		Name:   change[string]{To: k.Name},
		Scopes: change[[]string]{To: k.Scopes},
		Type:   change[string]{To: k.Type},
	}}
	if k.ExpiresAt != nil {
		ev.Changes.ExpiresAt = &change[*time.Time]{To: k.ExpiresAt}
	}
	if len(k.Metadata) > 0 {
		ev.Changes.Metadata = &change[map[string]string]{To: k.Metadata}
	}
	if k.Quota != nil {
		ev.Changes.Quota = &change[*Quota]{To: k.Quota}
	}
	if k.RateLimit != nil {
		ev.Changes.RateLimit = &change[*RateLimit]{To: k.RateLimit}
	}
	return json.Marshal(ev)
}

// diff lists the fields that differ between two versions of a key.
func diff(a, b *Key) map[string]Change {
	ch := make(map[string]Change)
	add := func(field string, from, to any) {
		fj, _ := json.Marshal(from)
		tj, _ := json.Marshal(to)
		if string(fj) != string(tj) {
			ch[field] = Change{From: from, To: to}
		}
	}
	add("name", a.Name, b.Name)
	add("scopes", a.Scopes, b.Scopes)
	add("type", a.Type, b.Type)
	add("expires_at", a.ExpiresAt, b.ExpiresAt)
	add("revoked_at", a.RevokedAt, b.RevokedAt)
	add("rate_limit", a.RateLimit, b.RateLimit)
	add("quota", a.Quota, b.Quota)
	add("metadata", a.Metadata, b.Metadata)
	add("hint", a.Hint, b.Hint)
	return ch
}
