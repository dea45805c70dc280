package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore"
	"github.com/caddy-apikey/caddy-apikey/keystore/badgerstore"
	"github.com/caddy-apikey/caddy-apikey/keystore/redisstore"
)

// redisServer is the harness's redis-server for -backend redis: Debian's
// package (installed with apt-get if missing, as wrk is), on 127.0.0.1 at
// the upstream's port + 10, in <out>/redis-<keys>, configured as
// docs/cluster.md recommends (AOF with appendfsync always, noeviction).
type redisServer struct {
	proc *process
	addr string
}

func (r *redisServer) url() string { return "redis://" + r.addr + "/0" }

// startRedis starts a fresh redis-server (its directory emptied first).
func startRedis(ctx context.Context, c config, p ports) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if err := runCmd(ctx, "", nil, "bash", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null"); err != nil {
			return nil, fmt.Errorf("installing redis-server: %w", err)
		}
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return nil, err
		}
	}
	dir := filepath.Join(c.out, fmt.Sprintf("redis-%d", c.keys))
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port := p.upstream + 10
	r := &redisServer{addr: fmt.Sprintf("127.0.0.1:%d", port)}
	r.proc, err = startProcess("redis-server", filepath.Join(dir, "redis.log"), os.Environ(), bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "",
		"--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction")
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if conn, err := net.DialTimeout("tcp", r.addr, 100*time.Millisecond); err == nil {
			conn.Close()
			return r, nil
		}
		if time.Now().After(deadline) {
			r.proc.stop()
			return nil, fmt.Errorf("redis-server did not listen on %s within 10 s (log: %s)", r.addr, r.proc.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openRedisEngine opens the key store's engine on r, as a replica would.
func (r *redisServer) engine(origin string) (*redisstore.Engine, error) {
	return redisstore.Open(redisstore.Options{URL: r.url(), Bucket: keystore.ScanBucket, Watched: keystore.Watched, Origin: origin, Timeout: time.Minute})
}

// copyToRedis copies the filled Badger store into Redis, as caddy apikey
// migrate does, and returns how long it took.
func copyToRedis(r *redisServer, badgerDir string) (time.Duration, keystore.Census, error) {
	from, err := badgerstore.Open(badgerDir, zap.NewNop())
	if err != nil {
		return 0, keystore.Census{}, err
	}
	defer from.Close()
	to, err := r.engine("bench-copy")
	if err != nil {
		return 0, keystore.Census{}, err
	}
	defer to.Close()
	t0 := time.Now()
	census, err := keystore.Copy(from, to, false, time.Now())
	return time.Since(t0), census, err
}

// propagation measures how long a change made through another replica
// (a keystore.Store of this process on the same Redis) takes to reach the
// measured Caddy: n times, it revokes a sample key and polls the apikey
// site with it (every 200 µs) until the answer is 401, then activates it
// and polls until 200. It returns the delays, sorted.
func propagation(ctx context.Context, r *redisServer, site, key string, n int) ([]time.Duration, error) {
	eng, err := r.engine("bench-replica")
	if err != nil {
		return nil, err
	}
	st, err := keystore.Open(keystore.Options{Engine: eng})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	res, err := (&keystore.Verifier{Store: st, Format: keystore.DefaultFormat()}).Verify(key, keystore.Scope{}, false)
	if err != nil {
		return nil, err
	}
	if res.Key == nil {
		return nil, fmt.Errorf("the probe key verifies as %s in Redis", res.Outcome.Code())
	}
	id := res.Key.ID
	var delays []time.Duration
	wait := func(want int) error {
		t0 := time.Now()
		for {
			status, _, _, err := get(ctx, site, key)
			if err != nil {
				return err
			}
			if status == want {
				delays = append(delays, time.Since(t0))
				return nil
			}
			if time.Since(t0) > 5*time.Second {
				return fmt.Errorf("the measured Caddy still answers %d 5 s after the change (want %d)", status, want)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	for range n {
		if _, err := st.RevokeKey(id, "bench"); err != nil {
			return nil, err
		}
		if err := wait(401); err != nil {
			return nil, err
		}
		if _, err := st.ActivateKey(id, "bench"); err != nil {
			return nil, err
		}
		if err := wait(200); err != nil {
			return nil, err
		}
	}
	slices.Sort(delays)
	return delays, nil
}
