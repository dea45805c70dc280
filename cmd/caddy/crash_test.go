package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-apikey/caddy-apikey/keystore"
)

// TestCrashDurability: workers create, revoke, activate, regenerate and
// delete keys through the admin endpoint as fast as they can; Caddy is
// killed with SIGKILL at a random moment; it is restarted on the same
// storage (which must open without repair), and every acknowledged
// mutation (a 2xx answer fully received) must be there:
//
//   - a live key's current string verifies through the proxy (200), or is
//     refused with key_revoked if its last acknowledged state is revoked;
//   - every string a regenerate replaced, and every string of a deleted
//     key, is invalid_key; a deleted key's GET /keys/{id} is 404;
//   - GET /keys lists exactly the live keys.
//
// A mutation whose answer was not received is unknown: the key may be in
// the state before it or after it, and either is accepted (an unknown
// create may have left one key we know nothing about). Each worker stops
// at its first unknown mutation, so a key has at most two possible states.
// Rounds share the storage: later crashes must keep what earlier rounds
// acknowledged. 3 rounds in the default run, 20 in the long suite.
//
// SIGKILL leaves the kernel's page cache alone: the test shows that no
// answer precedes its commit and that Badger replays its log without
// help; durability against a power cut rests on SyncWrites (an fsync
// before the answer), which a process kill cannot test.
func TestCrashDurability(t *testing.T) {
	skipIfShort(t)
	rounds := 3
	if longSuite {
		rounds = 20
	}
	p := ports{admin: 28011, site: 18011}
	dir := t.TempDir()
	up := newUpstream(t)
	storage := filepath.Join(dir, "store")
	config := writeConfig(t, dir, "proxy.Caddyfile.tmpl", p, storage, up.URL, "{{FLUSH}}", "30s")

	m := &crashModel{orphans: map[string]bool{}}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 6))
	t.Logf("seed %d", seed)
	var total crashStats
	cp := startCaddy(t, dir, config, p)
	crashes := 0
	for round := 1; round <= rounds; round++ {
		killAfter := 200*time.Millisecond + time.Duration(rng.Int64N(int64(1300*time.Millisecond)))
		st := m.round(t, cp, p, killAfter, rng.Uint64())
		restartStart := time.Now()
		cp = startCaddy(t, dir, config, p)
		st.restart = time.Since(restartStart)
		crashes++
		m.verify(t, cp, p, &st)
		t.Logf("round %2d: killed after %v; %s", round, killAfter.Round(time.Millisecond), st)
		total.add(st)
		if t.Failed() {
			break
		}
	}
	if code := cp.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	t.Logf("total over %d crashes: %s; store size %s", crashes, total, dirSize(storage))
}

// keyState is one possible state of a key.
type keyState struct {
	present bool
	revoked bool
	cur     string // the current string; "" when a regenerate's answer was lost
}

// trackedKey is what the test knows of a key.
type trackedKey struct {
	id     string
	strs   []string   // every string issued to it that the test saw
	states []keyState // the possible states: one, or two after an unknown mutation
}

func (k *trackedKey) state() keyState { return k.states[0] }

type crashModel struct {
	mu      sync.Mutex
	keys    []*trackedKey
	orphans map[string]bool // keys an unknown create left: never touched
	// unknownCreates is the number of creates of this round whose answer
	// was lost.
	unknownCreates int
}

type crashStats struct {
	acked    map[string]int
	unknown  map[string]int
	failed   int // non-2xx answers: none expected
	duration time.Duration
	restart  time.Duration
	verified int // keys whose state was checked after the restart
	strings  int // key strings checked through the proxy
	live     int
	orphans  int
}

func (s *crashStats) add(o crashStats) {
	if s.acked == nil {
		s.acked, s.unknown = map[string]int{}, map[string]int{}
	}
	for k, v := range o.acked {
		s.acked[k] += v
	}
	for k, v := range o.unknown {
		s.unknown[k] += v
	}
	s.failed += o.failed
	s.duration += o.duration
	s.restart = max(s.restart, o.restart)
	s.verified += o.verified
	s.strings += o.strings
	s.live, s.orphans = o.live, o.orphans
}

func (s crashStats) String() string {
	n := 0
	for _, v := range s.acked {
		n += v
	}
	u := 0
	for _, v := range s.unknown {
		u += v
	}
	return fmt.Sprintf("acknowledged %d mutations %v, unknown %d %v, failed %d; restart (max) %v; checked %d key states and %d key strings through the proxy; %d live keys, %d orphans",
		n, sortedCounts(s.acked), u, sortedCounts(s.unknown), s.failed, s.restart.Round(time.Millisecond), s.verified, s.strings, s.live, s.orphans)
}

