package keystore

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protowire"
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

// An audit event (e/<key id>/<event id>) is written as eventV1 followed
// by a protobuf message (protowire):
//
//	1 at             message {1 seconds sint64, 2 nanos uint32}
//	2 action, 3 actor string
//	4 change         message {1 field string, 2 from, 3 to: each the
//	                 value's JSON, absent for null}, repeated, in the
//	                 order of the field names
//
// A created event is about half its JSON (142 against 269 bytes for a key
// of the load harness, TestEventRoundTrip), and a bulk load writes one a
// key. Events of schemas 1 and 2 (JSON, first byte '{') are still read.
const eventV1 = 0x01

const (
	evAt protowire.Number = iota + 1
	evAction
	evActor
	evChange
)

func (t txn) putEvent(keyID string, ev Event) error {
	b, err := encodeEvent(ev)
	if err != nil {
		return err
	}
	return t.set(keyE(keyID, newEventID()), b)
}

// encodeEvent encodes an audit event.
func encodeEvent(ev Event) ([]byte, error) {
	b := appendEventHead(ev.At, ev.Action, ev.Actor)
	for _, name := range slices.Sorted(maps.Keys(ev.Changes)) {
		c := ev.Changes[name]
		var err error
		if b, err = appendChange(b, name, c.From, c.To); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func appendEventHead(at time.Time, action, actor string) []byte {
	b := make([]byte, 1, 128)
	b[0] = eventV1
	b = appendTime(b, evAt, &at)
	b = appendString(b, evAction, action)
	return appendString(b, evActor, actor)
}

// appendChange appends one change: from and to as JSON, absent if null.
func appendChange(b []byte, field string, from, to any) ([]byte, error) {
	b, at := startMessage(b, evChange)
	b = appendString(b, 1, field)
	for i, v := range [2]any{from, to} {
		j, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encoding the audit change of %s: %w", field, err)
		}
		if string(j) != "null" {
			b = appendBytes(b, protowire.Number(2+i), j)
		}
	}
	return endMessage(b, at), nil
}

// decodeEvent decodes an audit event, binary or JSON.
func decodeEvent(b []byte) (Event, error) {
	var ev Event
	if len(b) > 0 && b[0] == '{' {
		err := json.Unmarshal(b, &ev)
		return ev, err
	}
	if len(b) == 0 || b[0] != eventV1 {
		return ev, fmt.Errorf("%w: an audit event of unknown version", errEntry)
	}
	ev.Changes = map[string]Change{}
	err := eachField(b[1:], func(n protowire.Number, v []byte, _ uint64) error {
		switch n {
		case evAt:
			return decodeTimeInto(v, &ev.At)
		case evAction:
			ev.Action = string(v)
		case evActor:
			ev.Actor = string(v)
		case evChange:
			return decodeChange(v, &ev)
		}
		return nil
	})
	return ev, err
}

func decodeChange(b []byte, ev *Event) error {
	var field string
	var c Change
	err := eachField(b, func(n protowire.Number, v []byte, _ uint64) error {
		switch n {
		case 1:
			field = string(v)
		case 2, 3:
			dst := &c.From
			if n == 3 {
				dst = &c.To
			}
			if err := json.Unmarshal(v, dst); err != nil {
				return fmt.Errorf("%w: audit change: %v", errEntry, err)
			}
		}
		return nil
	})
	ev.Changes[field] = c
	return err
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
			ev, err := decodeEvent(val)
			if err != nil {
				return false, fmt.Errorf("decoding an audit event of key %s: %w", id, err)
			}
			events = append(events, ev)
			return true, nil
		})
	})
	return events, err
}

// createdEvent encodes a new key's created event: an Event whose changes
// are the key's fields, each from null, without building the map of
// interfaces (a bulk load encodes one per key).
// TestCreatedEvent holds it to encodeEvent of that map.
func createdEvent(k *Key, action, actor string) ([]byte, error) {
	b := appendEventHead(k.CreatedAt, action, actor)
	// In the order of the field names, as encodeEvent writes them.
	changes := []struct {
		field string
		to    any
		set   bool
	}{
		{"expires_at", k.ExpiresAt, k.ExpiresAt != nil},
		{"hint", k.Hint, true},
		{"metadata", k.Metadata, len(k.Metadata) > 0},
		{"name", k.Name, true},
		{"quota", k.Quota, k.Quota != nil},
		{"rate_limit", k.RateLimit, k.RateLimit != nil},
		{"scopes", k.Scopes, true},
		{"type", k.Type, true},
	}
	for _, c := range changes {
		if !c.set {
			continue
		}
		var err error
		if b, err = appendChange(b, c.field, nil, c.to); err != nil {
			return nil, err
		}
	}
	return b, nil
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
