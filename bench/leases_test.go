package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestReadLeaseCalls: the lease calls and passed requests are summed from
// a Prometheus registry's own exposition, over every label set, and only
// the ok outcome counts as passed.
func TestReadLeaseCalls(t *testing.T) {
	reg := prometheus.NewRegistry()
	refills := prometheus.NewCounter(prometheus.CounterOpts{Name: "caddy_apikey_lease_refills_total", Help: "h"})
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "caddy_apikey_requests_total", Help: "h"}, []string{"server", "handler", "outcome"})
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "caddy_apikey_requests_total_other", Help: "h"})
	reg.MustRegister(refills, reqs, other)
	refills.Add(120)
	reqs.WithLabelValues("srv0", "apikey", "ok").Add(1000)
	reqs.WithLabelValues("srv1", "apikey", "ok").Add(500)
	reqs.WithLabelValues("srv0", "apikey", "invalid_key").Add(9999)
	other.Add(7)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	l, err := readLeaseCalls(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if l.calls != 120 || l.passed != 1500 || l.perPassed() != 0.08 {
		t.Fatalf("got %+v, per passed %v; want 120 calls, 1500 passed, 0.08", l, l.perPassed())
	}
	if (leaseCalls{}).perPassed() != 0 {
		t.Fatal("no passed requests: want 0 per passed")
	}
}
