package caddymodule_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// secretsConfig is siteConfig with accept_foreign_keys (to import and use
// a key of another format) and the /custom route's X-Token header deleted
// from the logs too, as docs/configuration.md says to do for a configured
// header. Both logs are as in Caddyfile.example: the default log at DEBUG,
// and the site's access log, each with the filter encoder deleting the key
// header.
var secretsConfig = strings.NewReplacer(
	"\t\tstorage %[2]s\n", "\t\tstorage %[2]s\n\t\taccept_foreign_keys\n",
	"request>headers>X-Api-Key delete\n", "request>headers>X-Api-Key delete\n\t\t\t\trequest>headers>X-Token delete\n",
).Replace(siteConfig)

// TestNoPlaintextKeyAnywhere: after a run that creates keys (on the admin
// endpoint and through apikey_admin), uses them (X-API-Key, Bearer, a
// custom header, forward_key), regenerates them (with and without a grace
// period, then uses old and new strings), imports plaintext keys (of the
// format and foreign) and uses them, sends refused variants of them, and
// makes requests whose upstream fails (so that the error log writes their
// headers), no plaintext key, nor any 16-character piece of one, is in any
// file Caddy wrote: the access log, the DEBUG default log, the Badger
// store.
func TestNoPlaintextKeyAnywhere(t *testing.T) {
	if secretsConfig == siteConfig || strings.Count(secretsConfig, "X-Token delete") != 2 {
		t.Fatal("secretsConfig did not apply to siteConfig")
	}
	e := startWith(t, secretsConfig)
	var keys []string // every plaintext seen
	use := func(name, method, path string, h http.Header, status int) {
		t.Helper()
		res, body := e.do(method, siteURL+path, h, "")
		e.expect(name, res, body, status, "", status == 200)
	}

	// Create on the admin endpoint.
	id, key := e.createKey(`{"name": "secret", "scopes": ["contacts:write"], "rate_limit": {"unlimited": true}}`)
	e.admin("POST", "/accounts", `{"id": "acme"}`, http.StatusCreated)
	_, mgr := e.createKey(`{"name": "manager", "account": "acme", "scopes": ["apikeys:delete", "apikeys:write", "contacts:read"]}`)
	keys = append(keys, key, mgr)

	// Create and regenerate through apikey_admin: the answers hold keys.
	res, out := e.do("POST", siteURL+"/manage/keys", hdr("X-Api-Key", mgr), `{"name": "made by a key", "scopes": ["contacts:read"]}`)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("manage create: %d %v", res.StatusCode, out)
	}
	madeID, made := out["id"].(string), out["key"].(string)
	res, out = e.do("POST", siteURL+"/manage/keys/"+madeID+"/regenerate", hdr("Authorization", "Bearer "+mgr), `{"grace_period": "1h"}`)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("manage regenerate: %d %v", res.StatusCode, out)
	}
	made2 := out["key"].(string)
	keys = append(keys, made, made2)

	// Use, in every way a key can be sent.
	for _, k := range []string{key, made, made2} {
		use("X-API-Key", "GET", "/contacts", hdr("X-API-Key", k), 200)
		use("lower-case header", "GET", "/contacts", hdr("x-api-key", k), 200)
		use("Bearer", "GET", "/read", hdr("Authorization", "Bearer "+k), 200)
		use("both", "GET", "/anything", hdr("X-Api-Key", k, "Authorization", "Bearer "+k), 200)
		use("forward_key", "GET", "/fwd", hdr("X-Api-Key", k), 200)
		use("forward_key, Bearer", "GET", "/fwd", hdr("Authorization", "Bearer "+k), 200)
		use("custom header", "GET", "/custom", hdr("X-Token", k), 200)
		// Refused variants that hold the key.
		use("key twice", "GET", "/contacts", hdr("X-Api-Key", k, "X-Api-Key", k), 401)
		use("key with a suffix", "GET", "/contacts", hdr("X-Api-Key", k+"x"), 401)
		use("key as Basic", "GET", "/contacts", hdr("Authorization", "Basic "+k), 401)
		use("key as another scheme", "GET", "/contacts", hdr("Authorization", "Token "+k), 401)
	}
	use("insufficient scope", "DELETE", "/contacts/1", hdr("X-Api-Key", made), 403)

	// Regenerate on the admin endpoint, without and with a grace period.
	out = e.admin("POST", "/keys/"+id+"/regenerate", "", http.StatusOK)
	regen := out["key"].(string)
	use("old string after a regenerate", "GET", "/contacts", hdr("X-Api-Key", key), 401)
	use("new string", "GET", "/contacts", hdr("X-Api-Key", regen), 200)
	out = e.admin("POST", "/keys/"+id+"/regenerate", `{"grace_period": "24h"}`, http.StatusOK)
	regen2 := out["key"].(string)
	use("old string in the grace period", "GET", "/contacts", hdr("Authorization", "Bearer "+regen), 200)
	use("new string after a grace regenerate", "GET", "/contacts", hdr("X-Api-Key", regen2), 200)
	keys = append(keys, regen, regen2)

	// Import plaintext keys, then use them.
	imported, _ := keystore.DefaultFormat().Generate()
	foreign, _ := keystore.Format{Prefix: "legacy_", Length: 30}.Generate()
	out = e.admin("POST", "/keys/import", fmt.Sprintf(`[
		{"key": %q, "name": "imported", "scopes": ["contacts:read"]},
		{"key": %q, "name": "foreign", "scopes": ["contacts:read"]}
	]`, imported, foreign), http.StatusCreated)
	if out["imported"] != float64(2) {
		t.Fatalf("import: %v", out)
	}
	keys = append(keys, imported, foreign)
	for _, k := range []string{imported, foreign} {
		use("imported, X-API-Key", "GET", "/contacts", hdr("X-Api-Key", k), 200)
		use("imported, Bearer", "GET", "/contacts", hdr("Authorization", "Bearer "+k), 200)
	}

	// A failing upstream: Caddy's error log writes the request, headers
	// included, at ERROR; reverse_proxy's round trip at DEBUG.
	e.up.Close()
	for _, k := range keys {
		for _, h := range []http.Header{hdr("X-Api-Key", k), hdr("Authorization", "Bearer "+k)} {
			res, _ := e.do("GET", siteURL+"/contacts", h, "")
			if res.StatusCode == http.StatusOK {
				t.Fatalf("dead upstream answered 200")
			}
			if k == key {
				continue // replaced without a grace period: refused
			}
			if res.StatusCode != http.StatusBadGateway {
				t.Errorf("dead upstream: status %d, want 502", res.StatusCode)
			}
			res, _ = e.do("GET", siteURL+"/fwd", h, "")
			if res.StatusCode != http.StatusBadGateway {
				t.Errorf("dead upstream, forward_key: status %d, want 502", res.StatusCode)
			}
		}
	}

	// While the store is open, every write is in Badger's memtable logs
	// (*.mem), uncompressed: they must hold the raw SHA-256 of the
	// current key (the lookup index), which shows the walk reads the
	// records, and no key. (The value log is preallocated to 2 GiB while
	// open, and empty here: values stay in the LSM tree. After the store
	// is closed, the records are in tables, Snappy-compressed with
	// prefix-encoded keys, where a hash need not be contiguous; the
	// checks of the whole directory below cover those.)
	h := keystore.HashKey(regen2)
	if !dirContains(t, e.storage, ".mem", h[:]) {
		t.Error("no memtable log of the open store holds a key's hash: the walk would not see a key either")
	}
	for _, k := range keys {
		if dirContains(t, e.storage, ".mem", []byte(k)) {
			t.Errorf("a memtable log of the open store contains the plaintext key %s…", k[:7])
		}
	}

	// Another config flushes and closes the log files and the store.
	e.unload()

	// The logs are not empty: they hold the requests, their headers (the
	// key's deleted, Authorization redacted), and the failing round trips.
	access, _ := os.ReadFile(filepath.Join(e.dir, "access.log"))
	errlog, _ := os.ReadFile(filepath.Join(e.dir, "error.log"))
	for _, want := range []struct {
		log  []byte
		name string
		has  string
	}{
		{access, "access.log", `"user_id":"` + id + `"`},
		{access, "access.log", `"Authorization":["REDACTED"]`},
		{access, "access.log", `"status":502`},
		{errlog, "error.log", `"level":"debug"`},
		{errlog, "error.log", `"level":"error"`},
		{errlog, "error.log", `"Authorization":["REDACTED"]`},
		{errlog, "error.log", `upstream roundtrip`},
	} {
		if !bytes.Contains(want.log, []byte(want.has)) {
			t.Errorf("%s has no %s: the test would prove nothing", want.name, want.has)
		}
	}
	lines := bytes.Count(access, []byte("\n")) + bytes.Count(errlog, []byte("\n"))

	// No key in any file: the logs and the store (e.dir holds both).
	files, size := 0, int64(0)
	_ = filepath.WalkDir(e.dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files++
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
			}
		}
		return nil
	})
	if size > 256<<20 {
		t.Fatalf("%d bytes under %s: the store is still open (a preallocated value log)", size, e.dir)
	}
	for _, k := range keys {
		assertNoKeyInDir(t, e.dir, k)
		assertNoKeyPieceInDir(t, e.dir, k, 16)
	}
	t.Logf("%d keys, %d log lines, %d files (%d bytes) checked", len(keys), lines, files, size)
}

// dirContains reports whether a file under dir whose name ends with
// suffix contains b.
func dirContains(t *testing.T, dir, suffix string, b []byte) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || found || !strings.HasSuffix(path, suffix) {
			return err
		}
		data, err := os.ReadFile(path)
		found = err == nil && bytes.Contains(data, b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// assertNoKeyPieceInDir fails if any file under dir holds n consecutive
// characters of the key outside its prefix: a key that was cut, escaped
// or partly compressed (Badger's tables are Snappy-compressed, which can
// replace a repeated run inside a string) would still be found. Hints show
// 4 + 4 characters, far fewer than n.
func assertNoKeyPieceInDir(t *testing.T, dir, key string, n int) {
	t.Helper()
	body := strings.TrimPrefix(key, "ak_")
	if len(body) < n {
		return
	}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i := 0; i+n <= len(body); i++ {
			if bytes.Contains(b, []byte(body[i:i+n])) {
				t.Errorf("%s contains %q, a piece of a plaintext key", path, body[i:i+n])
				return nil
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
