// Package data loads images for webdino: Fashion-MNIST in idx format, image
// folders and ImageFolder class layouts. Bad files are reported, never fatal.
package data

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// FashionMNISTDir is where Debian's dataset-fashion-mnist package puts the files.
const FashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// FashionMNISTClasses are the label names in index order.
var FashionMNISTClasses = []string{
	"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
	"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
}

// Gray is a set of same-sized 8-bit grayscale images with integer labels.
type Gray struct {
	N, H, W int
	Pixels  []uint8 // N*H*W, row-major
	Labels  []int   // N, or nil
}

// Image returns the pixels of image i.
func (g *Gray) Image(i int) []uint8 { return g.Pixels[i*g.H*g.W : (i+1)*g.H*g.W] }

// LoadFashionMNIST reads the "train" or "t10k" split from dir.
func LoadFashionMNIST(dir, split string) (*Gray, error) {
	if split != "train" && split != "t10k" {
		return nil, fmt.Errorf("fashion-mnist: split %q, want train or t10k", split)
	}
	images := filepath.Join(dir, split+"-images-idx3-ubyte.gz")
	labels := filepath.Join(dir, split+"-labels-idx1-ubyte.gz")
	g, err := readIdxImages(images)
	if err != nil {
		return nil, fmt.Errorf("%w (install Debian's dataset-fashion-mnist package: `make setup`)", err)
	}
	l, err := readIdxLabels(labels)
	if err != nil {
		return nil, err
	}
	if len(l) != g.N {
		return nil, fmt.Errorf("fashion-mnist %s: %d images but %d labels", split, g.N, len(l))
	}
	g.Labels = l
	return g, nil
}

func openIdx(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(path, ".gz") {
		return f, nil
	}
	z, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{z, f}, nil
}

// readIdxHeader checks the magic (two zero bytes, type 0x08 = u8, rank) and
// returns the dimensions.
func readIdxHeader(r io.Reader, path string, rank int) ([]int, error) {
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, fmt.Errorf("%s: read idx header: %w", path, err)
	}
	if magic[0] != 0 || magic[1] != 0 || magic[2] != 8 || int(magic[3]) != rank {
		return nil, fmt.Errorf("%s: not an idx file of rank %d u8 (magic % x)", path, rank, magic)
	}
	dims := make([]int, rank)
	for i := range dims {
		var d uint32
		if err := binary.Read(r, binary.BigEndian, &d); err != nil {
			return nil, fmt.Errorf("%s: read idx dims: %w", path, err)
		}
		if d == 0 || d > 1<<24 {
			return nil, fmt.Errorf("%s: implausible idx dimension %d", path, d)
		}
		dims[i] = int(d)
	}
	return dims, nil
}

func readIdxImages(path string) (*Gray, error) {
	f, err := openIdx(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dims, err := readIdxHeader(f, path, 3)
	if err != nil {
		return nil, err
	}
	if dims[1]*dims[2] > 1<<20 {
		return nil, fmt.Errorf("%s: images of %dx%d are too large for idx", path, dims[1], dims[2])
	}
	g := &Gray{N: dims[0], H: dims[1], W: dims[2]}
	g.Pixels = make([]uint8, g.N*g.H*g.W)
	if _, err := io.ReadFull(f, g.Pixels); err != nil {
		return nil, fmt.Errorf("%s: truncated: %w", path, err)
	}
	return g, nil
}

func readIdxLabels(path string) ([]int, error) {
	f, err := openIdx(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dims, err := readIdxHeader(f, path, 1)
	if err != nil {
		return nil, err
	}
	raw := make([]uint8, dims[0])
	if _, err := io.ReadFull(f, raw); err != nil {
		return nil, fmt.Errorf("%s: truncated: %w", path, err)
	}
	out := make([]int, len(raw))
	for i, v := range raw {
		out[i] = int(v)
	}
	return out, nil
}

// Subset keeps the first n images (all of them when n <= 0 or n >= N).
func (g *Gray) Subset(n int) *Gray {
	if n <= 0 || n >= g.N {
		return g
	}
	s := &Gray{N: n, H: g.H, W: g.W, Pixels: g.Pixels[:n*g.H*g.W]}
	if g.Labels != nil {
		s.Labels = g.Labels[:n]
	}
	return s
}

// GrayDataset is a Gray set as a Dataset: each image copied to three
// channels, paths "<Name>/<index>".
type GrayDataset struct {
	*Gray
	Name string
}

func (d GrayDataset) Len() int          { return d.N }
func (d GrayDataset) Path(i int) string { return fmt.Sprintf("%s/%d", d.Name, i) }
func (d GrayDataset) Label(i int) int {
	if d.Labels == nil {
		return -1
	}
	return d.Labels[i]
}

// Load returns image i as RGB.
func (d GrayDataset) Load(i int) (*RGB, error) {
	src := d.Image(i)
	pix := make([]uint8, 3*len(src))
	for j, v := range src {
		pix[3*j], pix[3*j+1], pix[3*j+2] = v, v, v
	}
	return &RGB{H: d.H, W: d.W, Pix: pix}, nil
}
