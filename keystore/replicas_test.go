package keystore

import (
	"errors"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
)

// replicas opens n stores on one Redis namespace, each as its own process
// would (its own origin, cache and accounts).
func replicas(t *testing.T, srv *redistest.Server, n int, opts Options) []*Store {
	t.Helper()
	return replicasNS(t, srv, n, "replicas:", opts)
}

// replicasNS is replicas on namespace ns: tests that run in parallel on
// one Redis give each theirs.
func replicasNS(t *testing.T, srv *redistest.Server, n int, ns string, opts Options) []*Store {
	t.Helper()
	var out []*Store
	for i := range n {
		o := opts
		o.Engine = openRedisEngine(t, srv, ns, string(rune('A'+i)))
		s, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

// within waits until cond holds, up to limit, and returns how long it
// took.
func within(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

func outcome(t *testing.T, v *Verifier, cred string) Outcome {
	t.Helper()
	res, err := v.Verify(cred, Scope{}, false)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return res.Outcome
}

// TestReplicasSeeEveryChange: three stores on one Redis, as three Caddy
// replicas. A key created on one verifies on the others; every change
// made on one (revoke, activate, scope edit, expiry, regenerate with a
// grace period, account status, delete) is honoured by the others within
// a second, and in practice within milliseconds: the test reports the
// delays.
func TestReplicasSeeEveryChange(t *testing.T) {
	srv := redistest.Start(t)
	rs := replicas(t, srv, 3, Options{})
	f := DefaultFormat()
	vs := make([]*Verifier, len(rs))
	for i, s := range rs {
		vs[i] = &Verifier{Store: s, Format: f}
	}
	var delays []time.Duration
	// everywhere waits until every replica but the one that made the
	// change gives want for cred.
	everywhere := func(what string, from int, cred string, want Outcome) {
		t.Helper()
		for i, v := range vs {
			if i == from {
				continue
			}
			delays = append(delays, within(t, what, time.Second, func() bool { return outcome(t, v, cred) == want }))
		}
	}

	// A new key is known to the other replicas once its hash entry's
	// change reached them (before that, their filter answers invalid_key).
	k, plain := mustCreate(t, rs[0], f, NewKey{Scopes: []string{"contacts:read"}})
	everywhere("created on A", 0, plain, OK)
	if _, err := rs[1].RevokeKey(k.ID, "t"); err != nil {
		t.Fatal(err)
	}
	everywhere("revoke on B", 1, plain, KeyRevoked)
	if _, err := rs[2].ActivateKey(k.ID, "t"); err != nil {
		t.Fatal(err)
	}
	everywhere("activate on C", 2, plain, OK)

	req := Scope{Resource: "contacts", Access: AccessWrite}
	if _, err := rs[0].UpdateKey(k.ID, KeyPatch{Scopes: []string{"contacts:write"}}, "t"); err != nil {
		t.Fatal(err)
	}
	for i, v := range vs[1:] {
		delays = append(delays, within(t, "scope edit on A", time.Second, func() bool {
			res, err := v.Verify(plain, req, true)
			return err == nil && res.Outcome == OK
		}))
		_ = i
	}
	past := time.Now().Add(-time.Minute)
	if _, err := rs[0].UpdateKey(k.ID, KeyPatch{ExpiresAt: &past}, "t"); err == nil {
		everywhere("expiry on A", 0, plain, KeyExpired)
		if _, err := rs[0].UpdateKey(k.ID, KeyPatch{ClearExpires: true}, "t"); err != nil {
			t.Fatal(err)
		}
		everywhere("expiry cleared on A", 0, plain, OK)
	}

	// Regenerate with a grace period on B: both strings work everywhere.
	_, fresh, err := rs[1].RegenerateKey(k.ID, f, time.Hour, "t")
	if err != nil {
		t.Fatal(err)
	}
	everywhere("new string from B", 1, fresh, OK)
	everywhere("old string in its grace period", 1, plain, OK)
	_, third, err := rs[1].RegenerateKey(k.ID, f, 0, "t")
	if err != nil {
		t.Fatal(err)
	}
	everywhere("a regenerate without grace ends the old string", 1, fresh, InvalidKey)
	everywhere("the previous grace string", 1, plain, InvalidKey)

	// Account status.
	if _, err := rs[2].CreateAccount(Account{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	ak, akPlain := mustCreate(t, rs[2], f, NewKey{Account: "acme"})
	everywhere("a key of a new account", 2, akPlain, OK)
	suspended := AccountSuspended
	if _, err := rs[0].UpdateAccount("acme", AccountPatch{Status: &suspended}); err != nil {
		t.Fatal(err)
	}
	everywhere("account suspended on A", 0, akPlain, AccountInactive)

	// Delete.
	if err := rs[0].DeleteKey(ak.ID); err != nil {
		t.Fatal(err)
	}
	everywhere("delete on A", 0, akPlain, InvalidKey)
	if err := rs[0].DeleteKey(k.ID); err != nil {
		t.Fatal(err)
	}
	everywhere("delete on A", 0, third, InvalidKey)

	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	t.Logf("propagation over %d observations: p50 %v, p99 %v, max %v", len(delays), delays[len(delays)/2], delays[len(delays)*99/100], delays[len(delays)-1])
}

// TestReplicaFailsClosed: a Redis that stops answering without a reset
// (SIGSTOP) makes every replica refuse key checks (ErrStale) within
// MaxStaleness + 0.5 s; a revocation made just before the stop is honoured
// everywhere; after SIGCONT the replicas verify again within 2 s.
func TestReplicaFailsClosed(t *testing.T) {
	srv := redistest.Start(t)
	rs := replicas(t, srv, 2, Options{MaxStaleness: time.Second})
	f := DefaultFormat()
	va, vb := &Verifier{Store: rs[0], Format: f}, &Verifier{Store: rs[1], Format: f}
	k, plain := mustCreate(t, rs[0], f, NewKey{})
	_, other := mustCreate(t, rs[0], f, NewKey{})
	for _, v := range []*Verifier{va, vb} {
		for _, cred := range []string{plain, other} {
			within(t, "a new key before the outage", time.Second, func() bool { return outcome(t, v, cred) == OK })
		}
	}
	if _, err := rs[0].RevokeKey(k.ID, "t"); err != nil {
		t.Fatal(err)
	}
	srv.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	for _, v := range []*Verifier{va, vb} {
		// The revocation, made before the stop, holds until the replica
		// refuses everything; a valid key in its cache passes until
		// max_staleness has passed, then is refused too.
		for _, cred := range []string{plain, other} {
			for {
				res, err := v.Verify(cred, Scope{}, false)
				if errors.Is(err, ErrStale) && v.Store.Stale() {
					break
				}
				// A read of Redis that times out is a refusal too (503).
				if cred == plain && err == nil && res.Outcome != KeyRevoked {
					t.Fatalf("the revoked key during the outage: %v", res.Outcome)
				}
				if time.Since(stopped) > 1500*time.Millisecond {
					t.Fatalf("still verifying %v after SIGSTOP: %v %v", time.Since(stopped), res.Outcome, err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	refusing := time.Since(stopped)
	srv.Signal(syscall.SIGCONT)
	resumed := time.Now()
	for _, v := range []*Verifier{va, vb} {
		within(t, "verifying after SIGCONT", 2*time.Second, func() bool {
			res, err := v.Verify(other, Scope{}, false)
			return err == nil && res.Outcome == OK
		})
	}
	t.Logf("refusing %v after SIGSTOP (max_staleness 1s); verifying again %v after SIGCONT", refusing.Round(time.Millisecond), time.Since(resumed).Round(time.Millisecond))
	for _, v := range []*Verifier{va, vb} {
		within(t, "the revoked key after the outage", 2*time.Second, func() bool {
			res, err := v.Verify(plain, Scope{}, false)
			if err == nil && res.Outcome == OK {
				t.Fatal("the revoked key passed after the outage")
			}
			return err == nil && res.Outcome == KeyRevoked
		})
	}
}

// TestReplicaLongStalenessServesCachedKeys: with a max_staleness raised to
// keep serving through a Redis outage, cached keys go on verifying while
// Redis is stopped (SIGSTOP), and a key that is not cached is refused
// (it needs a Redis read): after the first failed read at once, not after
// another read timeout.
func TestReplicaLongStalenessServesCachedKeys(t *testing.T) {
	srv := redistest.Start(t)
	rs := replicas(t, srv, 1, Options{MaxStaleness: 5 * time.Minute})
	f := DefaultFormat()
	v := &Verifier{Store: rs[0], Format: f}
	_, cached := mustCreate(t, rs[0], f, NewKey{})
	_, uncached := mustCreate(t, rs[0], f, NewKey{})
	_, uncached2 := mustCreate(t, rs[0], f, NewKey{})
	if got := outcome(t, v, cached); got != OK {
		t.Fatalf("before: %v", got)
	}
	srv.Signal(syscall.SIGSTOP)
	defer srv.Signal(syscall.SIGCONT)
	if _, err := v.Verify(uncached, Scope{}, false); err == nil {
		t.Fatal("a key that is not cached verified while Redis is stopped")
	}
	t0 := time.Now()
	if _, err := v.Verify(uncached2, Scope{}, false); !errors.Is(err, ErrStale) {
		t.Errorf("a second uncached key: %v, want ErrStale at once", err)
	}
	if d := time.Since(t0); d > 100*time.Millisecond {
		t.Errorf("the second uncached key waited %v", d)
	}
	for range 20 {
		if got := outcome(t, v, cached); got != OK {
			t.Fatalf("a cached key during the outage, within max_staleness: %v", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rs[0].Stale() {
		t.Error("stale 2 s into the outage with max_staleness 5m")
	}
}

// TestReplicaFillRace: cache fills on one replica racing with changes made
// on another never leave a stale entry behind. Readers on B verify a key
// (filling B's cache on every miss) while A revokes and activates it; once
// B answers as A's last change says, it goes on answering so while the
// readers keep filling (a fill that read Redis before the change and put
// its entry after the change's invalidation would make B flip back).
func TestReplicaFillRace(t *testing.T) {
	srv := redistest.Start(t)
	rs := replicas(t, srv, 2, Options{})
	f := DefaultFormat()
	k, plain := mustCreate(t, rs[0], f, NewKey{})
	vb := &Verifier{Store: rs[1], Format: f, DefaultLimit: &Limit{}}
	within(t, "the key on B", time.Second, func() bool { return outcome(t, vb, plain) == OK })
	stop := make(chan struct{})
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := vb.Verify(plain, Scope{}, false); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	defer func() {
		close(stop)
		for range 4 {
			<-done
		}
	}()
	for round := range 20 {
		want := KeyRevoked
		var err error
		if round%2 == 0 {
			_, err = rs[0].RevokeKey(k.ID, "t")
		} else {
			_, err = rs[0].ActivateKey(k.ID, "t")
			want = OK
		}
		if err != nil {
			t.Fatal(err)
		}
		within(t, "B follows A's change", time.Second, func() bool { return outcome(t, vb, plain) == want })
		for until := time.Now().Add(30 * time.Millisecond); time.Now().Before(until); {
			if got := outcome(t, vb, plain); got != want {
				t.Fatalf("round %d: B answered %v after it had answered %v: a stale entry", round, got, want)
			}
		}
	}
}

// TestReplicaFillAfterChange: the fill of B's cache that read a key before
// a change made on A, and comes after the change reached B, is dropped
// (the cache's generation moved): B answers as the change says. The fill
// is held between its read and its put until the change has been applied.
func TestReplicaFillAfterChange(t *testing.T) {
	srv := redistest.Start(t)
	rs := replicas(t, srv, 2, Options{})
	f := DefaultFormat()
	k, plain := mustCreate(t, rs[0], f, NewKey{})
	vb := &Verifier{Store: rs[1], Format: f}
	within(t, "the key's hash on B", time.Second, func() bool {
		h := HashKey(plain)
		return rs[1].filters.cur.Load() != nil && rs[1].filters.cur.Load().mayContain(&h)
	})
	held := false
	testHookBeforeFill = func() {
		if held {
			return
		}
		held = true
		gen := rs[1].cache.gen.Load()
		if _, err := rs[0].RevokeKey(k.ID, "t"); err != nil {
			t.Error(err)
		}
		// Until the revocation's change has been applied on B.
		for deadline := time.Now().Add(time.Second); rs[1].cache.gen.Load() == gen; {
			if time.Now().After(deadline) {
				t.Error("the revocation did not reach B")
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	defer func() { testHookBeforeFill = nil }()
	// The first verification reads the key as it was (active) and is held
	// before its fill; what it answers is what it read.
	if got := outcome(t, vb, plain); got != OK {
		t.Fatalf("the verification that read before the change: %v", got)
	}
	if got := outcome(t, vb, plain); got != KeyRevoked {
		t.Fatalf("after the change reached B: %v, want key_revoked (a stale fill was cached)", got)
	}
}
