// Package kvtest is the conformance suite of the kv seam: every engine of
// the key store runs it (badgerstore's and redisstore's tests), so that
// the key store's rules see the same engine whichever is configured.
package kvtest

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore/kv"
)

// Bucket is the scan layout of the suite's keys, for engines that need
// one: everything up to the first '/' and the '/' itself.
func Bucket(key []byte) []byte {
	if i := bytes.IndexByte(key, '/'); i >= 0 {
		return key[:i+1]
	}
	return nil
}

// Run runs the suite; open returns a new, empty engine each time.
func Run(t *testing.T, open func(t *testing.T) kv.Engine) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, kv.Engine)
	}{
		{"GetSetDelete", testGetSetDelete},
		{"UpdateIsAtomic", testUpdateIsAtomic},
		{"ReadYourWrites", testReadYourWrites},
		{"Scan", testScan},
		{"ScanSeesPendingWrites", testScanSeesPendingWrites},
		{"Conflict", testConflict},
		{"TTL", testTTL},
		{"Batch", testBatch},
		{"Copy", testCopy},
		{"Count", testCount},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := open(t)
			defer e.Close()
			tc.fn(t, e)
		})
	}
}

func get(t *testing.T, e kv.Engine, key string) (string, bool) {
	t.Helper()
	var out []byte
	err := e.View(func(tx kv.Txn) error {
		return tx.Get([]byte(key), func(v []byte) error { out = append([]byte{}, v...); return nil })
	})
	if errors.Is(err, kv.ErrNotFound) {
		return "", false
	}
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return string(out), true
}

