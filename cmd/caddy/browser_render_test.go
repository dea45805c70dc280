package main

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
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

	// The table is windowed: the rows in view and a margin are in the
	// document, the table says it has 1,001 rows, and every row is
	// reached by scrolling or by the keyboard, with its buttons named.
	var shape struct{ Rendered, RowCount int }
	b.eval(`({Rendered: document.querySelectorAll('#keys tbody tr[data-id]').length, RowCount: Number(document.getElementById('keys').getAttribute('aria-rowcount'))})`, &shape)
	t.Logf("rows in the document: %d of 1,000", shape.Rendered)
	if shape.Rendered < 10 || shape.Rendered >= 1000 || shape.RowCount != 1001 {
		t.Errorf("rendered %d rows, aria-rowcount %d: want a window of the 1,000 (and 1,001)", shape.Rendered, shape.RowCount)
	}
	// rowAt is the row of aria-rowindex i, if it is in the document.
	rowAt := func(i int) string {
		return fmt.Sprintf(`document.querySelector('#keys tbody tr[aria-rowindex="%d"]')`, i)
	}
	// named checks that row i's buttons are named after its key.
	named := func(i int) {
		t.Helper()
		var bad string
		b.eval(`(() => { const tr = `+rowAt(i)+`; const name = tr.cells[0].querySelector('button').textContent;
			const want = ['Edit', 'Revoke', 'Regenerate', 'Delete'].map((a) => a + ' ' + name);
			const got = [...tr.cells[6].querySelectorAll('button')].map((b) => b.getAttribute('aria-label'));
			return /^Bulk \d{4}$/.test(name) && got.join('|') === want.join('|') ? '' : name + ': ' + got.join('|') })()`, &bad)
		if bad != "" {
			t.Errorf("row %d's buttons: %s", i, bad)
		}
	}
	b.eval(`window.scrollTo(0, document.documentElement.scrollHeight); true`, nil)
	b.waitFor("the last row after scrolling to the end", rowAt(1001)+` && `+rowAt(1001)+`.getBoundingClientRect().top < innerHeight`)
	named(1001)
	b.eval(`window.scrollTo(0, 0); true`, nil)
	b.waitFor("the first row after scrolling back", rowAt(2))
	named(2)

	// Tab from the last row in the document reaches the next one, and
	// Shift+Tab from the first one of a window further down the one above.
	var lastIdx int
	b.eval(`(() => { const rows = document.querySelectorAll('#keys tbody tr[data-id]'); const tr = rows[rows.length - 1];
		tr.cells[6].lastElementChild.focus(); return Number(tr.getAttribute('aria-rowindex')) })()`, &lastIdx)
	focusedRow := func() (row int, label string) {
		var f struct {
			Row   int
			Label string
		}
		b.eval(`(() => { const e = document.activeElement; const tr = e.closest('tr[aria-rowindex]');
			return {Row: tr ? Number(tr.getAttribute('aria-rowindex')) : 0, Label: e.getAttribute('aria-label') || e.textContent} })()`, &f)
		return f.Row, f.Label
	}
	for want := lastIdx + 1; want <= lastIdx+3; want++ {
		for range 5 { // the name and the four actions
			b.do("Tab", chromedp.KeyEvent(kb.Tab))
		}
		if row, label := focusedRow(); row != want || !strings.HasPrefix(label, "Delete Bulk ") {
			t.Fatalf("after Tab: focus on %q in row %d, want the Delete button of row %d", label, row, want)
		}
	}
	b.do("Shift+Tab", chromedp.KeyEvent(kb.Tab, chromedp.KeyModifiers(chromedp.ModifierShift)))
	if row, label := focusedRow(); row != lastIdx+3 || !strings.HasPrefix(label, "Regenerate Bulk ") {
		t.Errorf("after Shift+Tab: focus on %q in row %d, want Regenerate of row %d", label, row, lastIdx+3)
	}
	// (A row holding the focus stays in the document, and so do the rows
	// between it and the view: let it go first.)
	b.eval(`document.activeElement.blur(); window.scrollTo(0, document.documentElement.scrollHeight / 2); true`, nil)
	var firstIdx int
	b.waitFor("a window in the middle", `document.querySelector('#keys tbody tr[data-id]').getAttribute('aria-rowindex') > 100`)
	b.eval(`(() => { const tr = document.querySelector('#keys tbody tr[data-id]'); tr.cells[0].querySelector('button').focus(); return Number(tr.getAttribute('aria-rowindex')) })()`, &firstIdx)
	b.do("Shift+Tab", chromedp.KeyEvent(kb.Tab, chromedp.KeyModifiers(chromedp.ModifierShift)))
	if row, label := focusedRow(); row != firstIdx-1 || !strings.HasPrefix(label, "Delete Bulk ") {
		t.Errorf("after Shift+Tab: focus on %q in row %d, want Delete of row %d", label, row, firstIdx-1)
	}
}
