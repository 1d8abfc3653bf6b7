package main

import (
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// wasmFile is where the page loads the browser build from.
const wasmFile = "build/webdino.wasm"

// types are the MIME types of what the site holds; anything else is served
// as application/octet-stream. They are spelled out instead of taken from
// the system's mime tables, which may lack application/wasm (browsers
// refuse to compile streamed wasm of any other type).
var types = map[string]string{
	".html":    "text/html; charset=utf-8",
	".js":      "text/javascript; charset=utf-8",
	".css":     "text/css; charset=utf-8",
	".json":    "application/json",
	".md":      "text/plain; charset=utf-8",
	".wasm":    "application/wasm",
	".jpg":     "image/jpeg",
	".png":     "image/png",
	".msgpack": "application/octet-stream",
}

// handler serves the files of one fs.FS and nothing else: the request path
// must name a regular file of it by a valid fs path (no "..", no "."
// elements, no empty elements, no backslashes), which also rules out
// absolute and escaped paths once net/http has unescaped them. Directories
// are not listed.
type handler struct {
	fsys    fs.FS
	started time.Time // the Last-Modified of embedded files, which have none
}

func newHandler(fsys fs.FS) http.Handler { return &handler{fsys: fsys, started: time.Now()} }

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/")
	if name == "" {
		name = "index.html"
	}
	if !ok || !fs.ValidPath(name) || strings.ContainsAny(name, "\\\x00") {
		http.NotFound(w, r)
		return
	}
	ctype, ok := types[path.Ext(name)]
	if !ok {
		ctype = "application/octet-stream"
	}
	// The wasm build is stored gzipped too (a quarter of its size): send
	// that to browsers that take it.
	if path.Ext(name) == ".wasm" && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		if f, ok := h.open(name + ".gz"); ok {
			defer f.Close()
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Add("Vary", "Accept-Encoding")
			h.serve(w, r, name, ctype, f)
			return
		}
	}
	f, ok := h.open(name)
	if !ok {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	h.serve(w, r, name, ctype, f)
}

// open returns the regular file name, if the site has one.
func (h *handler) open(name string) (fs.File, bool) {
	f, err := h.fsys.Open(name)
	if err != nil {
		return nil, false
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, false
	}
	return f, true
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request, name, ctype string, f fs.File) {
	hd := w.Header()
	hd.Set("Content-Type", ctype)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cache-Control", "no-cache")
	mod := h.started
	if st, err := f.Stat(); err == nil && !st.ModTime().IsZero() {
		mod = st.ModTime()
	}
	if rs, ok := f.(io.ReadSeeker); ok {
		http.ServeContent(w, r, name, mod, rs)
		return
	}
	if r.Method == http.MethodGet {
		io.Copy(w, f)
	}
}
