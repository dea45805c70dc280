package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"time"
)

// The latency apikey adds, measured with paired requests.
//
// wrk measures A and B in separate runs, seconds apart. On a shared VM the
// p99 of a run is set by how often the hypervisor and the other processes
// interrupt it, which changes from one run to the next by more than the
// few microseconds apikey adds: the same code read -268 to +348 µs of "p99
// added" at one connection. The probe instead sends each request to both
// sites back to back, with the same key, in a random order, over one
// keep-alive connection to each: an interruption falls on A and B alike,
// so the difference of their percentiles is the handler's. A control pair
// (A against itself) measures what the method cannot resolve.

// pairedDef is a pair of sites the probe measures: A plain, B with apikey.
type pairedDef struct {
	id, name     string
	aAddr, bAddr string // host:port
}

func definePaired(p ports) []pairedDef {
	addr := func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
	return []pairedDef{
		{id: "respond", name: "apikey+respond / respond", aAddr: addr(p.respond), bAddr: addr(p.apikeyRespond)},
		{id: "proxy", name: "apikey+reverse_proxy / reverse_proxy", aAddr: addr(p.proxy), bAddr: addr(p.apikeyProxy)},
		{id: "headers", name: "apikey+reverse_proxy / reverse_proxy setting the five identity headers itself (header_up)", aAddr: addr(p.headersProxy), bAddr: addr(p.apikeyProxy)},
		{id: "control", name: "respond / respond (control: the method's resolution)", aAddr: addr(p.respond), bAddr: addr(p.respond)},
	}
}

// pairedRound is one round of a pair: percentiles in µs.
type pairedRound struct {
	n                      int // requests to each site
	aP50, aP99, bP50, bP99 float64
	foreign                float64
}

func (r pairedRound) p50Added() float64 { return r.bP50 - r.aP50 }
func (r pairedRound) p99Added() float64 { return r.bP99 - r.aP99 }

type pairedResult struct {
	def    pairedDef
	rounds []pairedRound
	notes  []string
}

// pairedStats are the medians over the rounds.
type pairedStats struct {
	n                      int // requests to each site, all rounds
	aP50, aP99, bP50, bP99 float64
	p50Added, p99Added     float64 // medians of the per-round differences
	p99Min, p99Max         float64
}

func (r pairedResult) stats() pairedStats {
	var s pairedStats
	var aP50, aP99, bP50, bP99, d50, d99 []float64
	for _, x := range r.rounds {
		s.n += x.n
		aP50, aP99 = append(aP50, x.aP50), append(aP99, x.aP99)
		bP50, bP99 = append(bP50, x.bP50), append(bP99, x.bP99)
		d50, d99 = append(d50, x.p50Added()), append(d99, x.p99Added())
	}
	s.aP50, s.aP99, s.bP50, s.bP99 = median(aP50), median(aP99), median(bP50), median(bP99)
	s.p50Added, s.p99Added = median(d50), median(d99)
	s.p99Min, s.p99Max = minMax(d99)
	return s
}

// probeConn is one keep-alive connection of the probe.
type probeConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialProbe(addr string) (*probeConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &probeConn{c: c, br: bufio.NewReader(c)}, nil
}

// do sends one request (its bytes, ready) and reads the whole response; it
// returns the time from the write to the last byte of the body.
func (p *probeConn) do(req []byte) (time.Duration, int, error) {
	if err := p.c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if _, err := p.c.Write(req); err != nil {
		return 0, 0, err
	}
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		return 0, 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return 0, 0, err
	}
	return d, resp.StatusCode, nil
}

// probeRequests formats a GET / to host for every key, so that the loop
// sends bytes that are ready.
func probeRequests(host, header string, keys []string) [][]byte {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: apikey-bench-probe\r\n" + header + ": " + k + "\r\n\r\n")
	}
	return out
}

