package shaders

import (
	"io/fs"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// Templates share one namespace and a later {{define}} silently replaces an
// earlier one of the same name, so every name must be defined exactly once.
func TestTemplateNamesAreUnique(t *testing.T) {
	define := regexp.MustCompile(`\{\{define "([^"]+)"\}\}`)
	seen := map[string]string{}
	names, err := fs.Glob(files, "*.wgsl")
	require.NoError(t, err)
	require.NotEmpty(t, names)
	for _, name := range names {
		src, err := fs.ReadFile(files, name)
		require.NoError(t, err)
		for _, m := range define.FindAllStringSubmatch(string(src), -1) {
			if prev, dup := seen[m[1]]; dup {
				t.Errorf("template %q defined in %s and %s", m[1], prev, name)
			}
			seen[m[1]] = name
		}
	}
	_, err = Load()
	require.NoError(t, err)
}

func TestRenderErrors(t *testing.T) {
	s, err := Load()
	require.NoError(t, err)
	_, err = s.Render("no_such_kernel", nil)
	require.ErrorContains(t, err, `shader "no_such_kernel": no such kernel template`)
	_, err = s.Render("matmul", struct{}{})
	require.ErrorContains(t, err, `render shader "matmul"`)
}
