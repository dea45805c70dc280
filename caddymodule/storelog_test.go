package caddymodule_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/caddymodule"
)

// storeLogConfig logs everything to <dir>/<file>.
const storeLogConfig = `{
	admin %[1]s
	http_port 9080
	https_port 9443
	apikey {
		storage %[2]s
	}
	log default {
		output file %[3]s/LOGFILE
		level DEBUG
	}
}

http://localhost:9080 {
	apikey
	reverse_proxy %[4]s
}
`

// TestStoreLogFollowsTheRunningConfig: the store, shared by the configs
// that name its storage, writes its log lines through the logs of the
// config running when it writes them. After a reload that moves Caddy's
// log to another file, the store's lines go to the new file, not to the
// writer of the config that opened the store (closed with it).
func TestStoreLogFollowsTheRunningConfig(t *testing.T) {
	e := startWith(t, strings.Replace(storeLogConfig, "LOGFILE", "first.log", 1))
	e.admin("GET", "/keys", "", 200) // the store is open
	log := caddymodule.StoreLogger(zap.NewNop())
	log.Error("line one")

	e.load(strings.Replace(storeLogConfig, "LOGFILE", "second.log", 1))
	log.Error("line two", zap.String("field", "kept"))
	log.With(zap.String("with", "kept too")).Warn("line three")

	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(e.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	first, second := read("first.log"), read("second.log")
	if !strings.Contains(first, "line one") || strings.Contains(first, "line two") || strings.Contains(first, "line three") {
		t.Errorf("first config's log:\n%s", first)
	}
	for _, want := range []string{`"logger":"apikey.store"`, `"msg":"line two"`, `"field":"kept"`, `"msg":"line three"`, `"with":"kept too"`} {
		if !strings.Contains(second, want) {
			t.Errorf("second config's log lacks %s:\n%s", want, second)
		}
	}
}
