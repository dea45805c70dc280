// Command bench is the load harness of caddy-apikey: it builds the Caddy of
// ./cmd/caddy, fills a key store with N keys through the keystore's bulk
// path, starts that Caddy (and a second Caddy as the upstream) on
// 127.0.0.1, runs wrk against pairs of sites in alternation (plain, then
// with apikey) and prints a table of requests/s, latencies and ratios.
//
// Run it from anywhere in the module:
//
//	go run ./bench                  # 100,000 keys, 5 rounds of 10 s per site
//	go run ./bench -keys 1000000    # the large run
//
// See bench/README.md for what it measures and how.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/caddy-apikey/caddy-apikey/keystore"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

type config struct {
	backend     string
	propagation int
	keys        int
	sample      int
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	threads     int
	conns       int
	latDuration time.Duration
	pairedDur   time.Duration
	starts      int
	out         string
	reuse       bool
	profile     bool
	profileSecs int
	fillProfile bool
	fillOnly    bool
	quietWait   time.Duration
	waitBudget  time.Duration
	retries     int
	basePort    int
	admin       string
	memLimitMiB int
	fill        string
	fillRepeat  int
	exempt      bool
}

func main() {
	var c config
	flag.IntVar(&c.keys, "keys", 100_000, "number of keys in the store")
	flag.IntVar(&c.sample, "sample", 10_000, "number of plaintext keys kept for the load (and unknown and malformed ones generated)")
	flag.IntVar(&c.rounds, "rounds", 5, "rounds per pair (each round runs A then B)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "wrk duration of one run")
	flag.DurationVar(&c.warmup, "warmup", 2*time.Second, "unmeasured wrk run per site before a pair's rounds")
	flag.IntVar(&c.threads, "t", 2, "wrk threads")
	flag.IntVar(&c.conns, "c", 64, "wrk connections (keep-alive)")
	flag.DurationVar(&c.latDuration, "latency-duration", 5*time.Second, "wrk duration of one run of the 1-connection latency pair (0 skips it)")
	flag.DurationVar(&c.pairedDur, "paired-duration", 6*time.Second, "duration of one round of the paired latency probe (each request sent to A and B back to back; 0 skips it)")
	flag.IntVar(&c.starts, "starts", 3, "how many times Caddy is started to time start-to-first-request (the last start serves the load)")
	flag.StringVar(&c.out, "out", "", "output directory (default bench/out in the module)")
	flag.BoolVar(&c.reuse, "reuse", false, "reuse the store of a previous run with the same -keys instead of filling a new one")
	flag.BoolVar(&c.profile, "profile", false, "after the rounds, take CPU profiles of the measured Caddy (admin /debug/pprof) under each load, and report each auth handler's own CPU per request from them")
	flag.IntVar(&c.profileSecs, "profile-seconds", 10, "with -profile: the length of each CPU profile (more seconds, more samples: at 100 samples a second per busy core, a handler that costs 5 µs of 60 shows in about 8% of them)")
	flag.BoolVar(&c.fillProfile, "fill-profile", false, "write a CPU profile of the bulk load to <out>/fill-cpu.pprof")
	flag.DurationVar(&c.quietWait, "quiet-wait", time.Minute, "before a round, wait up to this long for other processes to leave the CPU idle")
	flag.DurationVar(&c.waitBudget, "wait-budget", 5*time.Minute, "most time a run spends in all waiting for quiet and running disturbed rounds again")
	flag.IntVar(&c.retries, "retries", 2, "times a round is run again when other processes used more than 3% of the CPU during it")
	flag.BoolVar(&c.fillOnly, "fill-only", false, "stop after the bulk load (with -fill-profile: profile it)")
	flag.IntVar(&c.basePort, "port", 18001, "first site port: sites on port..port+8, upstream on port+9")
	flag.StringVar(&c.admin, "admin", "127.0.0.1:18090", "admin endpoint of the measured Caddy (loopback only; needed by -profile)")
	flag.StringVar(&c.backend, "backend", "badger", "the key store the measured Caddy uses: badger (the embedded store of step 2) or redis (a redis-server the harness starts, into which the store of step 2 is copied as caddy apikey migrate does)")
	flag.IntVar(&c.propagation, "propagation", 100, "with -backend redis: how many revocations and activations made through another replica are timed until the measured Caddy answers accordingly (0 skips it)")
	flag.StringVar(&c.fill, "fill", "load", "how the store is filled: load (keystore.Load, the offline bulk loader: one call into a new store) or import (ImportKeys in calls of 100,000, as a running store takes keys)")
	flag.IntVar(&c.fillRepeat, "fill-repeat", 3, "with -fill load: load the keys this many times, each into a new store (the last one is kept), and report the median")
	flag.BoolVar(&c.exempt, "exempt", false, "a labelled extra run: the load's keys are {\"unlimited\": true} and skip the rate limiter (by default every key is on the default limit, rate_limit 1000000 1s: enforced, never refusing, as keys are in real use)")
	flag.IntVar(&c.memLimitMiB, "memory-limit-mib", 0, "after its last start, hold the measured Caddy in a memory cgroup of this many MiB (needs root; 0: no limit): the kernel then reclaims the page cache Badger's mapped tables put in its RSS, and kills it if its own memory does not fit")
	flag.Parse()
	if c.keys < 2 || c.sample < 1 || c.rounds < 1 || c.duration < time.Second || c.starts < 1 || c.threads < 1 || c.conns < c.threads {
		fmt.Fprintln(os.Stderr, "bench: -keys must be >= 2; -sample, -rounds, -starts, -t must be >= 1, -c >= -t, -duration >= 1s")
		os.Exit(2)
	}
	if c.backend != "badger" && c.backend != "redis" {
		fmt.Fprintln(os.Stderr, "bench: -backend must be badger or redis")
		os.Exit(2)
	}
	if c.fill != "load" && c.fill != "import" {
		fmt.Fprintln(os.Stderr, "bench: -fill must be load or import")
		os.Exit(2)
	}
	if !strings.HasPrefix(c.admin, "127.0.0.1:") && !strings.HasPrefix(c.admin, "localhost:") {
		fmt.Fprintln(os.Stderr, "bench: -admin must be on 127.0.0.1 or localhost")
		os.Exit(2)
	}

	budget.total = c.waitBudget
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, c)
	killAll() // children of an interrupted or failed run
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", err)
		}
		fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, c config) error {
	start := time.Now()
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	if c.out == "" {
		c.out = filepath.Join(root, "bench", "out")
	}
	if c.out, err = filepath.Abs(c.out); err != nil {
		return err
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	ports := newPorts(c.basePort)
	if !c.fillOnly {
		if err := ports.checkFree(c.admin); err != nil {
			return err
		}
	}

	wrkPath := ""
	if !c.fillOnly {
		if wrkPath, err = ensureWrk(ctx); err != nil {
			return err
		}
	}

	// 1. Build. The commit is read now: the tree may change while the run
	// goes on, and the binary is what it was built from.
	commit := gitCommit(ctx, root)
	caddyBin := filepath.Join(c.out, "caddy")
	if !c.fillOnly {
		logf("building %s", caddyBin)
		t0 := time.Now()
		// ./cmd/caddy plus the floor handler (bench/floor).
		if err := runCmd(ctx, root, nil, "go", "build", "-o", caddyBin, "./bench/cmd/caddy"); err != nil {
			return fmt.Errorf("building ./bench/cmd/caddy: %w", err)
		}
		logf("built in %s", time.Since(t0).Round(time.Millisecond))
	}

	// 2. Fill.
	fill, err := fillStore(ctx, c)
	if err != nil {
		return err
	}
	if c.fillOnly {
		return nil
	}

	// 2b. With -backend redis, the store goes into Redis.
	var redis *redisServer
	var copyTook time.Duration
	if c.backend == "redis" {
		if redis, err = startRedis(ctx, c, ports); err != nil {
			return err
		}
		defer redis.proc.stop()
		var census keystore.Census
		if copyTook, census, err = copyToRedis(redis, fill.dir); err != nil {
			return fmt.Errorf("copying the store into Redis: %w", err)
		}
		logf("copied %d entries (%d keys) into Redis in %s", census.Entries, census.Keys.Total, copyTook.Round(time.Millisecond))
	}

	// 3. Caddy.
	env := newCaddyEnv(c, root, caddyBin, fill.dir, ports)
	if redis != nil {
		env.redis = redis.url()
	}
	if env.peers, err = newPeerCreds(ctx, caddyBin, c.out); err != nil {
		return err
	}
	if err := env.writeConfigs(ctx); err != nil {
		return err
	}
	up, err := env.startUpstream(ctx)
	if err != nil {
		return err
	}
	defer up.stop()
	var starts []time.Duration
	var proc *process
	for i := 0; i < c.starts; i++ {
		if proc != nil {
			if err := proc.stop(); err != nil {
				return err
			}
		}
		p, d, err := env.startMeasured(ctx, fill.samples.valid[0])
		if err != nil {
			return err
		}
		proc = p
		starts = append(starts, d)
		logf("start %d: first served request (200 with a valid key) after %s", i+1, d.Round(time.Millisecond))
	}
	var cg *memCgroup
	if c.memLimitMiB > 0 {
		cg, err = newMemCgroup(fmt.Sprintf("apikey-bench-%d", os.Getpid()), int64(c.memLimitMiB)<<20)
		if err != nil {
			proc.stop()
			return err
		}
		defer cg.remove() // after proc.stop below
		if err := cg.add(proc.pid()); err != nil {
			proc.stop()
			return fmt.Errorf("moving Caddy into %s: %w", cg.dir, err)
		}
		logf("the measured Caddy runs in memory cgroup %s, limit %d MiB", cg.dir, c.memLimitMiB)
	}
	defer proc.stop()
	memStart, _ := readRSS(proc.pid())
	rateLimited, err := sanityCheck(ctx, ports, fill.samples, env.peers)
	if err != nil {
		return err
	}
	logf("sanity checks passed; rate limiting active in the handler (RateLimit-* headers on a 200): %v", rateLimited)

	// 4, 5. Load.
	w := &wrkRunner{bin: wrkPath, script: filepath.Join(root, "bench", "wrk.lua"), threads: c.threads, conns: c.conns}
	pairs := definePairs(c, ports, fill.files, env.peers)
	mon := &cpuMonitor{pids: []int{proc.pid(), up.pid()}}
	var results []pairResult
	for _, p := range pairs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r, err := runPair(ctx, w, mon, p, c)
		if err != nil {
			return err
		}
		results = append(results, r)
		logf("%s", r.summaryLine())
		if err := proc.alive(); err != nil {
			return err
		}
	}
	var paired []pairedResult
	if c.pairedDur > 0 {
		self := &cpuMonitor{pids: []int{proc.pid(), up.pid(), os.Getpid()}}
		for _, def := range definePaired(ports) {
			r, err := runPaired(ctx, self, def, fill.samples.valid, "X-API-Key", c.rounds, c.pairedDur, c.quietWait)
			if err != nil {
				return err
			}
			paired = append(paired, r)
			s := r.stats()
			logf("paired latency %q: added p50 %.1f µs, p99 %.1f µs (rounds %.1f..%.1f)", def.name, s.p50Added, s.p99Added, s.p99Min, s.p99Max)
		}
		if err := proc.alive(); err != nil {
			return err
		}
	}
	mem, err := readRSS(proc.pid())
	if err != nil {
		return err
	}
	var prop []time.Duration
	if redis != nil && c.propagation > 0 {
		probe := fill.samples.valid[len(fill.samples.valid)-1]
		if prop, err = propagation(ctx, redis, ports.url(ports.apikeyRespond), probe, c.propagation); err != nil {
			return fmt.Errorf("measuring propagation: %w", err)
		}
		logf("propagation of %d changes to the measured Caddy: p50 %s, p99 %s", len(prop), prop[len(prop)/2], prop[len(prop)*99/100])
	}
	var leases leaseCalls
	if redis != nil {
		if leases, err = readLeaseCalls(ctx, c.admin); err != nil {
			return fmt.Errorf("reading the lease calls from /metrics: %w", err)
		}
		logf("cluster rate limits: %.0f Redis calls for leases, %.0f passed requests: %.4f per passed request", leases.calls, leases.passed, leases.perPassed())
	}
	var cgPeak, cgHits int64
	if cg != nil {
		if cgPeak, cgHits, err = cg.stats(); err != nil {
			logf("memory cgroup statistics: %v", err)
		}
	}
	goMem, err := readMemStats(ctx, c.admin)
	if err != nil {
		logf("Go memory statistics from the admin endpoint: %v", err)
	}
	var profiles []string
	var owns []ownCPU
	if c.profile {
		profiles, owns, err = profileUnderLoad(ctx, w, c, ports, fill.files, env.peers, caddyBin)
		if err != nil {
			return err
		}
	}

	rep := report{
		when:            start,
		cmdline:         commandLine(),
		cfg:             c,
		machine:         describeMachine(ctx),
		commit:          commit,
		rateLimitOption: env.rateLimit,
		rateLimited:     rateLimited,
		fill:            fill.stats,
		starts:          starts,
		memStart:        memStart,
		mem:             mem,
		cgPeak:          cgPeak,
		cgHits:          cgHits,
		goMem:           goMem,
		pairs:           results,
		paired:          paired,
		profiles:        profiles,
		ownCPU:          owns,
		copyTook:        copyTook,
		propagation:     prop,
		leases:          leases,
		wall:            time.Since(start),
	}
	md := rep.markdown()
	fmt.Println()
	fmt.Print(md)
	name := filepath.Join(c.out, "results-"+start.Format("2006-01-02T15-04-05")+".md")
	if err := os.WriteFile(name, []byte(md), 0o644); err != nil {
		return err
	}
	logf("results written to %s (run took %s)", name, time.Since(start).Round(time.Second))
	return nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := outputCmd(ctx, "", "go", "env", "GOMOD")
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(out)
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the harness from inside the caddy-apikey module (go run ./bench)")
	}
	return filepath.Dir(gomod), nil
}

