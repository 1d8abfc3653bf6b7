package lavapipe

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFind(t *testing.T) {
	dir := t.TempDir()
	_, ok, err := Find(dir)
	require.NoError(t, err)
	require.False(t, ok, "no ready file, no install")

	ready := filepath.Join(dir, "ready")
	require.NoError(t, os.WriteFile(ready, []byte("mesa 26.1.6\nlib /usr/lib/x86_64-linux-gnu\n"), 0o644))
	_, _, err = Find(dir)
	require.ErrorContains(t, err, ready+" names no lib or loader: remove "+dir+" and run make setup again")

	require.NoError(t, os.WriteFile(ready, []byte("mesa 26.1.6\nlib /usr/lib/x86_64-linux-gnu\nloader /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\n"), 0o644))
	in, ok, err := Find(dir)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, Install{Lib: dir + "/usr/lib/x86_64-linux-gnu", Loader: dir + "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"}, in)
	require.False(t, Running(in), "a loader that is not this process's")
}

// TestRestart starts this test binary plainly (Executable), as cmd/train
// starts its replicas, and checks that Restart moves the child onto the
// private lavapipe with its arguments intact, and that WEBDINO_LAVAPIPE=system
// keeps it where it is.
func TestRestart(t *testing.T) {
	if os.Getenv("WEBDINO_RESTART_CHILD") != "" {
		require.NoError(t, Restart())
		dir, err := Dir()
		require.NoError(t, err)
		in, _, err := Find(dir)
		require.NoError(t, err)
		if Running(in) {
			os.Stdout.WriteString("child: on the private lavapipe\n")
		} else {
			os.Stdout.WriteString("child: on the system's libraries\n")
		}
		return
	}
	dir, err := Dir()
	require.NoError(t, err)
	if _, ok, err := Find(dir); err != nil || !ok {
		t.Skipf("no private lavapipe in %s (make setup installs one where no GPU is present): %v", dir, err)
	}
	self, err := Executable()
	require.NoError(t, err)
	for env, want := range map[string]string{"": "child: on the private lavapipe", "system": "child: on the system's libraries"} {
		cmd := exec.Command(self, "-test.run=^TestRestart$", "-test.v")
		cmd.Env = append(os.Environ(), "WEBDINO_RESTART_CHILD=1", "WEBDINO_LAVAPIPE="+env)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), want)
	}
}
