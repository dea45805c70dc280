package keystore

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// created is the reference for createdEvent: a new key's fields as the
// changes of its created event, as a map.
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

// TestCreatedEventJSON: createdEvent decodes to the Event that a map of
// changes encodes, for a key with every field and one with the fewest.
func TestCreatedEventJSON(t *testing.T) {
	exp := time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)
	full := &Key{
		ID: "id", Name: "n", Account: "acme", Type: "api", Scopes: []string{"a:read", "b:write"}, Hint: "ak_abcd…wxyz",
		CreatedAt: time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC), ExpiresAt: &exp,
		RateLimit: &RateLimit{Requests: 5, Window: "1s"}, Quota: &Quota{Requests: 9, Period: "day"},
		Metadata: map[string]string{"crm": "42"},
	}
	bare := &Key{ID: "id2", Name: "m", Type: "api", Scopes: []string{}, Hint: "…wxyz", CreatedAt: full.CreatedAt}
	for _, k := range []*Key{full, bare} {
		b, err := createdEvent(k, ActionCreated, "admin")
		if err != nil {
			t.Fatal(err)
		}
		var got Event
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		ref, _ := json.Marshal(Event{At: k.CreatedAt, Action: ActionCreated, Actor: "admin", Changes: created(k)})
		var want Event
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("key %s:\n got %s\nwant %s", k.ID, b, ref)
		}
	}
}