func set(t *testing.T, e kv.Engine, kvs ...string) {
	t.Helper()
	err := e.Update(func(tx kv.Txn) error {
		for i := 0; i+1 < len(kvs); i += 2 {
			if err := tx.Set([]byte(kvs[i]), []byte(kvs[i+1])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func scan(t *testing.T, tx kv.Txn, prefix, start string, reverse, values bool) []string {
	t.Helper()
	var out []string
	var st []byte
	if start != "" {
		st = []byte(start)
	}
	err := tx.Scan([]byte(prefix), st, reverse, values, func(k, v []byte) (bool, error) {
		if values {
			out = append(out, string(k)+"="+string(v))
		} else {
			if v != nil {
				return false, fmt.Errorf("a value for %q without values", k)
			}
			out = append(out, string(k))
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("scan %q: %v", prefix, err)
	}
	return out
}

func eq(t *testing.T, what string, got, want []string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func testGetSetDelete(t *testing.T, e kv.Engine) {
	if _, ok := get(t, e, "a/1"); ok {
		t.Fatal("a key of an empty engine")
	}
	set(t, e, "a/1", "one", "a/2", "", "b\x00/\xff", "bin\x00\xff")
	if v, ok := get(t, e, "a/1"); !ok || v != "one" {
		t.Errorf("a/1 = %q %v", v, ok)
	}
	if v, ok := get(t, e, "a/2"); !ok || v != "" {
		t.Errorf("an empty value: %q %v", v, ok)
	}
	if v, ok := get(t, e, "b\x00/\xff"); !ok || v != "bin\x00\xff" {
		t.Errorf("binary key and value: %q %v", v, ok)
	}
	err := e.Update(func(tx kv.Txn) error {
		if ok, err := tx.Exists([]byte("a/1")); err != nil || !ok {
			return fmt.Errorf("exists a/1: %v %v", ok, err)
		}
		if ok, err := tx.Exists([]byte("a/3")); err != nil || ok {
			return fmt.Errorf("exists a/3: %v %v", ok, err)
		}
		if err := tx.Delete([]byte("a/1")); err != nil {
			return err
		}
		return tx.Delete([]byte("a/absent"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := get(t, e, "a/1"); ok {
		t.Error("a/1 after its delete")
	}
}

func testUpdateIsAtomic(t *testing.T, e kv.Engine) {
	set(t, e, "a/1", "before")
	broken := errors.New("broken")
	err := e.Update(func(tx kv.Txn) error {
		if err := tx.Set([]byte("a/1"), []byte("after")); err != nil {
			return err
		}
		if err := tx.Set([]byte("a/2"), []byte("new")); err != nil {
			return err
		}
		return broken
	})
	if !errors.Is(err, broken) {
		t.Fatalf("update: %v, want fn's error", err)
	}
	if v, _ := get(t, e, "a/1"); v != "before" {
		t.Errorf("a/1 = %q after a failed update", v)
	}
	if _, ok := get(t, e, "a/2"); ok {
		t.Error("a/2 written by a failed update")
	}
	if err := e.View(func(tx kv.Txn) error { return tx.Set([]byte("a/3"), nil) }); err == nil {
		if _, ok := get(t, e, "a/3"); ok {
			t.Error("a view wrote a/3")
		}
	}
}

func testReadYourWrites(t *testing.T, e kv.Engine) {
	set(t, e, "a/1", "one")
	err := e.Update(func(tx kv.Txn) error {
		if err := tx.Set([]byte("a/2"), []byte("two")); err != nil {
			return err
		}
		if err := tx.Delete([]byte("a/1")); err != nil {
			return err
		}
		var v []byte
		if err := tx.Get([]byte("a/2"), func(b []byte) error { v = append(v, b...); return nil }); err != nil || string(v) != "two" {
			return fmt.Errorf("own write a/2: %q %v", v, err)
		}
		if err := tx.Get([]byte("a/1"), func([]byte) error { return nil }); !errors.Is(err, kv.ErrNotFound) {
			return fmt.Errorf("own delete a/1: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testScan(t *testing.T, e kv.Engine) {
	set(t, e, "s/b", "2", "s/a", "1", "s/c\xff", "3", "s/c", "x", "r/z", "no", "t/a", "no", "sa", "no")
	err := e.View(func(tx kv.Txn) error {
		eq(t, "forward", scan(t, tx, "s/", "", false, false), []string{"s/a", "s/b", "s/c", "s/c\xff"})
		eq(t, "reverse with values", scan(t, tx, "s/", "", true, true), []string{"s/c\xff=3", "s/c=x", "s/b=2", "s/a=1"})
		eq(t, "forward from s/b", scan(t, tx, "s/", "s/b", false, true), []string{"s/b=2", "s/c=x", "s/c\xff=3"})
		eq(t, "reverse from s/b", scan(t, tx, "s/", "s/b", true, false), []string{"s/b", "s/a"})
		eq(t, "forward from between", scan(t, tx, "s/", "s/bb", false, false), []string{"s/c", "s/c\xff"})
		eq(t, "a longer prefix", scan(t, tx, "s/c", "", false, false), []string{"s/c", "s/c\xff"})
		eq(t, "an empty prefix", scan(t, tx, "q/", "", false, false), nil)
		var n int
		err := tx.Scan([]byte("s/"), nil, false, false, func([]byte, []byte) (bool, error) { n++; return n < 2, nil })
		if err != nil || n != 2 {
			t.Errorf("stopping a scan: %d keys, %v", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Many keys: a scan crosses the engine's pages.
	err = e.Update(func(tx kv.Txn) error {
		for i := range 2500 {
			if err := tx.Set(fmt.Appendf(nil, "m/%05d", i), fmt.Appendf(nil, "%d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = e.View(func(tx kv.Txn) error {
		fwd, rev := scan(t, tx, "m/", "", false, true), scan(t, tx, "m/", "", true, false)
		if len(fwd) != 2500 || fwd[0] != "m/00000=0" || fwd[2499] != "m/02499=2499" {
			t.Errorf("2,500 keys forward: %d, first %q", len(fwd), fwd[:min(1, len(fwd))])
		}
		if len(rev) != 2500 || rev[0] != "m/02499" || rev[2499] != "m/00000" {
			t.Errorf("2,500 keys reverse: %d", len(rev))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testScanSeesPendingWrites(t *testing.T, e kv.Engine) {
	set(t, e, "s/a", "1", "s/c", "3", "s/e", "5")
	err := e.Update(func(tx kv.Txn) error {
		for _, k := range []string{"s/b", "s/f", "s/0"} {
			if err := tx.Set([]byte(k), []byte("new")); err != nil {
				return err
			}
		}
		if err := tx.Set([]byte("s/c"), []byte("changed")); err != nil {
			return err
		}
		if err := tx.Delete([]byte("s/e")); err != nil {
			return err
		}
		eq(t, "forward", scan(t, tx, "s/", "", false, true), []string{"s/0=new", "s/a=1", "s/b=new", "s/c=changed", "s/f=new"})
		eq(t, "reverse from s/c", scan(t, tx, "s/", "s/c", true, false), []string{"s/c", "s/b", "s/a", "s/0"})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testConflict(t *testing.T, e kv.Engine) {
	set(t, e, "a/1", "0")
	calls := 0
	err := e.Update(func(tx kv.Txn) error {
		calls++
		if err := tx.Get([]byte("a/1"), func([]byte) error { return nil }); err != nil {
			return err
		}
		// Another transaction writes what this one read, and commits first.
		set(t, e, "a/1", "other")
		return tx.Set([]byte("a/2"), []byte("mine"))
	})
	if !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("update after a concurrent write of what it read: %v, want ErrConflict", err)
	}
	if calls != 1 {
		t.Errorf("the engine ran fn %d times (retries are the caller's)", calls)
	}
	if _, ok := get(t, e, "a/2"); ok {
		t.Error("a conflicting transaction wrote a/2")
	}
	// A write of something it did not read does not conflict.
	err = e.Update(func(tx kv.Txn) error {
		if err := tx.Get([]byte("a/1"), func([]byte) error { return nil }); err != nil {
			return err
		}
		set(t, e, "b/1", "other")
		return tx.Set([]byte("a/2"), []byte("mine"))
	})
	if err != nil {
		t.Fatalf("update beside an unrelated write: %v", err)
	}
}

func testTTL(t *testing.T, e kv.Engine) {
	err := e.Update(func(tx kv.Txn) error {
		if err := tx.SetTTL([]byte("h/short"), []byte("v"), time.Second); err != nil {
			return err
		}
		return tx.SetTTL([]byte("h/long"), []byte("v"), time.Hour)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := get(t, e, "h/short"); !ok {
		t.Fatal("a TTL entry is gone at once")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := get(t, e, "h/short"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a 1 s TTL entry still there after 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.Maintain()
	err = e.View(func(tx kv.Txn) error {
		eq(t, "scan with values after the TTL", scan(t, tx, "h/", "", false, true), []string{"h/long=v"})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A TTL entry written again without a TTL stays.
	err = e.Update(func(tx kv.Txn) error { return tx.SetTTL([]byte("h/again"), []byte("v"), time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	set(t, e, "h/again", "kept")
	time.Sleep(2100 * time.Millisecond)
	e.Maintain()
	if v, ok := get(t, e, "h/again"); !ok || v != "kept" {
		t.Errorf("rewritten without a TTL: %q %v", v, ok)
	}
	err = e.View(func(tx kv.Txn) error {
		eq(t, "scan after rewriting", scan(t, tx, "h/", "", false, false), []string{"h/again", "h/long"})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testBatch(t *testing.T, e kv.Engine) {
	err := e.Batch(func(set func(k, v []byte) error) error {
		for i := range 3000 {
			if err := set(fmt.Appendf(nil, "b/%05d", i), []byte("v")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = e.View(func(tx kv.Txn) error {
		if got := scan(t, tx, "b/", "", false, false); len(got) != 3000 {
			t.Errorf("batch: %d keys scanned, want 3000", len(got))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// each lists an engine's entries with Copier.Each.
func each(t *testing.T, c kv.Copier) []kv.Entry {
	t.Helper()
	var out []kv.Entry
	if err := c.Each(func(en kv.Entry) error { out = append(out, en); return nil }); err != nil {
		t.Fatalf("each: %v", err)
	}
	return out
}

// near reports whether at is within slack of want.
func near(at, want time.Time, slack time.Duration) bool {
	return !at.IsZero() && at.After(want.Add(-slack)) && at.Before(want.Add(slack))
}

// testCopy: Each lists every entry in key order with its expiry, and Put
// writes entries with theirs (of the engines that are kv.Copier).
func testCopy(t *testing.T, e kv.Engine) {
	c, ok := e.(kv.Copier)
	if !ok {
		t.Skip("not a kv.Copier")
	}
	set(t, e, "a/2", "", "a/1", "one", "solo", "no bucket")
	ttlAt := time.Now().Add(time.Hour)
	err := e.Update(func(tx kv.Txn) error { return tx.SetTTL([]byte("h/g"), []byte("id"), time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	got := each(t, c)
	var keys []string
	for _, en := range got {
		keys = append(keys, string(en.Key)+"="+string(en.Val))
		switch string(en.Key) {
		case "h/g":
			if !near(en.ExpiresAt, ttlAt, 2*time.Second) {
				t.Errorf("each: h/g expires at %v, want about %v", en.ExpiresAt, ttlAt)
			}
		default:
			if !en.ExpiresAt.IsZero() {
				t.Errorf("each: %s without a TTL expires at %v", en.Key, en.ExpiresAt)
			}
		}
	}
	eq(t, "each", keys, []string{"a/1=one", "a/2=", "h/g=id", "solo=no bucket"})

	err = e.Update(func(tx kv.Txn) error { return tx.SetTTL([]byte("c/again"), []byte("v"), time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	long := now.Add(time.Hour)
	err = c.Put([]kv.Entry{
		{Key: []byte("c/1"), Val: []byte("v1")},
		{Key: []byte("c/again"), Val: []byte("kept")},
		{Key: []byte("c/long"), Val: []byte("l"), ExpiresAt: long},
		{Key: []byte("c/past"), Val: []byte("p"), ExpiresAt: now.Add(-time.Second)},
		{Key: []byte("c/short"), Val: []byte("s"), ExpiresAt: now.Add(time.Second)},
	})
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	if v, ok := get(t, e, "c/1"); !ok || v != "v1" {
		t.Errorf("put c/1: %q %v", v, ok)
	}
	if _, ok := get(t, e, "c/past"); ok {
		t.Error("put wrote an entry whose expiry had passed")
	}
	for _, en := range each(t, c) {
		if string(en.Key) == "c/long" && !near(en.ExpiresAt, long, 2*time.Second) {
			t.Errorf("put c/long: expires at %v, want about %v", en.ExpiresAt, long)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := get(t, e, "c/short"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an entry put with an expiry 1 s away is still there after 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(max(0, time.Until(now.Add(2100*time.Millisecond))))
	e.Maintain()
	if v, ok := get(t, e, "c/again"); !ok || v != "kept" {
		t.Errorf("a TTL entry put again without one: %q %v", v, ok)
	}
	err = e.View(func(tx kv.Txn) error {
		eq(t, "scan of what put wrote", scan(t, tx, "c/", "", false, true), []string{"c/1=v1", "c/again=kept", "c/long=l"})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testCount: Count of a bucket and of a longer prefix (of the engines that
// are kv.Counter).
func testCount(t *testing.T, e kv.Engine) {
	c, ok := e.(kv.Counter)
	if !ok {
		t.Skip("not a kv.Counter")
	}
	set(t, e, "s/a", "1", "s/b", "2", "s/bb", "3", "s/c", "4", "t/a", "5", "sa", "6")
	for _, tc := range []struct {
		prefix string
		want   int64
	}{{"s/", 4}, {"s/b", 2}, {"s/c", 1}, {"t/", 1}, {"q/", 0}} {
		n, err := c.Count([]byte(tc.prefix))
		if err != nil || n != tc.want {
			t.Errorf("count %q = %d, %v; want %d", tc.prefix, n, err, tc.want)
		}
	}
	err := e.Update(func(tx kv.Txn) error { return tx.Delete([]byte("s/b")) })
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.Count([]byte("s/")); err != nil || n != 3 {
		t.Errorf("count after a delete = %d, %v; want 3", n, err)
	}
}
