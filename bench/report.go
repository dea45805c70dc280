package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

type report struct {
	when            time.Time
	cmdline         string
	cfg             config
	machine         machine
	commit          string
	rateLimitOption bool // rate_limit 1000000 1s in the Caddyfile
	rateLimited     bool // RateLimit-* headers seen on a 200
	fill            fillStats
	starts          []time.Duration
	memStart, mem   memUse
	cgPeak, cgHits  int64 // memory cgroup (-memory-limit-mib): peak usage, times the limit was hit
	goMem           *memStats
	pairs           []pairResult
	paired          []pairedResult
	profiles        []string
	ownCPU          []ownCPU
	copyTook        time.Duration   // -backend redis: copying the store into Redis
	propagation     []time.Duration // -backend redis: sorted delays
	leases          leaseCalls      // -backend redis: the cluster rate limits' Redis calls
	wall            time.Duration
}

// Targets of issue 22.
const (
	target22Respond  = 0.97
	target22Proxy    = 0.97
	target22Flood    = 0.99
	target22CPUAdded = 1.5 // µs
)

// Targets of issue 5.
const (
	targetRespond   = 0.95
	targetProxy     = 0.98
	targetUnknown   = 0.95
	targetMalformed = 0.98
	targetP99Added  = 50.0 // µs
	targetRSS       = 150 << 20
	targetStart     = 2 * time.Second
	targetBulk      = 100_000.0
	largeKeys       = 1_000_000
)

func (r report) pairedOf(id string) (pairedResult, bool) {
	for _, pr := range r.paired {
		if pr.def.id == id {
			return pr, true
		}
	}
	return pairedResult{}, false
}

func (r report) pair(id string) (pairResult, bool) {
	for _, p := range r.pairs {
		if p.def.id == id {
			return p, true
		}
	}
	return pairResult{}, false
}

