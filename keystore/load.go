package keystore

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Load stores keys in a store that holds none yet, offline: for a
// migration into a new deployment. No other process may have the store
// open (Badger's directory lock refuses a second one). The store is
// created if it does not exist; its accounts are kept.
//
// The entries are validated as ImportKeys validates them (all or nothing,
// the same *InvalidError), without ImportKeys's bound on their number,
// then written as sorted tables with Badger's StreamWriter: no write-ahead
// log, no memtable, no compaction, which is what makes it faster than
// ImportKeys (105,000 keys a second on 2 cores, 1.7 times ImportKeys for
// 100,000 keys into an empty store). The result is the store ImportKeys
// would have written (records, hash entries, account index, one created
// event per key by actor). The write replaces the store's contents
// (Badger's StreamWriter starts by dropping them; the accounts and
// markers are written back with the keys): an I/O error or a crash during
// it leaves the store empty, its accounts gone too, to be set up and
// loaded again.
func Load(opts Options, in []ImportKey, f Format, actor string) ([]*Key, error) {
	if len(in) == 0 {
		return nil, invalid("keys", "the load must contain at least one key")
	}
	s, err := Open(opts) // creates the store and its default account
	if err != nil {
		return nil, err
	}
	keys, err := s.keysToLoad(in, f)
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	db, err := openBadger(opts.Dir, s.log)
	if err != nil {
		return nil, err
	}
	existing, err := allEntries(db)
	if err == nil {
		var streams []func() ([]kv, error)
		if streams, err = loadStreams(existing, keys, actor); err == nil {
			err = streamLoad(db, streams)
		}
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("loading keys into %s: %w", opts.Dir, err)
	}
	return keys, nil
}

// keysToLoad validates the entries against an open store with no keys.
func (s *Store) keysToLoad(in []ImportKey, f Format) ([]*Key, error) {
	var hasKeys bool
	err := s.view(func(t txn) error {
		return t.scan([]byte(pfxKey), nil, false, false, func([]byte, []byte) (bool, error) {
			hasKeys = true
			return false, nil
		})
	})
	if err != nil {
		return nil, err
	}
	if hasKeys {
		return nil, errors.New("the store already holds keys: load fills a new store; add keys to a store in use with an import")
	}
	keys, err := importedKeys(in, f, s.now().UTC())
	if err != nil {
		return nil, err
	}
	// The store is Load's alone: no lock needed.
	if err := s.accountsExist(keys); err != nil {
		return nil, err
	}
	return keys, nil
}

// loadBatch is how many entries a stream hands to the writer at a time.
const loadBatch = 8192

// loadStreams arranges what the store will hold into parts of one sorted
// stream: one part per prefix, in the order of the prefixes. The existing
// entries (a store without keys holds its accounts, their quota counts and
// markers) are parts of their own; the keys' entries are encoded batch by
// batch, so that only the key records are held in memory.
func loadStreams(existing []kv, keys []*Key, actor string) ([]func() ([]kv, error), error) {
	ours := []string{pfxAcctKey, pfxEvent, pfxHash, pfxKey}
	groups := map[string][]kv{}
	for _, e := range existing {
		p, _, ok := strings.Cut(string(e.key), "/")
		if !ok {
			return nil, fmt.Errorf("unexpected entry %q in a store without keys", e.key)
		}
		p += "/"
		if slices.Contains(ours, p) || p == pfxLastUsed || p == pfxRevoked {
			return nil, fmt.Errorf("the store holds %s entries without holding keys; load fills a new store", p)
		}
		groups[p] = append(groups[p], e) // already sorted: allEntries reads in key order
	}
	parts := map[string]func() ([]kv, error){}
	for p, entries := range groups {
		parts[p] = fixedStream(entries)
	}

	// Sorted concurrently, each stream waiting for its order: the hash
	// order is needed third, so its sort runs while the first parts are
	// written.
	byID := sorting(keys, func(a, b *Key) int { return cmp.Compare(a.ID, b.ID) })
	// ak/<account>/<id> in byte order: "acme-2/" sorts before "acme/".
	byAccount := sorting(keys, func(a, b *Key) int {
		return cmp.Or(cmpSegment(a.Account, b.Account), cmp.Compare(a.ID, b.ID))
	})
	byHash := sorting(keys, func(a, b *Key) int { return bytes.Compare(a.Hash[:], b.Hash[:]) })

	parts[pfxAcctKey] = keyStream(byAccount, func(k *Key) (kv, error) { return kv{keyAK(k.Account, k.ID), []byte{}}, nil })
	parts[pfxEvent] = keyStream(byID, func(k *Key) (kv, error) {
		ev, err := createdEvent(k, ActionCreated, actor)
		return kv{keyE(k.ID, newEventID()), ev}, err
	})
	parts[pfxHash] = keyStream(byHash, func(k *Key) (kv, error) {
		return kv{keyH(k.Hash), encodeHashEntry(k)}, nil
	})
	parts[pfxKey] = keyStream(byID, func(k *Key) (kv, error) {
		return kv{keyK(k.ID), encodeKey(k)}, nil
	})
	// Prefixes are "<segment>/" with no "/" inside the segment, so the
	// order of the prefixes is the order of their keys.
	var out []func() ([]kv, error)
	for _, p := range slices.Sorted(maps.Keys(parts)) {
		out = append(out, parts[p])
	}
	return out, nil
}

// fixedStream hands out entries already in memory.
func fixedStream(entries []kv) func() ([]kv, error) {
	return func() ([]kv, error) {
		n := min(loadBatch, len(entries))
		batch := entries[:n]
		entries = entries[n:]
		return batch, nil
	}
}

// sorting sorts a copy of keys in the background; the function it returns
// waits for the sort and returns the copy.
func sorting(keys []*Key, cmp func(a, b *Key) int) func() []*Key {
	out := slices.Clone(keys)
	done := make(chan struct{})
	go func() {
		slices.SortFunc(out, cmp)
		close(done)
	}()
	return func() []*Key {
		<-done
		return out
	}
}

// keyStream encodes one entry per key, in the order sorted returns, a
// batch at a time.
func keyStream(sorted func() []*Key, entry func(*Key) (kv, error)) func() ([]kv, error) {
	batch := make([]kv, 0, loadBatch)
	var keys []*Key
	started := false
	return func() ([]kv, error) {
		if !started {
			keys, started = sorted(), true
		}
		batch = batch[:0]
		for len(keys) > 0 && len(batch) < loadBatch {
			e, err := entry(keys[0])
			if err != nil {
				return nil, err
			}
			batch = append(batch, e)
			keys = keys[1:]
		}
		return batch, nil
	}
}

// cmpSegment compares a+"/" with b+"/", as the keys that hold them sort.
func cmpSegment(a, b string) int {
	n := min(len(a), len(b))
	if c := strings.Compare(a[:n], b[:n]); c != 0 {
		return c
	}
	switch {
	case len(a) == len(b):
		return 0
	case len(a) < len(b):
		return cmp.Compare('/', b[n])
	}
	return cmp.Compare(a[n], '/')
}
