package keystore

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// A key's record (k/<id>) is written as keyRecordV1 followed by a
// protobuf message (protowire): the hash entry's fields (hashentry.go),
// then
//
//	10 hint                              string
//	11 created_at, 12 updated_at,
//	13 last_used_at                      message {1 seconds sint64, 2 nanos uint32}
//	14 metadata                          message {1 name string, 2 value string}, repeated
//	15 hash, 16 prev_hash                bytes (32)
//	17 prev_until                        message as 11
//
// Unknown fields are skipped, so fields can be added. It is less than half
// the JSON that schemas 1 and 2 wrote (178 against 433 bytes for a key
// like the load harness's, TestKeyRecordRoundTrip), and bytes are what a
// bulk load is bounded by: Badger's stream writer copies, decodes again
// and writes every one. Records of those schemas (first byte '{')
// are still read, and rewritten in this form the next time their key
// changes.
const keyRecordV1 = 0x01

const (
	krHint protowire.Number = iota + heQuota + 1
	krCreatedAt
	krUpdatedAt
	krLastUsedAt
	krMetadata
	krHash
	krPrevHash
	krPrevUntil
)

// encodeKey encodes a key's record.
func encodeKey(k *Key) []byte {
	return appendKeyRecord(make([]byte, 0, 256), k) // a typical record is about 190 bytes
}

// appendKeyRecord appends the record of k to b.
func appendKeyRecord(b []byte, k *Key) []byte {
	b = appendEntryFields(append(b, keyRecordV1), k)
	b = appendString(b, krHint, k.Hint)
	b = appendTime(b, krCreatedAt, &k.CreatedAt)
	b = appendTime(b, krUpdatedAt, &k.UpdatedAt)
	b = appendTime(b, krLastUsedAt, k.LastUsedAt)
	for _, name := range slices.Sorted(maps.Keys(k.Metadata)) {
		var at int
		b, at = startMessage(b, krMetadata)
		b = appendString(b, 1, name)
		b = appendString(b, 2, k.Metadata[name])
		b = endMessage(b, at)
	}
	b = appendBytes(b, krHash, k.Hash[:])
	if k.PrevHash != nil {
		b = appendBytes(b, krPrevHash, k.PrevHash[:])
		b = appendTime(b, krPrevUntil, &k.PrevUntil)
	}
	return b
}

// decodeKey decodes a key's record, binary or JSON.
func decodeKey(b []byte) (*Key, error) {
	if len(b) > 0 && b[0] == '{' {
		return decodeJSONKey(b)
	}
	if len(b) == 0 || b[0] != keyRecordV1 {
		return nil, fmt.Errorf("decoding key record: %w: unknown version", errEntry)
	}
	k := &Key{}
	if err := decodeKeyFields(b[1:], k, krPrevUntil); err != nil {
		return nil, fmt.Errorf("decoding key record: %w", err)
	}
	if k.ID == "" || k.Hash == (Hash{}) {
		return nil, fmt.Errorf("decoding key record %q: %w: no id or hash", k.ID, errEntry)
	}
	return k, nil
}

func decodeMetadata(b []byte, str func([]byte) string, k *Key) error {
	var name, value string
	err := eachField(b, func(n protowire.Number, v []byte, _ uint64) error {
		switch n {
		case 1:
			name = str(v)
		case 2:
			value = str(v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if k.Metadata == nil {
		k.Metadata = map[string]string{}
	}
	k.Metadata[name] = value
	return nil
}

func decodeHashInto(b []byte, h *Hash) error {
	if len(b) != len(h) {
		return fmt.Errorf("%w: a hash of %d bytes", errEntry, len(b))
	}
	copy(h[:], b)
	return nil
}

// storedKey is a key record as schemas 1 and 2 wrote it: JSON, the record
// plus its hashes in hex.
type storedKey struct {
	*Key
	HashHex     string     `json:"hash"`
	PrevHashHex string     `json:"prev_hash,omitempty"`
	PrevUntil   *time.Time `json:"prev_until,omitempty"`
}

func decodeJSONKey(b []byte) (*Key, error) {
	sk := storedKey{Key: new(Key)}
	if err := json.Unmarshal(b, &sk); err != nil {
		return nil, fmt.Errorf("decoding key record: %w", err)
	}
	h, err := ParseHash(sk.HashHex)
	if err != nil {
		return nil, fmt.Errorf("decoding key record %s: %w", sk.ID, err)
	}
	sk.Key.Hash = h
	if sk.PrevHashHex != "" && sk.PrevUntil != nil {
		ph, err := ParseHash(sk.PrevHashHex)
		if err != nil {
			return nil, fmt.Errorf("decoding key record %s: %w", sk.ID, err)
		}
		sk.Key.PrevHash = &ph
		sk.Key.PrevUntil = *sk.PrevUntil
	}
	return sk.Key, nil
}
