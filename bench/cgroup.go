package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// memCgroup is a memory cgroup that holds the measured Caddy to a limit:
// the kernel then reclaims the page cache that Badger's memory-mapped
// tables put in its RSS (and kills the process if what it cannot reclaim,
// its anonymous memory, does not fit).
type memCgroup struct {
	dir string
	v2  bool
}

// newMemCgroup creates a memory cgroup limited to limit bytes, with the
// cgroup v2 unified hierarchy or the v1 memory controller, whichever this
// machine mounts. It needs root.
func newMemCgroup(name string, limit int64) (*memCgroup, error) {
	const root = "/sys/fs/cgroup"
	cg := &memCgroup{}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		cg.v2, cg.dir = true, filepath.Join(root, name)
		// The memory controller must be enabled for the root's children.
		_ = os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+memory"), 0o644)
	} else if _, err := os.Stat(filepath.Join(root, "memory", "memory.limit_in_bytes")); err == nil {
		cg.dir = filepath.Join(root, "memory", name)
	} else {
		return nil, errors.New("no cgroup memory controller under /sys/fs/cgroup (neither v2 nor v1)")
	}
	if err := os.Mkdir(cg.dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("creating memory cgroup %s (needs root): %w", cg.dir, err)
	}
	file, val := "memory.limit_in_bytes", strconv.FormatInt(limit, 10)
	if cg.v2 {
		file = "memory.max"
	}
	if err := os.WriteFile(filepath.Join(cg.dir, file), []byte(val), 0o644); err != nil {
		cg.remove()
		return nil, fmt.Errorf("setting %s of %s: %w", file, cg.dir, err)
	}
	return cg, nil
}

// add moves a process (all its threads) into the cgroup.
func (cg *memCgroup) add(pid int) error {
	return os.WriteFile(filepath.Join(cg.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
}

// stats reports the peak usage and the number of times the limit was hit
// (v1: memory.max_usage_in_bytes and memory.failcnt; v2: memory.peak and
// the max events of memory.events).
func (cg *memCgroup) stats() (peak int64, limitHits int64, err error) {
	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(cg.dir, name))
		return strings.TrimSpace(string(b)), err
	}
	if cg.v2 {
		p, err := read("memory.peak")
		if err != nil {
			return 0, 0, err
		}
		peak, _ = strconv.ParseInt(p, 10, 64)
		ev, err := read("memory.events")
		if err != nil {
			return peak, 0, err
		}
		for _, line := range strings.Split(ev, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "max" {
				limitHits, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
		return peak, limitHits, nil
	}
	p, err := read("memory.max_usage_in_bytes")
	if err != nil {
		return 0, 0, err
	}
	f, err := read("memory.failcnt")
	if err != nil {
		return 0, 0, err
	}
	peak, _ = strconv.ParseInt(p, 10, 64)
	limitHits, _ = strconv.ParseInt(f, 10, 64)
	return peak, limitHits, nil
}

// remove deletes the cgroup once its processes have exited.
func (cg *memCgroup) remove() { _ = os.Remove(cg.dir) }
