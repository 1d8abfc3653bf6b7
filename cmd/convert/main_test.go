package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/ckpt"
)

func TestConvert(t *testing.T) {
	dir := t.TempDir()
	for _, in := range []string{"vits14_d2_reg4.pth", "vits14_d2_reg4.safetensors"} {
		out := filepath.Join(dir, in+".msgpack")
		var stdout, stderr bytes.Buffer
		code := run([]string{"-meta", "note=test", filepath.Join("..", "..", "nn", "testdata", "vit", in), out}, &stdout, &stderr)
		require.Equal(t, 0, code, stderr.String())
		require.Contains(t, stdout.String(), "config: ViT patch 14, dim 128, depth 2, heads 2, mlp hidden 512, registers 4, pos grid 37x37")
		require.Contains(t, stdout.String(), "parameters: 648832 (0.6M) in 36 tensors")
		c, err := ckpt.ReadFile(out)
		require.NoError(t, err)
		require.Equal(t, "test", c.Meta["note"])
		require.Equal(t, in, c.Meta["source"])
	}
}

func TestConvertErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.bin")
	require.NoError(t, os.WriteFile(bad, []byte("not weights at all"), 0o644))
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-help"}, 0, "usage: convert [-meta key=value]... IN OUT.msgpack"},
		{[]string{"only-one"}, 2, "usage: convert"},
		{[]string{"-meta", "novalue", "a", "b"}, 2, `want key=value, got "novalue"`},
		{[]string{bad, filepath.Join(dir, "o")}, 1, "convert: " + bad + ": import: unknown format"},
		{[]string{filepath.Join(dir, "missing.pth"), filepath.Join(dir, "o")}, 1, "no such file or directory"},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		require.Equal(t, c.code, run(c.args, &stdout, &stderr), c.args)
		require.Contains(t, stderr.String(), c.want)
	}
}

// A webdino training checkpoint converts to its model alone.
func TestConvertStripsTrainingState(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "model.msgpack")
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run([]string{filepath.Join("..", "..", "nn", "testdata", "vit", "vits14_d2.pth"), model}, &stdout, &stderr), stderr.String())
	c, err := ckpt.ReadFile(model)
	require.NoError(t, err)
	c.Training = &ckpt.Training{Step: 7, Groups: map[string]map[string]ckpt.Tensor{"adam_m/backbone": c.Weights}}
	c.Meta = nil
	full := filepath.Join(dir, "train.msgpack")
	require.NoError(t, ckpt.WriteFile(full, c))
	out := filepath.Join(dir, "stripped.msgpack")
	stdout.Reset()
	require.Equal(t, 0, run([]string{full, out}, &stdout, &stderr), stderr.String())
	require.Contains(t, stdout.String(), "(webdino checkpoint)")
	s, err := ckpt.ReadFile(out)
	require.NoError(t, err)
	require.Nil(t, s.Training)
	require.Equal(t, c.Weights, s.Weights)
	full2, _ := os.Stat(full)
	small, _ := os.Stat(out)
	require.Less(t, small.Size(), full2.Size()*2/3)
}
