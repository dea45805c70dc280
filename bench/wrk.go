package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// wrkResult is one wrk run. Latencies are in microseconds.
type wrkResult struct {
	Requests   int64
	DurationUS int64
	Bytes      int64
	Connect    int64 // socket errors
	Read       int64
	Write      int64
	Timeout    int64
	Status     int64 // responses that were not 2xx or 3xx
	P50        float64
	P90        float64
	P99        float64
	P999       float64
	Max        float64
	Mean       float64
	// rps when parsed from wrk's own "Requests/sec:" line (the fallback).
	rps float64

	// Set by runPair: CPU time of wrk and of the measured Caddy during the
	// run, and the share of the machine's CPU that other processes used.
	WrkCPU, CaddyCPU, UpstreamCPU time.Duration
	Foreign                       float64
}

// cpuPerRequest is a process's CPU time per request of the run, in µs:
// unlike requests/s, it hardly depends on what else runs on the machine.
func (r wrkResult) cpuPerRequest(d time.Duration) float64 {
	if r.Requests <= 0 {
		return math.NaN()
	}
	return float64(d.Microseconds()) / float64(r.Requests)
}

// RPS is requests per second.
func (r wrkResult) RPS() float64 {
	if r.DurationUS > 0 {
		return float64(r.Requests) / (float64(r.DurationUS) / 1e6)
	}
	return r.rps
}

// SocketErrors is the number of connect, read, write errors and timeouts.
func (r wrkResult) SocketErrors() int64 { return r.Connect + r.Read + r.Write + r.Timeout }

// parseWrkOutput reads a wrk run's output: the WRKBENCH line that
// wrk.lua's done() prints or, failing that, wrk's own report with
// --latency (Requests/sec and the Latency Distribution).
func parseWrkOutput(out string) (wrkResult, error) {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "WRKBENCH "); ok {
			return parseBenchLine(rest)
		}
	}
	return parseWrkReport(out)
}

func parseBenchLine(s string) (wrkResult, error) {
	var r wrkResult
	ints := map[string]*int64{
		"requests": &r.Requests, "duration_us": &r.DurationUS, "bytes": &r.Bytes,
		"connect": &r.Connect, "read": &r.Read, "write": &r.Write, "status": &r.Status, "timeout": &r.Timeout,
	}
	floats := map[string]*float64{
		"p50": &r.P50, "p90": &r.P90, "p99": &r.P99, "p999": &r.P999, "max": &r.Max, "mean": &r.Mean,
	}
	seen := map[string]bool{}
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return r, fmt.Errorf("WRKBENCH: bad field %q", f)
		}
		if p, ok := ints[k]; ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return r, fmt.Errorf("WRKBENCH %s: %v", k, err)
			}
			*p = n
		} else if p, ok := floats[k]; ok {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return r, fmt.Errorf("WRKBENCH %s: %v", k, err)
			}
			*p = x
		}
		seen[k] = true
	}
	for _, k := range []string{"requests", "duration_us", "p50", "p99"} {
		if !seen[k] {
			return r, fmt.Errorf("WRKBENCH: no %s", k)
		}
	}
	if r.DurationUS <= 0 {
		return r, errors.New("WRKBENCH: duration_us must be positive")
	}
	return r, nil
}

var (
	reRPS       = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	reTotal     = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h),`)
	rePercent   = regexp.MustCompile(`(?m)^\s+(50|75|90|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s|m|h)\s*$`)
	reNon2xx    = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+(\d+)`)
	reSocketErr = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrkReport parses wrk's human-readable report (run with --latency).
func parseWrkReport(out string) (wrkResult, error) {
	var r wrkResult
	m := reRPS.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New("wrk output has neither a WRKBENCH line nor Requests/sec")
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := reTotal.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
		d, err := wrkDurationUS(m[2], m[3])
		if err == nil {
			r.DurationUS = int64(d)
		}
	}
	got := map[string]bool{}
	for _, m := range rePercent.FindAllStringSubmatch(out, -1) {
		us, err := wrkDurationUS(m[2], m[3])
		if err != nil {
			return r, err
		}
		switch m[1] {
		case "50":
			r.P50 = us
		case "90":
			r.P90 = us
		case "99":
			r.P99 = us
		}
		got[m[1]] = true
	}
	if !got["50"] || !got["99"] {
		return r, errors.New("wrk output has no latency distribution (run wrk with --latency)")
	}
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		r.Status, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reSocketErr.FindStringSubmatch(out); m != nil {
		r.Connect, _ = strconv.ParseInt(m[1], 10, 64)
		r.Read, _ = strconv.ParseInt(m[2], 10, 64)
		r.Write, _ = strconv.ParseInt(m[3], 10, 64)
		r.Timeout, _ = strconv.ParseInt(m[4], 10, 64)
	}
	return r, nil
}

