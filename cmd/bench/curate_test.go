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
		parts := strings.SplitN(r.Name, "/", 3)
		names[parts[0]] = true
		if len(parts) > 1 {
			names[parts[0]+"/"+parts[1]] = true
		}
	}
	for _, n := range []string{"knn", "ivf", "kmeans/iter", "kmeans/seed", "verify/28px-crops"} {
		require.True(t, names[n], "missing %s in\n%s", n, out.String())
	}
	errOut.Reset()
	require.NoError(t, run([]string{"curate", "-help"}, &out, &errOut))
	require.Contains(t, errOut.String(), "recall@10")
}
