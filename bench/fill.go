package main

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// samples are the credentials the load sends.
type samples struct {
	probe     string   // a stored key under the default rate limit, not in valid
	valid     []string // plaintext keys in the store (default limit; unlimited with -exempt)
	unknown   []string // well-formed keys that are not in the store
	malformed []string // garbage that fails the format check
}

// keyFiles are the samples as files, one credential a line, for wrk.lua.
type keyFiles struct {
	probe, valid, unknown, malformed string
}

type fillStats struct {
	method     string // "load" (keystore.Load) or "import" (ImportKeys)
	keys       int
	batches    int
	reused     bool
	open       time.Duration   // keystore.Open of the empty store
	generate   time.Duration   // keystore.DefaultFormat().Generate(), all keys
	importTime time.Duration   // the Load call or the ImportKeys calls only
	settle     time.Duration   // waiting for Badger's compactions to finish
	repeats    time.Duration   // the bulk loads beyond the first (-fill-repeat), and their removal
	close      time.Duration   // Store.Close (flushes the memtable)
	wall       time.Duration   // open to close, less settle
	storeBytes int64           // size of the store directory after Close
	foreign    float64         // share of the machine's CPU other processes used meanwhile
	calls      []time.Duration // each ImportKeys call, or each keystore.Load run (-fill-repeat)
}

// importRate is keys per second spent in Load or ImportKeys.
func (f fillStats) importRate() float64 { return rate(f.keys, f.importTime) }

// wallRate is keys per second from Open to Close, key generation included.
func (f fillStats) wallRate() float64 { return rate(f.keys, f.wall) }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

type fillResult struct {
	exempt  bool // -exempt: the load's keys are {"unlimited": true}
	dir     string
	samples samples
	files   keyFiles
	stats   fillStats
}

// benchKey is the NewKey of bench key i. Every key is on the default rate
// limit, as keys are in real use: the Caddyfile's rate_limit 1000000 1s
// is high enough never to refuse the load, but every request goes through
// the limiter (issue 22). With exempt (-exempt, a labelled extra run) the
// load's keys are {"unlimited": true} and skip the limiter, except key 0,
// the probe, which stays on the default limit so that the sanity check
// can tell whether the handler rate limits (RateLimit-* headers). The
// probe is not part of the load.
func benchKey(i int, exempt bool) keystore.NewKey {
	nk := keystore.NewKey{
		Name:   "bench-" + strconv.Itoa(i),
		Scopes: []string{"contacts:write", "orders:read"},
	}
	if exempt && i != 0 {
		nk.RateLimit = &keystore.RateLimit{Unlimited: true}
	}
	return nk
}

// storeName is the store's directory and sample files' suffix: an exempt
// store (-exempt) is kept apart, so that -reuse never mixes the two.
func storeName(c config) string {
	if c.exempt {
		return fmt.Sprintf("%d-exempt", c.keys)
	}
	return strconv.Itoa(c.keys)
}

