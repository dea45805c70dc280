package caddymodule

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
	"github.com/caddy-apikey/caddy-apikey/keystore"
	"github.com/caddy-apikey/caddy-apikey/keystore/badgerstore"
	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
	"github.com/caddy-apikey/caddy-apikey/keystore/redisstore"
)

// migrateFixture is a store with keys of every status, a grace-period
// string, two accounts, audit events, quota counts and last-used times,
// and the plaintexts a test verifies them with.
type migrateFixture struct {
	// want is each plaintext's outcome.
	want map[string]keystore.Outcome
	// graceHash is the hash of the grace-period string.
	graceHash keystore.Hash
	// quotaKey is the id of the key with a quota, used quotaUses times.
	quotaKey string
}

const quotaUses = 3

// newMigrateFixture fills the Badger store in dir.
func newMigrateFixture(t *testing.T, dir string) *migrateFixture {
	t.Helper()
	s, err := keystore.Open(keystore.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil { // flushes quota counts and last uses
			t.Fatal(err)
		}
	}()
	f := keystore.DefaultFormat()
	fx := &migrateFixture{want: map[string]keystore.Outcome{}}
	if _, err := s.CreateAccount(keystore.Account{ID: "acme", Name: "Acme", Status: keystore.AccountOpen, Quota: &keystore.Quota{Requests: 1000, Period: "month"}}); err != nil {
		t.Fatal(err)
	}
	create := func(nk keystore.NewKey) (*keystore.Key, string) {
		t.Helper()
		if nk.Scopes == nil {
			nk.Scopes = []string{"contacts:read"}
		}
		k, plain, err := s.CreateKey(nk, f, "test")
		if err != nil {
			t.Fatal(err)
		}
		return k, plain
	}
	_, active := create(keystore.NewKey{Name: "active"})
	fx.want[active] = keystore.OK
	qk, quota := create(keystore.NewKey{Name: "quota", Account: "acme", Quota: &keystore.Quota{Requests: 100, Period: "day"}})
	fx.want[quota] = keystore.OK
	fx.quotaKey = qk.ID
	rk, revoked := create(keystore.NewKey{Name: "revoked"})
	if _, err := s.RevokeKey(rk.ID, "test"); err != nil {
		t.Fatal(err)
	}
	fx.want[revoked] = keystore.KeyRevoked
	soon := time.Now().Add(time.Second)
	_, expired := create(keystore.NewKey{Name: "expired", ExpiresAt: &soon})
	fx.want[expired] = keystore.KeyExpired
	gk, old := create(keystore.NewKey{Name: "regenerated"})
	_, fresh, err := s.RegenerateKey(gk.ID, f, time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	fx.want[old], fx.want[fresh] = keystore.OK, keystore.OK
	fx.graceHash = keystore.HashKey(old)
	v := &keystore.Verifier{Store: s, Format: f}
	for range quotaUses {
		if res, err := v.Verify(quota, keystore.Scope{}, false); err != nil || res.Outcome != keystore.OK {
			t.Fatalf("using the quota key: %v %v", res.Outcome, err)
		}
	}
	time.Sleep(time.Until(soon.Add(50 * time.Millisecond)))
	return fx
}

// check verifies every plaintext of the fixture on s, and the quota count.
// The check uses the quota key once more: wantUsed is its count after.
func (fx *migrateFixture) check(t *testing.T, name string, s *keystore.Store, wantUsed int64) {
	t.Helper()
	v := &keystore.Verifier{Store: s, Format: keystore.DefaultFormat()}
	for plain, want := range fx.want {
		if res, err := v.Verify(plain, keystore.Scope{}, false); err != nil || res.Outcome != want {
			t.Errorf("%s: a key verifies as %s (%v), want %s", name, res.Outcome.Code(), err, want.Code())
		}
	}
	k, err := s.Key(fx.quotaKey)
	if err != nil {
		t.Fatal(err)
	}
	if used, _, ok := s.QuotaUsage(k); !ok || used != wantUsed {
		t.Errorf("%s: the quota key's count is %d (%v), want %d", name, used, ok, wantUsed)
	}
	if k.LastUsedAt == nil {
		t.Errorf("%s: the quota key has no last use", name)
	}
}

// openRedis opens a key store on srv under prefix, as a replica would.
func openRedis(t *testing.T, srv *redistest.Server, prefix string) *keystore.Store {
	t.Helper()
	e, err := redisstore.Open(redisstore.Options{URL: srv.URL(), Namespace: prefix, Bucket: keystore.ScanBucket, Watched: keystore.Watched, Origin: "test"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := keystore.Open(keystore.Options{Engine: e})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// migrateJSON runs migrate --json, which must succeed, and decodes it.
func migrateJSON(t *testing.T, args ...string) cliMigrateResult {
	t.Helper()
	out, errOut, err := cliTestRun("127.0.0.1:1", append([]string{"migrate", "--json"}, args...)...)
	if err != nil || errOut != "" {
		t.Fatalf("migrate %v: %v\nstderr: %s", args, err, errOut)
	}
	var res cliMigrateResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("migrate %v --json: %v\n%s", args, err, out)
	}
	return res
}

// migrateFails runs migrate, which must fail with want in its error and
// print nothing on stdout.
func migrateFails(t *testing.T, want string, args ...string) {
	t.Helper()
	out, errOut, err := cliTestRun("127.0.0.1:1", append([]string{"migrate"}, args...)...)
	if err == nil || out != "" || !strings.HasPrefix(errOut, "Error: ") || !strings.Contains(errOut, want) {
		t.Errorf("migrate %v: err %v, stdout %q, stderr %q; want an error with %q", args, err, out, errOut, want)
	}
}

// TestCommandMigrate: a Badger store with keys of every status, a
// grace-period string, accounts, audit events, quota counts and last uses
// is copied to Redis and back; on each target every key verifies as on
// the source (the grace string too, with its TTL), the counts match; a
// non-empty target is refused without --merge; --merge adds a store's
// keys and refuses one that disagrees on a key, writing nothing.
func TestCommandMigrate(t *testing.T) {
	srv := redistest.Start(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	fx := newMigrateFixture(t, src)

	// Badger to Redis.
	res := migrateJSON(t, "--from", src, "--to", srv.URL())
	c := res.Source
	if c.Keys != (keystore.KeyCounts{Total: 5, Active: 3, Revoked: 1, Expired: 1}) || c.Accounts != 2 || c.GraceHashes != 1 ||
		c.HashEntries != 6 || c.QuotaCounts < 2 || c.LastUsed < 1 || c.AuditEvents < 7 {
		t.Errorf("migrate to Redis: source counts %+v", c)
	}
	if res.Target != res.Source || res.VerifiedKeys != 5 || res.KeyPrefix != "apikey:" || res.To != srv.URL() {
		t.Errorf("migrate to Redis: %+v", res)
	}
	// The grace string's hash entry keeps its TTL (PTTL in ms; Badger
	// keeps expiry in whole seconds, rounded up).
	pttl := srv.Do("PTTL", "apikey:v:h/"+string(fx.graceHash[:]))
	if ms, _ := time.ParseDuration(strings.TrimPrefix(pttl, ":") + "ms"); ms < 58*time.Minute || ms > time.Hour+time.Second {
		t.Errorf("the grace string's TTL on Redis: %q", pttl)
	}
	rs := openRedis(t, srv, "apikey:")
	fx.check(t, "on Redis", rs, quotaUses+1)
	if err := rs.Close(); err != nil {
		t.Fatal(err)
	}

	// A second run into the now filled Redis is refused, and so is one
	// from a Badger store in use.
	migrateFails(t, "is not empty: it holds 5 keys, 6 hash entries and 1 accounts besides default", "--from", src, "--to", srv.URL())
	open, err := keystore.Open(keystore.Options{Dir: src})
	if err != nil {
		t.Fatal(err)
	}
	migrateFails(t, "is in use: stop Caddy first", "--from", src, "--to", srv.URL(), "--key-prefix", "other:")
	open.Close()
	migrateFails(t, "holds no Badger key store", "--from", filepath.Join(dir, "nothing"), "--to", srv.URL(), "--key-prefix", "other:")
	migrateFails(t, "holds no key store", "--from", srv.URL(), "--key-prefix", "nothing:", "--to", filepath.Join(dir, "x"))

	// Redis back to Badger, in text.
	back := filepath.Join(dir, "back")
	out, errOut, err := cliTestRun("127.0.0.1:1", "migrate", "--from", srv.URL(), "--to", back)
	if err != nil {
		t.Fatalf("migrate to Badger: %v\n%s", err, errOut)
	}
	for _, want := range []string{"Copied " + srv.URL() + " into " + back + " (key prefix apikey:) in ", "\n  keys                      5          5\n", "\n    grace period            1          1\n", "Verified: the target's counts match, and the hashes of its 5 keys resolve.\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("migrate to Badger: no %q in\n%s", want, out)
		}
	}
	be, err := badgerstore.Open(back, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	var grace kv.Entry
	if err := be.Each(func(en kv.Entry) error {
		if string(en.Key) == "h/"+string(fx.graceHash[:]) {
			grace = en
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if left := time.Until(grace.ExpiresAt); left < 58*time.Minute || left > time.Hour+time.Second {
		t.Errorf("the grace string's TTL on Badger: %v left", left)
	}
	bs, err := keystore.Open(keystore.Options{Engine: be})
	if err != nil {
		t.Fatal(err)
	}
	fx.check(t, "back on Badger", bs, quotaUses+2)
	// Changed here, the copy now disagrees with Redis on one key.
	k, _, err := bs.ListKeys(keystore.ListQuery{Limit: 1, Search: "active"})
	if err != nil || len(k) != 1 {
		t.Fatal(k, err)
	}
	if _, err := bs.RevokeKey(k[0].ID, "test"); err != nil {
		t.Fatal(err)
	}
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}

	// --merge: another store's keys are added to Redis; a store that
	// disagrees on a key is refused, and nothing of it is written.
	other := filepath.Join(dir, "other")
	os, err := keystore.Open(keystore.Options{Dir: other})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.CreateAccount(keystore.Account{ID: "globex", Status: keystore.AccountOpen}); err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := os.CreateKey(keystore.NewKey{Name: "other", Account: "globex", Scopes: []string{"orders:read"}}, keystore.DefaultFormat(), "test")
	if err != nil {
		t.Fatal(err)
	}
	os.Close()
	res = migrateJSON(t, "--from", other, "--to", srv.URL(), "--merge")
	if !res.Merge || res.Source.Keys.Total != 1 || res.Target.Keys.Total != 6 || res.Target.Accounts != 3 || res.VerifiedKeys != 6 {
		t.Errorf("merge: %+v", res)
	}
	migrateFails(t, "the source and the target disagree on 1 keys whose records differ ("+k[0].ID+") and 1 hash entries that differ (sha256 "+k[0].Hash.String()+"); nothing was written", "--from", back, "--to", srv.URL(), "--merge")
	fx.want[otherKey] = keystore.OK
	rs = openRedis(t, srv, "apikey:")
	fx.check(t, "on Redis after the merges", rs, quotaUses+2)
	if n, err := rs.Counts(true); err != nil || n.Keys.Total != 6 || n.Keys.Revoked != 1 {
		t.Errorf("on Redis after the merges: %+v %v (the refused merge wrote?)", n, err)
	}
	rs.Close()
}
