package keystore

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ImportKey is an existing key to store as if it had been created here:
// either its plaintext Key or its SHA256 (hex), plus the fields of a new key.
type ImportKey struct {
	Key    string
	SHA256 string
	NewKey
}

// MaxImport is the largest number of keys one import takes.
const MaxImport = 100_000

// importChunk is how many keys go in one Badger transaction: Badger bounds
// a transaction's size, so a large import is written in several (and a
// chunk that is still too big is split again).
const importChunk = 1000

// ImportKeys stores existing keys. Every entry is validated before anything
// is written: one invalid entry (bad fields, neither or both of key and
// sha256, a hash already in the store or twice in the batch) refuses the
// whole batch with an *InvalidError whose Field names its index
// (keys[12].scopes). The plaintext of a key given as Key is hashed and
// dropped; the hint shows its first and last 4 characters, or is "…"
// when only the hash is known.
//
// The batch is written in chunks, each durable before the next; the call
// returns after the last. A crash in the middle leaves the chunks already
// written; importing the same batch again then fails on their hashes, so
// an interrupted import is finished by importing the entries not yet
// stored (GET /keys shows them). The same holds if a key with one of the
// batch's hashes is created while the import runs: the chunk holding it
// fails with ErrConflict, and the chunks before it stay written.
func (s *Store) ImportKeys(in []ImportKey, f Format, actor string) ([]*Key, error) {
	if len(in) == 0 {
		return nil, invalid("keys", "the import must contain at least one key")
	}
	if len(in) > MaxImport {
		return nil, invalid("keys", "an import takes at most %d keys, got %d", MaxImport, len(in))
	}
	now := s.now().UTC()
	keys := make([]*Key, len(in))
	seen := make(map[Hash]int, len(in))
	for i := range in {
		k, err := importedKey(&in[i], f, now)
		if err != nil {
			var ie *InvalidError
			if errors.As(err, &ie) {
				return nil, &InvalidError{
					Field:   fmt.Sprintf("keys[%d].%s", i, ie.Field),
					Message: fmt.Sprintf("keys[%d]: %s", i, ie.Message),
				}
			}
			return nil, err
		}
		if j, dup := seen[k.Hash]; dup {
			return nil, invalid(fmt.Sprintf("keys[%d]", i), "keys[%d]: the same key as keys[%d]", i, j)
		}
		seen[k.Hash] = i
		keys[i] = k
	}
	s.acctMu.RLock()
	for i, k := range keys {
		if _, ok := s.accounts[k.Account]; !ok {
			s.acctMu.RUnlock()
			return nil, invalid(fmt.Sprintf("keys[%d].account", i), "keys[%d]: account %q does not exist", i, k.Account)
		}
	}
	s.acctMu.RUnlock()
	// Check every hash against the store before writing any.
	err := s.view(func(t txn) error {
		for i, k := range keys {
			if _, err := t.idForHash(k.Hash); err == nil {
				return invalid(fmt.Sprintf("keys[%d]", i), "keys[%d]: this key is already in the store", i)
			} else if !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for start := 0; start < len(keys); start += importChunk {
		chunk := keys[start:min(start+importChunk, len(keys))]
		if err := s.insertChunk(chunk, actor); err != nil {
			return nil, err
		}
	}
	out := make([]*Key, len(keys))
	for i, k := range keys {
		out[i] = k.clone()
	}
	return out, nil
}

// insertChunk inserts keys, halving the chunk while Badger finds the
// transaction too big.
func (s *Store) insertChunk(keys []*Key, actor string) error {
	err := s.insertKeys(keys, ActionCreated, actor)
	if !isTxnTooBig(err) || len(keys) == 1 {
		return err
	}
	half := len(keys) / 2
	if err := s.insertChunk(keys[:half], actor); err != nil {
		return err
	}
	return s.insertChunk(keys[half:], actor)
}

func importedKey(ik *ImportKey, f Format, now time.Time) (*Key, error) {
	if err := ik.NewKey.validate(now); err != nil {
		return nil, err
	}
	k := &Key{
		ID:        newKeyID(),
		Name:      ik.Name,
		Account:   ik.Account,
		Type:      ik.Type,
		Scopes:    ik.Scopes,
		CreatedAt: now,
		UpdatedAt: now,
		ExpiresAt: ik.ExpiresAt,
		RateLimit: ik.RateLimit,
		Quota:     ik.Quota,
		Metadata:  ik.Metadata,
	}
	switch {
	case ik.Key != "" && ik.SHA256 != "":
		return nil, invalid("key", "give either key or sha256, not both")
	case ik.Key != "":
		if f.Check(ik.Key) != nil && !foreignShaped(ik.Key) {
			return nil, invalid("key", "key must match the key format or be %d to %d printable ASCII characters", MinForeignLen, MaxForeignLen)
		}
		k.Hash = HashKey(ik.Key)
		k.Hint = Hint(ik.Key, f.Prefix)
	case ik.SHA256 != "":
		h, err := ParseHash(strings.ToLower(ik.SHA256))
		if err != nil {
			return nil, invalid("sha256", "%v", err)
		}
		k.Hash = h
		k.Hint = "…"
	default:
		return nil, invalid("key", "give the key (plaintext) or its sha256")
	}
	return k, nil
}
