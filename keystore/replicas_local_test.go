package keystore

import (
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
)

// commandStats reads Redis's INFO commandstats: calls by command.
func commandStats(t *testing.T, srv *redistest.Server) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, line := range strings.Split(srv.Do("INFO", "commandstats"), "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			t.Fatalf("INFO commandstats: %q", line)
		}
		out[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return out
}

// notLocal are the commands that reach Redis without a request: the
// follower's reads of the changes stream (XREAD, every 100 ms while
// nothing changes), the Redis client's keep-alive PINGs on idle
// connections, the cluster limits' heartbeat (EVAL, once a second; their
// leases run with EVALSHA) and the test's own INFO.
var notLocal = map[string]bool{"xread": true, "info": true, "ping": true, "eval": true}

// heartbeatCalls are the commands the heartbeat's script runs, once each
// per EVAL: Redis counts a script's commands in commandstats too.
var heartbeatCalls = []string{"time", "zadd", "zremrangebyscore", "pexpire", "zcard"}

// redisCalls is what reached Redis between two commandStats, besides
// notLocal and the commands of the heartbeats (EVALs) among them.
func redisCalls(before, after map[string]int64) map[string]int64 {
	d := map[string]int64{}
	for cmd, n := range after {
		if !notLocal[cmd] && n != before[cmd] {
			d[cmd] = n - before[cmd]
		}
	}
	beats := after["eval"] - before["eval"]
	for _, cmd := range heartbeatCalls {
		if d[cmd] -= beats; d[cmd] <= 0 {
			delete(d, cmd)
		}
	}
	return d
}

// TestRequestPathStaysLocal: on Redis, a cached key, a flood of 100,000
// unknown well-formed keys and malformed keys cause no Redis call (INFO
// commandstats before and after, besides the follower's XREADs); a known
// key not yet cached costs exactly one GET, and is cached then.
func TestRequestPathStaysLocal(t *testing.T) {
	srv := redistest.Start(t)
	// The last-used flush (every 30 s by default) is the one periodic
	// write; an hour keeps it out of the counts.
	rs := replicas(t, srv, 2, Options{LastUsedFlush: time.Hour})
	a, b := rs[0], rs[1]
	waitFilter(t, a)
	waitFilter(t, b)
	f := DefaultFormat()
	noLimit := &Limit{}
	va, vb := &Verifier{Store: a, Format: f, DefaultLimit: noLimit}, &Verifier{Store: b, Format: f, DefaultLimit: noLimit}
	_, cached := mustCreate(t, a, f, NewKey{})
	if got := outcome(t, va, cached); got != OK {
		t.Fatalf("the key: %v", got)
	}
	unknown := make([]string, 100_000)
	for i := range unknown {
		p, err := f.Generate()
		if err != nil {
			t.Fatal(err)
		}
		unknown[i] = p
	}
	malformed := []string{"", "x", "ak_", cached[:len(cached)-1], cached + "x", strings.ToUpper(cached), "Bearer " + cached, strings.Repeat("a", 4096)}
	for range 1000 {
		var r [24]byte
		_, _ = rand.Read(r[:])
		malformed = append(malformed, base64.RawURLEncoding.EncodeToString(r[:]))
	}

	before := commandStats(t, srv)
	for range 1000 {
		if got := outcome(t, va, cached); got != OK {
			t.Fatalf("the cached key: %v", got)
		}
	}
	filtered := 0
	for _, p := range unknown {
		res, err := va.Verify(p, Scope{}, false)
		if err != nil || res.Outcome != InvalidKey {
			t.Fatalf("an unknown key: %v %v", res.Outcome, err)
		}
		filtered++
	}
	for _, p := range malformed {
		res, err := va.Verify(p, Scope{}, false)
		if err != nil || res.Outcome == OK {
			t.Fatalf("a malformed key %q: %v %v", p, res.Outcome, err)
		}
	}
	after := commandStats(t, srv)
	if d := redisCalls(before, after); len(d) > 0 {
		t.Errorf("1,000 cached, %d unknown and %d malformed keys reached Redis: %v", filtered, len(malformed), d)
	}
	t.Logf("between the counts: %d XREADs of the follower (two replicas), nothing else", after["xread"]-before["xread"])

	// A key created on A is known to B (its hash is in B's filter) but
	// not cached there: one GET, then none.
	_, fresh := mustCreate(t, a, f, NewKey{})
	within(t, "the new key's hash on B", time.Second, func() bool {
		h := HashKey(fresh)
		return b.filters.cur.Load().mayContain(&h)
	})
	for i, want := range []int64{1, 0, 0} {
		before := commandStats(t, srv)
		if got := outcome(t, vb, fresh); got != OK {
			t.Fatalf("the new key on B: %v", got)
		}
		d := redisCalls(before, commandStats(t, srv))
		if d["get"] != want || len(d) > min(int(want), 1) {
			t.Errorf("verification %d of a key not yet cached: Redis calls %v, want %d GET", i+1, d, want)
		}
	}
}