// wrkDurationUS converts a wrk time ("412.00", "us") to microseconds.
func wrkDurationUS(num, unit string) (float64, error) {
	x, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, err
	}
	mult := map[string]float64{"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unknown wrk time unit %q", unit)
	}
	return x * mult, nil
}

type wrkRunner struct {
	bin, script    string
	threads, conns int
}

// run runs wrk once against url with the keys of keysFile, sent in header
// (X-API-Key if empty). The run is bounded by its duration (plus 30 s,
// then wrk is killed).
func (w *wrkRunner) run(ctx context.Context, url, keysFile, header string, d time.Duration, threads, conns int) (wrkResult, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	args := []string{
		"-t" + strconv.Itoa(threads), "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(secs) + "s",
		"--timeout", "5s", "--latency", "-s", w.script, url, "--", keysFile,
	}
	if header != "" {
		args = append(args, header)
	}
	cmd := exec.Command(w.bin, args...)
	cmd.Env = childEnv()
	cmd.SysProcAttr = childAttrs()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return wrkResult{}, err
	}
	register(cmd)
	defer unregister(cmd)
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var err error
	select {
	case err = <-waited:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-waited
		return wrkResult{}, fmt.Errorf("wrk %s: %w", strings.Join(args, " "), ctx.Err())
	}
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	r, err := parseWrkOutput(out.String())
	if err != nil {
		return r, fmt.Errorf("wrk %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	r.WrkCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, nil
}

// pairDef is a pair of sites measured in alternation: A (plain) and B
// (with apikey, or a peer's authentication), under the same wrk settings
// and the same credentials.
type pairDef struct {
	id, name       string
	aLabel, bLabel string
	aURL, bURL     string
	keys           string // keys file
	header         string // that carries the keys; X-API-Key if empty
	threads, conns int
	dur            time.Duration
	bRefused       bool // B answers 401 to every request
}

func definePairs(c config, p ports, f keyFiles, peers peerCreds) []pairDef {
	pairs := []pairDef{
		{id: "respond", name: "apikey+respond / respond, valid keys",
			aLabel: "respond", bLabel: "apikey+respond",
			aURL: p.url(p.respond), bURL: p.url(p.apikeyRespond), keys: f.valid},
		{id: "proxy", name: "apikey+reverse_proxy / reverse_proxy, valid keys",
			aLabel: "reverse_proxy", bLabel: "apikey+reverse_proxy",
			aURL: p.url(p.proxy), bURL: p.url(p.apikeyProxy), keys: f.valid},
		{id: "basic_auth", name: "basic_auth+respond / respond, one user (bcrypt, cached)",
			aLabel: "respond", bLabel: "basic_auth+respond",
			aURL: p.url(p.respond), bURL: p.url(p.basicAuth), keys: peers.basicFile, header: "Authorization"},
		{id: "forward_auth", name: "forward_auth+respond / respond, to a local check site",
			aLabel: "respond", bLabel: "forward_auth+respond",
			aURL: p.url(p.respond), bURL: p.url(p.forwardAuth), keys: peers.tokenFile, header: peerTokenHeader},
		{id: "floor", name: "floor+respond / respond: apikey's eight headers, constant, no key check (bench/floor)",
			aLabel: "respond", bLabel: "floor+respond",
			aURL: p.url(p.respond), bURL: p.url(p.floor), keys: f.valid},
		{id: "unknown", name: "unknown-key flood (401) / respond",
			aLabel: "respond", bLabel: "apikey+respond, unknown keys",
			aURL: p.url(p.respond), bURL: p.url(p.apikeyRespond), keys: f.unknown, bRefused: true},
		{id: "malformed", name: "malformed flood (401) / respond",
			aLabel: "respond", bLabel: "apikey+respond, malformed",
			aURL: p.url(p.respond), bURL: p.url(p.apikeyRespond), keys: f.malformed, bRefused: true},
	}
	for i := range pairs {
		pairs[i].threads, pairs[i].conns, pairs[i].dur = c.threads, c.conns, c.duration
	}
	if c.latDuration > 0 {
		pairs = append(pairs, pairDef{id: "latency", name: "apikey+respond / respond, valid keys, 1 connection",
			aLabel: "respond", bLabel: "apikey+respond",
			aURL: p.url(p.respond), bURL: p.url(p.apikeyRespond), keys: f.valid,
			threads: 1, conns: 1, dur: c.latDuration})
	}
	return pairs
}

// foreignLimit is the share of the machine's CPU that other processes may
// use during a run before the run is reported as disturbed.
const foreignLimit = 0.03

type pairResult struct {
	def     pairDef
	a, b    []wrkResult
	notes   []string
	retries int // rounds run again because other processes disturbed them
}

// measure runs wrk once and records the CPU that went where.
func measure(ctx context.Context, w *wrkRunner, mon *cpuMonitor, url, keys, header string, d time.Duration, threads, conns int) (wrkResult, error) {
	before, err := mon.snapshot()
	if err != nil {
		return wrkResult{}, err
	}
	r, err := w.run(ctx, url, keys, header, d, threads, conns)
	if err != nil {
		return r, err
	}
	after, err := mon.snapshot()
	if err != nil {
		return r, err
	}
	r.Foreign = foreignShare(before, after, r.WrkCPU)
	r.CaddyCPU = after.procs[0] - before.procs[0]
	if len(after.procs) > 1 {
		r.UpstreamCPU = after.procs[1] - before.procs[1]
	}
	return r, nil
}

func runPair(ctx context.Context, w *wrkRunner, mon *cpuMonitor, p pairDef, c config) (pairResult, error) {
	res := pairResult{def: p}
	logf("pair %q: warm-up, then %d rounds of %s A then %s B (wrk -t%d -c%d -d%s)",
		p.name, c.rounds, p.aLabel, p.bLabel, p.threads, p.conns, p.dur)
	if c.warmup > 0 {
		if err := waitQuiet(ctx, mon, c.quietWait); err != nil {
			return res, err
		}
		for _, u := range []string{p.aURL, p.bURL} {
			if _, err := w.run(ctx, u, p.keys, p.header, c.warmup, p.threads, p.conns); err != nil {
				return res, err
			}
		}
	}
	for round := 1; round <= c.rounds; round++ {
		var a, b wrkResult
		for attempt := 0; ; attempt++ {
			if err := waitQuiet(ctx, mon, c.quietWait); err != nil {
				return res, err
			}
			var err error
			if a, err = measure(ctx, w, mon, p.aURL, p.keys, p.header, p.dur, p.threads, p.conns); err != nil {
				return res, err
			}
			if b, err = measure(ctx, w, mon, p.bURL, p.keys, p.header, p.dur, p.threads, p.conns); err != nil {
				return res, err
			}
			if (a.Foreign <= foreignLimit && b.Foreign <= foreignLimit) || attempt >= c.retries || budget.left() < 2*p.dur {
				break
			}
			budget.spend(2 * p.dur)
			res.retries++
			logf("  round %d disturbed: other processes used %.1f%% (A) and %.1f%% (B) of the CPU; running it again",
				round, 100*a.Foreign, 100*b.Foreign)
		}
		res.a, res.b = append(res.a, a), append(res.b, b)
		res.check(round, "A", a, false)
		res.check(round, "B", b, p.bRefused)
		logf("  round %d: A %.0f req/s p99 %s | B %.0f req/s p99 %s | B/A %.3f | other processes' CPU: A %.1f%%, B %.1f%%",
			round, a.RPS(), fmtUS(a.P99), b.RPS(), fmtUS(b.P99), b.RPS()/a.RPS(), 100*a.Foreign, 100*b.Foreign)
	}
	return res, nil
}

// check notes a run whose responses were not what the pair expects.
func (r *pairResult) check(round int, side string, w wrkResult, refused bool) {
	if w.Foreign > foreignLimit {
		r.notes = append(r.notes, fmt.Sprintf("round %d %s: other processes used %.1f%% of the machine's CPU during the run", round, side, 100*w.Foreign))
	}
	if n := w.SocketErrors(); n > 0 {
		r.notes = append(r.notes, fmt.Sprintf("round %d %s: %d socket errors (connect %d, read %d, write %d, timeout %d)",
			round, side, n, w.Connect, w.Read, w.Write, w.Timeout))
	}
	switch {
	case refused && w.Status != w.Requests:
		r.notes = append(r.notes, fmt.Sprintf("round %d %s: %d of %d responses were refusals; all should be", round, side, w.Status, w.Requests))
	case !refused && w.Status != 0:
		r.notes = append(r.notes, fmt.Sprintf("round %d %s: %d of %d responses were not 2xx (rate limited?)", round, side, w.Status, w.Requests))
	}
}

// disturbed is the number of runs during which other processes used more
// than foreignLimit of the CPU.
func (r pairResult) disturbed() int {
	n := 0
	for _, w := range append(append([]wrkResult(nil), r.a...), r.b...) {
		if w.Foreign > foreignLimit {
			n++
		}
	}
	return n
}

func rpsOf(rs []wrkResult) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = r.RPS()
	}
	return out
}

