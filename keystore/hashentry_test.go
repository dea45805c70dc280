package keystore

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// encodeJSONHashEntry is the hash entry as schema 1 wrote it.
func encodeJSONHashEntry(t testing.TB, k *Key) []byte {
	t.Helper()
	b, err := json.Marshal(jsonHashEntry{
		ID: k.ID, Name: k.Name, Account: k.Account, Type: k.Type, Scopes: k.Scopes,
		ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, RateLimit: k.RateLimit, Quota: k.Quota,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func timePtr(t time.Time) *time.Time { return &t }

// hashEntryKeys are keys with the hash entry's fields in their corners.
var hashEntryKeys = map[string]*Key{
	"bare id": {ID: "01a20490-6291-7f41-8236-2600f3508578"},
	"load harness": {ID: "01a20490-6291-7f41-8236-2600f3508578", Name: "bench-12345", Account: "default", Type: "secret",
		Scopes: []string{"contacts:write", "orders:read"}, RateLimit: &RateLimit{Unlimited: true}},
	"every field": {ID: "k1", Name: "näme \x00 with bytes", Account: "acme", Type: "publishable",
		Scopes:    []string{"a:read", "b:write", "*:delete"},
		ExpiresAt: timePtr(time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)),
		RevokedAt: timePtr(time.Date(2026, 11, 22, 0, 0, 0, 999_999_999, time.UTC)),
		RateLimit: &RateLimit{Requests: 100, Window: "1m", Burst: 10},
		Quota:     &Quota{Requests: 1 << 40, Period: "month"}},
	"times at the edges": {ID: "k2",
		ExpiresAt: timePtr(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)),
		RevokedAt: timePtr(time.Date(1900, 6, 1, 12, 0, 0, 1, time.UTC))},
	"zero values inside": {ID: "k3", RateLimit: &RateLimit{}, Quota: &Quota{},
		ExpiresAt: timePtr(time.Unix(0, 0).UTC())},
}

// TestHashEntryRoundTrip: the binary entry decodes to what the JSON entry
// of schema 1 decodes to, and is smaller.
func TestHashEntryRoundTrip(t *testing.T) {
	var h Hash
	h[0] = 9
	for name, k := range hashEntryKeys {
		t.Run(name, func(t *testing.T) {
			bin := encodeHashEntry(k)
			got, id, err := decodeHashValue(bin, h)
			if err != nil || id != "" {
				t.Fatalf("binary: %v, id %q", err, id)
			}
			js := encodeJSONHashEntry(t, k)
			want, _, err := decodeHashValue(js, h)
			if err != nil {
				t.Fatalf("JSON: %v", err)
			}
			if !slicesEqualNil(got.Scopes, want.Scopes) {
				t.Errorf("scopes %q, want %q", got.Scopes, want.Scopes)
			}
			got.Scopes, want.Scopes = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("binary decodes to\n%+v\nJSON to\n%+v", got, want)
			}
			if len(bin) >= len(js) {
				t.Errorf("binary %d bytes, JSON %d", len(bin), len(js))
			}
			t.Logf("%d bytes binary, %d JSON", len(bin), len(js))
		})
	}
}

