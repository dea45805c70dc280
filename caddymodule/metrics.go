package caddymodule

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// The outcomes the handlers count beyond the keystore's.
const (
	// outcomeInvalidPath: the path check refused the request (400).
	outcomeInvalidPath = keystore.QuotaExceeded + 1 + iota
	// outcomeUnavailable: the store could not decide (503).
	outcomeUnavailable
	numOutcomes
)

// outcomeCode is the outcome label of o.
func outcomeCode(o keystore.Outcome) string {
	switch o {
	case outcomeInvalidPath:
		return "invalid_path"
	case outcomeUnavailable:
		return "unavailable"
	}
	return o.Code()
}

// decisionBuckets are the decision-time histogram's buckets, in seconds:
// 1 µs to 100 ms (a cache hit takes a few µs, a miss a read of the
// store).
var decisionBuckets = []float64{1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3, 25e-3, 100e-3}

// decisionSample: the decision time is measured for one decision in
// decisionSample (a power of two). Reading the clock twice costs 90 ns
// on some virtual machines, more than the request path's metrics may add.
const decisionSample = 64

// appMetrics are an apikey app's metrics, registered in its config's
// registry (Caddy's /metrics). A reload registers new ones, starting
// from zero, as Caddy's own caddy_http_ metrics do; the store's counts
// (storeCollector) run on while the store stays open.
type appMetrics struct {
	decisions *decisionCounts
	duration  *prometheus.HistogramVec
	mutations *prometheus.CounterVec
}

// newAppMetrics makes the app's metrics and registers them in reg (none
// if reg is nil, as for an app provisioned outside a Caddy config).
func newAppMetrics(reg *prometheus.Registry, a *App) (*appMetrics, error) {
	const ns, sub = "caddy", "apikey"
	m := &appMetrics{
		decisions: newDecisionCounts(prometheus.BuildFQName(ns, sub, "requests_total"),
			"Requests decided by the apikey and apikey_admin handlers, by server, handler and outcome."),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "decision_duration_seconds",
			Help:    fmt.Sprintf("Time the handlers spend deciding a request (path check, key lookup, checks), sampled: one decision in %d.", decisionSample),
			Buckets: decisionBuckets,
		}, []string{"server", "handler"}),
		mutations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "admin_mutations_total",
			Help: "Requests to the admin API's mutating endpoints (admin endpoint and apikey_admin), by operation and result (ok or the error code).",
		}, []string{"operation", "result"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.decisions, err = register(reg, m.decisions); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.mutations, err = register(reg, m.mutations); err != nil {
		return nil, err
	}
	if _, err = register(reg, &storeCollector{app: a}); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c in reg, or returns the collector already
// registered in its place (a second registration in one config's
// registry), as Caddy's reverse_proxy metrics do.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("registering the apikey metrics: %v", err)
}

// observeMutation counts a request to a mutating admin endpoint.
func (m *appMetrics) observeMutation(op, result string) {
	if m == nil {
		return
	}
	m.mutations.WithLabelValues(op, result).Inc()
}

// decisionMetrics are one handler's metrics in one server: resolved once,
// so that counting a decision is an add to a counter of the core's own.
type decisionMetrics struct {
	outcomes *outcomeCounts
	duration prometheus.Observer
}

// metricsSlot holds a handler's decision metrics, resolved at its first
// request, when the server's name (a label) is known. A handler serves
// the routes of one server; one in a named route that several servers
// invoke counts under the first server that used it.
type metricsSlot struct {
	app     *appMetrics
	handler string // apikey or apikey_admin
	m       atomic.Pointer[decisionMetrics]
	mu      sync.Mutex
}

func newMetricsSlot(app *appMetrics, handler string) *metricsSlot {
	if app == nil {
		return nil
	}
	return &metricsSlot{app: app, handler: handler}
}