// probeRound sends pairs of requests (A and B, same key, random order) for
// d over one connection to each site. Every response must be a 200.
func probeRound(ctx context.Context, def pairedDef, reqA, reqB [][]byte, d time.Duration) (pairedRound, error) {
	ca, err := dialProbe(def.aAddr)
	if err != nil {
		return pairedRound{}, err
	}
	defer ca.c.Close()
	cb, err := dialProbe(def.bAddr)
	if err != nil {
		return pairedRound{}, err
	}
	defer cb.c.Close()
	// One warm-up pair: the connections' first requests are not measured.
	for _, c := range []struct {
		conn *probeConn
		req  []byte
	}{{ca, reqA[0]}, {cb, reqB[0]}} {
		if _, code, err := c.conn.do(c.req); err != nil || code != http.StatusOK {
			return pairedRound{}, fmt.Errorf("probe warm-up: status %d, %v", code, err)
		}
	}
	la := make([]time.Duration, 0, 1<<16)
	lb := make([]time.Duration, 0, 1<<16)
	one := func(c *probeConn, req []byte, site string) (time.Duration, error) {
		lat, code, err := c.do(req)
		if err != nil {
			return 0, fmt.Errorf("probe %s: %w", site, err)
		}
		if code != http.StatusOK {
			return 0, fmt.Errorf("probe %s: status %d, want 200", site, code)
		}
		return lat, nil
	}
	for end := time.Now().Add(d); time.Now().Before(end); {
		if ctx.Err() != nil {
			return pairedRound{}, ctx.Err()
		}
		i := rand.IntN(len(reqA))
		aFirst := rand.IntN(2) == 0
		for j := range 2 {
			var lat time.Duration
			if (j == 0) == aFirst {
				if lat, err = one(ca, reqA[i], def.aAddr); err != nil {
					return pairedRound{}, err
				}
				la = append(la, lat)
			} else {
				if lat, err = one(cb, reqB[i], def.bAddr); err != nil {
					return pairedRound{}, err
				}
				lb = append(lb, lat)
			}
		}
	}
	slices.Sort(la)
	slices.Sort(lb)
	return pairedRound{
		n:    len(la),
		aP50: percentileUS(la, 0.50), aP99: percentileUS(la, 0.99),
		bP50: percentileUS(lb, 0.50), bP99: percentileUS(lb, 0.99),
	}, nil
}

// percentileUS is the p-quantile of sorted latencies (nearest rank: the
// smallest sample with at least p of them at or below it), in µs. The
// tolerance keeps p·n that float arithmetic puts just above a whole
// number (0.07·100) on that number.
func percentileUS(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted))-1e-9)) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / float64(time.Microsecond)
}

// runPaired measures a pair for rounds rounds of d each, waiting for a
// quiet machine before each round and recording other processes' share
// of the CPU (the probe runs in this process, which mon must watch).
func runPaired(ctx context.Context, mon *cpuMonitor, def pairedDef, keys []string, header string, rounds int, d time.Duration, quiet time.Duration) (pairedResult, error) {
	res := pairedResult{def: def}
	reqA := probeRequests(def.aAddr, header, keys)
	reqB := probeRequests(def.bAddr, header, keys)
	logf("paired latency %q: %d rounds of %s, one connection to each site", def.name, rounds, d)
	for round := 1; round <= rounds; round++ {
		if err := waitQuiet(ctx, mon, quiet); err != nil {
			return res, err
		}
		before, err := mon.snapshot()
		if err != nil {
			return res, err
		}
		r, err := probeRound(ctx, def, reqA, reqB, d)
		if err != nil {
			return res, err
		}
		after, err := mon.snapshot()
		if err != nil {
			return res, err
		}
		r.foreign = foreignShare(before, after, 0)
		if r.foreign > foreignLimit {
			res.notes = append(res.notes, fmt.Sprintf("round %d: other processes used %.1f%% of the machine's CPU", round, 100*r.foreign))
		}
		res.rounds = append(res.rounds, r)
		logf("  round %d: %d pairs; A p50 %s p99 %s | B p50 %s p99 %s | added p50 %s p99 %s",
			round, r.n, fmtUS(r.aP50), fmtUS(r.aP99), fmtUS(r.bP50), fmtUS(r.bP99), fmtUS(r.p50Added()), fmtUS(r.p99Added()))
	}
	return res, nil
}
