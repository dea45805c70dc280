package percpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"
)

// TestCounterExact: adds from many goroutines, while reads run, sum exactly.
func TestCounterExact(t *testing.T) {
	c := NewCounter()
	const goroutines, adds = 16, 10_000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var reads sync.WaitGroup
	reads.Add(1)
	go func() { // reads never go backwards while adds run
		defer reads.Done()
		var last uint64
		for {
			select {
			case <-stop:
				return
			default:
			}
			n := c.Load()
			if n < last {
				t.Errorf("Load went back from %d to %d", last, n)
				return
			}
			last = n
		}
	}()
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range adds {
				if i%2 == 0 {
					c.Inc()
				} else {
					c.Add(uint64(g%3 + 1))
				}
				if i%1000 == 0 {
					runtime.Gosched() // move between Ps
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	reads.Wait()
	var want uint64
	for g := range goroutines {
		want += adds/2 + adds/2*uint64(g%3+1)
	}
	if got := c.Load(); got != want {
		t.Errorf("Load %d, want %d", got, want)
	}
}

// TestCounterGOMAXPROCSGrew: a P beyond the stripes made for GOMAXPROCS at
// NewCounter still counts.
func TestCounterGOMAXPROCSGrew(t *testing.T) {
	old := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(old)
	c := NewCounter()
	if len(c.stripes) != 1 {
		t.Fatalf("%d stripes with GOMAXPROCS 1", len(c.stripes))
	}
	runtime.GOMAXPROCS(8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				c.Inc()
			}
		}()
	}
	wg.Wait()
	if got := c.Load(); got != 8000 {
		t.Errorf("Load %d, want 8000", got)
	}
}

// TestStripeFillsALine: a stripe is one cache line, so that two Ps'
// stripes never share one.
func TestStripeFillsALine(t *testing.T) {
	if n := unsafe.Sizeof(stripe{}); n != 64 {
		t.Errorf("stripe is %d bytes, want 64", n)
	}
}

var sink atomic.Uint64

// BenchmarkCounterParallel against BenchmarkAtomicParallel: every P adding
// to one counter, as the request path's handlers do.
func BenchmarkCounterParallel(b *testing.B) {
	c := NewCounter()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Inc()
		}
	})
}

func BenchmarkAtomicParallel(b *testing.B) {
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			sink.Add(1)
		}
	})
}
