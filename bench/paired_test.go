package main

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPercentileUS(t *testing.T) {
	us := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Microsecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Microsecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   float64
	}{
		{"none", nil, 0.99, 0},
		{"one", us(7), 0.99, 7},
		{"median of 1..100 is the 50th", hundred, 0.50, 50},
		{"p99 of 1..100 is the 99th", hundred, 0.99, 99},
		{"p99 of 3 is the largest", us(1, 2, 3), 0.99, 3},
		{"p0 is the smallest", us(1, 2, 3), 0, 1},
		{"nearest rank rounds up: p90 of 1..10 is the 9th", hundred[:10], 0.90, 9},
		{"nearest rank rounds up: p94 of 1..10 is the 10th", hundred[:10], 0.94, 10},
		{"p7 of 1..100 is the 7th (0.07·100 is above 7 in floating point)", hundred, 0.07, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentileUS(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentileUS(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestPairedStats(t *testing.T) {
	r := pairedResult{rounds: []pairedRound{
		{n: 10, aP50: 100, aP99: 200, bP50: 104, bP99: 230},
		{n: 20, aP50: 110, aP99: 300, bP50: 112, bP99: 290},
		{n: 30, aP50: 90, aP99: 250, bP50: 99, bP99: 262},
	}}
	s := r.stats()
	want := pairedStats{n: 60, aP50: 100, aP99: 250, bP50: 104, bP99: 262, p50Added: 4, p99Added: 12, p99Min: -10, p99Max: 30}
	if s != want {
		t.Errorf("stats = %+v, want %+v", s, want)
	}
}

// recordingServer answers 200 after spending busy on the CPU and records
// the key of every request in order.
type recordingServer struct {
	*httptest.Server
	mu   sync.Mutex
	keys []string
}

func newRecordingServer(t *testing.T, busy time.Duration, status int) *recordingServer {
	rs := &recordingServer{}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for start := time.Now(); time.Since(start) < busy; {
		}
		rs.mu.Lock()
		rs.keys = append(rs.keys, r.Header.Get("X-API-Key"))
		rs.mu.Unlock()
		w.WriteHeader(status)
		w.Write([]byte("ok"))
	}))
	t.Cleanup(rs.Close)
	return rs
}

func (rs *recordingServer) addr() string { return strings.TrimPrefix(rs.URL, "http://") }

// TestProbeRound runs the probe against two real servers, B slower than A
// by a known amount, and checks that it measures that amount, that both
// sites got the same keys in the same order, and that a site that does not
// answer 200 fails the round.
func TestProbeRound(t *testing.T) {
	const slower = 400 * time.Microsecond
	a := newRecordingServer(t, 0, http.StatusOK)
	b := newRecordingServer(t, slower, http.StatusOK)
	keys := []string{"k1", "k2", "k3", "k4"}
	def := pairedDef{id: "t", aAddr: a.addr(), bAddr: b.addr()}
	r, err := probeRound(context.Background(), def, probeRequests(def.aAddr, "X-API-Key", keys), probeRequests(def.bAddr, "X-API-Key", keys), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.n < 50 {
		t.Fatalf("only %d pairs in 300 ms", r.n)
	}
	// The busy wait is a floor; a loaded test machine can only add to it.
	if r.p50Added() < 0.8*float64(slower/time.Microsecond) {
		t.Errorf("p50 added %.1f µs, want at least %v (B spends %v more per request)", r.p50Added(), 0.8*float64(slower/time.Microsecond), slower)
	}
	a.mu.Lock()
	b.mu.Lock()
	// One warm-up request each, then one pair per measured request.
	if len(a.keys) != r.n+1 || !slices.Equal(a.keys, b.keys) {
		t.Errorf("A got %d keys, B %d, %d pairs measured; the sequences must be equal", len(a.keys), len(b.keys), r.n)
	}
	a.mu.Unlock()
	b.mu.Unlock()

	refusing := newRecordingServer(t, 0, http.StatusUnauthorized)
	def.bAddr = refusing.addr()
	_, err = probeRound(context.Background(), def, probeRequests(def.aAddr, "X-API-Key", keys), probeRequests(def.bAddr, "X-API-Key", keys), 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("probe against a site answering 401: err %v, want a status error", err)
	}
}

// TestProbeRoundControl sends both requests of each pair to one server:
// the medians must agree closely (the method's own bias).
func TestProbeRoundControl(t *testing.T) {
	a := newRecordingServer(t, 0, http.StatusOK)
	keys := []string{"k1", "k2"}
	def := pairedDef{id: "control", aAddr: a.addr(), bAddr: a.addr()}
	reqs := probeRequests(def.aAddr, "X-API-Key", keys)
	r, err := probeRound(context.Background(), def, reqs, reqs, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// Loose on purpose: the race detector and a busy CI machine slow
	// every request; the bias being checked is one of order, not noise.
	if d := math.Abs(r.p50Added()); d > 0.5*r.aP50 {
		t.Errorf("control p50 added %.1f µs against p50 %.1f µs: the order of a pair biases the probe", r.p50Added(), r.aP50)
	}
}
