package keystore

import (
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
)

// TestReplicasRedisKilled: Redis with appendonly yes and appendfsync
// always is killed (SIGKILL) while clients create and revoke keys through
// two replicas. After it restarts, every acknowledged mutation is there:
// each key whose create was acknowledged exists and verifies (or is
// revoked, if its revocation was acknowledged or in flight), and each
// acknowledged revocation holds, on a fresh replica and on the two that
// lived through the outage. The test reports how many mutations were
// acknowledged and how many were in flight.
func TestReplicasRedisKilled(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	if got := srv.List("CONFIG", "GET", "appendfsync"); len(got) != 2 || got[1] != "always" {
		t.Fatalf("appendfsync: %v", got)
	}
	rs := replicas(t, srv, 2, Options{})
	f := DefaultFormat()

	type created struct {
		id, plain string
	}
	var (
		mu       sync.Mutex
		keys     []created           // acknowledged creates
		revoked  = map[string]bool{} // acknowledged revocations
		tried    = map[string]bool{} // revocations sent, acknowledged or not
		acked    int
		inFlight int // mutations that failed: they may or may not be stored
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, s := range rs {
		for c := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					// Every third mutation revokes a key this client made.
					if i%3 == 2 {
						mu.Lock()
						var id string
						for j := len(keys) - 1; j >= 0; j-- {
							if k := keys[j]; !tried[k.id] && (j+w+c)%2 == 0 {
								id = k.id
								tried[id] = true
								break
							}
						}
						mu.Unlock()
						if id == "" {
							continue
						}
						_, err := s.RevokeKey(id, "t")
						mu.Lock()
						if err == nil {
							revoked[id] = true
							acked++
						} else {
							inFlight++
						}
						mu.Unlock()
						if err != nil {
							return
						}
						continue
					}
					k, plain, err := s.CreateKey(NewKey{Name: "k", Scopes: []string{"a:read"}}, f, "t")
					mu.Lock()
					if err == nil {
						keys = append(keys, created{k.ID, plain})
						acked++
					} else {
						inFlight++
					}
					mu.Unlock()
					if err != nil {
						return // the client stops at its first failure
					}
				}
			}()
		}
	}
	time.Sleep(400 * time.Millisecond)
	srv.Signal(syscall.SIGKILL)
	close(stop)
	wg.Wait()
	srv.Restart()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("SIGKILL after %d acknowledged mutations (%d creates, %d revocations), %d in flight", acked, len(keys), len(revoked), inFlight)
	if len(keys) < 20 || len(revoked) < 5 {
		t.Fatalf("too few mutations before the kill to tell: %d creates, %d revocations", len(keys), len(revoked))
	}

	// What each acknowledged create must verify as.
	want := func(id string) (Outcome, bool) {
		switch {
		case revoked[id]:
			return KeyRevoked, true
		case tried[id]:
			return 0, false // a revocation in flight: either
		}
		return OK, true
	}
	fresh := replicas(t, srv, 1, Options{})[0]
	check := func(who string, v *Verifier) {
		for _, k := range keys {
			res, err := v.Verify(k.plain, Scope{}, false)
			if err != nil {
				t.Fatalf("%s: %v", who, err)
			}
			w, sure := want(k.id)
			if sure && res.Outcome != w || !sure && res.Outcome != OK && res.Outcome != KeyRevoked {
				t.Errorf("%s: acknowledged key %s verifies as %v, want %v", who, k.id, res.Outcome, w)
			}
		}
	}
	check("a fresh replica", &Verifier{Store: fresh, Format: f, DefaultLimit: &Limit{}})
	for _, k := range keys {
		rec, err := fresh.Key(k.id)
		if err != nil {
			t.Fatalf("acknowledged key %s after the restart: %v", k.id, err)
		}
		if revoked[k.id] && rec.RevokedAt == nil {
			t.Errorf("acknowledged revocation of %s lost", k.id)
		}
	}
	// The replicas that lived through the outage recover by themselves
	// and agree.
	for i, s := range rs {
		v := &Verifier{Store: s, Format: f, DefaultLimit: &Limit{}}
		// Its first reads after the restart may fail (a connection that
		// broke with the kill): it refuses (ErrStale) until its follower
		// confirms it current again.
		var failed []error
		took := within(t, "a replica after the restart", 5*time.Second, func() bool {
			for _, k := range keys {
				if _, err := v.Verify(k.plain, Scope{}, false); err != nil {
					if !errors.Is(err, ErrStale) {
						failed = append(failed, err)
					}
					return false
				}
			}
			return true
		})
		t.Logf("replica %c verifies every key again %v after the restart (failed reads meanwhile: %v)", 'A'+i, took.Round(time.Millisecond), failed)
		check(string(rune('A'+i)), v)
	}
}
