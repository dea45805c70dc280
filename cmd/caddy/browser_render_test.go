package main

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBrowserRender1000 times the operator's page rendering a page of
// 1,000 keys. Ports: admin 28202, site 18202.
func TestBrowserRender1000(t *testing.T) {
	skipIfShort(t)
	b := newBrowser(t)
	p := ports{admin: 28202, site: 18202}
	a := startUICaddy(t, p)
	b.use(t)
	a.must(t, "POST", "/accounts", `{"id":"bulk","max_keys":5000}`, http.StatusCreated)
	var sb strings.Builder
	sb.WriteString("[")
	for i := range 1000 {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `{"sha256":"%x","name":"Bulk %04d","account":"bulk","scopes":["contacts:read","orders:read"]}`, sha256.Sum256([]byte(strconv.Itoa(i))), i)
	}
	sb.WriteString("]")
	a.must(t, "POST", "/keys/import", sb.String(), http.StatusCreated)
	ui := "http://" + p.adminAddr() + "/apikey/ui/"
	b.navigateFrom(ui, ui)
	b.waitFor("the operator's accounts", `[...document.querySelectorAll('#accounts td')].some((e) => e.textContent === 'bulk')`)
	b.fill("Account", "bulk")
	b.waitFor("the bulk page", `document.getElementById('keys').dataset.rows === '50'`)
	// The render is timed twice: in wall time by the page (from the
	// answer's keys to the table laid out; logged, since it grows with
	// the machine's load), and asserted in the CPU time of the tab's
	// main thread from the change of page size to the table shown,
	// which also counts the fetch and its JSON: an upper bound of the
	// render's own. The best of three.
	best := time.Duration(0)
	for i := range 3 {
		b.fill("Rows per page", "100")
		b.waitFor("100 rows", `document.getElementById('keys').dataset.rows === '100'`)
		before := b.mainThreadCPU()
		b.fill("Rows per page", "1000")
		b.waitFor("1,000 rows", `document.getElementById('keys').dataset.rows === '1000'`)
		cpu := b.mainThreadCPU() - before
		var ms string
		b.eval(`document.getElementById('keys').dataset.renderMs`, &ms)
		t.Logf("render %d: 1,000 keys in %v of main-thread CPU (wall time of the render: %s ms)", i+1, cpu.Round(100*time.Microsecond), ms)
		if i == 0 || cpu < best {
			best = cpu
		}
	}
	if best <= 0 || best >= 200*time.Millisecond {
		t.Errorf("1,000 keys rendered in %v of main-thread CPU at best, want under 200 ms", best)
	}
}
