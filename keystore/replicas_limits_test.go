package keystore

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
)

// drive sends requests with the credentials creds (round robin) through
// the verifiers at total requests per second for d, each verifier its
// share of spread, and returns how many passed on each, with the time
// from the first request to the last.
func drive(t *testing.T, vs []*Verifier, creds []string, spread []float64, total float64, d time.Duration) ([]int, time.Duration) {
	t.Helper()
	passed := make([]int, len(vs))
	var wg sync.WaitGroup
	start := time.Now()
	var last time.Time
	var mu sync.Mutex
	for i, v := range vs {
		if spread[i] == 0 {
			continue
		}
		every := time.Duration(float64(time.Second) / (total * spread[i]))
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for k := 0; ; k++ {
				at := start.Add(time.Duration(k) * every)
				if at.Sub(start) >= d {
					break
				}
				time.Sleep(time.Until(at))
				res, err := v.Verify(creds[k%len(creds)], Scope{}, false)
				if err != nil {
					t.Errorf("verify: %v", err)
					return
				}
				switch res.Outcome {
				case OK:
					n++
				case RateLimited:
					if res.RetryAfter < 1 {
						t.Errorf("a refusal with Retry-After %d", res.RetryAfter)
					}
				default:
					t.Errorf("outcome %s", res.Outcome.Code())
				}
			}
			mu.Lock()
			passed[i] = n
			if now := time.Now(); now.After(last) {
				last = now
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return passed, last.Sub(start)
}

// refills is the replicas' round trips for leases.
func refills(rs []*Store) uint64 {
	var n uint64
	for _, s := range rs {
		n += s.Stats().LeaseRefills
	}
	return n
}

// TestReplicasGlobalRateLimit: three stores on one Redis share a key's
// bucket and an account's bucket. At 4x the limit, spread evenly and
// 80/10/10, the replicas together pass burst + rate x elapsed within -5%
// and +1%, with at most one Redis call per 5 passed requests.
func TestReplicasGlobalRateLimit(t *testing.T) {
	srv := redistest.Start(t)
	const rate, burst = 200, 50
	const d = 3 * time.Second
	cases := []struct {
		name    string
		spread  []float64
		account bool
	}{
		{"key even", []float64{1. / 3, 1. / 3, 1. / 3}, false},
		{"key 80/10/10", []float64{.8, .1, .1}, false},
		{"account even", []float64{1. / 3, 1. / 3, 1. / 3}, true},
		{"account 80/10/10", []float64{.8, .1, .1}, true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rs := replicasNS(t, srv, 3, fmt.Sprint("grl", i, ":"), Options{})
			lim := &RateLimit{Requests: rate, Window: "1s", Burst: burst}
			var creds []string
			vs := make([]*Verifier, len(rs))
			for j, s := range rs {
				vs[j] = &Verifier{Store: s, Format: DefaultFormat(), DefaultLimit: &Limit{}}
			}
			if tc.account {
				if _, err := rs[0].CreateAccount(Account{ID: "acme", RateLimit: lim}); err != nil {
					t.Fatal(err)
				}
				for range 4 {
					_, plain := mustCreate(t, rs[0], DefaultFormat(), NewKey{Account: "acme"})
					creds = append(creds, plain)
				}
			} else {
				_, plain := mustCreate(t, rs[0], DefaultFormat(), NewKey{RateLimit: lim})
				creds = append(creds, plain)
			}
			for _, v := range vs {
				within(t, "the keys on every replica", time.Second, func() bool {
					_, err := v.Store.lookup(HashKey(creds[len(creds)-1]))
					e, _ := v.Store.lookup(HashKey(creds[len(creds)-1]))
					return err == nil && e != nil
				})
			}
			before := refills(rs)
			passed, elapsed := drive(t, vs, creds, tc.spread, 4*rate, d)
			calls := refills(rs) - before
			total := 0
			for _, n := range passed {
				total += n
			}
			want := burst + rate*elapsed.Seconds()
			dev := (float64(total) - want) / want
			t.Logf("%s: passed %v = %d of %.0f (burst + rate x %.2fs): %+.2f%%; %d Redis calls, %.3f per passed request",
				tc.name, passed, total, want, elapsed.Seconds(), 100*dev, calls, float64(calls)/float64(total))
			if dev > 0.01 || dev < -0.05 {
				t.Errorf("passed %d, want %.0f within -5%% and +1%%", total, want)
			}
			if float64(calls) > float64(total)/5 {
				t.Errorf("%d Redis calls for %d passed requests: more than one per 5", calls, total)
			}
		})
	}
}

