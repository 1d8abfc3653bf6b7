//go:build !js

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCurateQuickJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	require.NoError(t, run([]string{"curate", "-quick", "-json"}, &out, &errOut), errOut.String())
	names := map[string]bool{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var r curateResult
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r), sc.Text())
		require.Greater(t, r.Value, 0.0, sc.Text())
		names[strings.SplitN(r.Name, "/", 2)[0]] = true
	}
	for _, n := range []string{"knn", "ivf", "kmeans"} {
		require.True(t, names[n], "missing %s in\n%s", n, out.String())
	}
	errOut.Reset()
	require.NoError(t, run([]string{"curate", "-help"}, &out, &errOut))
	require.Contains(t, errOut.String(), "recall@10")
}