func sortedCounts(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	for i, k := range ks {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return "[" + b.String() + "]"
}

const (
	crashWorkers = 4
	crashPoolMax = 8 // live keys per worker
)

// round runs the workers against cp and kills it after killAfter.
func (m *crashModel) round(t *testing.T, cp *caddyProc, p ports, killAfter time.Duration, seed uint64) crashStats {
	// The keys the workers may mutate: live, with one known state.
	var pool []*trackedKey
	for _, k := range m.keys {
		if len(k.states) == 1 && k.state().present && k.state().cur != "" {
			pool = append(pool, k)
		}
	}
	m.unknownCreates = 0
	ctx, cancel := context.WithTimeout(context.Background(), killAfter+20*time.Second)
	defer cancel()
	st := crashStats{acked: map[string]int{}, unknown: map[string]int{}}
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < crashWorkers; w++ {
		var mine []*trackedKey
		for i := w; i < len(pool); i += crashWorkers {
			mine = append(mine, pool[i])
		}
		wg.Add(1)
		go func(w int, mine []*trackedKey) {
			defer wg.Done()
			m.worker(ctx, t, newAdmin(p), mine, rand.New(rand.NewPCG(seed, uint64(w))), &st)
		}(w, mine)
	}
	time.Sleep(killAfter)
	cp.kill()
	st.duration = time.Since(start)
	wg.Wait()
	return st
}

// worker mutates its keys until its first unknown outcome (the kill).
func (m *crashModel) worker(ctx context.Context, t *testing.T, a *admin, mine []*trackedKey, rng *rand.Rand, st *crashStats) {
	defer a.c.CloseIdleConnections()
	record := func(kind string, acked bool) {
		m.mu.Lock()
		if acked {
			st.acked[kind]++
		} else {
			st.unknown[kind]++
		}
		m.mu.Unlock()
	}
	for ctx.Err() == nil {
		r := rng.IntN(100)
		if len(mine) == 0 || (r < 25 && len(mine) < crashPoolMax) {
			status, out, err := a.call(ctx, "POST", "/keys", `{"name": "crash", "scopes": ["contacts:read"]}`)
			id, _ := out["id"].(string)
			key, _ := out["key"].(string)
			if err != nil || status != http.StatusCreated || id == "" || key == "" {
				m.mu.Lock()
				m.unknownCreates++
				m.mu.Unlock()
				m.fail(t, st, "create", status, err)
				record("create", false)
				return
			}
			k := &trackedKey{id: id, strs: []string{key}, states: []keyState{{present: true, cur: key}}}
			m.mu.Lock()
			m.keys = append(m.keys, k)
			m.mu.Unlock()
			mine = append(mine, k)
			record("create", true)
			continue
		}
		i := rng.IntN(len(mine))
		k := mine[i]
		before := k.state()
		after := before
		var kind, method, path string
		want := http.StatusOK
		switch {
		case r < 45:
			kind, method, path = "revoke", "POST", "/keys/"+k.id+"/revoke"
			after.revoked = true
		case r < 55:
			kind, method, path = "activate", "POST", "/keys/"+k.id+"/activate"
			after.revoked = false
		case r < 80:
			kind, method, path = "regenerate", "POST", "/keys/"+k.id+"/regenerate"
			after.cur = ""
		default:
			kind, method, path, want = "delete", "DELETE", "/keys/"+k.id, http.StatusNoContent
			after = keyState{}
		}
		status, out, err := a.call(ctx, method, path, "")
		var newKey string
		if kind == "regenerate" {
			newKey, _ = out["key"].(string)
		}
		if err != nil || status != want || (kind == "regenerate" && newKey == "") {
			m.mu.Lock()
			k.states = []keyState{before, after}
			m.mu.Unlock()
			m.fail(t, st, kind, status, err)
			record(kind, false)
			return
		}
		m.mu.Lock()
		if kind == "regenerate" {
			after.cur = newKey
			k.strs = append(k.strs, newKey)
		}
		k.states = []keyState{after}
		m.mu.Unlock()
		if kind == "delete" {
			mine = append(mine[:i], mine[i+1:]...)
		}
		record(kind, true)
	}
}

// fail records a definite refusal (an answer other than the expected
// 2xx): none is expected, even while the process dies. A transport error
// is the expected end of a worker.
func (m *crashModel) fail(t *testing.T, st *crashStats, kind string, status int, err error) {
	if err != nil || status == 0 {
		return
	}
	m.mu.Lock()
	st.failed++
	m.mu.Unlock()
	t.Errorf("%s: status %d", kind, status)
}

// observation is what the restarted Caddy says of a key.
type observation struct {
	present bool
	revoked bool
	hint    string
	results []string // per string of the key: "200", "key_revoked", "invalid_key", or something unexpected
}

func expectedResult(st keyState, s string) string {
	if !st.present || s != st.cur {
		return "invalid_key"
	}
	if st.revoked {
		return "key_revoked"
	}
	return "200"
}

func (o observation) matches(st keyState, strs []string) bool {
	if o.present != st.present {
		return false
	}
	if st.present {
		if o.revoked != st.revoked {
			return false
		}
		if st.cur != "" && o.hint != keystore.Hint(st.cur, keystore.DefaultPrefix) {
			return false
		}
	}
	for i, s := range strs {
		if o.results[i] != expectedResult(st, s) {
			return false
		}
	}
	return true
}

// verify checks every tracked key against the restarted Caddy and
// collapses each key's possible states to the observed one.
func (m *crashModel) verify(t *testing.T, cp *caddyProc, p ports, st *crashStats) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a := newAdmin(p)
	defer a.c.CloseIdleConnections()
	site := p.siteURL() + "/contacts"

	work := make(chan *trackedKey)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(1)
			defer c.CloseIdleConnections()
			for k := range work {
				o, err := observe(ctx, a, c, site, k)
				mu.Lock()
				st.verified++
				st.strings += len(k.strs)
				if err != nil {
					t.Errorf("key %s: %v", k.id, err)
					mu.Unlock()
					continue
				}
				matched := -1
				for i, s := range k.states {
					if o.matches(s, k.strs) {
						matched = i
						break
					}
				}
				if matched < 0 {
					t.Errorf("key %s: observed present=%v revoked=%v hint=%q results=%v; acknowledged state(s) %s",
						k.id, o.present, o.revoked, o.hint, o.results, describeStates(k))
				} else {
					k.states = []keyState{k.states[matched]}
				}
				mu.Unlock()
			}
		}()
	}
	for _, k := range m.keys {
		work <- k
	}
	close(work)
	wg.Wait()

	// The list is exactly the live keys, plus what unknown creates left.
	listed := a.listIDs(t)
	tracked := map[string]bool{}
	for _, k := range m.keys {
		tracked[k.id] = true
		if _, ok := listed[k.id]; ok != k.state().present {
			t.Errorf("key %s: listed=%v, but its state is present=%v", k.id, ok, k.state().present)
		}
		if k.state().present {
			st.live++
		}
	}
	for id := range m.orphans {
		if _, ok := listed[id]; !ok {
			t.Errorf("orphan key %s (left by an unknown create of an earlier round) disappeared", id)
		}
	}
	var extra []string
	for id := range listed {
		if !tracked[id] && !m.orphans[id] {
			extra = append(extra, id)
		}
	}
	if len(extra) > m.unknownCreates {
		t.Errorf("%d unknown keys in the store (%v), but only %d creates were unacknowledged", len(extra), extra, m.unknownCreates)
	}
	for _, id := range extra {
		m.orphans[id] = true
	}
	st.orphans = len(m.orphans)
}

