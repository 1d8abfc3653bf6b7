//go:build !js

package embed

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/data"
)

func TestGroupsBySize(t *testing.T) {
	b := &data.Batch{Images: []*data.RGB{{H: 70, W: 90}, {H: 56, W: 56}, {H: 140, W: 180}, {H: 80, W: 60}}}
	o := Options{AnySize: true, Short: 28}.withDefaults()
	gs, err := o.groups(b, 14)
	require.NoError(t, err)
	// 70x90 and 140x180 share 28x42; groups follow their first image.
	require.Equal(t, []group{{[]int{0, 2}, 28, 42}, {[]int{1}, 28, 28}, {[]int{3}, 42, 28}}, gs)

	gs, err = Options{}.withDefaults().groups(b, 14)
	require.NoError(t, err)
	require.Equal(t, []group{{[]int{0, 1, 2, 3}, 224, 224}}, gs)
}
