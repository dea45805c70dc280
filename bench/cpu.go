package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// The machine is shared (on a 2-core machine, any other busy process
// distorts a round), so every wrk run records how much CPU went to
// processes other than the harness's own: busy time of the whole machine
// (/proc/stat) minus that of wrk and both Caddys.

// clockTick is USER_HZ, the unit of /proc/stat and /proc/<pid>/stat:
// 100 on every Linux platform Go supports.
const clockTick = 100

// cpuSnapshot is the busy and total CPU time of the machine (all CPUs)
// and the CPU time of the watched processes.
type cpuSnapshot struct {
	busy, total time.Duration
	procs       []time.Duration // of cpuMonitor.pids, in order
}

func (s cpuSnapshot) procsTotal() time.Duration {
	var t time.Duration
	for _, d := range s.procs {
		t += d
	}
	return t
}

type cpuMonitor struct{ pids []int }

func (m *cpuMonitor) snapshot() (cpuSnapshot, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSnapshot{}, err
	}
	busy, total, err := parseProcStat(string(b))
	if err != nil {
		return cpuSnapshot{}, err
	}
	s := cpuSnapshot{busy: busy, total: total}
	for _, pid := range m.pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return cpuSnapshot{}, err
		}
		d, err := parsePidStat(string(b))
		if err != nil {
			return cpuSnapshot{}, err
		}
		s.procs = append(s.procs, d)
	}
	return s, nil
}

// foreignShare is the share of the machine's CPU capacity (all CPUs)
// used between two snapshots by processes other than the watched ones and
// a run of wrk that used wrkCPU.
func foreignShare(before, after cpuSnapshot, wrkCPU time.Duration) float64 {
	total := after.total - before.total
	if total <= 0 {
		return 0
	}
	foreign := (after.busy - before.busy) - (after.procsTotal() - before.procsTotal()) - wrkCPU
	return max(0, float64(foreign)/float64(total))
}

func ticks(s string) (time.Duration, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	return time.Duration(n) * time.Second / clockTick, nil
}

// parseProcStat reads the "cpu" line of /proc/stat: busy is everything but
// idle and iowait.
func parseProcStat(s string) (busy, total time.Duration, err error) {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat line %q", line)
	}
	for i, v := range f[1:] {
		if i >= 8 { // guest and guest_nice are already counted in user and nice
			break
		}
		d, err := ticks(v)
		if err != nil {
			return 0, 0, err
		}
		total += d
		if i != 3 && i != 4 { // idle, iowait
			busy += d
		}
	}
	return busy, total, nil
}

// parsePidStat returns utime + stime from /proc/<pid>/stat.
func parsePidStat(s string) (time.Duration, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/<pid>/stat %q", s)
	}
	f := strings.Fields(s[i+1:])
	// After the command: state(3) ... utime(14) stime(15), 1-based.
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/<pid>/stat %q", s)
	}
	u, err := ticks(f[11])
	if err != nil {
		return 0, err
	}
	st, err := ticks(f[12])
	if err != nil {
		return 0, err
	}
	return u + st, nil
}

// waitQuiet waits (up to limit) until processes other than the harness's
// use at most foreignLimit of the machine's CPU over a second.
func waitQuiet(ctx context.Context, mon *cpuMonitor, limit time.Duration) error {
	start := time.Now()
	limit = min(limit, budget.left())
	defer func() { budget.spend(time.Since(start)) }()
	logged := false
	for {
		before, err := mon.snapshot()
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		after, err := mon.snapshot()
		if err != nil {
			return err
		}
		share := foreignShare(before, after, 0)
		switch {
		case share <= foreignLimit:
			if logged {
				logf("  quiet again after %s", time.Since(start).Round(time.Second))
			}
			return nil
		case time.Since(start) >= limit:
			logf("  other processes still use %.0f%% of the CPU after %s: measuring anyway", 100*share, limit)
			return nil
		case !logged:
			logf("  other processes use %.0f%% of the CPU: waiting up to %s for them to finish", 100*share, limit)
			logged = true
		}
	}
}

// budget bounds the extra time a run spends waiting for a quiet machine
// and running disturbed rounds again, so that a run on a busy machine
// still ends in bounded time.
var budget waitBudget

type waitBudget struct{ total, spent time.Duration }

func (b *waitBudget) left() time.Duration { return max(0, b.total-b.spent) }

func (b *waitBudget) spend(d time.Duration) { b.spent += d }
