package lavapipe

import (
	"os"
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
