package main

import (
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// BenchmarkImportKeys measures the bulk path the harness fills the store
// with: one ImportKeys call of keystore.MaxImport plaintext keys into an
// empty store per iteration (store opening and key generation untimed).
// Profile it with
//
//	go test ./bench -run '^$' -bench ImportKeys -benchtime 3x -cpuprofile /tmp/import.pprof
func BenchmarkImportKeys(b *testing.B) {
	f := keystore.DefaultFormat()
	batch := make([]keystore.ImportKey, keystore.MaxImport)
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		for i := range batch {
			plain, err := f.Generate()
			if err != nil {
				b.Fatal(err)
			}
			batch[i] = keystore.ImportKey{Key: plain, NewKey: benchKey(i, false)}
		}
		s, err := keystore.Open(keystore.Options{Dir: b.TempDir(), LastUsedFlush: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t := time.Now()
		if _, err := s.ImportKeys(batch, f, "bench"); err != nil {
			b.Fatal(err)
		}
		total += time.Since(t)
		b.StopTimer()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*len(batch))/total.Seconds(), "keys/s")
}
