package keystore

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/caddy-apikey/caddy-apikey/internal/redistest"
)

// TestReplicasConcurrentUpdatesOfOneKey: two replicas patch the metadata
// of one key 50 times each, at once. No write is lost: every acknowledged
// patch has its audit event, the events form one chain (each one's
// "from" is the previous one's "to": no two patches were applied to the
// same state), and the key ends as the chain's last write.
func TestReplicasConcurrentUpdatesOfOneKey(t *testing.T) {
	srv := redistest.Start(t)
	rs := replicas(t, srv, 2, Options{})
	k, _ := mustCreate(t, rs[0], DefaultFormat(), NewKey{})
	const each = 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[string]bool{}
	for w, s := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				v := fmt.Sprintf("%c%d", 'A'+w, i)
				if _, err := s.UpdateKey(k.ID, KeyPatch{Metadata: map[string]string{"w": v}}, "t"); err != nil {
					t.Errorf("a patch from %c: %v", 'A'+w, err)
					continue
				}
				mu.Lock()
				acked[v] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	events, err := rs[1].Audit(k.ID)
	if err != nil {
		t.Fatal(err)
	}
	// next: the metadata an event changed from -> the one it set.
	val := func(x any) string {
		if x == nil {
			return ""
		}
		m, _ := x.(map[string]any)
		s, _ := m["w"].(string)
		return s
	}
	next := map[string]string{}
	for _, ev := range events {
		if ev.Action != ActionUpdated {
			continue
		}
		c, ok := ev.Changes["metadata"]
		if !ok {
			b, _ := json.Marshal(ev)
			t.Fatalf("an update without a metadata change: %s", b)
		}
		from, to := val(c.From), val(c.To)
		if prev, dup := next[from]; dup {
			t.Errorf("two patches applied to the same state %q: to %q and to %q (one was lost)", from, prev, to)
		}
		next[from] = to
	}
	var chain []string
	for cur, ok := next[""]; ok; cur, ok = next[cur] {
		chain = append(chain, cur)
	}
	if len(chain) != len(acked) || len(next) != len(acked) {
		t.Errorf("%d patches acknowledged, %d update events, a chain of %d", len(acked), len(next), len(chain))
	}
	for v := range acked {
		if !slices.Contains(chain, v) {
			t.Errorf("the acknowledged patch %q has no place in the audit chain", v)
		}
	}
	for i, s := range rs {
		got, err := s.Key(k.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(chain) > 0 && got.Metadata["w"] != chain[len(chain)-1] {
			t.Errorf("replica %c reads metadata %v, the last write was %q", 'A'+i, got.Metadata, chain[len(chain)-1])
		}
	}
	t.Logf("%d patches from two replicas, all in one audit chain", len(acked))
}

// TestReplicasNoEscalation: the no-escalation re-check of a key caller
// (a Guard, run inside the mutation's transaction) holds across replicas.
// An operator on replica A flips a key's scopes between a weak and a
// strong set while a caller on replica B renames, activates and
// regenerates it with a guard that refuses the strong set: no change by B
// is ever applied to the key while it has the strong scope.
func TestReplicasNoEscalation(t *testing.T) {
	srv := redistest.Start(t)
	rs := replicas(t, srv, 2, Options{})
	a, b := rs[0], rs[1]
	f := DefaultFormat()
	k, _ := mustCreate(t, a, f, NewKey{Scopes: []string{"contacts:read"}})
	weak, strong := []string{"contacts:read"}, []string{"billing:write", "contacts:read"}
	errStronger := errors.New("the key has a scope the caller lacks")
	guard := func(cur *Key) error {
		if slices.Contains(cur.Scopes, "billing:write") {
			return errStronger
		}
		return nil
	}
	done := make(chan struct{})
	flips := make(chan int)
	go func() { // the operator, on A
		n := 0
		defer func() { flips <- n }()
		for ; ; n++ {
			select {
			case <-done:
				return
			default:
			}
			sc := weak
			if n%2 == 1 {
				sc = strong
			}
			if _, err := a.UpdateKey(k.ID, KeyPatch{Scopes: sc}, "admin"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	changed, refused := 0, 0
	for i := range 300 {
		var got *Key
		var err error
		switch i % 3 {
		case 0:
			name := fmt.Sprint("renamed ", i)
			got, err = b.UpdateKeyIf(k.ID, guard, KeyPatch{Name: &name}, "caller")
		case 1:
			if _, err := b.RevokeKey(k.ID, "caller"); err != nil {
				t.Fatal(err)
			}
			active := true
			got, err = b.UpdateKeyIf(k.ID, guard, KeyPatch{Active: &active}, "caller")
		case 2:
			got, _, err = b.RegenerateKeyIf(k.ID, guard, f, 0, "caller")
		}
		switch {
		case errors.Is(err, errStronger):
			refused++
		case err != nil:
			t.Fatal(err)
		default:
			changed++
			if slices.Contains(got.Scopes, "billing:write") {
				t.Fatalf("change %d by the caller on B was applied while the key had billing:write", i)
			}
		}
	}
	close(done)
	n := <-flips
	if changed == 0 || refused == 0 || n < 10 {
		t.Fatalf("the race did not run: %d changes, %d refusals by the caller, %d flips by the operator", changed, refused, n)
	}
	t.Logf("%d changes and %d refusals by the caller on B, %d scope flips on A, none applied to the stronger key", changed, refused, n)
}
