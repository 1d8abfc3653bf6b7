package lavapipe

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Restart replaces this process with itself, same arguments and
// environment, started on the private lavapipe, unless there is none (no
// ready folder), WEBDINO_LAVAPIPE is "system", or the process
// already runs there. It returns only when it does not restart: nil, or an
// error saying why it could not (the caller may go on as it is).
func Restart() error {
	if os.Getenv("WEBDINO_LAVAPIPE") == "system" {
		return nil
	}
	dir, err := Dir()
	if err != nil {
		return nil // no cache folder, so no install
	}
	in, ok, err := Find(dir)
	if err != nil || !ok || Running(in) {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart on the lavapipe in %s: %w", dir, err)
	}
	argv := append([]string{in.Loader, "--library-path", in.Lib, self}, os.Args[1:]...)
	if err := syscall.Exec(in.Loader, argv, os.Environ()); err != nil {
		return fmt.Errorf("restart on the lavapipe in %s (WEBDINO_LAVAPIPE=system skips it): %w", dir, err)
	}
	return nil
}

// Executable is the path that starts this program again: os.Executable,
// except on the private lavapipe, where that is the dynamic loader and the
// program is the loader's argument, os.Args[0].
func Executable() (string, error) {
	if dir, err := Dir(); err == nil {
		if in, ok, err := Find(dir); err == nil && ok && Running(in) {
			return filepath.Abs(os.Args[0])
		}
	}
	return os.Executable()
}
