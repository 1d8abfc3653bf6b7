// Package lavapipe starts webdino's programs on the private lavapipe that
// scripts/setup-lavapipe.sh installs on machines without a GPU: Mesa 26 from
// Debian 13, with its own glibc, run through that glibc's dynamic loader
// (docs/lavapipe.md). Its JIT loads a workgroup-uniform address once, which
// runs webdino's products about twice as fast as Debian 12's Mesa 25, so a
// program that finds the folder restarts itself there, and `go run
// ./cmd/train` gets the faster lavapipe without a launcher in front.
package lavapipe

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Dir is the folder setup-lavapipe.sh installs into: $WEBDINO_LAVAPIPE_DIR,
// else webdino/lavapipe in the user's cache folder.
func Dir() (string, error) {
	if d := os.Getenv("WEBDINO_LAVAPIPE_DIR"); d != "" {
		return d, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "webdino", "lavapipe"), nil
}

// Install is a ready private lavapipe: its dynamic loader and the folder of
// its libraries, both absolute.
type Install struct{ Loader, Lib string }

// Find reads dir's ready file, which setup-lavapipe.sh writes last ("lib
// PATH" and "loader PATH", inside dir). ok is false, with no error, where
// the folder holds no finished install.
func Find(dir string) (in Install, ok bool, err error) {
	f, err := os.Open(filepath.Join(dir, "ready"))
	if errors.Is(err, fs.ErrNotExist) {
		return Install{}, false, nil
	}
	if err != nil {
		return Install{}, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, _ := strings.Cut(sc.Text(), " ")
		switch key {
		case "lib":
			in.Lib = filepath.Join(dir, val)
		case "loader":
			in.Loader = filepath.Join(dir, val)
		}
	}
	if err := sc.Err(); err != nil {
		return Install{}, false, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	if in.Lib == "" || in.Loader == "" {
		return Install{}, false, fmt.Errorf("%s names no lib or loader: remove %s and run make setup again", f.Name(), dir)
	}
	return in, true, nil
}

// Running reports whether this process runs on in: its executable is then
// in's dynamic loader, as under scripts/lavapipe-exec or after Restart.
func Running(in Install) bool {
	self, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return false
	}
	loader, err := filepath.EvalSymlinks(in.Loader)
	return err == nil && self == loader
}
