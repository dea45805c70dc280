package keystore

import (
	"encoding/json"
	"reflect"
	"strings"
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

// eventKeys are a key with every field a created event shows, one with
// the fewest, and one as the load harness creates them.
func eventKeys() []*Key {
	exp := time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)
	created := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	return []*Key{
		{ID: "full", Name: "n <&>", Account: "acme", Type: "api", Scopes: []string{"a:read", "b:write"}, Hint: "ak_abcd…wxyz",
			CreatedAt: created, ExpiresAt: &exp,
			RateLimit: &RateLimit{Requests: 5, Window: "1s"}, Quota: &Quota{Requests: 9, Period: "day"},
			Metadata: map[string]string{"crm": "42", "": "\x00"}},
		{ID: "bare", Name: "m", Type: "api", Scopes: []string{}, Hint: "…wxyz", CreatedAt: created},
		{ID: "load harness", Name: "bench key 12345", Account: "default", Type: "api",
			Scopes: []string{"contacts:read", "contacts:write"}, Hint: "bme_EpGT…NODD", CreatedAt: created},
		// Strings json.Marshal escapes, a value and a change longer than
		// 127 bytes (two-byte lengths), no scopes (null: no change).
		{ID: "escapes", Name: "q\"b\\s\tc\x7f\xff é", Type: strings.Repeat("t", 200), Account: "a",
			Scopes: nil, Hint: "", CreatedAt: created},
	}
}

// TestCreatedEvent: createdEvent writes what encodeEvent writes for the
// map of changes, and that decodes to the Event that the JSON of schemas
// 1 and 2 decodes to.
func TestCreatedEvent(t *testing.T) {
	for _, k := range eventKeys() {
		t.Run(k.ID, func(t *testing.T) {
			b, err := createdEvent(k, ActionCreated, "admin")
			if err != nil {
				t.Fatal(err)
			}
			ev := Event{At: k.CreatedAt, Action: ActionCreated, Actor: "admin", Changes: created(k)}
			want, err := encodeEvent(ev)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != string(want) {
				t.Fatalf("createdEvent %q\nencodeEvent  %q", b, want)
			}
			assertSameEvent(t, b, ev)
		})
	}
}

// assertSameEvent checks that the binary event b decodes to what ev's JSON
// (schemas 1 and 2) decodes to.
func assertSameEvent(t *testing.T, b []byte, ev Event) {
	t.Helper()
	got, err := decodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	want, err := decodeEvent(ref)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("binary decodes to %+v\n  JSON decodes to %+v", got, want)
	}
	t.Logf("binary %d bytes, JSON %d", len(b), len(ref))
}

// TestEventRoundTrip: events with changes of every kind, null on either
// side, decode as their JSON does; a created event of the load harness
// takes at most 55% of its JSON's bytes.
func TestEventRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 22, 20, 28, 28, 540931322, time.UTC)
	events := map[string]Event{
		"no changes": {At: at, Action: ActionRegenerated, Actor: "admin", Changes: map[string]Change{}},
		"updated": {At: at, Action: ActionUpdated, Actor: "cli", Changes: map[string]Change{
			"name":       {From: "a", To: "b"},
			"expires_at": {From: (*time.Time)(nil), To: &at},
			"revoked_at": {From: &at, To: (*time.Time)(nil)},
			"rate_limit": {From: &RateLimit{Requests: 1, Window: "1s"}, To: &RateLimit{Unlimited: true}},
			"metadata":   {From: map[string]string(nil), To: map[string]string{"a": "b"}},
			"scopes":     {From: []string{"a:read"}, To: []string{"a:write", "b:read"}},
		}},
	}
	for name, ev := range events {
		t.Run(name, func(t *testing.T) {
			b, err := encodeEvent(ev)
			if err != nil {
				t.Fatal(err)
			}
			assertSameEvent(t, b, ev)
		})
	}
	k := eventKeys()[2]
	b, err := createdEvent(k, ActionCreated, "bench")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(Event{At: k.CreatedAt, Action: ActionCreated, Actor: "bench", Changes: created(k)})
	if 100*len(b) > 55*len(js) {
		t.Errorf("the load harness's created event: binary %d bytes, JSON %d", len(b), len(js))
	}
}

// TestEventRefused: values that are not an event are errors.
func TestEventRefused(t *testing.T) {
	b, err := createdEvent(eventKeys()[0], ActionCreated, "admin")
	if err != nil {
		t.Fatal(err)
	}
	badJSON := appendBytes([]byte{eventV1}, evChange, appendBytes(appendString(nil, 1, "name"), 3, []byte(`"x`)))
	cases := map[string][]byte{
		"empty":           nil,
		"unknown version": append([]byte{0x02}, b[1:]...),
		"truncated":       b[:len(b)-2],
		"change not JSON": badJSON,
		"bad JSON":        []byte(`{"at":`),
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			if ev, err := decodeEvent(v); err == nil {
				t.Fatalf("decoded %+v", ev)
			}
		})
	}
}

// FuzzEvent: decoding any value never panics; a binary event that decodes
// encodes to one that decodes to the same event.
func FuzzEvent(f *testing.F) {
	for _, k := range eventKeys() {
		b, err := createdEvent(k, ActionCreated, "admin")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		js, _ := json.Marshal(Event{At: k.CreatedAt, Action: ActionCreated, Actor: "admin", Changes: created(k)})
		f.Add(js)
	}
	f.Add([]byte{eventV1, 0x22, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decodeEvent(b)
		if err != nil || b[0] != eventV1 {
			return
		}
		again, err := encodeEvent(ev)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", ev, err)
		}
		got, err := decodeEvent(again)
		if err != nil {
			t.Fatalf("re-encoded event of %+v: %v", ev, err)
		}
		if !reflect.DeepEqual(got, ev) {
			t.Fatalf("decoded %+v, re-encoded and decoded %+v", ev, got)
		}
	})
}

// FuzzJSONString: appendJSONString writes what json.Marshal writes, for
// any string (its fast path copies only strings that need no escape).
func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "q\"b\\s", "<&>", "\t\n\x00\x7f", "é…", "\xff\xfe", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Fatalf("appendJSONString(%q) = %q, json.Marshal %q", s, got[1:], want)
		}
	})
}
