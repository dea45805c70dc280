package adminapi

import (
	"testing"

	"github.com/caddy-apikey/caddy-apikey/internal/testengine"
	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// testOptions gives a test's store a directory and, with
// APIKEY_TEST_ENGINE=redis, a Redis engine (see internal/testengine): the
// admin API's behaviour tests are the conformance suite of the engines.
func testOptions(t testing.TB, opts keystore.Options) keystore.Options {
	t.Helper()
	opts.Dir = t.TempDir()
	if e := testengine.Engine(t, opts.Dir, testengine.Layout{Bucket: keystore.ScanBucket, Watched: keystore.Watched}); e != nil {
		opts.Engine = e
	}
	return opts
}
