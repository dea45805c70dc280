package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// TestCommandLoad: caddy apikey load fills the store that the config's
// global options name, in the config's key format; the keys verify after;
// a second load into the now filled store, an entry of another format and
// an entry with an unknown field are refused with a message naming them.
func TestCommandLoad(t *testing.T) {
	dir := t.TempDir()
	storage := filepath.Join(dir, "keys")
	caddyfile := filepath.Join(dir, "Caddyfile")
	conf := fmt.Sprintf("{\n\tapikey {\n\t\tstorage %s\n\t\tprefix mig_\n\t}\n}\n", storage)
	if err := os.WriteFile(caddyfile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	f := keystore.Format{Prefix: "mig_", Length: keystore.DefaultLength, Checksum: true}
	var plains []string
	var entries []map[string]any
	for i := range 50 {
		p, err := f.Generate()
		if err != nil {
			t.Fatal(err)
		}
		plains = append(plains, p)
		entries = append(entries, map[string]any{"key": p, "name": fmt.Sprintf("k%d", i), "scopes": []string{"contacts:read"}})
	}
	sum := sha256.Sum256([]byte("legacy"))
	entries = append(entries, map[string]any{"sha256": hex.EncodeToString(sum[:]), "name": "legacy", "scopes": []string{"orders:write"}})
	file := filepath.Join(dir, "keys.json")
	b, _ := json.Marshal(entries)
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}

	out, errOut, err := cliTestRun("127.0.0.1:1", "load", "--config", caddyfile, file)
	if err != nil || !strings.Contains(out, "Loaded 51 keys into "+storage) {
		t.Fatalf("load: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}

	s, err := keystore.Open(keystore.Options{Dir: storage})
	if err != nil {
		t.Fatal(err)
	}
	v := &keystore.Verifier{Store: s, Format: f}
	for i, p := range plains {
		if res, err := v.Verify(p, keystore.Scope{}, false); err != nil || res.Outcome != keystore.OK || res.Key.Name != fmt.Sprintf("k%d", i) {
			t.Errorf("loaded key %d: %v %v", i, res.Outcome, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, body, want string
	}{
		{"a store with keys", string(b), "already holds keys"},
		{"another format", `[{"key": "ak_` + strings.Repeat("a", 49) + `", "name": "x", "scopes": ["a:read"]}]`, "keys[0].key"},
		{"an unknown field", `[{"sha256": "` + hex.EncodeToString(sum[:]) + `", "name": "x", "scopes": ["a:read"], "colour": 1}]`, "colour"},
	} {
		p := filepath.Join(dir, "bad.json")
		if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, err := cliTestRun("127.0.0.1:1", "load", "--config", caddyfile, p)
		if err == nil || !strings.Contains(err.Error()+errOut, tc.want) {
			t.Errorf("%s: err %v, stderr %q; want a message with %q", tc.name, err, errOut, tc.want)
		}
	}
}

// TestCommandLoadStoreInUse: load into a store that a running Caddy holds
// open (here: the store opened by the test) says to stop Caddy first,
// instead of Badger's lock message, and changes nothing.
func TestCommandLoadStoreInUse(t *testing.T) {
	dir := t.TempDir()
	storage := filepath.Join(dir, "keys")
	caddyfile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(caddyfile, []byte(fmt.Sprintf("{\n\tapikey {\n\t\tstorage %s\n\t}\n}\n", storage)), 0o600); err != nil {
		t.Fatal(err)
	}
	plain, err := keystore.DefaultFormat().Generate()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(file, []byte(`[{"key": "`+plain+`", "name": "k", "scopes": ["contacts:read"]}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := keystore.Open(keystore.Options{Dir: storage})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	out, errOut, err := cliTestRun("127.0.0.1:1", "load", "--config", caddyfile, file)
	want := "Error: the store at " + storage + " is in use: stop Caddy first (caddy stop), then run load again\n"
	if err == nil || errOut != want || out != "" {
		t.Errorf("load into an open store: err %v, stdout %q, stderr %q; want %q", err, out, errOut, want)
	}
	if keys, _, err := s.ListKeys(keystore.ListQuery{Limit: 10}); err != nil || len(keys) != 0 {
		t.Errorf("the store holds %d keys after the refused load (%v)", len(keys), err)
	}
}
