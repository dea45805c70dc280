package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ownCPU is an auth handler's own CPU in the profile of one load: the
// samples inside it minus those inside the handler it calls next.
type ownCPU struct {
	load, handler string
	// own: the handler's own CPU in the profile; all: the process's.
	own, all time.Duration
	requests float64 // served during the profile (wrk's rate times its length)
}

// pprofSample is a CPU profile's sampling period (pprof's 100 Hz).
const pprofSample = 10 * time.Millisecond

// samples and total are own and all in profile samples.
func (o ownCPU) samples() int { return int(o.own / pprofSample) }
func (o ownCPU) total() int   { return int(o.all / pprofSample) }

func (o ownCPU) perRequestUS() float64 {
	if o.requests <= 0 {
		return math.NaN()
	}
	return float64(o.own.Microseconds()) / o.requests
}

// ownCPUOf reads the output of "go tool pprof -top -cum" (every node) for
// the cumulative time of handler and next (the node whose name ends in
// each), and the profile's total.
func ownCPUOf(top, handler, next string) (ownCPU, error) {
	o := ownCPU{handler: handler}
	var inHandler, inNext time.Duration
	foundH, foundN := false, next == ""
	for line := range strings.SplitSeq(top, "\n") {
		if i := strings.Index(line, "Total samples = "); i >= 0 {
			f := strings.Fields(line[i+len("Total samples = "):])
			if len(f) == 0 {
				return o, fmt.Errorf("pprof: no total in %q", line)
			}
			d, err := pprofDuration(f[0])
			if err != nil {
				return o, err
			}
			o.all = d
			continue
		}
		// flat flat% sum% cum cum% name
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[4], "%") {
			continue
		}
		name := strings.Join(f[5:], " ")
		switch {
		case !foundH && strings.HasSuffix(name, handler):
			d, err := pprofDuration(f[3])
			if err != nil {
				return o, err
			}
			inHandler, foundH = d, true
		case !foundN && strings.HasSuffix(name, next):
			d, err := pprofDuration(f[3])
			if err != nil {
				return o, err
			}
			inNext, foundN = d, true
		}
	}
	switch {
	case o.all == 0:
		return o, fmt.Errorf("pprof: no \"Total samples\" line")
	case !foundH:
		return o, fmt.Errorf("pprof: no node %s", handler)
	case !foundN:
		return o, fmt.Errorf("pprof: no node %s", next)
	}
	o.own = inHandler - inNext
	return o, nil
}

// pprofDuration parses a duration as pprof -top prints one: "1.59s",
// "40ms", "0".
func pprofDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"mins", time.Minute}, {"hrs", time.Hour}, {"ms", time.Millisecond}, {"us", time.Microsecond}, {"µs", time.Microsecond}, {"ns", time.Nanosecond}, {"s", time.Second}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("pprof duration %q: %v", s, err)
			}
			return time.Duration(v * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("pprof duration %q: unknown unit", s)
}
