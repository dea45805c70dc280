package redisstore

import (
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

func openLimits(t *testing.T, srv *redistest.Server, origin string) *Engine {
	t.Helper()
	e, err := Open(Options{URL: srv.URL(), Bucket: func([]byte) []byte { return nil }, Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// TestTakeTokens: the bucket script grants what the bucket holds (and
// what it will hold within Ahead), adopts a changed limit keeping what was
// consumed, refills by Redis's clock, and leaves no key for a full bucket.
func TestTakeTokens(t *testing.T) {
	srv := redistest.Start(t)
	e := openLimits(t, srv, "a")
	take := func(bucket string, rate float64, burst, want int64, ahead time.Duration) kv.TokenTake {
		t.Helper()
		tk := []kv.TokenTake{{Bucket: bucket, Rate: rate, Burst: burst, Want: want, Ahead: ahead}}
		if err := e.TakeTokens(tk); err != nil {
			t.Fatal(err)
		}
		return tk[0]
	}
	steps := []struct {
		name           string
		rate           float64
		burst, want    int64
		ahead          time.Duration
		granted        int64
		beforeAtLeast  float64
		beforeAtMost   float64
		waitAtLeastMin time.Duration
	}{
		{"a new bucket is full", 1, 10, 4, 0, 4, 10, 10, 0},
		{"what is left", 1, 10, 10, 0, 6, 6, 6.1, 0},
		{"empty: a wait", 1, 10, 1, 0, 0, -0.1, 0.1, 900 * time.Millisecond},
		{"ahead: tokens due within 3s", 1, 10, 5, 3 * time.Second, 3, -0.1, 0.1, 0},
		{"in debt, a bigger burst keeps the debt", 1, 100, 1, 0, 0, -3.1, -2.9, 3 * time.Second},
	}
	for _, s := range steps {
		tk := take("b", s.rate, s.burst, s.want, s.ahead)
		if tk.Granted != s.granted || tk.Before < s.beforeAtLeast || tk.Before > s.beforeAtMost || tk.Wait < s.waitAtLeastMin {
			t.Errorf("%s: granted %d, before %.3f, wait %v; want %d, before in [%.1f, %.1f], wait >= %v",
				s.name, tk.Granted, tk.Before, tk.Wait, s.granted, s.beforeAtLeast, s.beforeAtMost, s.waitAtLeastMin)
		}
	}
	// A changed limit keeps what was consumed: 3 of 10 used, then 5.
	take("c", 1, 10, 3, 0)
	if tk := take("c", 1, 5, 0, 0); tk.Before < 1.9 || tk.Before > 2.1 {
		t.Errorf("3 of 10 used, limit 5: %.3f left, want 2", tk.Before)
	}
	// Refill by Redis's clock: 1000/s refills 20 in 20 ms.
	take("d", 1000, 20, 20, 0)
	time.Sleep(25 * time.Millisecond)
	if tk := take("d", 1000, 20, 20, 0); tk.Granted != 20 {
		t.Errorf("after 25 ms at 1000/s: %d granted, want 20", tk.Granted)
	}
	// A full bucket is no key; a used one expires when it would be full.
	take("e", 1, 10, 0, 0)
	if got := srv.Do("EXISTS", "apikey:rl:e"); got != "0" && got != ":0" {
		t.Errorf("a full bucket is stored (EXISTS %s)", got)
	}
	take("e", 1, 10, 1, 0)
	if ttl := srv.Do("PTTL", "apikey:rl:e"); ttl == "-1" || ttl == ":-1" || ttl == "-2" || ttl == ":-2" {
		t.Errorf("a used bucket without expiry: PTTL %s", ttl)
	}
}

// TestAddCounts: quota counters are capped at their limit, start from
// their seed, give back down to 0, and expire.
func TestAddCounts(t *testing.T) {
	srv := redistest.Start(t)
	e := openLimits(t, srv, "a")
	exp := time.Now().Add(time.Hour)
	steps := []struct {
		name                  string
		limit, add, seed      int64
		wantGranted, wantUsed int64
	}{
		{"from the seed", 10, 3, 4, 3, 7},
		{"the seed only counts for a new counter", 10, 1, 9, 1, 8},
		{"capped", 10, 5, 0, 2, 10},
		{"full", 10, 1, 0, 0, 10},
		{"give back", 10, -4, 0, -4, 6},
		{"not below 0", 10, -20, 0, -6, 0},
	}
	for _, s := range steps {
		a := []kv.CountAdd{{Counter: "k/x/1", Limit: s.limit, Add: s.add, Seed: s.seed, ExpireAt: exp}}
		if err := e.AddCounts(a); err != nil {
			t.Fatal(err)
		}
		if a[0].Granted != s.wantGranted || a[0].Used != s.wantUsed {
			t.Errorf("%s: granted %d used %d, want %d %d", s.name, a[0].Granted, a[0].Used, s.wantGranted, s.wantUsed)
		}
	}
	if ttl := srv.Do("PTTL", "apikey:q:k/x/1"); ttl == "-1" || ttl == ":-1" {
		t.Errorf("a counter without expiry")
	}
}

// TestHeartbeat: each origin counts once while its heartbeat lasts.
func TestHeartbeat(t *testing.T) {
	srv := redistest.Start(t)
	a, b := openLimits(t, srv, "a"), openLimits(t, srv, "b")
	for i, c := range []struct {
		e    *Engine
		ttl  time.Duration
		want int
	}{{a, time.Second, 1}, {a, time.Second, 1}, {b, 50 * time.Millisecond, 2}} {
		if n, err := c.e.Heartbeat(c.ttl); err != nil || n != c.want {
			t.Errorf("heartbeat %d: %d %v, want %d", i, n, err, c.want)
		}
	}
	time.Sleep(80 * time.Millisecond)
	if n, err := a.Heartbeat(time.Second); err != nil || n != 1 {
		t.Errorf("after b's heartbeat lapsed: %d %v, want 1", n, err)
	}
}
