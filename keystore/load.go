package keystore

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/caddy-apikey/caddy-apikey/keystore/badgerstore"
	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// Load stores keys in a store that holds none yet, offline: for a
// migration into a new deployment. No other process may have the store
// open (Badger's directory lock refuses a second one). The store is
// created if it does not exist; its accounts are kept.
//
// The entries are validated as ImportKeys validates them (all or nothing,
// the same *InvalidError, and the accounts' max_keys: ErrKeyLimit), without
// ImportKeys's bound on their number, then written as sorted tables with
// Badger's StreamWriter: no write-ahead log, no memtable, no compaction,
// which is what makes it faster than ImportKeys (100,000-150,000 keys a
// second on 2 cores with a million keys, 2.6 times ImportKeys for 100,000
// keys into an empty store). The result is the store ImportKeys would have
// written (records, hash entries, account index, one created event per key
// by actor). The write replaces the store's contents (Badger's StreamWriter
// starts by dropping them; the accounts and markers are written back with
// the keys). If the write fails, the accounts and markers are written back
// on their own, so the store is as it was; a crash during the write leaves
// it empty, its accounts gone too, to be set up and loaded again.
func Load(opts Options, in []ImportKey, f Format, actor string) ([]*Key, error) {
	if len(in) == 0 {
		return nil, invalid("keys", "the load must contain at least one key")
	}
	s, err := Open(opts) // creates the store and its default account
	if err != nil {
		return nil, err
	}
	keys, byHash, err := s.keysToLoad(in, f)
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	eng, err := badgerstore.OpenForLoad(opts.Dir, s.log)
	if err != nil {
		return nil, err
	}
	existing, err := eng.All()
	if err == nil {
		var streams []func() ([]kv.Entry, error)
		if streams, err = loadStreams(existing, keys, byHash, actor); err == nil {
			err = eng.ReplaceAll(existing, streams)
		}
	}
	if cerr := eng.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("loading keys into %s: %w", opts.Dir, err)
	}
	return keys, nil
}

// keysToLoad validates the entries against an open store with no keys,
// and returns them with their hash order.
func (s *Store) keysToLoad(in []ImportKey, f Format) ([]*Key, []hashRef, error) {
	var hasKeys bool
	err := s.view(func(t txn) error {
		return t.scan([]byte(pfxKey), nil, false, false, func([]byte, []byte) (bool, error) {
			hasKeys = true
			return false, nil
		})
	})
	if err != nil {
		return nil, nil, err
	}
	if hasKeys {
		return nil, nil, errors.New("the store already holds keys: load fills a new store; add keys to a store in use with an import")
	}
	keys, err := validatedKeys(in, f, s.now().UTC())
	if err != nil {
		return nil, nil, err
	}
	byHash, err := hashOrder(keys)
	if err != nil {
		return nil, nil, err
	}
	// The store is Load's alone: no lock needed.
	if err := s.accountsExist(keys); err != nil {
		return nil, nil, err
	}
	if err := s.checkLoadLimits(keys); err != nil {
		return nil, nil, err
	}
	return keys, byHash, nil
}

// loadBatch is how many entries a stream hands to the writer at a time.
const loadBatch = 8192

// loadStreams arranges what the store will hold into parts of one sorted
// stream: one part per prefix, in the order of the prefixes. The existing
// entries (a store without keys holds its accounts, their quota counts and
// markers) are parts of their own; the keys' entries are encoded batch by
// batch into a buffer that the next batch reuses, so that only the keys
// and their hash entries are held in memory.
//
// Every key is read in the order of memory (the order of in, or of IDs,
// which is nearly the same): reading them in the order of their hashes,
// which is random, made encoding the hash entries seven times slower than
// encoding the larger records. So the orders are sorted from compact
// copies of what they compare, and the hash entries are encoded in the
// keys' order into one buffer, which the hash order then reads from.
func loadStreams(existing []kv.Entry, keys []*Key, byHash []hashRef, actor string) ([]func() ([]kv.Entry, error), error) {
	ours := []string{pfxAcctKey, pfxEvent, pfxHash, pfxKey}
	groups := map[string][]kv.Entry{}
	for _, e := range existing {
		p, _, ok := strings.Cut(string(e.Key), "/")
		if !ok {
			return nil, fmt.Errorf("unexpected entry %q in a store without keys", e.Key)
		}
		p += "/"
		if slices.Contains(ours, p) || p == pfxLastUsed || p == pfxRevoked {
			return nil, fmt.Errorf("the store holds %s entries without holding keys; load fills a new store", p)
		}
		groups[p] = append(groups[p], e) // already sorted: the engine's All reads in key order
	}
	parts := map[string]func() ([]kv.Entry, error){}
	for p, entries := range groups {
		parts[p] = fixedStream(entries)
	}

	// Prepared in the background, each part waiting for what it reads:
	// the hash entries are needed third, so they are encoded while the
	// first parts are written.
	var byID, byAccount []*Key
	ordered := background(func() {
		byID = idOrder(keys)
		byAccount = accountOrder(byID)
	})
	var entries []byte
	var offs []int // keys[i]'s hash entry is entries[offs[i]:offs[i+1]]
	encoded := background(func() { entries, offs = hashEntries(keys) })

	parts[pfxAcctKey] = batchStream(len(keys), ordered, func(b []byte, i int) ([]byte, int, error) {
		k := byAccount[i]
		b = appendKeyAK(b, k.Account, k.ID)
		return b, len(b), nil
	})
	parts[pfxEvent] = batchStream(len(keys), ordered, func(b []byte, i int) ([]byte, int, error) {
		k := byID[i]
		b = appendKeyE(b, k.ID, newEventID())
		n := len(b)
		b, err := appendCreatedEvent(b, k, ActionCreated, actor)
		return b, n, err
	})
	parts[pfxHash] = batchStream(len(keys), encoded, func(b []byte, i int) ([]byte, int, error) {
		r := &byHash[i]
		b = appendKeyH(b, r.hash)
		n := len(b)
		return append(b, entries[offs[r.i]:offs[r.i+1]]...), n, nil
	})
	parts[pfxKey] = batchStream(len(keys), ordered, func(b []byte, i int) ([]byte, int, error) {
		k := byID[i]
		b = appendKeyK(b, k.ID)
		n := len(b)
		return appendKeyRecord(b, k), n, nil
	})
	// Prefixes are "<segment>/" with no "/" inside the segment, so the
	// order of the prefixes is the order of their keys.
	var out []func() ([]kv.Entry, error)
	for _, p := range slices.Sorted(maps.Keys(parts)) {
		out = append(out, parts[p])
	}
	return out, nil
}

