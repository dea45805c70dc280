package keystore

import (
	"testing"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
	"github.com/caddy-apikey/caddy-apikey/internal/testengine"
	"github.com/caddy-apikey/caddy-apikey/keystore/redisstore"
)

// The behaviour tests run on Redis with APIKEY_TEST_ENGINE=redis (see
// internal/testengine).
var testOnRedis = testengine.OnRedis

var layout = testengine.Layout{Bucket: ScanBucket, Watched: Watched}

// withTestEngine sets opts.Engine to the engine the tests run on.
func withTestEngine(t testing.TB, opts *Options) {
	t.Helper()
	if opts.Engine != nil {
		return
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if e := testengine.Engine(t, opts.Dir, layout); e != nil {
		opts.Engine = e
	}
}

// testOpen is Open on the engine the tests run on.
func testOpen(t testing.TB, opts Options) (*Store, error) {
	t.Helper()
	withTestEngine(t, &opts)
	return Open(opts)
}

// openRedisEngine opens a Redis engine with the store's layout.
func openRedisEngine(t testing.TB, srv *redistest.Server, ns, origin string) *redisstore.Engine {
	t.Helper()
	return testengine.Redis(t, srv, ns, origin, layout)
}

// badgerOnly skips a test of Badger's own behaviour (its tables, its
// value log, its bulk loader) when the suite runs on Redis.
func badgerOnly(t testing.TB) {
	t.Helper()
	if testOnRedis {
		t.Skip("a test of the Badger engine")
	}
}