// fillStore fills a new <out>/store-<N> with N keys, with keystore.Load
// (-fill load) or ImportKeys in calls of keystore.MaxImport (-fill
// import), and writes the samples.
func fillStore(ctx context.Context, c config) (*fillResult, error) {
	dir := filepath.Join(c.out, "store-"+storeName(c))
	files := keyFiles{
		probe:     filepath.Join(c.out, "key-probe-"+storeName(c)+".txt"),
		valid:     filepath.Join(c.out, "keys-valid-"+storeName(c)+".txt"),
		unknown:   filepath.Join(c.out, "keys-unknown.txt"),
		malformed: filepath.Join(c.out, "keys-malformed.txt"),
	}
	complete := filepath.Join(dir, ".bench-complete")
	res := &fillResult{exempt: c.exempt, dir: dir, files: files}

	if c.reuse {
		if _, err := os.Stat(complete); err == nil {
			valid, err := readLines(files.valid)
			probe, perr := readLines(files.probe)
			if err == nil && perr == nil && len(valid) > 0 && len(probe) == 1 {
				res.samples.probe = probe[0]
				logf("reusing the store %s (-reuse): no bulk load measured", dir)
				res.samples.valid = valid
				res.stats = fillStats{keys: c.keys, reused: true, storeBytes: dirSize(dir)}
				if err := writeFloodSamples(res, c.sample); err != nil {
					return nil, err
				}
				return res, nil
			}
		}
		logf("-reuse: no complete store of %d keys in %s; filling one", c.keys, dir)
	}

	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if c.fillProfile {
		pf, err := os.Create(filepath.Join(c.out, "fill-cpu.pprof"))
		if err != nil {
			return nil, err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}

	f := keystore.DefaultFormat()
	st := &res.stats
	st.keys = c.keys
	st.method = c.fill
	mon := &cpuMonitor{pids: []int{os.Getpid()}}
	cpuBefore, err := mon.snapshot()
	if err != nil {
		return nil, err
	}
	wall := time.Now()
	if c.fill == "load" {
		err = loadAll(ctx, c, dir, f, res)
	} else {
		err = importAll(ctx, c, dir, f, res)
	}
	if err != nil {
		return nil, err
	}
	st.wall = time.Since(wall) - st.settle - st.repeats
	if cpuAfter, err := mon.snapshot(); err == nil {
		st.foreign = foreignShare(cpuBefore, cpuAfter, 0)
	}
	st.storeBytes = dirSize(dir)
	how := map[string]string{"load": "keystore.Load", "import": "ImportKeys"}[c.fill]
	logf("bulk load: %d keys, %s %.0f keys/s (%s), start to end %.0f keys/s (%s; generating keys %s, compactions settling %s, close %s), store %s; other processes used %.0f%% of the CPU meanwhile",
		c.keys, how, st.importRate(), st.importTime.Round(time.Millisecond), st.wallRate(), st.wall.Round(time.Millisecond),
		st.generate.Round(time.Millisecond), st.settle.Round(time.Millisecond), st.close.Round(time.Millisecond), mib(st.storeBytes), 100*st.foreign)

	if err := writeLines(files.valid, res.samples.valid); err != nil {
		return nil, err
	}
	if err := writeLines(files.probe, []string{res.samples.probe}); err != nil {
		return nil, err
	}
	if err := writeFloodSamples(res, c.sample); err != nil {
		return nil, err
	}
	if err := os.WriteFile(complete, []byte(strconv.Itoa(c.keys)+"\n"), 0o644); err != nil {
		return nil, err
	}
	return res, nil
}

// writeFloodSamples generates fresh unknown and malformed credentials.
func writeFloodSamples(res *fillResult, n int) error {
	f := keystore.DefaultFormat()
	res.samples.unknown = make([]string, n)
	for i := range res.samples.unknown {
		k, err := f.Generate()
		if err != nil {
			return err
		}
		res.samples.unknown[i] = k
	}
	res.samples.malformed = malformedKeys(f, n, newRand())
	if err := writeLines(res.files.unknown, res.samples.unknown); err != nil {
		return err
	}
	return writeLines(res.files.malformed, res.samples.malformed)
}

// newRand is the fixed-seed source of the malformed keys: the same garbage
// on every run.
func newRand() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }

// malformedKeys returns n credentials that fail f.Check, in four kinds:
// a key with a wrong checksum, a truncated key, random base62 without
// the prefix, and random printable ASCII (valid in a header value).
func malformedKeys(f keystore.Format, n int, r *rand.Rand) []string {
	const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	randString := func(alphabet string, l int) string {
		var sb strings.Builder
		for range l {
			sb.WriteByte(alphabet[r.IntN(len(alphabet))])
		}
		return sb.String()
	}
	var printable strings.Builder
	for c := byte(0x21); c <= 0x7e; c++ {
		printable.WriteByte(c)
	}
	out := make([]string, 0, n)
	for i := 0; len(out) < n; i++ {
		var s string
		switch i % 4 {
		case 0: // wrong checksum
			k := f.Prefix + randString(base62, f.Length)
			s = k + randString(base62, keystore.ChecksumLength)
		case 1: // truncated
			k := f.Prefix + randString(base62, f.Length) + "000000"
			s = k[:1+r.IntN(len(k)-1)]
		case 2: // no prefix
			s = randString(base62, 8+r.IntN(53))
		case 3: // printable garbage
			s = randString(printable.String(), 1+r.IntN(100))
		}
		if f.Check(s) != nil {
			out = append(out, s)
		}
	}
	return out
}

func writeLines(path string, lines []string) error {
	return os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

func readLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}

// dirSize is the disk space the files under dir use (allocated blocks:
// Badger's value log is a large sparse file).
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				if st, ok := info.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512
				} else {
					n += info.Size()
				}
			}
		}
		return nil
	})
	return n
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// settleProcess waits, at most max, until this process's background work
// (Badger's compactions) has stopped: under 5% of a core over a second.
func settleProcess(max time.Duration) {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 0
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	deadline := time.Now().Add(max)
	for prev := cpu(); time.Now().Before(deadline); {
		time.Sleep(time.Second)
		now := cpu()
		if now-prev < 50*time.Millisecond {
			return
		}
		prev = now
	}
	logf("  Badger was still compacting after %s; closing anyway", max)
}

