package main

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/assets"
)

var site = fstest.MapFS{
	"index.html":              {Data: []byte("<!doctype html>the-index")},
	"app.js":                  {Data: []byte("'use strict';")},
	"build/webdino.wasm":      {Data: []byte("\x00asm-plain")},
	"build/webdino.wasm.gz":   {Data: gzipped("\x00asm-plain")},
	"build/wasm_exec.js":      {Data: []byte("// go")},
	"models/demo.msgpack":     {Data: []byte{0x85}},
	"photos/chelsea.jpg":      {Data: []byte("\xff\xd8jpeg")},
	"photos/sub/x.png":        {Data: []byte("png")},
	"unknown.bin":             {Data: []byte("?")},
	"photos/sub/.hidden.json": {Data: []byte("{}")},
}

func gzipped(s string) []byte {
	var b strings.Builder
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return []byte(b.String())
}

func get(t *testing.T, h http.Handler, path string, hdr ...string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/", nil)
	r.URL.Path = path // as net/http leaves it after unescaping, uncleaned
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func body(t *testing.T, r *http.Response) string {
	b, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	return string(b)
}

func TestServesFilesWithTypes(t *testing.T) {
	h := newHandler(site)
	for path, want := range map[string]string{
		"/":                    "text/html; charset=utf-8",
		"/index.html":          "text/html; charset=utf-8",
		"/app.js":              "text/javascript; charset=utf-8",
		"/build/wasm_exec.js":  "text/javascript; charset=utf-8",
		"/build/webdino.wasm":  "application/wasm",
		"/photos/chelsea.jpg":  "image/jpeg",
		"/models/demo.msgpack": "application/octet-stream",
		"/unknown.bin":         "application/octet-stream",
	} {
		r := get(t, h, path)
		require.Equal(t, http.StatusOK, r.StatusCode, path)
		require.Equal(t, want, r.Header.Get("Content-Type"), path)
		require.Equal(t, "nosniff", r.Header.Get("X-Content-Type-Options"), path)
	}
	require.Equal(t, "<!doctype html>the-index", body(t, get(t, h, "/")))
}

func TestWasmGzip(t *testing.T) {
	h := newHandler(site)
	r := get(t, h, "/build/webdino.wasm", "Accept-Encoding", "gzip, deflate, br")
	require.Equal(t, "gzip", r.Header.Get("Content-Encoding"))
	require.Equal(t, "application/wasm", r.Header.Get("Content-Type"))
	zr, err := gzip.NewReader(r.Body)
	require.NoError(t, err)
	b, err := io.ReadAll(zr)
	require.NoError(t, err)
	require.Equal(t, "\x00asm-plain", string(b))
	r = get(t, h, "/build/webdino.wasm")
	require.Empty(t, r.Header.Get("Content-Encoding"))
	require.Equal(t, "\x00asm-plain", body(t, r))
}

// TestRefusesPathsOutsideTheSite sends each path through the handler as
// net/http hands it over (already unescaped, not cleaned).
func TestRefusesPathsOutsideTheSite(t *testing.T) {
	h := newHandler(site)
	for _, path := range []string{
		"/../go.mod", "/../../etc/passwd", "/photos/../index.html", "/photos/../../go.mod",
		"/./index.html", "//index.html", "//etc/passwd", "/etc/passwd", "/photos//chelsea.jpg",
		"/photos\\..\\index.html", "/index.html\x00", "/photos/", "/photos", "/build", "/build/",
		"relative.html", "/.", "/..",
	} {
		r := get(t, h, path)
		require.Equal(t, http.StatusNotFound, r.StatusCode, "%q", path)
		require.NotContains(t, body(t, r), "the-index", "%q", path)
	}
	r := httptest.NewRecorder()
	h.ServeHTTP(r, httptest.NewRequest(http.MethodPost, "/", nil))
	require.Equal(t, http.StatusMethodNotAllowed, r.Code)
}

// TestRefusesTraversalOverTheWire writes raw request lines to a real
// server, so that no client cleans the paths first (%2e%2e is "..").
func TestRefusesTraversalOverTheWire(t *testing.T) {
	srv := httptest.NewServer(newHandler(site))
	defer srv.Close()
	for _, target := range []string{
		"/index.html", // the control: the raw request itself works
		"/../go.mod", "/%2e%2e/go.mod", "/%2E%2E/%2E%2E/etc/passwd", "/photos/%2e%2e/%2e%2e/go.mod",
		"/..%2fgo.mod", "/%2fetc%2fpasswd", "/%5c..%5cgo.mod", "/photos/..%5c..%5cgo.mod", "/%00",
	} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		require.NoError(t, err)
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err, target)
		b, _ := io.ReadAll(resp.Body)
		conn.Close()
		if target == "/index.html" {
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Contains(t, string(b), "the-index")
			continue
		}
		require.Contains(t, []int{http.StatusNotFound, http.StatusBadRequest}, resp.StatusCode, "%s: %s", target, b)
		require.NotContains(t, string(b), "module", target)
	}
}

// TestEmbeddedSite checks that the page and everything manifest.json
// lists are in the binary.
func TestEmbeddedSite(t *testing.T) {
	srv := httptest.NewServer(newHandler(assets.FS))
	defer srv.Close()
	b, err := fs.ReadFile(assets.FS, "manifest.json")
	require.NoError(t, err)
	var m struct {
		Models, Photos []struct{ File, Licence string }
	}
	require.NoError(t, json.Unmarshal(b, &m))
	require.NotEmpty(t, m.Models)
	require.NotEmpty(t, m.Photos)
	paths := []string{"/", "/app.js", "/style.css"}
	for _, f := range append(m.Models, m.Photos...) {
		paths = append(paths, "/"+f.File)
	}
	for _, p := range m.Photos {
		require.NotEmpty(t, p.Licence, p.File)
	}
	for _, p := range paths {
		r, err := http.Get(srv.URL + p)
		require.NoError(t, err)
		r.Body.Close()
		require.Equal(t, http.StatusOK, r.StatusCode, p)
	}
}
