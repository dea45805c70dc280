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
	b := appendEventHead(make([]byte, 0, 128), ev.At, ev.Action, ev.Actor)
	for _, name := range slices.Sorted(maps.Keys(ev.Changes)) {
		c := ev.Changes[name]
		var err error
		if b, err = appendChange(b, name, c.From, c.To); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func appendEventHead(b []byte, at time.Time, action, actor string) []byte {
	b = append(b, eventV1)
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

// appendCreatedString appends the change of a string field from null to
// s, as appendChange does, without boxing s in an interface.
func appendCreatedString(b []byte, field, s string) []byte {
	b, at := startMessage(b, evChange)
	b = appendString(b, 1, field)
	b, v := startMessage(b, 3)
	b = appendJSONString(b, s)
	return endMessage(endMessage(b, v), at)
}

// appendCreatedStrings is appendCreatedString for a list of strings. A nil
// list is null: a change with neither value.
func appendCreatedStrings(b []byte, field string, ss []string) []byte {
	b, at := startMessage(b, evChange)
	b = appendString(b, 1, field)
	if ss != nil {
		var v int
		b, v = startMessage(b, 3)
		b = append(b, '[')
		for i, s := range ss {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, s)
		}
		b = endMessage(append(b, ']'), v)
	}
	return endMessage(b, at)
}

// appendJSONString appends s as json.Marshal writes it: a string of
// printable ASCII that needs no escape (json.Marshal escapes ", \ and,
// for HTML, <, > and &) is copied between quotes; any other goes through
// encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			j, _ := json.Marshal(s) // a string always encodes
			return append(b, j...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
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
	return appendCreatedEvent(make([]byte, 0, 192), k, action, actor)
}

// appendCreatedEvent appends createdEvent's encoding to b.
func appendCreatedEvent(b []byte, k *Key, action, actor string) ([]byte, error) {
	b = appendEventHead(b, k.CreatedAt, action, actor)
	// In the order of the field names, as encodeEvent writes them. The
	// string fields, in every event, skip the interfaces.
	var err error
	if k.ExpiresAt != nil {
		if b, err = appendChange(b, "expires_at", nil, k.ExpiresAt); err != nil {
			return nil, err
		}
	}
	b = appendCreatedString(b, "hint", k.Hint)
	if len(k.Metadata) > 0 {
		if b, err = appendChange(b, "metadata", nil, k.Metadata); err != nil {
			return nil, err
		}
	}
	b = appendCreatedString(b, "name", k.Name)
	if k.Quota != nil {
		if b, err = appendChange(b, "quota", nil, k.Quota); err != nil {
			return nil, err
		}
	}
	if k.RateLimit != nil {
		if b, err = appendChange(b, "rate_limit", nil, k.RateLimit); err != nil {
			return nil, err
		}
	}
	b = appendCreatedStrings(b, "scopes", k.Scopes)
	b = appendCreatedString(b, "type", k.Type)
	return b, nil
}

// changeSet collects the fields that differ between two versions of a
// record, by their JSON names and as JSON compares them.
type changeSet map[string]Change

func (ch changeSet) add(field string, from, to any) {
	fj, _ := json.Marshal(from)
	tj, _ := json.Marshal(to)
	if string(fj) != string(tj) {
		ch[field] = Change{From: from, To: to}
	}
}

// diff lists the fields that differ between two versions of a key.
func diff(a, b *Key) map[string]Change {
	ch := changeSet{}
	add := ch.add
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
