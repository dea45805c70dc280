package main

// These tests keep the harness compiling and its arithmetic right on fixed
// input. They start no process: the harness itself (wrk, Caddy, minutes of
// load) runs only with "go run ./bench".

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// A real run of wrk 4.1.0 (Debian) with --latency and bench/wrk.lua.
const wrkWithBenchLine = `Running 1s test @ http://127.0.0.1:18050/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.18ms    1.67ms  13.89ms   88.50%
    Req/Sec    11.50k     3.92k   18.27k    55.00%
  Latency Distribution
     50%  486.00us
     75%    1.58ms
     90%    3.10ms
     99%    8.51ms
  22965 requests in 1.01s, 2.91MB read
Requests/sec:  22805.97
Transfer/sec:      2.89MB
WRKBENCH requests=22965 duration_us=1006973 bytes=3054345 connect=0 read=0 write=0 status=0 timeout=0 p50=486 p90=3096 p99=8514 p999=12081 max=13887 mean=1180.94 stdev=1668.65
`

// wrk's own report only (no script), with refusals and socket errors.
const wrkReportOnly = `Running 10s test @ http://127.0.0.1:18002/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.70ms    2.00ms  41.00ms   90.00%
    Req/Sec    19.50k     1.52k   23.11k    71.00%
  Latency Distribution
     50%    1.02ms
     75%    1.80ms
     90%  950.50us
     99%    1.05s
  388123 requests in 10.00s, 41.09MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 388000
Requests/sec:  38807.12
Transfer/sec:      4.11MB
`

func TestParseWrkOutput(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    wrkResult
		rps     float64
		wantErr string
	}{
		{
			name: "WRKBENCH line wins over the report",
			out:  wrkWithBenchLine,
			want: wrkResult{Requests: 22965, DurationUS: 1006973, Bytes: 3054345,
				P50: 486, P90: 3096, P99: 8514, P999: 12081, Max: 13887, Mean: 1180.94},
			rps: 22965 / 1.006973,
		},
		{
			name: "report with --latency: units us, ms, s; errors",
			out:  wrkReportOnly,
			want: wrkResult{Requests: 388123, DurationUS: 10_000_000, P50: 1020, P90: 950.5, P99: 1.05e6,
				Connect: 1, Read: 2, Write: 3, Timeout: 4, Status: 388000, rps: 38807.12},
			rps: 38812.3, // requests / duration, not the rounded Requests/sec line
		},
		{
			name: "report without duration falls back to Requests/sec",
			out:  "Requests/sec:  100.50\n  Latency Distribution\n     50%   10.00us\n     99%   20.00ms\n",
			want: wrkResult{P50: 10, P99: 20000, rps: 100.5},
			rps:  100.5,
		},
		{name: "no latency distribution", out: "Requests/sec:  100.50\n", wantErr: "latency distribution"},
		{name: "nothing", out: "unable to connect to 127.0.0.1:18001 Connection refused\n", wantErr: "neither"},
		{name: "WRKBENCH without p99", out: "WRKBENCH requests=1 duration_us=5 p50=1\n", wantErr: "no p99"},
		{name: "WRKBENCH bad number", out: "WRKBENCH requests=x duration_us=5 p50=1 p99=2\n", wantErr: "requests"},
		{name: "WRKBENCH zero duration", out: "WRKBENCH requests=1 duration_us=0 p50=1 p99=2\n", wantErr: "positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrkOutput(tc.out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if !near(got.RPS(), tc.rps, 1e-9) {
				t.Errorf("RPS = %v, want %v", got.RPS(), tc.rps)
			}
		})
	}
}

