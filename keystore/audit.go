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

// created lists a new key's fields as the changes of its created event.
func created(k *Key) map[string]Change {
	ch := map[string]Change{
		"name":   {To: k.Name},
		"scopes": {To: k.Scopes},
		"type":   {To: k.Type},
		"hint":   {To: k.Hint},
	}
	if k.ExpiresAt != nil {
		ch["expires_at"] = Change{To: k.ExpiresAt}
	}
	if k.RateLimit != nil {
		ch["rate_limit"] = Change{To: k.RateLimit}
	}
	if k.Quota != nil {
		ch["quota"] = Change{To: k.Quota}
	}
	if len(k.Metadata) > 0 {
		ch["metadata"] = Change{To: k.Metadata}
	}
	return ch
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
