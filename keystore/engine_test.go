package keystore

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
	"github.com/caddy-apikey/caddy-apikey/keystore/redisstore"
)

// testOnRedis runs the store's behaviour tests on Redis instead of Badger:
// `APIKEY_TEST_ENGINE=redis go test ./keystore/` (CI runs both). Each
// store directory of a test is a namespace of one shared redis-server, so
// that a test that closes and reopens a directory reopens its data.
var testOnRedis = os.Getenv("APIKEY_TEST_ENGINE") == "redis"

// withTestEngine sets opts.Engine to the engine the tests run on.
func withTestEngine(t testing.TB, opts *Options) {
	t.Helper()
	if !testOnRedis || opts.Engine != nil {
		return
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.Engine = openRedisEngine(t, redistest.Shared(t), namespaceOf(opts.Dir), "test")
}

func namespaceOf(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "t" + hex.EncodeToString(sum[:8]) + ":"
}

// openRedisEngine opens a Redis engine with the store's layout.
func openRedisEngine(t testing.TB, srv *redistest.Server, ns, origin string) *redisstore.Engine {
	t.Helper()
	e, err := redisstore.Open(redisstore.Options{URL: srv.URL(), Namespace: ns, Bucket: ScanBucket, Watched: Watched, Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// badgerOnly skips a test of Badger's own behaviour (its tables, its
// value log, its bulk loader) when the suite runs on Redis.
func badgerOnly(t testing.TB) {
	t.Helper()
	if testOnRedis {
		t.Skip("a test of the Badger engine")
	}
}

// testOpen is Open on the engine the tests run on.
func testOpen(t testing.TB, opts Options) (*Store, error) {
	t.Helper()
	withTestEngine(t, &opts)
	return Open(opts)
}