// fixedStream hands out entries already in memory.
func fixedStream(entries []kv.Entry) func() ([]kv.Entry, error) {
	return func() ([]kv.Entry, error) {
		n := min(loadBatch, len(entries))
		batch := entries[:n]
		entries = entries[n:]
		return batch, nil
	}
}

// background runs f in a goroutine; the function it returns waits for f.
func background(f func()) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	return func() { <-done }
}

// batchStream hands out n entries, a batch a call, after ready returns.
// appendEntry appends entry i, its key and then its value, to b and
// returns b and the length of b up to the key's end. A batch's entries
// share one buffer, which the next batch reuses: the engine copies a
// batch before it asks for the next.
func batchStream(n int, ready func(), appendEntry func(b []byte, i int) ([]byte, int, error)) func() ([]kv.Entry, error) {
	batch := make([]kv.Entry, 0, loadBatch)
	var buf []byte
	next := 0
	return func() ([]kv.Entry, error) {
		if next == 0 {
			ready()
		}
		batch, buf = batch[:0], buf[:0]
		for ; next < n && len(batch) < loadBatch; next++ {
			start := len(buf)
			var keyEnd int
			var err error
			if buf, keyEnd, err = appendEntry(buf, next); err != nil {
				return nil, err
			}
			// A buffer that grows moves; the entries before keep the old one.
			batch = append(batch, kv.Entry{Key: buf[start:keyEnd:keyEnd], Val: buf[keyEnd:len(buf):len(buf)]})
		}
		return batch, nil
	}
}

// hashEntries encodes every key's hash entry into one buffer, in the
// keys' order; keys[i]'s is buf[offs[i]:offs[i+1]].
func hashEntries(keys []*Key) (buf []byte, offs []int) {
	buf = make([]byte, 0, 128*len(keys)) // a typical entry is about 100 bytes
	offs = make([]int, len(keys)+1)
	for i, k := range keys {
		buf = appendHashEntry(buf, k)
		offs[i+1] = len(buf)
	}
	return buf, offs
}

// idOrder returns the keys sorted by ID. It sorts copies of the IDs'
// first 24 bytes, which hold a UUIDv7's time and sequence, so that it
// reads a key only when two IDs share them.
func idOrder(keys []*Key) []*Key {
	type ref struct {
		pfx [3]uint64
		k   *Key
	}
	refs := make([]ref, len(keys))
	for i, k := range keys {
		var p [24]byte
		copy(p[:], k.ID)
		refs[i] = ref{[3]uint64{binary.BigEndian.Uint64(p[:]), binary.BigEndian.Uint64(p[8:]), binary.BigEndian.Uint64(p[16:])}, k}
	}
	slices.SortFunc(refs, func(a, b ref) int {
		for j := range a.pfx {
			if a.pfx[j] != b.pfx[j] {
				return cmp.Compare(a.pfx[j], b.pfx[j])
			}
		}
		return strings.Compare(a.k.ID, b.k.ID)
	})
	out := make([]*Key, len(refs))
	for i, r := range refs {
		out[i] = r.k
	}
	return out
}

// accountOrder returns the keys of byID in the order of their ak/ keys,
// ak/<account>/<id> in byte order ("acme-2/" sorts before "acme/"):
// grouped by account, each group in the order of byID.
func accountOrder(byID []*Key) []*Key {
	groups := map[string][]*Key{}
	for _, k := range byID {
		groups[k.Account] = append(groups[k.Account], k)
	}
	accounts := slices.SortedFunc(maps.Keys(groups), cmpSegment)
	out := make([]*Key, 0, len(byID))
	for _, a := range accounts {
		out = append(out, groups[a]...)
	}
	return out
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