func fieldOf(rs []wrkResult, f func(wrkResult) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

// pairStats is what the table shows of a pair.
type pairStats struct {
	aRPS, bRPS         float64 // medians
	ratio              float64 // median B / median A
	ratioMin, ratioMax float64 // of the per-round ratios
	aP50, aP99         float64 // medians, µs
	bP50, bP99         float64
	p99Added           float64 // bP99 - aP99
	// Medians of the measured Caddy's CPU per request (µs), and of the
	// upstream Caddy's.
	aCPUReq, bCPUReq  float64
	aUpCPUReq, bUpReq float64
}

func (r pairResult) stats() pairStats {
	return computeStats(r.a, r.b)
}

func computeStats(a, b []wrkResult) pairStats {
	var s pairStats
	s.aRPS, s.bRPS = median(rpsOf(a)), median(rpsOf(b))
	if s.aRPS > 0 {
		s.ratio = s.bRPS / s.aRPS
	}
	s.ratioMin, s.ratioMax = minMax(ratios(rpsOf(a), rpsOf(b)))
	s.aP50 = median(fieldOf(a, func(w wrkResult) float64 { return w.P50 }))
	s.aP99 = median(fieldOf(a, func(w wrkResult) float64 { return w.P99 }))
	s.bP50 = median(fieldOf(b, func(w wrkResult) float64 { return w.P50 }))
	s.bP99 = median(fieldOf(b, func(w wrkResult) float64 { return w.P99 }))
	s.p99Added = s.bP99 - s.aP99
	s.aCPUReq = median(fieldOf(a, func(w wrkResult) float64 { return w.cpuPerRequest(w.CaddyCPU) }))
	s.bCPUReq = median(fieldOf(b, func(w wrkResult) float64 { return w.cpuPerRequest(w.CaddyCPU) }))
	s.aUpCPUReq = median(fieldOf(a, func(w wrkResult) float64 { return w.cpuPerRequest(w.UpstreamCPU) }))
	s.bUpReq = median(fieldOf(b, func(w wrkResult) float64 { return w.cpuPerRequest(w.UpstreamCPU) }))
	return s
}

func (r pairResult) summaryLine() string {
	s := r.stats()
	return fmt.Sprintf("pair %q: A %.0f req/s, B %.0f req/s, B/A %.3f (rounds %.3f..%.3f), p99 A %s B %s",
		r.def.name, s.aRPS, s.bRPS, s.ratio, s.ratioMin, s.ratioMax, fmtUS(s.aP99), fmtUS(s.bP99))
}

// median of xs (the mean of the two middle values for an even count);
// NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// ratios are b[i]/a[i] for the rounds both have.
func ratios(a, b []float64) []float64 {
	n := min(len(a), len(b))
	out := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		if a[i] > 0 {
			out = append(out, b[i]/a[i])
		}
	}
	return out
}

func minMax(xs []float64) (lo, hi float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN()
	}
	lo, hi = xs[0], xs[0]
	for _, x := range xs[1:] {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return lo, hi
}

// fmtUS formats microseconds: "87 µs", "1.24 ms".
func fmtUS(us float64) string {
	switch {
	case math.IsNaN(us):
		return "n/a"
	case math.Abs(us) < 1000:
		return fmt.Sprintf("%.0f µs", us)
	default:
		return fmt.Sprintf("%.2f ms", us/1000)
	}
}