// get returns the slot's metrics, resolving them for r's server first.
func (s *metricsSlot) get(r *http.Request) *decisionMetrics {
	if m := s.m.Load(); m != nil {
		return m
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.m.Load(); m != nil {
		return m
	}
	server := "UNKNOWN" // as caddyhttp's metrics name a request without one
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv != nil && srv.Name() != "" {
		server = srv.Name()
	}
	m := &decisionMetrics{
		outcomes: s.app.decisions.series(server, s.handler),
		duration: s.app.duration.WithLabelValues(server, s.handler),
	}
	s.m.Store(m)
	return m
}

// decisionTimer starts timing a decision if it is one of the sampled.
func decisionTimer() time.Time {
	if rand.Uint32()&(decisionSample-1) != 0 {
		return time.Time{}
	}
	return time.Now()
}

// record counts a decision of outcome o, and its time if it was timed
// (start not zero).
func (s *metricsSlot) record(r *http.Request, o keystore.Outcome, start time.Time) {
	if s == nil {
		return
	}
	m := s.get(r)
	m.outcomes[o].Inc()
	if !start.IsZero() {
		m.duration.Observe(time.Since(start).Seconds())
	}
}

// storeCollector reports the counts of the app's store at each scrape,
// from memory: the store keeps them (keystore.Stats), so they run on
// across reloads while the store stays open. Nothing is reported before
// the store is open. Keys by status are those the last expiry sweep
// counted (every expiry_check_interval).
type storeCollector struct{ app *App }

var (
	descCacheHits    = storeDesc("cache_hits_total", "Key lookups of the request path answered from the cache.")
	descCacheMisses  = storeDesc("cache_misses_total", "Key lookups of the request path not in the cache (answered by the filter of stored hashes, or read from the store).")
	descStoreReads   = storeDesc("store_reads_total", "Reads of the store on the request path (cache misses the filter let through).")
	descKeys         = storeDesc("keys", "Stored keys by status (active, revoked, expired), as the last expiry sweep counted them.", "status")
	descAccounts     = storeDesc("accounts", "Accounts in the store.")
	descPurgeRuns    = storeDesc("purge_runs_total", "Purge sweeps of revoked keys run.")
	descKeysPurged   = storeDesc("keys_purged_total", "Revoked keys deleted by the purge sweeps.")
	descFlushes      = storeDesc("last_used_flushes_total", "Writes of the last-used times and quota counts kept in memory.")
	descFlushErrors  = storeDesc("last_used_flush_errors_total", "Writes of last-used times and quota counts that failed (retried at the next flush).")
	descStoreErrors  = storeDesc("store_errors_total", "Errors of the store's engine (Badger; Redis in cluster mode): failed reads, writes and commits.")
	descReplicaLag   = storeDesc("replica_lag_seconds", "Cluster mode: how long ago this replica last confirmed that it knows every change of the shared store.")
	descReplicaStale = storeDesc("replica_stale", "Cluster mode: 1 while this replica refuses key checks (503 unavailable) because it is not confirmed current within max_staleness, 0 otherwise.")
	descLeaseRefills = storeDesc("lease_refills_total", "Cluster mode: round trips to Redis for the leases of the cluster-wide rate limits and quotas (background refills, and the request path's takes of a bucket that held no lease).")
	descReplicas     = storeDesc("replicas_alive", "Cluster mode: how many replicas the last heartbeat found alive (a rate limit's per-replica share while Redis is unreachable is the limit divided by this).")
)

func storeDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName("caddy", "apikey", name), help, labels, nil)
}

// Describe implements prometheus.Collector.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCacheHits, descCacheMisses, descStoreReads, descKeys, descAccounts,
		descPurgeRuns, descKeysPurged, descFlushes, descFlushErrors, descStoreErrors, descReplicaLag, descReplicaStale, descLeaseRefills, descReplicas} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	if c.app.open == nil {
		return
	}
	b := c.app.open.ready.Load()
	if b == nil || b.verifier.Store.Closed() {
		return
	}
	st := b.verifier.Store.Stats()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(descCacheHits, st.CacheHits)
	counter(descCacheMisses, st.CacheMisses)
	counter(descStoreReads, st.StoreReads)
	counter(descPurgeRuns, st.PurgeRuns)
	counter(descKeysPurged, st.KeysPurged)
	counter(descFlushes, st.Flushes)
	counter(descFlushErrors, st.FlushErrors)
	counter(descStoreErrors, st.EngineErrors)
	gauge(descAccounts, float64(st.Accounts))
	if st.Keys != nil {
		gauge(descKeys, float64(st.Keys.Active), keystore.StatusActive)
		gauge(descKeys, float64(st.Keys.Revoked), keystore.StatusRevoked)
		gauge(descKeys, float64(st.Keys.Expired), keystore.StatusExpired)
	}
	if st.Shared {
		gauge(descReplicaLag, st.Lag.Seconds())
		stale := 0.0
		if st.Stale {
			stale = 1
		}
		gauge(descReplicaStale, stale)
		counter(descLeaseRefills, st.LeaseRefills)
		gauge(descReplicas, float64(st.Replicas))
	}
}
