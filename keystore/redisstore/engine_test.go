package redisstore

import (
	"fmt"
	"testing"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
	"github.com/caddy-apikey/caddy-apikey/keystore/kv/kvtest"
)

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	n := 0
	kvtest.Run(t, func(t *testing.T) kv.Engine {
		n++
		e, err := Open(Options{URL: srv.URL(), Namespace: fmt.Sprintf("kvtest%d:", n), Bucket: kvtest.Bucket, Origin: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return e
	})
}
