// Package shaders holds webdino's WGSL compute kernels, one file per op family.
//
// Every file is a Go text/template. Each kernel is a named template
// ({{define "matmul"}}...{{end}}) rendered with the data its caller passes, so
// shape constants and fused epilogues are generated rather than copied between
// files. Shared snippets (the dispatch-index helper, GELU) live in common.wgsl.
package shaders

import (
	"bytes"
	"embed"
	"fmt"
	"text/template"
)

//go:embed *.wgsl
var files embed.FS

// funcs are the helpers templates may call for generated constants.
var funcs = template.FuncMap{
	"mul": func(a, b int) int { return a * b },
	"add": func(a, b int) int { return a + b },
	"sub": func(a, b int) int { return a - b },
	"div": func(a, b int) int { return a / b },
	"seq": func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = i
		}
		return s
	},
}

// Set is the parsed template set of all WGSL files.
type Set struct{ t *template.Template }

// Load parses every embedded WGSL template.
func Load() (*Set, error) {
	t, err := template.New("").Option("missingkey=error").Funcs(funcs).ParseFS(files, "*.wgsl")
	if err != nil {
		return nil, fmt.Errorf("parse WGSL templates: %w", err)
	}
	return &Set{t: t}, nil
}

// Render returns the WGSL source of kernel name specialised with data.
func (s *Set) Render(name string, data any) (string, error) {
	if s.t.Lookup(name) == nil {
		return "", fmt.Errorf("shader %q: no such kernel template", name)
	}
	var b bytes.Buffer
	if err := s.t.ExecuteTemplate(&b, name, data); err != nil {
		return "", fmt.Errorf("render shader %q: %w", name, err)
	}
	return b.String(), nil
}