func durations(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d)
	}
	return out
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func (r report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	c := r.cfg

	title := ""
	if c.exempt {
		title = " (exempt keys)"
	}
	p("# caddy-apikey load harness%s: %s\n\n", title, r.when.Format("2006-01-02 15:04 MST"))
	p("- command: `%s`\n", r.cmdline)
	p("- commit: `%s`\n", r.commit)
	keys := "every bench key is on the default limit (enforced, never refusing: every request goes through the limiter, as in real use)"
	if c.exempt {
		keys = "**exempt run (`-exempt`, an extra, not what deployments run): every load key is `{\"unlimited\": true}` and skips the limiter**"
	}
	p("- rate limiting: `rate_limit 1000000 1s` in the Caddyfile: %s; RateLimit-* headers on a 200 (limiter active in the handler): %s; %s\n",
		yesNo(r.rateLimitOption), yesNo(r.rateLimited), keys)
	p("- machine: %s CPUs (`nproc`), %s, %s; %s; %s\n", r.machine.nproc, r.machine.cpu, r.machine.kernel, r.machine.goVersion, r.machine.wrk)
	p("- memory (`free -h`):\n\n```\n%s\n```\n\n", r.machine.mem)
	p("- load: wrk on the same machine, keep-alive, `-t%d -c%d`, %d rounds of %s per site, A then B alternately, after a %s warm-up of each; keys picked at random per request from %d sampled plaintext keys (wrk.lua); upstream: a separate Caddy process (`respond`)\n",
		c.threads, c.conns, c.rounds, c.duration, c.warmup, min(c.sample, c.keys))
	p("- store: %d keys, backend %s; wall time of the run: %s\n", c.keys, c.backend, r.wall.Round(time.Second))
	if c.backend == "redis" {
		p("- Redis: a redis-server of the harness (appendonly yes, appendfsync always, noeviction) on 127.0.0.1; the filled store copied into it in %s (keystore.Copy, as caddy apikey migrate)\n", r.copyTook.Round(time.Millisecond))
		if n := len(r.propagation); n > 0 {
			p("- propagation: %d revocations and activations made through another replica (a key store of the harness on the same Redis) reached the measured Caddy (its answer changed) after p50 %s, p99 %s, max %s (polling every 200 µs)\n",
				n, r.propagation[n/2].Round(time.Microsecond), r.propagation[n*99/100].Round(time.Microsecond), r.propagation[n-1].Round(time.Microsecond))
		}
		p("- cluster rate limits (every key on the default limit, leases from Redis): %.0f Redis calls for leases over %.0f passed requests since the measured Caddy started: %.4f per passed request (`caddy_apikey_lease_refills_total` / `caddy_apikey_requests_total{outcome=\"ok\"}`)\n",
			r.leases.calls, r.leases.passed, r.leases.perPassed())
	}
	p("\n")

	p("## Load (medians over the rounds)\n\n")
	p("B is apikey or a peer (Caddy's basic_auth, forward_auth to a local check) in front of A; CPU/req is the measured Caddy's CPU time per request (µs, from /proc/<pid>/stat, median over the rounds), steadier than req/s on a shared machine.\n\n")
	p("| pair (B / A) | A req/s | B req/s | B/A | per-round min | per-round max | A CPU/req | B CPU/req | CPU added | A p50 | A p99 | B p50 | B p99 | p99 added |\n")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, pr := range r.pairs {
		s := pr.stats()
		name := pr.def.name
		if pr.def.conns != c.conns || pr.def.threads != c.threads {
			name += fmt.Sprintf(" (wrk -t%d -c%d, %s rounds)", pr.def.threads, pr.def.conns, pr.def.dur)
		}
		p("| %s | %.0f | %.0f | %.3f | %.3f | %.3f | %.1f µs | %.1f µs | %+.1f µs | %s | %s | %s | %s | %s |\n",
			name, s.aRPS, s.bRPS, s.ratio, s.ratioMin, s.ratioMax, s.aCPUReq, s.bCPUReq, s.bCPUReq-s.aCPUReq,
			fmtUS(s.aP50), fmtUS(s.aP99), fmtUS(s.bP50), fmtUS(s.bP99), fmtUS(s.p99Added))
	}
	p("\n")

	p("CPU per request (µs, medians over the rounds; from /proc/<pid>/stat, so it hardly depends on what else runs): what the measured Caddy spends on a request, A and B, and the difference; the same for the upstream Caddy where there is one.\n\n")
	p("| pair (B / A) | Caddy A | Caddy B | added by B's auth | upstream A | upstream B |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, pr := range r.pairs {
		s := pr.stats()
		up := func(x float64) string {
			if pr.def.id != "proxy" {
				return "-"
			}
			return fmt.Sprintf("%.1f", x)
		}
		p("| %s | %.1f | %.1f | %+.1f (%+.1f%%) | %s | %s |\n", pr.def.name, s.aCPUReq, s.bCPUReq, s.bCPUReq-s.aCPUReq,
			100*(s.bCPUReq-s.aCPUReq)/s.aCPUReq, up(s.aUpCPUReq), up(s.bUpReq))
	}
	p("\n")

	if len(r.paired) > 0 {
		p("## Latency added, paired requests\n\n")
		p("Each request is sent to A and to B back to back, with the same key, in a random order, over one keep-alive connection to each site (%d rounds of %s; `-paired-duration`): an interruption of the machine falls on both alike, so the difference of their percentiles is what B adds. \"added\" is the median of the per-round differences; the control pair sends both requests to the same site and shows what the method cannot resolve.\n\n",
			c.rounds, c.pairedDur)
		p("| pair (B / A) | pairs | A p50 | A p99 | B p50 | B p99 | p50 added | p99 added | p99 added, per-round min..max |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, pr := range r.paired {
			s := pr.stats()
			p("| %s | %d | %s | %s | %s | %s | %+.1f µs | %+.1f µs | %+.1f..%+.1f µs |\n", pr.def.name, s.n,
				fmtUS(s.aP50), fmtUS(s.aP99), fmtUS(s.bP50), fmtUS(s.bP99), s.p50Added, s.p99Added, s.p99Min, s.p99Max)
		}
		p("\n")
	}

	p("## Store and process\n\n| measure | value |\n| --- | --- |\n")
	if r.fill.reused {
		p("| bulk load | not measured (-reuse of an existing store) |\n")
	} else {
		if r.fill.method == "load" {
			runs := make([]string, len(r.fill.calls))
			for i, d := range r.fill.calls {
				runs[i] = fmt.Sprintf("%.0f", rate(r.fill.keys, d))
			}
			p("| bulk load, keystore.Load only (`-fill load`: the offline loader, one call into a new store; median of %d loads of the same keys, `-fill-repeat`) | %.0f keys/s (%d keys in %s; each load, in order: %s keys/s) |\n",
				len(r.fill.calls), r.fill.importRate(), r.fill.keys, r.fill.importTime.Round(time.Millisecond), strings.Join(runs, ", "))
		} else {
			p("| bulk load, ImportKeys only (`-fill import`) | %.0f keys/s (%d keys in %s, %d calls of up to 100,000) |\n",
				r.fill.importRate(), r.fill.keys, r.fill.importTime.Round(time.Millisecond), r.fill.batches)
		}
		p("| bulk load, Open to Close (key generation included) | %.0f keys/s (%s; generating %s, Close %s) |\n",
			r.fill.wallRate(), r.fill.wall.Round(time.Millisecond), r.fill.generate.Round(time.Millisecond), r.fill.close.Round(time.Millisecond))
		p("| after the bulk load, before Close: waiting for Badger's compactions to finish (not in the rates above; the measured Caddy meets the store at rest) | %s |\n",
			r.fill.settle.Round(time.Millisecond))
		if r.fill.method != "load" && len(r.fill.calls) > 1 {
			calls := make([]string, len(r.fill.calls))
			for i, d := range r.fill.calls {
				calls[i] = d.Round(10 * time.Millisecond).String()
			}
			p("| ImportKeys calls, in order | %s |\n", strings.Join(calls, ", "))
		}
		p("| other processes' share of the CPU during the bulk load | %.1f%% |\n", 100*r.fill.foreign)
	}
	p("| store on disk | %s |\n", mib(r.fill.storeBytes))
	starts := make([]string, len(r.starts))
	for i, d := range r.starts {
		starts[i] = d.Round(time.Millisecond).String()
	}
	p("| start to first served request (200 to a valid key), %d keys | median %s (starts: %s) |\n",
		c.keys, time.Duration(median(durations(r.starts))).Round(time.Millisecond), strings.Join(starts, ", "))
	p("| Caddy RSS after start, before load | %s (anonymous %s, file-backed %s) |\n", mib(r.memStart.rss), mib(r.memStart.anon), mib(r.memStart.file))
	p("| Caddy RSS after the load (VmRSS) | %s (anonymous %s, file-backed %s; peak VmHWM %s) |\n", mib(r.mem.rss), mib(r.mem.anon), mib(r.mem.file), mib(r.mem.hwm))
	if r.cfg.memLimitMiB > 0 {
		p("| memory cgroup of the measured Caddy (-memory-limit-mib) | limit %d MiB; peak usage %s (page cache included); limit reached %d times (the kernel reclaimed page cache); the process survived every pair |\n",
			r.cfg.memLimitMiB, mib(r.cgPeak), r.cgHits)
	}
	if g := r.goMem; g != nil {
		p("| Go runtime after the load (/debug/vars memstats) | Sys %s, HeapInuse %s, HeapIdle %s of which released %s, StackSys %s, NextGC %s, %d GCs |\n",
			mib(g.Sys), mib(g.HeapInuse), mib(g.HeapIdle), mib(g.HeapReleased), mib(g.StackSys), mib(g.NextGC), g.NumGC)
	}
	p("\n")

	r.targets22(p)

	p("## Targets (issue 5)\n\n| measure | target | measured | |\n| --- | --- | --- | --- |\n")
	ratioRow := func(id, label string, target float64) {
		pr, ok := r.pair(id)
		if !ok {
			return
		}
		s := pr.stats()
		p("| %s | >= %.2f | %.3f (rounds %.3f..%.3f) | %s |\n", label, target, s.ratio, s.ratioMin, s.ratioMax, verdict(pr, s.ratio >= target))
	}
	ratioRow("respond", fmt.Sprintf("`apikey`+`respond` / `respond`, req/s, %d keys, random valid keys", c.keys), targetRespond)
	ratioRow("proxy", "`apikey`+`reverse_proxy` / `reverse_proxy`", targetProxy)
	ratioRow("unknown", "unknown-key flood (401) / `respond`", targetUnknown)
	ratioRow("malformed", "malformed flood / `respond`", targetMalformed)
	for _, id := range []string{"respond", "latency"} {
		if pr, ok := r.pair(id); ok {
			s := pr.stats()
			p("| p99 added by `apikey` (%s, wrk -c%d) | <= 50 µs | %s (p99 %s vs %s) | %s |\n",
				map[string]string{"respond": "saturated", "latency": "one connection"}[id], pr.def.conns,
				fmtUS(s.p99Added), fmtUS(s.bP99), fmtUS(s.aP99), verdict(pr, s.p99Added <= targetP99Added))
		}
	}
	if pr, ok := r.pairedOf("respond"); ok {
		s := pr.stats()
		control := ""
		if cr, ok := r.pairedOf("control"); ok {
			cs := cr.stats()
			control = fmt.Sprintf("; the control pair reads %+.1f µs (rounds %+.1f..%+.1f)", cs.p99Added, cs.p99Min, cs.p99Max)
		}
		p("| p99 added by `apikey` (paired requests, one connection to each site) | <= 50 µs | %+.1f µs (rounds %+.1f..%+.1f; p99 %s vs %s%s) | %s |\n",
			s.p99Added, s.p99Min, s.p99Max, fmtUS(s.bP99), fmtUS(s.aP99), control, pairedVerdict(pr, s.p99Added <= targetP99Added))
	}
	large := c.keys >= largeKeys
	scope := func(ok bool) string {
		if !large {
			return fmt.Sprintf("n/a: %d keys (run -keys 1000000)", c.keys)
		}
		return met(ok)
	}
	limit := ""
	if c.memLimitMiB > 0 {
		limit = fmt.Sprintf(", in a memory cgroup of %d MiB", c.memLimitMiB)
	}
	p("| RSS with 1,000,000 keys after load | <= 150 MiB | %s with %d keys%s (anonymous %s, file-backed %s) | %s |\n",
		mib(r.mem.rss), c.keys, limit, mib(r.mem.anon), mib(r.mem.file), scope(r.mem.rss <= targetRSS))
	st := time.Duration(median(durations(r.starts)))
	p("| start to first served request, 1,000,000 keys | <= 2 s | %s with %d keys | %s |\n", st.Round(time.Millisecond), c.keys, scope(st <= targetStart))
	if !r.fill.reused {
		how := map[string]string{"load": fmt.Sprintf("keystore.Load, median of %d", len(r.fill.calls)), "import": "ImportKeys"}[r.fill.method]
		p("| bulk load into the store | >= 100,000 keys/s | %.0f keys/s (%s) | %s |\n", r.fill.importRate(), how, met(r.fill.importRate() >= targetBulk))
	}
	p("| verify on a cache hit / miss (Go benchmarks) | <= 1 µs, 0 allocs / p99 <= 50 µs | not measured by this harness: `go test -bench . -benchmem ./keystore` | |\n\n")

	p("## Rounds\n\n")
	p("Caddy CPU: cores the measured Caddy used during the run (wrk and the upstream Caddy use the rest); other CPU: share of the machine used by processes that are not the harness's (a run above %.0f%% is listed under anomalies).\n\n", 100*foreignLimit)
	p("| pair | round | A req/s | B req/s | B/A | A p99 | B p99 | B non-2xx | Caddy CPU A / B | other CPU A / B |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, pr := range r.pairs {
		for i := range pr.a {
			a, bb := pr.a[i], pr.b[i]
			p("| %s | %d | %.0f | %.0f | %.3f | %s | %s | %d | %.2f / %.2f | %.1f%% / %.1f%% |\n", pr.def.id, i+1, a.RPS(), bb.RPS(), bb.RPS()/a.RPS(),
				fmtUS(a.P99), fmtUS(bb.P99), bb.Status, cores(a), cores(bb), 100*a.Foreign, 100*bb.Foreign)
		}
	}
	p("\n")

	var notes []string
	for _, pr := range r.paired {
		for _, n := range pr.notes {
			notes = append(notes, "paired "+pr.def.id+": "+n)
		}
	}
	for _, pr := range r.pairs {
		if pr.retries > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d round(s) run again because other processes used more than %.0f%% of the CPU", pr.def.id, pr.retries, 100*foreignLimit))
		}
		for _, n := range pr.notes {
			notes = append(notes, pr.def.id+": "+n)
		}
	}
	if len(notes) > 0 {
		p("## Anomalies\n\n")
		for _, n := range notes {
			p("- %s\n", n)
		}
		p("\n")
	}
	if len(r.ownCPU) > 0 {
		p("## The auth handlers' own CPU per request, from the CPU profiles\n\n")
		p("Samples of the CPU profile taken under each load (%d s, wrk `-t%d -c%d`) inside the handler, minus those inside the handler it calls next, over the requests wrk counted during the profile (its rate times the profile's length). It leaves out what the handler makes others do (a larger response, the garbage collector's share of its allocations), and a profile is a sample: a figure of n samples is uncertain by about its square root.\n\n", r.cfg.profileSecs, r.cfg.threads, r.cfg.conns)
		p("| load | handler | samples in it | of the process's | requests (wrk) | own CPU per request |\n| --- | --- | ---: | ---: | ---: | ---: |\n")
		for _, o := range r.ownCPU {
			p("| %s | `%s` | %d | %d | %.0f | %.2f µs |\n", o.load, o.handler, o.samples(), o.total(), o.requests, o.perRequestUS())
		}
		p("\n")
	}
	if len(r.profiles) > 0 {
		sort.Strings(r.profiles)
		p("## Profiles of the measured Caddy under load\n\n")
		for _, f := range r.profiles {
			p("- `%s`\n", f)
		}
		p("\n")
	}
	return b.String()
}

