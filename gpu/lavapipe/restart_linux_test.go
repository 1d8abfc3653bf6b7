package lavapipe

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
)

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