func TestWrkDurationUS(t *testing.T) {
	for _, tc := range []struct {
		num, unit string
		want      float64
	}{
		{"486.00", "us", 486}, {"1.58", "ms", 1580}, {"2", "s", 2e6}, {"1.5", "m", 90e6}, {"0.5", "h", 1800e6},
	} {
		got, err := wrkDurationUS(tc.num, tc.unit)
		if err != nil || !near(got, tc.want, 1e-12) {
			t.Errorf("wrkDurationUS(%s, %s) = %v, %v; want %v", tc.num, tc.unit, got, err, tc.want)
		}
	}
	if _, err := wrkDurationUS("1", "ns"); err == nil {
		t.Error("unit ns accepted")
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{5}, 5},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 10, 1, 1000, 11}, 10},
		{[]float64{-2, 2}, 0},
	} {
		in := append([]float64(nil), tc.in...)
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Fatalf("median reordered its input: %v", tc.in)
			}
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
}

func TestRatiosMinMax(t *testing.T) {
	for _, tc := range []struct {
		a, b           []float64
		want           []float64
		wantLo, wantHi float64
	}{
		{[]float64{100, 200, 400}, []float64{95, 200, 300}, []float64{0.95, 1, 0.75}, 0.75, 1},
		{[]float64{100, 0, 50}, []float64{90, 10, 60}, []float64{0.9, 1.2}, 0.9, 1.2}, // a round with A = 0 is skipped
		{[]float64{100, 100}, []float64{50}, []float64{0.5}, 0.5, 0.5},                // only rounds both have
	} {
		got := ratios(tc.a, tc.b)
		if len(got) != len(tc.want) {
			t.Fatalf("ratios(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		for i := range got {
			if !near(got[i], tc.want[i], 1e-12) {
				t.Errorf("ratios(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		}
		lo, hi := minMax(got)
		if !near(lo, tc.wantLo, 1e-12) || !near(hi, tc.wantHi, 1e-12) {
			t.Errorf("minMax(%v) = %v, %v; want %v, %v", got, lo, hi, tc.wantLo, tc.wantHi)
		}
	}
	if lo, hi := minMax(nil); !math.IsNaN(lo) || !math.IsNaN(hi) {
		t.Error("minMax of nothing is not NaN")
	}
}

func round(rps, p50, p99 float64) wrkResult {
	return wrkResult{Requests: int64(rps * 10), DurationUS: 10_000_000, P50: p50, P99: p99}
}

func TestComputeStats(t *testing.T) {
	// Five rounds, A then B: medians of A = 1000 req/s, B = 960 req/s.
	a := []wrkResult{round(1000, 100, 900), round(1100, 110, 1000), round(900, 90, 800), round(1000, 100, 950), round(1050, 105, 2000)}
	b := []wrkResult{round(960, 104, 940), round(1045, 115, 1030), round(810, 95, 850), round(990, 106, 990), round(950, 108, 5000)}
	s := computeStats(a, b)
	check := func(name string, got, want float64) {
		t.Helper()
		if !near(got, want, 1e-9) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("A req/s", s.aRPS, 1000)
	check("B req/s", s.bRPS, 960)
	check("ratio of medians", s.ratio, 0.96)
	// Per round: 0.96, 0.95, 0.9, 0.99, 0.904762
	check("min ratio", s.ratioMin, 0.9)
	check("max ratio", s.ratioMax, 0.99)
	check("A p50", s.aP50, 100)
	check("A p99", s.aP99, 950)
	check("B p50", s.bP50, 106)
	check("B p99", s.bP99, 990)
	check("p99 added", s.p99Added, 40)
}

func TestCPUPerRequest(t *testing.T) {
	mk := func(req int64, caddy, up time.Duration) wrkResult {
		return wrkResult{Requests: req, DurationUS: 10_000_000, P50: 1, P99: 1, CaddyCPU: caddy, UpstreamCPU: up}
	}
	// A: 30 µs and 10 µs per request; B: 33 µs and 11 µs (medians).
	a := []wrkResult{mk(100_000, 3*time.Second, time.Second), mk(200_000, 6*time.Second, 2*time.Second), mk(100_000, 4*time.Second, 3*time.Second)}
	b := []wrkResult{mk(100_000, 3300*time.Millisecond, 1100*time.Millisecond), mk(100_000, 3*time.Second, time.Second), mk(50_000, 2*time.Second, time.Second)}
	s := computeStats(a, b)
	for name, got := range map[string][2]float64{
		"Caddy A": {s.aCPUReq, 30}, "Caddy B": {s.bCPUReq, 33}, "upstream A": {s.aUpCPUReq, 10}, "upstream B": {s.bUpReq, 11},
	} {
		if !near(got[0], got[1], 1e-9) {
			t.Errorf("%s = %v µs/request, want %v", name, got[0], got[1])
		}
	}
	if !math.IsNaN(wrkResult{}.cpuPerRequest(time.Second)) {
		t.Error("CPU per request of a run without requests is not NaN")
	}
}

func TestVerdict(t *testing.T) {
	quiet := pairResult{a: []wrkResult{{}, {}}, b: []wrkResult{{}, {}}}
	if got := verdict(quiet, true); got != "met" {
		t.Errorf("quiet, ok: %q", got)
	}
	if got := verdict(quiet, false); got != "**not met**" {
		t.Errorf("quiet, not ok: %q", got)
	}
	busy := pairResult{a: []wrkResult{{Foreign: 0.5}, {}}, b: []wrkResult{{Foreign: 0.03}, {Foreign: 0.031}}}
	if got := verdict(busy, true); got != "not established: 2 of 4 runs disturbed (met)" {
		t.Errorf("busy: %q", got)
	}
}

func TestPairCheckNotes(t *testing.T) {
	var r pairResult
	r.check(1, "A", wrkResult{Requests: 10}, false)
	r.check(1, "B", wrkResult{Requests: 10, Status: 10}, true)
	if len(r.notes) != 0 {
		t.Fatalf("notes for expected runs: %v", r.notes)
	}
	r.check(2, "A", wrkResult{Requests: 10, Status: 1, Timeout: 2, Foreign: 0.2}, false)
	r.check(2, "B", wrkResult{Requests: 10, Status: 9}, true)
	if len(r.notes) != 4 {
		t.Fatalf("want 4 notes (other CPU, socket errors, non-2xx, missing refusals), got %q", r.notes)
	}
}

func TestProcParsing(t *testing.T) {
	status := "Name:\tcaddy\nVmPeak:\t 1000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n" +
		"RssAnon:\t   61440 kB\nRssFile:\t   40960 kB\nRssShmem:\t       0 kB\nThreads:\t9\n"
	m, err := parseProcStatus(status)
	if want := (memUse{rss: 100 << 20, hwm: 200 << 20, anon: 60 << 20, file: 40 << 20}); err != nil || m != want {
		t.Errorf("parseProcStatus = %+v, %v; want %+v", m, err, want)
	}
	if _, err := parseProcStatus("Name:\tx\n"); err == nil {
		t.Error("status without VmRSS accepted")
	}

	// user nice system idle iowait irq softirq steal guest guest_nice
	busy, total, err := parseProcStat("cpu  100 5 50 800 20 3 2 0 40 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
	if err != nil || busy != 1600*time.Millisecond || total != 9800*time.Millisecond {
		t.Errorf("parseProcStat = %v, %v, %v; want 1.6s, 9.8s", busy, total, err)
	}

	// The command may hold spaces and parentheses.
	stat := "4242 (caddy (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 0 0"
	d, err := parsePidStat(stat)
	if err != nil || d != 3250*time.Millisecond {
		t.Errorf("parsePidStat = %v, %v; want 3.25s", d, err)
	}

	before := cpuSnapshot{busy: 10 * time.Second, total: 100 * time.Second, procs: []time.Duration{time.Second, time.Second}}
	after := cpuSnapshot{busy: 25 * time.Second, total: 120 * time.Second, procs: []time.Duration{9 * time.Second, 2 * time.Second}}
	// 15 s busy = 8 s Caddy + 1 s upstream + 5 s wrk + 1 s other, over 20 s.
	if got := foreignShare(before, after, 5*time.Second); !near(got, 0.05, 1e-12) {
		t.Errorf("foreignShare = %v, want 0.05", got)
	}
	if got := foreignShare(before, after, 7*time.Second); got != 0 {
		t.Errorf("foreignShare with more accounted than busy = %v, want 0", got)
	}
}

func TestMalformedKeys(t *testing.T) {
	f := keystore.DefaultFormat()
	keys := malformedKeys(f, 400, newRand())
	if len(keys) != 400 {
		t.Fatalf("got %d keys", len(keys))
	}
	kinds := map[string]int{}
	for _, k := range keys {
		if f.Check(k) == nil {
			t.Errorf("%q passes the format check", k)
		}
		if k == "" || strings.ContainsFunc(k, func(r rune) bool { return r <= ' ' || r > '~' }) {
			t.Errorf("%q is not a header-safe token", k)
		}
		switch {
		case strings.HasPrefix(k, f.Prefix) && len(k) == f.KeyLen():
			kinds["bad checksum"]++
		case strings.HasPrefix(k, f.Prefix):
			kinds["truncated"]++
		default:
			kinds["other"]++
		}
	}
	if kinds["bad checksum"] < 50 || kinds["truncated"] < 50 || kinds["other"] < 100 {
		t.Errorf("kinds of malformed keys: %v", kinds)
	}
}

func TestBenchKey(t *testing.T) {
	for i, tc := range []struct {
		key       int
		exempt    bool
		unlimited bool
	}{
		{key: 0, exempt: false, unlimited: false},
		{key: 1, exempt: false, unlimited: false}, // the load's keys are on the default limit
		{key: 0, exempt: true, unlimited: false},  // the probe always is
		{key: 1, exempt: true, unlimited: true},
	} {
		rl := benchKey(tc.key, tc.exempt).RateLimit
		switch {
		case tc.unlimited && (rl == nil || !rl.Unlimited):
			t.Errorf("test %d: key %d (exempt %v) has rate limit %+v, want unlimited", i, tc.key, tc.exempt, rl)
		case !tc.unlimited && rl != nil:
			t.Errorf("test %d: key %d (exempt %v) has rate limit %+v, want the default (nil)", i, tc.key, tc.exempt, rl)
		}
	}
	if storeName(config{keys: 100}) == storeName(config{keys: 100, exempt: true}) {
		t.Error("an exempt store has the same name as a limited one: -reuse would mix them")
	}
}

func TestTemplates(t *testing.T) {
	dir := t.TempDir()
	e := newCaddyEnv(config{out: dir, admin: "127.0.0.1:18090"}, dir, "caddy", "/store", newPorts(18001))
	e.peers = peerCreds{user: "bench", hash: "$2a$14$hash", token: "tok3n"}
	for _, tc := range []struct {
		rateLimit bool
		want      string
	}{
		{true, "\n\t\trate_limit 1000000 1s\n"},
		{false, "\n\t\t# rate_limit 1000000 1s"},
	} {
		path := dir + "/Caddyfile"
		if err := render(path, measuredTmpl, e.data(tc.rateLimit)); err != nil {
			t.Fatal(err)
		}
		got := readFile(t, path)
		for _, want := range []string{tc.want, "admin 127.0.0.1:18090", "storage /store", "http://127.0.0.1:18004 {", "http://127.0.0.1:18005 {", "header_up X-Api-Key-Id ",
			"reverse_proxy 127.0.0.1:18010 {", "bind 127.0.0.1",
			// The peers: basic_auth on 18006, forward_auth on 18007 to the check on 18008.
			"http://127.0.0.1:18006 {\n\tbind 127.0.0.1\n\tbasic_auth {\n\t\tbench $2a$14$hash\n",
			"http://127.0.0.1:18007 {\n\tbind 127.0.0.1\n\tforward_auth 127.0.0.1:18008 {",
			"http://127.0.0.1:18008 {", "@known header X-Auth-Token tok3n\n"} {
			if !strings.Contains(got, want) {
				t.Errorf("Caddyfile (rate limit %v) lacks %q:\n%s", tc.rateLimit, want, got)
			}
		}
		if strings.Count(got, "\tapikey\n") != 2 || strings.Contains(got, "\tlog") {
			t.Errorf("want exactly two apikey sites and no log directive:\n%s", got)
		}
	}
	if err := render(dir+"/up", upstreamTmpl, e.data(false)); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, dir+"/up"); !strings.Contains(got, "http://127.0.0.1:18010 {") || !strings.Contains(got, "admin off") {
		t.Errorf("upstream Caddyfile:\n%s", got)
	}
}

func TestFmtUS(t *testing.T) {
	for _, tc := range []struct {
		us   float64
		want string
	}{
		{87.4, "87 µs"}, {-113, "-113 µs"}, {1240, "1.24 ms"}, {-2500, "-2.50 ms"}, {math.NaN(), "n/a"},
	} {
		if got := fmtUS(tc.us); got != tc.want {
			t.Errorf("fmtUS(%v) = %q, want %q", tc.us, got, tc.want)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func near(a, b, eps float64) bool {
	return math.Abs(a-b) <= eps*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

func TestTargets22(t *testing.T) {
	// run is one wrk run of requests in a second, the measured Caddy
	// spending cpuUS µs on each.
	run := func(requests int64, cpuUS float64) wrkResult {
		return wrkResult{Requests: requests, DurationUS: 1e6, P50: 100, P99: 200,
			CaddyCPU: time.Duration(cpuUS * float64(requests) * float64(time.Microsecond))}
	}
	pair := func(id string, aReq, bReq int64, aCPU, bCPU float64) pairResult {
		return pairResult{def: pairDef{id: id, name: id, threads: 2, conns: 64}, a: []wrkResult{run(aReq, aCPU)}, b: []wrkResult{run(bReq, bCPU)}}
	}
	for i, tc := range []struct {
		name       string
		exempt     bool
		basic      int64 // basic_auth's requests against respond's 1000
		apikeyCPU  float64
		want, lack []string
	}{
		{
			name: "met, above basic_auth", basic: 950, apikeyCPU: 41,
			want: []string{
				"| `apikey`+`respond` / `respond`, 100000 keys, random valid keys | >= 0.97, and above `basic_auth` | 0.980 (rounds 0.980..0.980); basic_auth+respond / respond 0.950 (rounds 0.950..0.950) | met |",
				"| Caddy CPU per valid request added by `apikey` | <= 1.5 µs | +1.0 µs (41.0 vs 40.0 µs; basic_auth adds +2.0 µs; forward_auth adds +30.0 µs) | met |",
				"| unknown-key flood / `respond` | >= 0.99 | 0.995",
				"every bench key is on the default limit",
				"| basic_auth | 1000 | 950 | 0.950 | 0.950 | 0.950 | 40.0 µs | 42.0 µs | +2.0 µs |",
			},
			lack: []string{"exempt"},
		},
		{
			name: "below basic_auth, CPU over", basic: 990, apikeyCPU: 42, exempt: true,
			want: []string{
				"0.980 (rounds 0.980..0.980); basic_auth+respond / respond 0.990 (rounds 0.990..0.990) | **not met** |",
				"| Caddy CPU per valid request added by `apikey` | <= 1.5 µs | +2.0 µs",
				"# caddy-apikey load harness (exempt keys):",
				"**exempt run (`-exempt`",
			},
		},
	} {
		r := report{cfg: config{keys: 100_000, exempt: tc.exempt, threads: 2, conns: 64}, pairs: []pairResult{
			pair("respond", 1000, 980, 40, tc.apikeyCPU),
			pair("basic_auth", 1000, tc.basic, 40, 42),
			pair("forward_auth", 1000, 400, 40, 70),
			pair("unknown", 1000, 995, 40, 40.5),
		}}
		md := r.markdown()
		for _, w := range tc.want {
			if !strings.Contains(md, w) {
				t.Errorf("test %d (%s): the report lacks %q:\n%s", i, tc.name, w, md)
			}
		}
		for _, l := range tc.lack {
			if strings.Contains(md, l) {
				t.Errorf("test %d (%s): the report has %q", i, tc.name, l)
			}
		}
	}
}
