package keystore

import (
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func exploreSizes(dir string) string {
	type agg struct{ n int; app, alloc int64 }
	m := map[string]*agg{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() { return nil }
		fi, err := d.Info(); if err != nil { return nil }
		ext := filepath.Ext(p)
		if ext == "" { ext = filepath.Base(p) }
		a := m[ext]; if a == nil { a = &agg{}; m[ext] = a }
		a.n++; a.app += fi.Size(); a.alloc += fi.Sys().(*syscall.Stat_t).Blocks * 512
		return nil
	})
	var b strings.Builder
	for k, a := range m { fmt.Fprintf(&b, "%s:%d/%.1fM/%.1fM ", k, a.n, float64(a.app)/1e6, float64(a.alloc)/1e6) }
	return b.String()
}

func TestChurnExplore(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CHURN_N"))
	if n == 0 { t.Skip() }
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil { t.Fatal(err) }
	defer s.Close()
	f := DefaultFormat()
	const W, P = 4, 64
	var mu sync.Mutex
	done := 0
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < W; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			ids := make([]string, P)
			for i := range ids { k, _, err := s.CreateKey(NewKey{Name: "churn", Scopes: []string{"contacts:read"}, Metadata: map[string]string{"owner": strings.Repeat("x", 100)}}, f, "admin"); if err != nil { panic(err) }; ids[i] = k.ID }
			for i := 0; i < n/W; i++ {
				j := rng.IntN(P)
				var err error
				switch r := rng.IntN(10); {
				case r < 3: _, err = s.RevokeKey(ids[j], "admin"); if err == nil { _, err = s.ActivateKey(ids[j], "admin") }
				case r < 7: _, _, err = s.RegenerateKey(ids[j], f, 0, "admin")
				default:
					err = s.DeleteKey(ids[j])
					if err == nil { var k *Key; k, _, err = s.CreateKey(NewKey{Name: "churn", Scopes: []string{"contacts:read"}, Metadata: map[string]string{"owner": strings.Repeat("x", 100)}}, f, "admin"); if err == nil { ids[j] = k.ID } }
				}
				if err != nil { panic(err) }
				mu.Lock(); done++; d := done; mu.Unlock()
				if d%(n/20) == 0 { t.Logf("%6d muts %5.1fs %s", d, time.Since(start).Seconds(), exploreSizes(dir)) }
			}
		}(w)
	}
	wg.Wait()
	t.Logf("gc: %v", s.db.RunValueLogGC(0.5))
	t.Logf("end %s", exploreSizes(dir))
	s.Close()
	t.Logf("closed %s", exploreSizes(dir))
	s2, err := Open(Options{Dir: dir}); if err != nil { t.Fatal(err) }
	t.Logf("reopened %s", exploreSizes(dir))
	s2.Close()
}
