// Package assets holds what cmd/serve serves, embedded in its binary: the
// viewer's page (index.html, app.js, style.css), the bundled photos and demo
// checkpoint listed in manifest.json, and the browser build in build/ (made
// by `make wasm`; until then the page says so). URL paths are the paths in
// FS, with / meaning index.html.
package assets

import "embed"

// FS is the site. The page lives here rather than in wasm/ because
// go:embed only reaches files below the embedding package, and wasm/ is a
// main package nobody can import.
//
//go:embed index.html app.js style.css manifest.json photos models build
var FS embed.FS
