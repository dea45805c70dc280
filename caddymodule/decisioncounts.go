package caddymodule

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-apikey/caddy-apikey/internal/percpu"
	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// decisionCounts is caddy_apikey_requests_total: the decisions of the
// handlers, by server, handler and outcome. It is a collector of its own
// rather than a prometheus.CounterVec because every request adds to it: a
// CounterVec's child is one atomic that both cores of a 2-core machine
// wrote at each request, moving its cache line between them (about 120
// ns a time); here each core adds to a stripe of its own
// (percpu.Counter), and a scrape sums them. The series are those of a
// CounterVec whose children a handler resolved: all outcomes of each
// (server, handler) that decided a request.
type decisionCounts struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	m    map[[2]string]*outcomeCounts // by server, handler
}

// outcomeCounts are one handler's decisions in one server, by outcome.
type outcomeCounts [numOutcomes]*percpu.Counter

func newDecisionCounts(name, help string) *decisionCounts {
	return &decisionCounts{
		desc: prometheus.NewDesc(name, help, []string{"server", "handler", "outcome"}, nil),
		m:    make(map[[2]string]*outcomeCounts),
	}
}

// series returns the counts of handler in server, making them if needed.
func (d *decisionCounts) series(server, handler string) *outcomeCounts {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := [2]string{server, handler}
	if c := d.m[k]; c != nil {
		return c
	}
	c := new(outcomeCounts)
	for o := range c {
		c[o] = percpu.NewCounter()
	}
	d.m[k] = c
	return c
}

// Describe implements prometheus.Collector.
func (d *decisionCounts) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }

// Collect implements prometheus.Collector.
func (d *decisionCounts) Collect(ch chan<- prometheus.Metric) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, c := range d.m {
		for o, n := range c {
			ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(n.Load()),
				k[0], k[1], outcomeCode(keystore.Outcome(o)))
		}
	}
}

// Interface guard.
var _ prometheus.Collector = (*decisionCounts)(nil)