// slicesEqualNil compares scopes as verification reads them: nil and empty
// are the same.
func slicesEqualNil(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

// TestHashValueForms: the three forms of an h/ value, and broken ones.
func TestHashValueForms(t *testing.T) {
	var h Hash
	bad := func(b ...byte) []byte { return append([]byte{hashEntryV1}, b...) }
	tag := func(n protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, n, typ) }
	for _, tc := range []struct {
		name    string
		in      []byte
		wantID  string // the value is an id
		wantKey string // the value is an entry of this key
		wantErr bool
	}{
		{name: "id", in: []byte("01a20490-6291-7f41-8236-2600f3508578"), wantID: "01a20490-6291-7f41-8236-2600f3508578"},
		{name: "JSON", in: []byte(`{"id":"k","name":"n"}`), wantKey: "k"},
		{name: "binary", in: encodeHashEntry(&Key{ID: "k"}), wantKey: "k"},
		{name: "unknown field skipped", in: append(encodeHashEntry(&Key{ID: "k"}), protowire.AppendVarint(tag(99, protowire.VarintType), 7)...), wantKey: "k"},
		{name: "fixed64 field skipped", in: append(encodeHashEntry(&Key{ID: "k"}), protowire.AppendFixed64(tag(50, protowire.Fixed64Type), 7)...), wantKey: "k"},
		{name: "known field of another wire type reads as empty", in: append(encodeHashEntry(&Key{ID: "k"}), protowire.AppendVarint(tag(heType, protowire.VarintType), 0)...), wantKey: "k"},
		{name: "broken JSON", in: []byte(`{"id":`), wantErr: true},
		{name: "binary without id", in: bad(), wantErr: true},
		{name: "truncated length", in: bad(append(tag(heID, protowire.BytesType), 5, 'a')...), wantErr: true},
		{name: "truncated tag", in: bad(0x80), wantErr: true},
		{name: "truncated varint", in: append(encodeHashEntry(&Key{ID: "k"}), append(tag(heQuota, protowire.BytesType), 2, 0x08, 0x80)...), wantErr: true},
		{name: "nanoseconds out of range", in: append(encodeHashEntry(&Key{ID: "k"}),
			protowire.AppendBytes(tag(heExpiresAt, protowire.BytesType), protowire.AppendVarint(tag(2, protowire.VarintType), uint64(time.Second)))...), wantErr: true},
		// The varint decodes to math.MinInt64: an int on 64-bit platforms,
		// out of range (an error, not a wrapped number) on 32-bit ones.
		{name: "rate limit at the int64 edge", in: append(encodeHashEntry(&Key{ID: "k"}),
			protowire.AppendBytes(tag(heRateLimit, protowire.BytesType), protowire.AppendVarint(tag(1, protowire.VarintType), math.MaxUint64))...), wantKey: "k", wantErr: math.MaxInt < math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, id, err := decodeHashValue(tc.in, h)
			switch {
			case tc.wantErr:
				if err == nil {
					t.Fatalf("decoded %+v, %q; want an error", k, id)
				}
			case err != nil:
				t.Fatal(err)
			case id != tc.wantID:
				t.Fatalf("id %q, want %q", id, tc.wantID)
			case tc.wantKey != "" && (k == nil || k.ID != tc.wantKey || k.Hash != h):
				t.Fatalf("key %+v, want id %q", k, tc.wantKey)
			}
		})
	}
}

