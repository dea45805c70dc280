package keystore

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"
)

// encodeJSONKey is the key record as schemas 1 and 2 wrote it.
func encodeJSONKey(t testing.TB, k *Key) []byte {
	t.Helper()
	sk := storedKey{Key: k, HashHex: k.Hash.String()}
	if k.PrevHash != nil {
		sk.PrevHashHex = k.PrevHash.String()
		sk.PrevUntil = timePtr(k.PrevUntil)
	}
	b, err := json.Marshal(sk)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hashOf(b byte) Hash {
	var h Hash
	for i := range h {
		h[i] = b + byte(i)
	}
	return h
}

// recordKeys are records with their fields in their corners.
func recordKeys() map[string]*Key {
	created := time.Date(2026, 11, 22, 20, 28, 28, 540931322, time.UTC)
	prev := hashOf(200)
	out := map[string]*Key{
		"load harness": {ID: "01a204f2-27fc-7ecb-9861-047af23c4682", Name: "bench-12345", Account: "default", Type: "api",
			Scopes: []string{"contacts:write", "orders:read"}, Hint: "bme_EpGT…NODD",
			CreatedAt: created, UpdatedAt: created, RateLimit: &RateLimit{Unlimited: true}, Hash: hashOf(1)},
		"every field": {ID: "k1", Name: "näme \x00 with bytes", Account: "acme", Type: "publishable",
			Scopes: []string{"a:read", "b:write", "*:delete"}, Hint: "…",
			CreatedAt: created, UpdatedAt: created.Add(time.Hour),
			ExpiresAt:  timePtr(time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)),
			LastUsedAt: timePtr(created.Add(time.Minute)),
			RevokedAt:  timePtr(time.Date(2026, 11, 22, 0, 0, 0, 999_999_999, time.UTC)),
			RateLimit:  &RateLimit{Requests: 100, Window: "1m", Burst: 10},
			Quota:      &Quota{Requests: 1 << 40, Period: "month"},
			Metadata:   map[string]string{"team": "growth", "": "empty name", "empty value": "", "ünï": "cödé"},
			Hash:       hashOf(2), PrevHash: &prev, PrevUntil: created.Add(24 * time.Hour)},
		"zero times": {ID: "k3", Scopes: []string{"x:read"}, Hash: hashOf(3)},
		"long metadata": {ID: "k4", Scopes: []string{"x:read"}, Hash: hashOf(4),
			Metadata: map[string]string{"notes": strings.Repeat("n", MaxMetadataSize-10)}},
	}
	for _, k := range hashEntryKeys {
		c := *k
		c.ID += "-record"
		c.Hash = hashOf(byte(len(out)))
		out[c.ID] = &c
	}
	return out
}

// TestKeyRecordRoundTrip: the binary record decodes to what the JSON
// record of schemas 1 and 2 decodes to, and is less than half its size
// for the load harness's keys.
func TestKeyRecordRoundTrip(t *testing.T) {
	for name, k := range recordKeys() {
		t.Run(name, func(t *testing.T) {
			bin := encodeKey(k)
			got, err := decodeKey(bin)
			if err != nil {
				t.Fatalf("binary: %v", err)
			}
			js := encodeJSONKey(t, k)
			want, err := decodeKey(js)
			if err != nil {
				t.Fatalf("JSON: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("binary %+v\nJSON   %+v", got, want)
			}
			if name == "load harness" && 2*len(bin) >= len(js) {
				t.Errorf("binary %d bytes, JSON %d", len(bin), len(js))
			}
			t.Logf("binary %d bytes, JSON %d", len(bin), len(js))
		})
	}
}

// TestEndMessage: a message written in place is the message protowire
// writes from a buffer, across the sizes whose length takes 1 to 3 bytes.
func TestEndMessage(t *testing.T) {
	for _, size := range []int{0, 1, 127, 128, 129, 16383, 16384, 70000} {
		content := make([]byte, size)
		for i := range content {
			content[i] = byte(i)
		}
		want := appendBytes([]byte("head"), 7, content)
		b, at := startMessage([]byte("head"), 7)
		got := endMessage(append(b, content...), at)
		if string(got) != string(want) {
			t.Errorf("size %d: in place differs from protowire", size)
		}
	}
}

// TestKeyRecordRefused: values that are not a record are errors, not keys.
func TestKeyRecordRefused(t *testing.T) {
	k := recordKeys()["every field"]
	bin := encodeKey(k)
	noHash := encodeKey(&Key{ID: "k"})
	noHash = noHash[:len(noHash)-2-len(Hash{})] // the hash is the last field
	cases := map[string][]byte{
		"empty":             nil,
		"unknown version":   append([]byte{0x02}, bin[1:]...),
		"truncated":         bin[:len(bin)-3],
		"no hash":           noHash,
		"no id":             encodeKey(&Key{Hash: hashOf(1)}),
		"short hash":        append(append([]byte{keyRecordV1}, 0x7a, 3), 1, 2, 3),
		"time out of range": appendBytes(append([]byte{}, bin...), krCreatedAt, appendInt(nil, 1, 1<<40)), // year 34,000
		"JSON of no hash":   []byte(`{"id":"k"}`),
		"bad JSON":          []byte(`{"id":`),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if k, err := decodeKey(b); err == nil {
				t.Fatalf("decoded %+v", k)
			}
		})
	}
}

// FuzzKeyRecord: decoding any value never panics; a binary record that
// decodes encodes to one that decodes to the same key.
func FuzzKeyRecord(f *testing.F) {
	for _, k := range recordKeys() {
		f.Add(encodeKey(k))
		f.Add(encodeJSONKey(f, k))
	}
	f.Add([]byte{keyRecordV1, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decodeKey(b)
		if err != nil {
			if !errors.Is(err, errEntry) && len(b) > 0 && b[0] == keyRecordV1 {
				t.Fatalf("binary record refused with %v, not errEntry", err)
			}
			return
		}
		if b[0] != keyRecordV1 {
			return
		}
		again, err := decodeKey(encodeKey(k))
		if err != nil {
			t.Fatalf("re-encoded record of %+v: %v", k, err)
		}
		if !slicesEqualNil(again.Scopes, k.Scopes) || !maps.Equal(again.Metadata, k.Metadata) {
			t.Fatalf("scopes %q, metadata %q, then %q, %q", k.Scopes, k.Metadata, again.Scopes, again.Metadata)
		}
		again.Scopes, k.Scopes = nil, nil
		again.Metadata, k.Metadata = nil, nil
		if !reflect.DeepEqual(again, k) {
			t.Fatalf("decoded %+v, re-encoded and decoded %+v", k, again)
		}
	})
}