// importAll fills the store with ImportKeys, in calls of keystore.MaxImport
// keys, the way a running store takes keys.
func importAll(ctx context.Context, c config, dir string, f keystore.Format, res *fillResult) error {
	logf("filling %s with %d keys (ImportKeys, batches of %d)", dir, c.keys, keystore.MaxImport)
	st := &res.stats
	wall := time.Now()
	s, err := keystore.Open(keystore.Options{Dir: dir, LastUsedFlush: time.Hour})
	if err != nil {
		return err
	}
	st.open = time.Since(wall)
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()

	stride := max(1, c.keys/c.sample)
	batch := make([]keystore.ImportKey, 0, keystore.MaxImport)
	lastLog := time.Now()
	for start := 0; start < c.keys; start += keystore.MaxImport {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(keystore.MaxImport, c.keys-start)
		batch = batch[:0]
		t := time.Now()
		for i := start; i < start+n; i++ {
			ik, err := res.newEntry(f, i, stride, c.sample)
			if err != nil {
				return err
			}
			batch = append(batch, ik)
		}
		st.generate += time.Since(t)
		t = time.Now()
		if _, err := s.ImportKeys(batch, f, "bench"); err != nil {
			return fmt.Errorf("ImportKeys (keys %d..%d): %w", start, start+n-1, err)
		}
		d := time.Since(t)
		st.importTime += d
		st.batches++
		st.calls = append(st.calls, d)
		if time.Since(lastLog) > 5*time.Second || start+n == c.keys {
			logf("  %d/%d keys; this batch %s (%.0f keys/s)", start+n, c.keys, d.Round(time.Millisecond), rate(n, d))
			lastLog = time.Now()
		}
	}
	// The measured Caddy should meet the store at rest, as a proxy does
	// most of its life, not pay the compactions of a bulk load that
	// just happened (they would land in whichever rounds they overlap).
	t := time.Now()
	settleProcess(5 * time.Minute)
	st.settle = time.Since(t)
	t = time.Now()
	closed = true
	if err := s.Close(); err != nil {
		return fmt.Errorf("closing the store: %w", err)
	}
	st.close = time.Since(t)
	return nil
}

// loadAll fills the new store with keystore.Load, in one call. It loads
// the same keys -fill-repeat times, each into a new store (the last one is
// kept), and reports the median: one load of 100,000 keys lasts about a
// second, and on a shared VM a single such sample moves by a third.
// Dirty pages of other files (the build of Caddy just before) are written
// out first, so that the load's fsyncs do not wait for them.
func loadAll(ctx context.Context, c config, dir string, f keystore.Format, res *fillResult) error {
	logf("filling %s with %d keys (keystore.Load, one call, %d times)", dir, c.keys, max(1, c.fillRepeat))
	st := &res.stats
	stride := max(1, c.keys/c.sample)
	t := time.Now()
	in := make([]keystore.ImportKey, c.keys)
	for i := range in {
		if i%65536 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		ik, err := res.newEntry(f, i, stride, c.sample)
		if err != nil {
			return err
		}
		in[i] = ik
	}
	st.generate = time.Since(t)
	reps := max(1, c.fillRepeat)
	for r := range reps {
		into := dir
		if r < reps-1 {
			into = fmt.Sprintf("%s.repeat-%d", dir, r)
		}
		rt := time.Now()
		syscall.Sync()
		t = time.Now()
		if _, err := keystore.Load(keystore.Options{Dir: into}, in, f, "bench"); err != nil {
			return err
		}
		d := time.Since(t)
		st.calls = append(st.calls, d)
		logf("  %d keys loaded in %s (%.0f keys/s)", c.keys, d.Round(time.Millisecond), rate(c.keys, d))
		if into != dir {
			if err := os.RemoveAll(into); err != nil {
				return err
			}
			st.repeats += time.Since(rt)
		}
	}
	st.importTime, st.batches = time.Duration(median(durations(st.calls))), 1
	return nil
}

// newEntry generates key i of the store, keeping it as the probe (key 0)
// or as one of the sample of valid keys (every stride-th, up to sample).
func (res *fillResult) newEntry(f keystore.Format, i, stride, sample int) (keystore.ImportKey, error) {
	plain, err := f.Generate()
	if err != nil {
		return keystore.ImportKey{}, err
	}
	switch {
	case i == 0:
		res.samples.probe = plain
	case i%stride == stride-1 && len(res.samples.valid) < sample:
		res.samples.valid = append(res.samples.valid, plain)
	}
	return keystore.ImportKey{Key: plain, NewKey: benchKey(i, res.exempt)}, nil
}