// TestOpensOlderSchemaStores: a store as schema 1 left it (JSON hash
// entries and records, marker "1") or schema 2 (binary hash entries, JSON
// records, marker "2") opens, is marked schema 3, lists and verifies its
// keys, and writes a binary entry and record for a key that changes. A
// store of an unknown schema is refused.
func TestOpensOlderSchemaStores(t *testing.T) {
	for _, schema := range []string{schema1, schema2} {
		t.Run("schema "+schema, func(t *testing.T) {
			dir := t.TempDir()
			f := DefaultFormat()
			s := openStoreOpts(t, Options{Dir: dir})
			a, aPlain := mustCreate(t, s, f, NewKey{Name: "a", Scopes: []string{"contacts:read"}, Metadata: map[string]string{"team": "x"}})
			b, bPlain := mustCreate(t, s, f, NewKey{Name: "b"})
			err := s.update(func(tx txn) error {
				for _, k := range []*Key{a, b} {
					entry := encodeHashEntry(k)
					if schema == schema1 {
						entry = encodeJSONHashEntry(t, k)
					}
					if err := tx.set(keyH(k.Hash), entry); err != nil {
						return err
					}
					if err := tx.set(keyK(k.ID), encodeJSONKey(t, k)); err != nil {
						return err
					}
				}
				// Replace a's created event with the JSON one older schemas wrote.
				if err := tx.tx.Delete(firstEventKey(t, tx, a.ID)); err != nil {
					return err
				}
				ev, _ := json.Marshal(Event{At: a.CreatedAt, Action: ActionCreated, Actor: "old", Changes: map[string]Change{"name": {To: "a"}}})
				return tx.set(keyE(a.ID, newEventID()), ev)
			})
			if err != nil {
				t.Fatal(err)
			}
			err = s.update(func(tx txn) error {
				return tx.set([]byte(schemaKey), []byte(schema))
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s = openStoreOpts(t, Options{Dir: dir})
			if got := rawValue(t, s, []byte(schemaKey)); string(got) != schemaValue {
				t.Fatalf("schema after opening: %q", got)
			}
			got, err := s.Key(a.ID)
			if err != nil || got.Name != "a" || got.Metadata["team"] != "x" || got.Hash != a.Hash || !got.CreatedAt.Equal(a.CreatedAt) {
				t.Fatalf("a key with a JSON record: %+v, %v", got, err)
			}
			v := &Verifier{Store: s, Format: f}
			for _, p := range []string{aPlain, bPlain} {
				if res, err := v.Verify(p, Scope{}, false); err != nil || res.Outcome != OK {
					t.Fatalf("a key with older entries: %v %v", res.Outcome, err)
				}
			}
			if got := rawValue(t, s, keyK(a.ID)); got[0] != '{' {
				t.Fatalf("an unchanged key's record was rewritten: %q", got)
			}
			if _, err := s.RevokeKey(a.ID, "t"); err != nil {
				t.Fatal(err)
			}
			if got := rawValue(t, s, keyH(a.Hash)); got[0] != hashEntryV1 {
				t.Fatalf("a changed key's entry is still %q", got)
			}
			if got := rawValue(t, s, keyK(a.ID)); got[0] != keyRecordV1 {
				t.Fatalf("a changed key's record is still %q", got)
			}
			if res, err := v.Verify(aPlain, Scope{}, false); err != nil || res.Outcome != KeyRevoked {
				t.Fatalf("after the revoke: %v %v", res.Outcome, err)
			}
			if got, err := s.Key(a.ID); err != nil || got.RevokedAt == nil || got.Metadata["team"] != "x" {
				t.Fatalf("the revoked key's binary record: %+v, %v", got, err)
			}
			events, err := s.Audit(a.ID)
			if err != nil || len(events) != 2 || events[0].Action != ActionRevoked || events[1].Actor != "old" || events[1].Changes["name"].To != "a" {
				t.Fatalf("audit of a JSON and a binary event: %+v, %v", events, err)
			}
			if err := s.update(func(tx txn) error { return tx.set([]byte(schemaKey), []byte("4")) }); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err := testOpen(t, Options{Dir: dir}); err == nil {
				s.Close()
				t.Fatal("a store of schema 4 opened")
			}
		})
	}
}

// firstEventKey returns the key of a key's oldest audit event.
func firstEventKey(t *testing.T, tx txn, id string) []byte {
	t.Helper()
	var first []byte
	err := tx.scan([]byte(pfxEvent+id+"/"), nil, false, false, func(key, _ []byte) (bool, error) {
		first = append([]byte(nil), key...)
		return false, nil
	})
	if err != nil || first == nil {
		t.Fatalf("no event of %s: %v", id, err)
	}
	return first
}

func rawValue(t *testing.T, s *Store, key []byte) []byte {
	t.Helper()
	var b []byte
	err := s.view(func(tx txn) error {
		var err error
		b, err = tx.getRaw(key)
		return err
	})
	if err != nil || len(b) == 0 {
		t.Fatalf("%s: %q, %v", key, b, err)
	}
	return b
}

// FuzzHashEntry: decoding any value never panics; an entry that decodes
// encodes to one that decodes to the same key.
func FuzzHashEntry(f *testing.F) {
	for _, k := range hashEntryKeys {
		f.Add(encodeHashEntry(k))
		f.Add(encodeJSONHashEntry(f, k))
	}
	f.Add([]byte{hashEntryV1, 0x80})
	f.Add([]byte("01a20490-6291-7f41-8236-2600f3508578"))
	var h Hash
	f.Fuzz(func(t *testing.T, b []byte) {
		k, _, err := decodeHashValue(b, h)
		if err != nil {
			if !errors.Is(err, errEntry) && len(b) > 0 && b[0] == hashEntryV1 {
				t.Fatalf("binary entry refused with %v, not errEntry", err)
			}
			return
		}
		if k == nil || b[0] != hashEntryV1 {
			return
		}
		again, _, err := decodeHashValue(encodeHashEntry(k), h)
		if err != nil {
			t.Fatalf("re-encoded entry of %+v: %v", k, err)
		}
		if !slicesEqualNil(again.Scopes, k.Scopes) {
			t.Fatalf("scopes %q, then %q", k.Scopes, again.Scopes)
		}
		again.Scopes, k.Scopes = nil, nil
		if !reflect.DeepEqual(again, k) {
			t.Fatalf("decoded %+v, re-encoded and decoded %+v", k, again)
		}
	})
}
