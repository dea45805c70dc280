package keystore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore/badgerstore"
	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// TestLoad: a new store loaded offline holds what ImportKeys would have
// written: the keys verify (with the filter built), their records, hash
// entries, account index and created events are there, accounts created
// before the load are kept, and the store takes imports afterwards.
func TestLoad(t *testing.T) {
	badgerOnly(t) // Load writes Badger's tables
	dir := filepath.Join(t.TempDir(), "store")
	clock := newTestClock()
	f := DefaultFormat()

	// Accounts made before the load, whose ids sort around each other
	// ("acme-2/" before "acme/"), so the account index must be in byte order.
	s, err := Open(Options{Dir: dir, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"acme", "acme-2"} {
		if _, err := s.CreateAccount(Account{ID: id, Status: AccountOpen}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	const n = 3000
	in, plains := plainEntries(t, f, n, NewKey{})
	for i := range in {
		in[i].Account = []string{"", "acme", "acme-2"}[i%3]
	}
	in[7] = ImportKey{SHA256: sha256Hex("a key known by its hash"), NewKey: NewKey{Name: "hashed", Scopes: []string{"orders:write"}}}
	keys, err := Load(Options{Dir: dir, Now: clock.Now}, in, f, "migration")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != n {
		t.Fatalf("Load returned %d keys", len(keys))
	}

	s = openStoreOpts(t, Options{Dir: dir, Now: clock.Now})
	waitFilter(t, s)
	v := &Verifier{Store: s, Format: f}
	for i, p := range plains {
		if i == 7 {
			continue
		}
		res, err := v.Verify(p, Scope{}, false)
		if err != nil || res.Outcome != OK || res.Key.Name != fmt.Sprintf("key %d", i) {
			t.Fatalf("key %d: %v %v", i, res.Outcome, err)
		}
	}
	if res, _ := v.Verify("a key known by its hash", Scope{}, false); res.Outcome != MalformedKey {
		t.Fatalf("a foreign plaintext: %v", res.Outcome)
	}
	checkHashEntries(t, s)
	want := map[string]int{}
	for _, k := range keys {
		want[k.Account]++
	}
	for _, acct := range []string{DefaultAccount, "acme", "acme-2"} {
		got, after := 0, ""
		for {
			page, next, err := s.ListKeys(ListQuery{Account: acct, Limit: MaxListLimit, After: after})
			if err != nil {
				t.Fatal(err)
			}
			got += len(page)
			if after = next; next == "" {
				break
			}
		}
		if got != want[acct] {
			t.Fatalf("account %s: %d keys, want %d", acct, got, want[acct])
		}
	}
	events, err := s.Audit(keys[0].ID)
	if err != nil || len(events) != 1 || events[0].Action != ActionCreated || events[0].Actor != "migration" {
		t.Fatalf("audit of a loaded key: %+v, %v", events, err)
	}
	// The store is an ordinary one afterwards.
	more, err := s.ImportKeys([]ImportKey{{SHA256: sha256Hex("later"), NewKey: NewKey{Name: "later", Scopes: []string{"a:read"}}}}, f, "t")
	if err != nil || len(more) != 1 {
		t.Fatalf("import after the load: %v", err)
	}
	if _, err := s.RevokeKey(keys[1].ID, "t"); err != nil {
		t.Fatal(err)
	}
	if res, _ := v.Verify(plains[1], Scope{}, false); res.Outcome != KeyRevoked {
		t.Fatalf("revoked loaded key: %v", res.Outcome)
	}
}

// TestLoadRefuses: a store that holds keys, invalid entries and unknown
// accounts are refused, and the store is left as it was.
func TestLoadRefuses(t *testing.T) {
	badgerOnly(t) // Load writes Badger's tables
	f := DefaultFormat()
	good := func(name string) ImportKey {
		p, err := f.Generate()
		if err != nil {
			t.Fatal(err)
		}
		return ImportKey{Key: p, NewKey: NewKey{Name: name, Scopes: []string{"a:read"}}}
	}
	dir := t.TempDir()
	if _, err := Load(Options{Dir: dir}, nil, f, "t"); err == nil {
		t.Error("an empty load was accepted")
	}
	bad := []ImportKey{good("a"), {Key: "not a key", NewKey: NewKey{Name: "b", Scopes: []string{"a:read"}}}}
	var ie *InvalidError
	if _, err := Load(Options{Dir: dir}, bad, f, "t"); !errors.As(err, &ie) || ie.Field != "keys[1].key" {
		t.Errorf("invalid entry: %v", err)
	}
	// Entries are checked in parallel chunks; the error still names the
	// first invalid one.
	many := make([]ImportKey, 5000)
	for i := range many {
		many[i] = good(fmt.Sprint(i))
	}
	many[4000].Scopes = []string{"bad scope"}
	many[100].Scopes = []string{"also bad"}
	if _, err := Load(Options{Dir: dir}, many, f, "t"); !errors.As(err, &ie) || ie.Field != "keys[100].scopes" {
		t.Errorf("two invalid entries: %v", err)
	}
	dup := good("c")
	if _, err := Load(Options{Dir: dir}, []ImportKey{dup, dup}, f, "t"); !errors.As(err, &ie) || ie.Field != "keys[1]" {
		t.Errorf("duplicate entry: %v", err)
	}
	other := good("d")
	other.Account = "nobody"
	if _, err := Load(Options{Dir: dir}, []ImportKey{other}, f, "t"); !errors.As(err, &ie) || ie.Field != "keys[0].account" {
		t.Errorf("unknown account: %v", err)
	}
	// An expiry in 9999 with an offset west of UTC is in the year 10000
	// in UTC: refused before anything is written. (It failed while the
	// stream was written, after Badger's writer had dropped the store:
	// the accounts made before were gone.)
	withAccount(t, dir, "acme")
	far := good("far")
	farAt := time.Date(9999, 12, 31, 23, 0, 0, 0, time.FixedZone("-05:00", -5*3600))
	far.ExpiresAt = &farAt
	if _, err := Load(Options{Dir: dir}, []ImportKey{good("g"), far}, f, "t"); !errors.As(err, &ie) || ie.Field != "keys[1].expires_at" {
		t.Errorf("expiry in the year 10000 in UTC: %v", err)
	}
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Account("acme"); err != nil {
		t.Errorf("an account after a refused load: %v", err)
	}
	if page, _, _ := s.ListKeys(ListQuery{Limit: 10}); len(page) != 0 {
		t.Errorf("refused loads stored %d keys", len(page))
	}
	k, plain := mustCreate(t, s, f, NewKey{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(Options{Dir: dir}, []ImportKey{good("e")}, f, "t"); err == nil {
		t.Fatal("a load into a store with keys was accepted")
	}
	s = openStoreOpts(t, Options{Dir: dir})
	if res, err := (&Verifier{Store: s, Format: f}).Verify(plain, Scope{}, false); err != nil || res.Outcome != OK || res.Key.ID != k.ID {
		t.Fatalf("the existing key after a refused load: %v %v", res.Outcome, err)
	}

	// A store held by another process (here: this one) is refused by
	// Badger's directory lock.
	if _, err := Load(Options{Dir: dir}, []ImportKey{good("f")}, f, "t"); err == nil {
		t.Error("a load into an open store was accepted")
	}
}

// TestHashOrder: hashOrder (the duplicate check of imports and loads)
// sorts the hashes and names the first entry that repeats an earlier one,
// and the entry it repeats, whatever the hash order.
func TestHashOrder(t *testing.T) {
	badgerOnly(t) // Load writes Badger's tables
	for _, tc := range []struct {
		keys []byte // each entry's key, by a letter
		want string // the refused field, "" for none
		msg  string // and the error's message
	}{
		{[]byte("abc"), "", ""},
		{[]byte("aa"), "keys[1]", "keys[1]: the same key as keys[0]"},
		{[]byte("abcba"), "keys[3]", "keys[3]: the same key as keys[1]"},  // b repeats first, though a sorts first
		{[]byte("abcbaa"), "keys[3]", "keys[3]: the same key as keys[1]"}, // a third a changes nothing
		{[]byte("zyxzyx"), "keys[3]", "keys[3]: the same key as keys[0]"}, // the repeat of the last in hash order
		{[]byte("abbbca"), "keys[2]", "keys[2]: the same key as keys[1]"}, // a run of three
	} {
		keys := make([]*Key, len(tc.keys))
		for i, c := range tc.keys {
			keys[i] = &Key{Hash: HashKey(string(c))}
		}
		refs, err := hashOrder(keys)
		var ie *InvalidError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.keys, err)
		case tc.want != "" && (!errors.As(err, &ie) || ie.Field != tc.want || ie.Message != tc.msg):
			t.Errorf("%s: %v, want %s: %s", tc.keys, err, tc.want, tc.msg)
		}
		for j := 1; j < len(refs); j++ {
			if string(refs[j-1].hash[:]) > string(refs[j].hash[:]) || refs[j].pfx != binary.BigEndian.Uint64(refs[j].hash[:8]) {
				t.Fatalf("%s: not in hash order at %d", tc.keys, j)
			}
		}
	}
}

// BenchmarkLoad is the bulk-load rate of Load into a new store, of
// APIKEY_BENCH_LOAD_KEYS keys (default 100,000; CI sets fewer).
func BenchmarkLoad(b *testing.B) {
	f := DefaultFormat()
	n := benchEnvInt(b, "APIKEY_BENCH_LOAD_KEYS", 100_000)
	in, _ := plainEntries(b, f, n, NewKey{Scopes: []string{"contacts:write", "orders:read"}})
	b.ResetTimer()
	var spent time.Duration
	for i := 0; b.Loop(); i++ {
		dir := filepath.Join(b.TempDir(), fmt.Sprint(i))
		t0 := time.Now()
		if _, err := Load(Options{Dir: dir}, in, f, "bench"); err != nil {
			b.Fatal(err)
		}
		spent += time.Since(t0)
		b.StopTimer()
		os.RemoveAll(dir)
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/spent.Seconds(), "keys/s")
}

// TestReplaceAllRestoresOnFailure: a load whose write fails after
// Badger's writer dropped the store's contents writes back what the store
// held (its accounts), so that the store is as it was.
func TestReplaceAllRestoresOnFailure(t *testing.T) {
	badgerOnly(t) // Load writes Badger's tables
	dir := t.TempDir()
	withAccount(t, dir, "acme")
	eng, err := badgerstore.OpenForLoad(dir, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	existing, err := eng.All()
	if err != nil {
		t.Fatal(err)
	}
	broken := errors.New("the disk is full")
	failing := func() ([]kv.Entry, error) { return nil, broken }
	err = eng.ReplaceAll(existing, []func() ([]kv.Entry, error){fixedStream(existing), failing})
	if !errors.Is(err, broken) {
		t.Fatalf("ReplaceAll: %v, want the stream's error", err)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
	s := openStoreOpts(t, Options{Dir: dir})
	if _, err := s.Account("acme"); err != nil {
		t.Errorf("the account after a failed load: %v", err)
	}
}

// withAccount makes a store in dir that holds the account id and no keys.
func withAccount(t *testing.T, dir, id string) {
	t.Helper()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateAccount(Account{ID: id}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