func observe(ctx context.Context, a *admin, c *http.Client, site string, k *trackedKey) (observation, error) {
	var o observation
	status, out, err := a.call(ctx, "GET", "/keys/"+k.id, "")
	if err != nil {
		return o, err
	}
	switch status {
	case http.StatusOK:
		o.present = true
		o.revoked = out["revoked_at"] != nil
		o.hint, _ = out["hint"].(string)
		if (out["status"] == "revoked") != o.revoked {
			return o, fmt.Errorf("status %v with revoked_at %v", out["status"], out["revoked_at"])
		}
	case http.StatusNotFound:
	default:
		return o, fmt.Errorf("GET /keys/%s: status %d %v", k.id, status, out)
	}
	for _, s := range k.strs {
		code, errCode, err := proxyResult(ctx, c, site, s)
		if err != nil {
			return o, err
		}
		r := errCode
		switch {
		case code == http.StatusOK:
			r = "200"
		case code != http.StatusUnauthorized:
			r = fmt.Sprintf("%d %s", code, errCode)
		}
		o.results = append(o.results, r)
	}
	return o, nil
}

func describeStates(k *trackedKey) string {
	var parts []string
	for _, s := range k.states {
		cur := "unknown string"
		for i, x := range k.strs {
			if x == s.cur {
				cur = fmt.Sprintf("string #%d of %d", i+1, len(k.strs))
			}
		}
		parts = append(parts, fmt.Sprintf("{present=%v revoked=%v current=%s}", s.present, s.revoked, cur))
	}
	return strings.Join(parts, " or ")
}

// dirSize sums the space a directory's files take on disk (allocated
// blocks: Badger's value log is a sparse file of 2 GiB apparent size), by
// kind.
func dirSize(dir string) string {
	var sst, vlog, mem, other int64
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		n := fi.Size()
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			n = sys.Blocks * 512
		}
		switch filepath.Ext(path) {
		case ".sst":
			sst += n
		case ".vlog":
			vlog += n
		case ".mem":
			mem += n
		default:
			other += n
		}
		return nil
	})
	return fmt.Sprintf("on disk: sst %s, vlog %s, memtable WAL %s, other %s", mib(sst), mib(vlog), mib(mem), mib(other))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