// targets22 writes the table of issue 22's targets: apikey against
// respond and against the peers of the same run, by throughput and by the
// measured Caddy's CPU per request.
func (r report) targets22(p func(string, ...any)) {
	p("## Targets (issue 22)\n\n| measure | target | measured | |\n| --- | --- | --- | --- |\n")
	ratio := func(id string) (pairStats, pairResult, bool) {
		pr, ok := r.pair(id)
		if !ok {
			return pairStats{}, pr, false
		}
		return pr.stats(), pr, true
	}
	if s, pr, ok := ratio("respond"); ok {
		basic := "no basic_auth pair in this run"
		above := true
		if bs, _, ok := ratio("basic_auth"); ok {
			above = s.ratio > bs.ratio
			basic = fmt.Sprintf("basic_auth+respond / respond %.3f (rounds %.3f..%.3f)", bs.ratio, bs.ratioMin, bs.ratioMax)
		}
		p("| `apikey`+`respond` / `respond`, %d keys, random valid keys | >= %.2f, and above `basic_auth` | %.3f (rounds %.3f..%.3f); %s | %s |\n",
			r.cfg.keys, target22Respond, s.ratio, s.ratioMin, s.ratioMax, basic, verdict(pr, s.ratio >= target22Respond && above))
		added := s.bCPUReq - s.aCPUReq
		peers := ""
		for _, id := range []string{"basic_auth", "forward_auth", "floor"} {
			if ps, _, ok := ratio(id); ok {
				peers += fmt.Sprintf("; %s adds %+.1f µs", id, ps.bCPUReq-ps.aCPUReq)
			}
		}
		p("| Caddy CPU per valid request added by `apikey` | <= %.1f µs | %+.1f µs (%.1f vs %.1f µs%s) | %s |\n",
			target22CPUAdded, added, s.bCPUReq, s.aCPUReq, peers, verdict(pr, added <= target22CPUAdded))
	}
	row := func(id, label string, target float64) {
		if s, pr, ok := ratio(id); ok {
			p("| %s | >= %.2f | %.3f (rounds %.3f..%.3f; CPU/req %+.1f µs) | %s |\n", label, target, s.ratio, s.ratioMin, s.ratioMax,
				s.bCPUReq-s.aCPUReq, verdict(pr, s.ratio >= target))
		}
	}
	row("proxy", "`apikey`+`reverse_proxy` / `reverse_proxy`", target22Proxy)
	row("unknown", "unknown-key flood / `respond`", target22Flood)
	row("malformed", "malformed flood / `respond`", target22Flood)
	p("| `BenchmarkServeHTTPValidSpread` over baseline | <= 1.5 µs, no allocation in the handler | not measured by this harness: `go test -run '^$' -bench 'ServeHTTP' -benchmem ./caddymodule/` | |\n\n")
	if own := r.ownCPUSummary(); own != "" {
		p("The pairs' ratios and CPU figures move by more than these targets' margins from pair to pair on a shared machine (the floor, which checks no key, has read below `apikey`). The handlers' own CPU from the profiles resolves them: %s (a figure of n samples is uncertain by about √n).\n\n", own)
	}
}

