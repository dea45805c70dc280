package badgerstore

import (
	"testing"

	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
	"github.com/caddy-apikey/caddy-apikey/keystore/kv/kvtest"
)

func TestConformance(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.Engine {
		e, err := Open(t.TempDir(), zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		return e
	})
}