func commandLine() string {
	args := os.Args[1:]
	return strings.TrimSpace("go run ./bench " + strings.Join(args, " "))
}

type machine struct {
	nproc, cpu, mem, goVersion, kernel, wrk string
}

func describeMachine(ctx context.Context) machine {
	m := machine{nproc: fmt.Sprint(runtime.NumCPU()), goVersion: runtime.Version()}
	if out, err := outputCmd(ctx, "", "nproc"); err == nil {
		m.nproc = strings.TrimSpace(out)
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := outputCmd(ctx, "", "free", "-h"); err == nil {
		m.mem = strings.TrimRight(out, "\n")
	}
	if out, err := outputCmd(ctx, "", "uname", "-sr"); err == nil {
		m.kernel = strings.TrimSpace(out)
	}
	if out, err := outputCmd(ctx, "", "go", "version"); err == nil {
		m.goVersion = strings.TrimSpace(out)
	}
	if out, err := outputCmd(ctx, "", "wrk", "--version"); err == nil || out != "" {
		m.wrk = strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	}
	return m
}

func gitCommit(ctx context.Context, root string) string {
	out, err := outputCmd(ctx, root, "git", "rev-parse", "--short", "HEAD")
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(out)
	if st, err := outputCmd(ctx, root, "git", "status", "--porcelain", "--untracked-files=no"); err == nil && strings.TrimSpace(st) != "" {
		c += " (with uncommitted changes)"
	}
	return c
}
