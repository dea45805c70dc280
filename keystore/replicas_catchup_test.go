package keystore

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
	"github.com/caddy-apikey/caddy-apikey/keystore/redisstore"
)

// TestReplicaStartsWhileOthersChange: a replica that starts while another
// keeps creating and revoking keys ends up current: once the changes
// stop, it verifies every key as the writer does, within a second.
func TestReplicaStartsWhileOthersChange(t *testing.T) {
	srv := redistest.Start(t)
	a := replicas(t, srv, 1, Options{})[0]
	f := DefaultFormat()
	type key struct{ id, plain string }
	var (
		mu   sync.Mutex
		keys []key
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k, plain, err := a.CreateKey(NewKey{Name: "k", Scopes: []string{"a:read"}}, f, "t")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			keys = append(keys, key{k.ID, plain})
			if i%2 == 1 {
				if _, err := a.RevokeKey(keys[i/2].id, "t"); err != nil {
					t.Error(err)
				}
			}
			mu.Unlock()
		}
	}()
	time.Sleep(100 * time.Millisecond)
	o := Options{Engine: openRedisEngine(t, srv, "replicas:", "late")}
	late, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { late.Close() })
	vl := &Verifier{Store: late, Format: f, DefaultLimit: &Limit{}}
	// Verify (and cache) keys while the writer goes on.
	for range 200 {
		mu.Lock()
		k := keys[len(keys)-1]
		mu.Unlock()
		if _, err := vl.Verify(k.plain, Scope{}, false); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-done
	va := &Verifier{Store: a, Format: f, DefaultLimit: &Limit{}}
	took := within(t, "the late replica agrees with the writer", time.Second, func() bool {
		for _, k := range keys {
			if outcome(t, vl, k.plain) != outcome(t, va, k.plain) {
				return false
			}
		}
		return true
	})
	t.Logf("%d keys created and %d revoked around the start; the late replica agreed %v after the last change", len(keys), len(keys)/2, took.Round(time.Millisecond))
}

// TestReplicaReloadsAfterAGap: a replica whose follower is held up while
// another replica makes more changes than the changes stream keeps
// (StreamLength 10) cannot catch up from the stream: it sees that changes
// are missing (the change numbers jump) and reloads. Afterwards keys it
// had cached and that were revoked in the lost changes are refused, and
// keys created in them are accepted.
func TestReplicaReloadsAfterAGap(t *testing.T) {
	// Small stream nodes, so that MAXLEN ~ trims close to StreamLength.
	srv := redistest.Start(t, "--stream-node-max-entries", "4")
	open := func(origin string) *Store {
		e, err := redisstore.Open(redisstore.Options{URL: srv.URL(), Namespace: "gap:", Bucket: ScanBucket, Watched: Watched, Origin: origin, StreamLength: 10})
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(Options{Engine: e, MaxStaleness: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open("A"), open("B")
	f := DefaultFormat()
	vb := &Verifier{Store: b, Format: f, DefaultLimit: &Limit{}}
	var old []*Key
	var oldPlain []string
	for range 5 {
		k, p := mustCreate(t, a, f, NewKey{})
		old = append(old, k)
		oldPlain = append(oldPlain, p)
	}
	created := time.Now().UnixNano()
	within(t, "B applied the creates", time.Second, func() bool { return b.confirmed.Load() > created })
	for _, p := range oldPlain {
		within(t, "a key cached on B", time.Second, func() bool {
			return outcome(t, vb, p) == OK && b.cache.get(HashKey(p)) != nil
		})
	}
	// B's follower applies the account's change under acctMu: holding it
	// holds the follower there.
	b.acctMu.RLock()
	held := true
	t.Cleanup(func() { // before the stores close, on a failure
		if held {
			b.acctMu.RUnlock()
		}
	})
	if _, err := a.CreateAccount(Account{ID: "held"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range oldPlain {
		if b.cache.get(HashKey(p)) == nil {
			t.Fatal("a key left B's cache")
		}
	}
	time.Sleep(300 * time.Millisecond) // the follower is waiting for the lock
	for _, k := range old {
		if _, err := a.RevokeKey(k.ID, "t"); err != nil {
			t.Fatal(err)
		}
	}
	var newPlain []string
	for range 5 {
		_, p := mustCreate(t, a, f, NewKey{})
		newPlain = append(newPlain, p)
	}
	filler, _ := mustCreate(t, a, f, NewKey{})
	for i := range 100 {
		if _, err := a.UpdateKey(filler.ID, KeyPatch{Metadata: map[string]string{"i": fmt.Sprint(i)}}, "t"); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := strconv.Atoi(strings.TrimPrefix(srv.Do("XLEN", "gap:changes"), ":")); n < 1 || n > 20 {
		t.Fatalf("the stream was not trimmed to about 10 entries: XLEN %d", n)
	}
	if got := outcome(t, vb, oldPlain[0]); got != OK {
		t.Fatalf("B knew of the revocation while held: %v", got)
	}
	released := time.Now()
	held = false
	b.acctMu.RUnlock()
	within(t, "revoked keys refused on B", time.Second, func() bool {
		for _, p := range oldPlain {
			if outcome(t, vb, p) != KeyRevoked {
				return false
			}
		}
		return true
	})
	within(t, "new keys accepted on B", time.Second, func() bool {
		for _, p := range newPlain {
			if outcome(t, vb, p) != OK {
				return false
			}
		}
		return true
	})
	if b.accountState("held") == nil {
		t.Error("the account created before the gap is unknown on B")
	}
	t.Logf("B current again %v after its follower was released", time.Since(released).Round(time.Millisecond))
}
