package main

// The browser of the API Keys page's tests: Debian's chromium, driven over
// the DevTools protocol (chromedp), headless. On a test's failure its
// screenshot and page HTML are saved under $APIKEY_TEST_ARTIFACTS (default
// testdata/artifacts, ignored by git), since t.TempDir is deleted. In CI
// (CI=true) a missing chromium fails the test; elsewhere it skips it.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// chromiumPath finds the browser.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed: .ci/install installs it (Debian: apt-get install chromium)")
	}
	t.Skip("chromium is not installed (Debian: apt-get install chromium); CI fails instead of skipping")
	return ""
}

// browser is one headless chromium with one tab.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("starting chromium: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b.saveArtifacts()
		}
		cancel()
		cancelAlloc()
	})
	return b
}

// artifactDir is where failures' screenshots and HTML go.
func artifactDir() string {
	if d := os.Getenv("APIKEY_TEST_ARTIFACTS"); d != "" {
		return d
	}
	return filepath.Join("testdata", "artifacts")
}

// saveArtifacts writes the tab's screenshot and HTML.
func (b *browser) saveArtifacts() {
	dir := artifactDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Logf("artifacts: %v", err)
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(b.t.Name())
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(90))
	if err != nil {
		b.t.Logf("artifacts: screenshot: %v", err)
	}
	html, err := chromedp.Run(ctx, chromedp.Evaluate[string]("document.documentElement.outerHTML"))
	if err != nil {
		b.t.Logf("artifacts: HTML: %v", err)
	}
	for file, data := range map[string][]byte{name + ".png": png, name + ".html": []byte(html)} {
		if len(data) > 0 {
			_ = os.WriteFile(filepath.Join(dir, file), data, 0o644)
		}
	}
	b.t.Logf("saved the page's screenshot and HTML in %s/%s.{png,html}", dir, name)
}

// do runs actions with a timeout, failing the test on error.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) and decodes
// its JSON value into out.
func (b *browser) eval(expr string, out any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("eval %s: %v", expr, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			b.t.Fatalf("eval %s: %v (%s)", expr, err, raw)
		}
	}
}

// js quotes s as a JavaScript string.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// findJS is a JavaScript function that finds the visible control whose
// accessible name (aria-label, its label's text, or its text) is name.
const findJS = `(name) => {
  const vis = (e) => e.offsetParent !== null || e.getClientRects().length > 0;
  const named = (e) => {
    if (e.getAttribute('aria-label')) return e.getAttribute('aria-label');
    if (e.labels && e.labels.length) return e.labels[0].textContent.trim();
    return e.textContent.trim();
  };
  return [...document.querySelectorAll('button,input,select,textarea')].find((e) => vis(e) && named(e) === name) || null;
}`

// waitFor polls a JavaScript condition until it is true.
func (b *browser) waitFor(what, cond string) {
	b.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ok bool
		b.eval("!!("+cond+")", &ok)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("waiting for %s (%s)", what, cond)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// click clicks the control named name, once it is there.
func (b *browser) click(name string) {
	b.t.Helper()
	b.waitFor("a control named "+name, "("+findJS+")("+js(name)+")")
	var ok bool
	b.eval("(() => { const e = ("+findJS+")("+js(name)+"); if (!e || e.disabled) return false; e.focus(); e.click(); return true })()", &ok)
	if !ok {
		b.t.Fatalf("%q is disabled", name)
	}
}

// fill types value into the field labelled name (as a user would: input
// events fire).
func (b *browser) fill(name, value string) {
	b.t.Helper()
	b.waitFor("a field labelled "+name, "("+findJS+")("+js(name)+")")
	var ok bool
	b.eval("(() => { const e = ("+findJS+")("+js(name)+"); e.focus(); e.value = "+js(value)+
		"; e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); return true })()", &ok)
}

// check sets the checkbox named name.
func (b *browser) check(name string, on bool) {
	b.t.Helper()
	var ok bool
	b.eval(fmt.Sprintf("(() => { const e = (%s)(%s); if (!e || e.disabled) return false; if (e.checked !== %v) e.click(); return true })()", findJS, js(name), on), &ok)
	if !ok {
		b.t.Fatalf("checkbox %q is missing or disabled", name)
	}
}

// text is the text of the first element matching a CSS selector ("" if none).
func (b *browser) text(sel string) string {
	b.t.Helper()
	var s string
	b.eval("(() => { const e = document.querySelector("+js(sel)+"); return e ? e.textContent : '' })()", &s)
	return s
}

// navigate opens url and waits for the page's script to have started.
func (b *browser) navigate(url string) {
	b.t.Helper()
	b.do("navigate "+url, chromedp.Navigate(url))
}

// screenshot saves the tab's screenshot as a PNG.
func (b *browser) screenshot(path string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// viewport sets the tab's size.
func (b *browser) viewport(w, h int64) {
	b.t.Helper()
	b.do("viewport", chromedp.EmulateViewport(w, h))
}

// keyEscape presses Escape in the tab.
func keyEscape() chromedp.Action[chromedp.Void] {
	return chromedp.KeyEvent(kb.Escape)
}

// use makes t (a subtest) the browser's test: its failures save the
// page's screenshot and HTML as it is then.
func (b *browser) use(t *testing.T) {
	b.t = t
	t.Cleanup(func() {
		if t.Failed() {
			b.saveArtifacts()
		}
	})
}

// navigateFrom opens url as if from a link on referrer. Caddy's admin
// endpoint refuses a browser's request that carries Sec-Fetch-Mode but
// neither Origin nor Referer, which is what typing its URL sends (see
// docs/admin-ui.md); the operator's page is opened with a same-origin
// Referer here.
func (b *browser) navigateFrom(url, referrer string) {
	b.t.Helper()
	b.do("navigate "+url, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		res, err := cdp.Call(ctx, t, page.Navigate, page.NavigateParams{URL: url, Referrer: referrer})
		if err == nil && res.ErrorText != "" {
			err = fmt.Errorf("%s", res.ErrorText)
		}
		return err
	}))
	b.waitFor("the page to load", `document.readyState === 'complete' && location.href === `+js(url))
}

// mainThreadCPU is the CPU time the tab's main thread has spent in tasks
// so far (Chrome's TaskDuration metric in thread ticks): unlike wall time,
// it does not grow when the machine is busy with other work.
func (b *browser) mainThreadCPU() time.Duration {
	b.t.Helper()
	var d float64
	b.do("performance metrics", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, performance.Enable, performance.EnableParams{TimeDomain: performance.EnableTimeDomainThreadTicks}); err != nil {
			return err
		}
		res, err := cdp.Call(ctx, t, performance.GetMetrics, cdp.Empty{})
		if err != nil {
			return err
		}
		for _, m := range res.Metrics {
			if m.Name == "TaskDuration" {
				d = m.Value
				return nil
			}
		}
		return fmt.Errorf("no TaskDuration metric")
	}))
	return time.Duration(d * float64(time.Second))
}
