package keystore

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
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

// ImportKeys stores existing keys. Every entry is validated before anything
// is written: one invalid entry (bad fields, neither or both of key and
// sha256, a hash already in the store or twice in the batch) refuses the
// whole batch with an *InvalidError whose Field names its index
// (keys[12].scopes). A batch that would take an account past its max_keys
// is refused whole, with an error wrapping ErrKeyLimit. The plaintext of a key given as Key is hashed and
// dropped; the hint shows its first and last 4 characters, or is "…"
// when only the hash is known.
//
// A valid batch is written with Badger's bulk writer and synced to disk
// before the call returns. Imports run one at a time, and keys created
// meanwhile get fresh random strings, so no hash checked here can appear
// before the write. The write is not atomic on disk: a crash in the middle
// leaves some of the batch stored; importing the same batch again then
// fails on their hashes, so an interrupted import is finished by
// importing the entries not yet stored (GET /keys shows them).
func (s *Store) ImportKeys(in []ImportKey, f Format, actor string) ([]*Key, error) {
	if len(in) == 0 {
		return nil, invalid("keys", "the import must contain at least one key")
	}
	if len(in) > MaxImport {
		return nil, invalid("keys", "an import takes at most %d keys, got %d", MaxImport, len(in))
	}
	keys, err := importedKeys(in, f, s.now().UTC())
	if err != nil {
		return nil, err
	}

	var created []*Key
	defer func() { // runs after the locks' unlocks
		for _, k := range created {
			s.changed(Mutation{Kind: ChangeKeyCreated, At: k.CreatedAt, Actor: actor, Key: keyInfo(k)})
		}
	}()
	s.importMu.Lock()
	defer s.importMu.Unlock()
	for _, k := range keys {
		if err := s.learnAccounts(k.Account); err != nil {
			return nil, err
		}
	}
	// Accounts cannot be deleted while the import holds this lock.
	s.acctMu.RLock()
	defer s.acctMu.RUnlock()
	if err := s.accountsExist(keys); err != nil {
		return nil, err
	}
	err = s.view(func(t txn) error {
		for i, k := range keys {
			if known, err := t.exists(keyH(k.Hash)); err != nil {
				return err
			} else if known {
				return invalid(fmt.Sprintf("keys[%d]", i), "keys[%d]: this key is already in the store", i)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res, err := s.reserveKeys(keys)
	if err != nil {
		return nil, err
	}
	bulkKeys := keys
	if s.sharedEngine() {
		// Keys of accounts with a max_keys are written in a transaction
		// that counts them (see keyCount), before the others.
		if bulkKeys, err = s.importLimited(keys, res.added, actor); err != nil {
			res.done(notStored)
			return nil, err
		}
	}
	err = s.bulk(func(set func(key, val []byte) error) error {
		for _, k := range bulkKeys {
			if err := writeNewKey(set, k, ActionCreated, actor); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		res.done(maybeStored)
	} else {
		res.done(stored)
	}
	hashes := make([]Hash, len(keys))
	for i, k := range keys {
		hashes[i] = k.Hash
	}
	// Indexed even after a failed write, of which a prefix may be stored:
	// the filter may hold hashes that are not stored, never the reverse.
	s.indexed(hashes...)
	if err != nil {
		return nil, err
	}
	out := make([]*Key, len(keys))
	for i, k := range keys {
		out[i] = k.clone()
	}
	s.cache.invalidate(hashes...)
	created = keys
	return out, nil
}

// importLimited writes, on a shared engine, the keys of the accounts that
// have a max_keys in one transaction that counts each account's keys
// (sharedKeyLimits), so that imports and creates of other processes
// cannot take it past its max_keys together; it returns the other keys,
// to be written by the bulk writer. A refusal stores nothing.
func (s *Store) importLimited(keys []*Key, added map[string]int64, actor string) (rest []*Key, err error) {
	err = s.update(func(t txn) error {
		limited, err := s.sharedKeyLimits(t, added)
		if err != nil {
			return err
		}
		rest = rest[:0]
		for i, k := range keys {
			if !limited[k.Account] {
				rest = append(rest, k)
				continue
			}
			if known, err := t.exists(keyH(k.Hash)); err != nil {
				return err
			} else if known {
				return invalid(fmt.Sprintf("keys[%d]", i), "keys[%d]: this key is already in the store", i)
			}
			if err := writeNewKey(t.set, k, ActionCreated, actor); err != nil {
				return err
			}
		}
		return nil
	})
	return rest, err
}

// accountsExist refuses a batch naming an account the store does not
// hold. The caller holds acctMu (or has the store to itself).
func (s *Store) accountsExist(keys []*Key) error {
	for i, k := range keys {
		if _, ok := s.accounts[k.Account]; !ok {
			return invalid(fmt.Sprintf("keys[%d].account", i), "keys[%d]: account %q does not exist", i, k.Account)
		}
	}
	return nil
}

// importedKeys validates a batch to import: each entry, and no key twice.
func importedKeys(in []ImportKey, f Format, now time.Time) ([]*Key, error) {
	keys, err := validatedKeys(in, f, now)
	if err != nil {
		return nil, err
	}
	if _, err := hashOrder(keys); err != nil {
		return nil, err
	}
	return keys, nil
}

// hashRef is a key's place in the hash order. Sorting these (no
// pointers, the hash's first 8 bytes as a number) is several times faster
// than sorting the keys by their hash, which reads each key's memory at
// random.
type hashRef struct {
	pfx  uint64 // the hash's first 8 bytes, big-endian: their order
	hash Hash
	i    int // the key's index
}

// hashOrder sorts the keys' hashes, and refuses a batch that holds a key
// twice, naming the first entry that repeats an earlier one. Imports use
// it for that check alone; Load also writes the hash index in its order.
func hashOrder(keys []*Key) ([]hashRef, error) {
	refs := make([]hashRef, len(keys))
	for i, k := range keys {
		refs[i] = hashRef{binary.BigEndian.Uint64(k.Hash[:8]), k.Hash, i}
	}
	slices.SortFunc(refs, func(a, b hashRef) int {
		if a.pfx != b.pfx {
			return cmp.Compare(a.pfx, b.pfx)
		}
		return cmp.Or(bytes.Compare(a.hash[8:], b.hash[8:]), cmp.Compare(a.i, b.i))
	})
	dup, orig := -1, -1
	for j := 1; j < len(refs); j++ {
		// The second of a run of equal hashes is that hash's first repeat.
		if refs[j].hash != refs[j-1].hash || j > 1 && refs[j-1].hash == refs[j-2].hash {
			continue
		}
		if dup < 0 || refs[j].i < dup {
			dup, orig = refs[j].i, refs[j-1].i
		}
	}
	if dup >= 0 {
		return nil, duplicateKey(dup, orig)
	}
	return refs, nil
}

// duplicateKey is the error of a batch whose entry i repeats entry j.
func duplicateKey(i, j int) error {
	return invalid(fmt.Sprintf("keys[%d]", i), "keys[%d]: the same key as keys[%d]", i, j)
}

// validatedKeys validates each entry of a batch to import. The entries
// (SHA-256, format, fields) are checked by one goroutine per CPU; an error
// names the first invalid entry, as a sequential check would.
func validatedKeys(in []ImportKey, f Format, now time.Time) ([]*Key, error) {
	keys := make([]*Key, len(in))
	workers := min(runtime.GOMAXPROCS(0), len(in)/1024+1)
	chunk := (len(in) + workers - 1) / workers
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w * chunk; i < min((w+1)*chunk, len(in)); i++ {
				k, err := importedKey(&in[i], f, now)
				if err != nil {
					errs[w] = entryError(i, err)
					return
				}
				keys[i] = k
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err // the first chunk's first error: the lowest index
		}
	}
	return keys, nil
}

// entryError names entry i in an error about it.
func entryError(i int, err error) error {
	var ie *InvalidError
	if errors.As(err, &ie) {
		return &InvalidError{
			Field:   fmt.Sprintf("keys[%d].%s", i, ie.Field),
			Message: fmt.Sprintf("keys[%d]: %s", i, ie.Message),
		}
	}
	return err
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
