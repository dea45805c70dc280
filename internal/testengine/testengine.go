// Package testengine picks the engine that the key store's behaviour
// tests run on: Badger by default, Redis with APIKEY_TEST_ENGINE=redis
// (CI runs the keystore and adminapi suites both ways: the conformance of
// the two engines). On Redis, each store directory of a test is a key
// namespace of one redis-server shared by the test binary, so that a test
// that closes and reopens a directory reopens its data.
package testengine

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
	"github.com/caddy-apikey/caddy-apikey/keystore/redisstore"
)

// OnRedis reports whether the tests run on Redis.
var OnRedis = os.Getenv("APIKEY_TEST_ENGINE") == "redis"

// Layout is the key store's scan layout and watched keys
// (keystore.ScanBucket and keystore.Watched; passed in, since the
// keystore package's own tests cannot import a package that imports it).
type Layout struct {
	Bucket  func([]byte) []byte
	Watched func([]byte) bool
}

// Engine returns the engine of the store in dir: nil (the store opens
// Badger in dir) unless the tests run on Redis.
func Engine(t testing.TB, dir string, l Layout) kv.Engine {
	t.Helper()
	if !OnRedis {
		return nil
	}
	return Redis(t, redistest.Shared(t), Namespace(dir), "test", l)
}

// Namespace is the Redis key namespace of a store directory.
func Namespace(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "t" + hex.EncodeToString(sum[:8]) + ":"
}

// Redis opens a Redis engine on srv with the layout.
func Redis(t testing.TB, srv *redistest.Server, ns, origin string, l Layout) *redisstore.Engine {
	t.Helper()
	e, err := redisstore.Open(redisstore.Options{URL: srv.URL(), Namespace: ns, Bucket: l.Bucket, Watched: l.Watched, Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	return e
}
