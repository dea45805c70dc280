// Package percpu has a counter that the request path adds to without
// writing a line that another core writes: each P (a Go scheduler's
// processor, which runs on one core at a time) adds to a stripe of its
// own, and a read sums the stripes.
//
// A single atomic counter that both cores of a machine add to on every
// request moves its cache line between them each time: about 120 ns of
// stall per add on the project's 2-core machine (measured with two
// goroutines adding after 2 µs of other work each), against a few ns for
// a line the core already holds. Libraries that stripe counters
// (xsync.Counter) pick a stripe at random for each P and keep it until a
// compare-and-swap fails, so on 2 stripes two busy Ps share one half of
// the time and the line moves as before; the P's own index does not
// collide.
package percpu

import (
	"runtime"
	"sync/atomic"
	_ "unsafe" // go:linkname
)

// procPin pins the calling goroutine to its P and returns the P's index;
// procUnpin undoes it. The runtime keeps both for packages that link to
// them (see the comment above runtime.procPin: "Do not remove or change
// the type signature"); sync.Pool uses the same pair.
//
//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

// stripe is one P's count, on a cache line of its own.
type stripe struct {
	n atomic.Uint64
	_ [56]byte
}

// Counter is a count that goroutines on different Ps add to without
// sharing a cache line. The zero Counter is not usable: use NewCounter.
type Counter struct {
	stripes []stripe
}

// NewCounter makes a counter with a stripe per P (GOMAXPROCS now; a P
// beyond them, after GOMAXPROCS grew, shares a stripe).
func NewCounter() *Counter {
	return &Counter{stripes: make([]stripe, max(runtime.GOMAXPROCS(0), 1))}
}

// Add adds n to the calling goroutine's P's stripe. The goroutine may move
// to another P before the add: the count stays exact, the line then moves
// once.
func (c *Counter) Add(n uint64) {
	p := procPin()
	procUnpin()
	c.stripes[uint(p)%uint(len(c.stripes))].n.Add(n)
}

// Inc adds 1.
func (c *Counter) Inc() { c.Add(1) }

// Load is the sum of the stripes: every Add that returned before Load was
// called, and perhaps some that run meanwhile.
func (c *Counter) Load() uint64 {
	var sum uint64
	for i := range c.stripes {
		sum += c.stripes[i].n.Load()
	}
	return sum
}
