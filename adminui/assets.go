package adminui

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// static holds the page: index.html, its stylesheet and its JavaScript
// modules, written for this page (no build step, nothing from a CDN).
//
//go:embed static
var static embed.FS

// asset is an embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// assets are the embedded files by their name under static/.
var assets = loadAssets()

func loadAssets() map[string]asset {
	out := map[string]asset{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[strings.TrimPrefix(p, "static/")] = asset{
			body:        b,
			contentType: contentTypes[path.Ext(p)],
			etag:        `"` + hex.EncodeToString(sum[:8]) + `"`,
		}
		return nil
	})
	if err != nil {
		panic("adminui: reading the embedded page: " + err.Error())
	}
	return out
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// PageSize is the size in bytes of everything the page loads: the sum of
// the embedded files, uncompressed.
func PageSize() int {
	n := 0
	for _, a := range assets {
		n += len(a.body)
	}
	return n
}

// serveAsset serves an embedded file: revalidated on every load (no-cache
// with an ETag), so that an upgraded binary's page is used at once.
func serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := assets[name]
	if !ok || a.contentType == "" || name == "index.html" && r.URL.Path != "/" {
		writeError(w, http.StatusNotFound, "not_found", "there is no such page")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "the page's files answer GET")
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(a.body)))
}

func serveIndex(w http.ResponseWriter, r *http.Request) { serveAsset(w, r, "index.html") }

func (h *Handler) serveAsset(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutPrefix(r.URL.Path, "/ui/")
	if !ok || strings.Contains(name, "/") {
		writeError(w, http.StatusNotFound, "not_found", "there is no such page")
		return
	}
	serveAsset(w, r, name)
}