// ownCPUSummary lists the own CPU per request of apikey (valid keys), of
// basic_auth and of the floor, as profiled in this run ("" without
// profiles).
func (r report) ownCPUSummary() string {
	var parts []string
	for _, l := range []struct{ load, label string }{
		{"apikey-respond", "`apikey`"},
		{"basic-auth-respond", "`basic_auth`"},
		{"floor-respond", "the floor"},
	} {
		for _, o := range r.ownCPU {
			if o.load == l.load {
				parts = append(parts, fmt.Sprintf("%s %.2f µs (%d samples)", l.label, o.perRequestUS(), o.samples()))
			}
		}
	}
	return strings.Join(parts, ", ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// cores is the measured Caddy's CPU time over the run's duration.
func cores(w wrkResult) float64 {
	if w.DurationUS <= 0 {
		return 0
	}
	return w.CaddyCPU.Seconds() / (float64(w.DurationUS) / 1e6)
}

// verdict is met or not met, unless other processes disturbed a round of
// the pair: then the comparison says little.
func verdict(pr pairResult, ok bool) string {
	if n := pr.disturbed(); n > 0 {
		return fmt.Sprintf("not established: %d of %d runs disturbed (%s)", n, len(pr.a)+len(pr.b), met(ok))
	}
	return met(ok)
}

// pairedVerdict is verdict for the paired probe: rounds during which other
// processes used the CPU are interruptions that a pair shares, but a
// verdict on them is still marked.
func pairedVerdict(pr pairedResult, ok bool) string {
	n := 0
	for _, r := range pr.rounds {
		if r.foreign > foreignLimit {
			n++
		}
	}
	if n > 0 {
		return fmt.Sprintf("not established: %d of %d rounds disturbed (%s)", n, len(pr.rounds), met(ok))
	}
	return met(ok)
}
