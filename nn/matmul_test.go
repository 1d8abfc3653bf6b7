//go:build !js

package nn

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn/ref"
)

// f32 accumulation over K terms of unit-variance products: the rounding
// error grows like sqrt(K) * 2^-24 * |terms|; 1e-4 absolute covers K <= 1000
// with a wide margin while a wrong index gives O(1) errors.
const mmAtol, mmRtol = 1e-4, 1e-4

func TestMatMulAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// Edges that are not multiples of any tile, M or N = 1, batch 1. Each
	// case runs with matmul_bcast wherever it can (it takes untransposed A when N,
	// or K with B transposed, is a multiple of 4; the last cases need
	// several uniform windows, starting off the alignment: batches 0-5 and
	// 6-8 of [9,50,50], rows 0-159 and 160-299 of each [300,64]) and not
	// (then the vec4 kernel takes the shapes whose B axis along its vec4s is
	// a multiple of 4, reading A as scalars where A's is not, as in
	// [9,50,50] x [50,12], and with the wide tile in [2,30,21] x [21,68] and
	// A^T at M 257; the fallback the rest); then through matmul_tiled
	// with both thread tiles (a GPU's kernel, which these take on a GPU
	// whatever bcast says).
	cases := []struct{ batch, M, N, K int }{
		{1, 1, 1, 1}, {1, 7, 13, 5}, {3, 33, 65, 17}, {2, 70, 3, 129}, {1, 257, 97, 64},
		{1, 4, 4, 4}, {2, 20, 36, 12}, {1, 1, 8, 4}, {3, 8, 1, 8}, {1, 68, 44, 40}, {2, 12, 8, 21},
		{9, 50, 12, 50}, {2, 300, 20, 64}, {2, 30, 68, 21},
	}
	for _, c := range cases {
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				for _, shared := range []bool{false, true} {
					for _, k := range matmulKernels {
						name := fmt.Sprintf("b%d_%dx%dx%d_ta%v_tb%v_shared%v_%s", c.batch, c.M, c.N, c.K, ta, tb, shared, k.name)
						t.Run(name, func(t *testing.T) {
							a64, a32 := randn(rng, c.batch*c.M*c.K, 1)
							nb := c.batch
							if shared {
								nb = 1
							}
							b64, b32 := randn(rng, nb*c.K*c.N, 1)
							aShape := []int{c.batch, c.M, c.K}
							if ta {
								aShape = []int{c.batch, c.K, c.M}
							}
							bShape := []int{nb, c.K, c.N}
							if tb {
								bShape = []int{nb, c.N, c.K}
							}
							if shared {
								bShape = bShape[1:]
							}
							a, b := upload(t, a32, aShape...), upload(t, b32, bShape...)
							out := zeros(t, c.batch, c.M, c.N)
							rec := dev.Record()
							require.NoError(t, k.matMul(rec, out, a, b, MatMulOpts{TransA: ta, TransB: tb}))
							run(t, rec)
							want := ref.MatMul(a64, b64, c.batch, c.M, c.N, c.K, ta, tb, shared)
							requireClose(t, want, read(t, out), mmAtol, mmRtol, name)
						})
					}
				}
			}
		}
	}
}

// matmulKernels are the ways through matMul the tests take: matmul_bcast
// wherever it can run, or never (then matmul_vec4 or the fallback), or
// with A in storage after the operands that do not run along k are
// transposed (bcastRows: K a multiple of 4, else as nobcast), and
// matmul_tiled with each tiling (a GPU's kernel, which the first two also
// take on a GPU).
var matmulKernels = []matmulKernel{
	{name: "bcast", bcast: bcastAlways}, {name: "nobcast"}, {name: "bcastrows", bcast: bcastStorage},
	{"tiled4", Tiling{Tile: 4, BK: 16}, bcastNever}, {"tiled8", Tiling{Tile: 8, BK: 8}, bcastNever},
	{"tiled4c", Tiling{Tile: 4, BK: 16, Contig: true}, bcastNever}, {"tiled8c", Tiling{Tile: 8, BK: 4, Contig: true}, bcastNever},
	{"tiled8cp", Tiling{Tile: 8, BK: 8, Contig: true, Prefetch: true}, bcastNever}, {"tiled4p", Tiling{Tile: 4, BK: 8, Prefetch: true}, bcastNever},
	{"tiled4cpv", Tiling{Tile: 4, BK: 16, Contig: true, Prefetch: true, Vec: true}, bcastNever}, {"tiled8v", Tiling{Tile: 8, BK: 8, Vec: true}, bcastNever},
	{"tiled8cwp", Tiling{Tile: 8, BK: 8, Contig: true, Spread: true, Prefetch: true}, bcastNever},
	{"tiled4s3", Tiling{Tile: 4, BK: 16, Split: 3}, bcastNever},
	{"tiled4cpvs3", Tiling{Tile: 4, BK: 16, Contig: true, Prefetch: true, Vec: true, Split: 3}, bcastNever},
}

type matmulKernel struct {
	name   string
	tiling Tiling
	bcast  bcastUse
}

func (k matmulKernel) matMul(rec *gpu.Recorder, c, a, b *gpu.Tensor, o MatMulOpts) error {
	if k.tiling.Tile > 0 {
		return MatMulTiled(rec, c, a, b, o, k.tiling)
	}
	return matMul(rec, c, a, b, o, Tiling{}, k.bcast)
}

func TestMatMulEpilogue(t *testing.T) {
	// All kernels: 23 columns of A take the fallback, 24 the vec4 kernel
	// or, forced, matmul_bcast; and matmul_tiled.
	for _, K := range []int{23, 24} {
		for _, k := range matmulKernels {
			t.Run(fmt.Sprint("K", K, "_", k.name), func(t *testing.T) { testMatMulEpilogue(t, 19, 37, K, k) })
		}
	}
}

func testMatMulEpilogue(t *testing.T, M, N, K int, k matmulKernel) {
	// C = C0 + rowscale * scale * gelu(A B^T + bias), with the
	// pre-activation saved: the fused path of a ViT MLP's first layer
	// followed by LayerScale and stochastic depth. A is [3, M/3.., K] so the
	// row factors must follow the batch.
	rng := rand.New(rand.NewPCG(3, 4))
	a64, a32 := randn(rng, M*K, 1)
	w64, w32 := randn(rng, N*K, 0.3)
	b64, b32 := randn(rng, N, 1)
	s64, s32 := randn(rng, N, 1)
	c64, c32 := randn(rng, M*N, 1)
	r64, r32 := randn(rng, M, 1)
	out := upload(t, c32, M, N)
	pre := zeros(t, M, N)
	rec := dev.Record()
	require.NoError(t, k.matMul(rec, out, upload(t, a32, M, K), upload(t, w32, N, K), MatMulOpts{
		TransB: true, Bias: upload(t, b32, N), Act: GELU, PreAct: pre, Scale: upload(t, s32, N), Accumulate: true,
		RowScale: upload(t, r32, M),
	}))
	run(t, rec)
	h := ref.MatMul(a64, w64, 1, M, N, K, false, true, true)
	want := make([]float64, M*N)
	for i := range h {
		h[i] += b64[i%N]
		want[i] = c64[i] + r64[i/N]*s64[i%N]*ref.GELU(h[i])
	}
	requireClose(t, h, read(t, pre), mmAtol, mmRtol, "pre-activation")
	// The GPU erf approximation is good to 1.5e-7 absolute.
	requireClose(t, want, read(t, out), mmAtol, mmRtol, "output")
}

// TestMatMulGELUGrad checks the GELU backward fused into a product,
// dx = (dy W) * GELU'(h), on every kernel (23 columns of dy take the
// fallback, 24 the vec4 kernel or, forced, matmul_bcast), and the refusal
// of a wrongly sized h.
func TestMatMulGELUGrad(t *testing.T) {
	const M, N = 19, 37
	rng := rand.New(rand.NewPCG(9, 10))
	for _, K := range []int{23, 24} {
		for _, k := range matmulKernels {
			t.Run(fmt.Sprint("K", K, "_", k.name), func(t *testing.T) {
				dy64, dy32 := randn(rng, M*K, 1)
				w64, w32 := randn(rng, K*N, 0.3)
				h64, h32 := randn(rng, M*N, 2)
				out := zeros(t, M, N)
				rec := dev.Record()
				require.NoError(t, k.matMul(rec, out, upload(t, dy32, M, K), upload(t, w32, K, N), MatMulOpts{GELUGradAt: upload(t, h32, M, N)}))
				run(t, rec)
				want := ref.MatMul(dy64, w64, 1, M, N, K, false, false, false)
				for i := range want {
					want[i] *= ref.GELUGrad(h64[i])
				}
				requireClose(t, want, read(t, out), mmAtol, mmRtol, "dx")
			})
		}
	}
	err := MatMul(dev.Record(), zeros(t, M, N), zeros(t, M, 4), zeros(t, 4, N), MatMulOpts{GELUGradAt: zeros(t, M)})
	require.ErrorContains(t, err, "matmul: GELU gradient at [19] for output [19x37]: want C's size, and no heads layout")
}

func TestMatMulRowScaleBatched(t *testing.T) {
	// A [3, 5, 8] times a shared B^T [6, 8]: row factors index rows over all
	// batches.
	rng := rand.New(rand.NewPCG(7, 8))
	const batch, M, N, K = 3, 5, 6, 8
	a64, a32 := randn(rng, batch*M*K, 1)
	w64, w32 := randn(rng, N*K, 1)
	r64, r32 := randn(rng, batch*M, 1)
	out := zeros(t, batch, M, N)
	rec := dev.Record()
	before := dev.FLOPs()
	require.NoError(t, MatMul(rec, out, upload(t, a32, batch, M, K), upload(t, w32, N, K), MatMulOpts{TransB: true, RowScale: upload(t, r32, batch*M)}))
	require.Equal(t, int64(2*batch*M*N*K), dev.FLOPs()-before, "the product's multiply-adds, counted for benchmarks")
	run(t, rec)
	want := ref.MatMul(a64, w64, batch, M, N, K, false, true, true)
	for i := range want {
		want[i] *= r64[i/N]
	}
	requireClose(t, want, read(t, out), mmAtol, mmRtol, "batched row scale")
	err := MatMul(dev.Record(), out, upload(t, a32, batch, M, K), upload(t, w32, N, K), MatMulOpts{TransB: true, RowScale: zeros(t, M)})
	require.ErrorContains(t, err, "matmul: row scale [5] for 15 rows")
}

func TestMatMulSplitKScratchGrows(t *testing.T) {
	// Two split-K products in one recording, the second needing more
	// scratch than the first got: the first must still read its own
	// partial sums (the outgrown buffer stays alive), and both agree with
	// the reference.
	rng := rand.New(rand.NewPCG(9, 10))
	tiling := Tiling{Tile: 4, BK: 16, Split: 4}
	rec := dev.Record()
	type product struct {
		M, N, K int
		want    []float64
		out     *gpu.Tensor
	}
	ps := []*product{{M: 5, N: 6, K: 200}, {M: 40, N: 33, K: 300}}
	for _, p := range ps {
		a64, a32 := randn(rng, p.K*p.M, 1)
		b64, b32 := randn(rng, p.K*p.N, 1)
		p.out = zeros(t, p.M, p.N)
		require.NoError(t, MatMulTiled(rec, p.out, upload(t, a32, p.K, p.M), upload(t, b32, p.K, p.N), MatMulOpts{TransA: true}, tiling))
		p.want = ref.MatMul(a64, b64, 1, p.M, p.N, p.K, true, false, true)
	}
	run(t, rec)
	for _, p := range ps {
		requireClose(t, p.want, read(t, p.out), mmAtol, mmRtol, fmt.Sprintf("%dx%dx%d", p.M, p.K, p.N))
	}
}

func TestSplitK(t *testing.T) {
	// A ViT-S/14 weight gradient, dW [1536, 384] over 64 x 257 tokens: 144
	// blocks of 64 x 64, so 4 parts of 4112 k for 576 workgroups.
	require.Equal(t, 4, splitK(144, 1536*384, 16448))
	// [384, 384]: 36 blocks; 15 parts would reach 512 workgroups.
	require.Equal(t, 15, splitK(36, 384*384, 16448))
	// Enough workgroups already, or too short a k: no split.
	require.Equal(t, 1, splitK(600, 1<<20, 1<<20))
	require.Equal(t, 1, splitK(256, 1024*1024, 1024))
	require.Equal(t, 3, splitK(198, 2056*384, 1536))
	require.Equal(t, 1, splitK(4, 64*64, 700))
	// Capped at 32 parts and at 2^24 partial floats.
	require.Equal(t, 32, splitK(1, 64*64, 1<<20))
	require.Equal(t, 2, splitK(1, 1<<23, 1<<20))
}

// On a GPU, the 128 x 128 blocks of wideTiling go to the unbatched products
// they keep busy, the ones bench kernels measured faster with them on an H100.
func TestWideFills(t *testing.T) {
	for _, s := range [][3]int{ // M, K, N measured faster wide
		{16448, 384, 1152}, {16448, 1152, 384}, {16448, 384, 1536}, {16448, 1536, 384}, // 387-1548 blocks
		{1152, 16448, 384}, {1536, 16448, 384}, {384, 16448, 1536}, // split 15-19 ways
		{8224, 384, 1536}, {8224, 384, 1152}, {1152, 8224, 384}, {1536, 8224, 384}, {4112, 384, 1536},
	} {
		require.True(t, wideFills(s[0], s[1], s[2]), "%v", s)
	}
	for _, s := range [][3]int{ // measured slower wide
		{2056, 384, 1152}, {2056, 1152, 384}, {2056, 384, 1536}, {2056, 1536, 384},
		{1152, 2056, 384}, {1536, 2056, 384}, {384, 2056, 1536}, {1024, 1024, 1024},
		{8224, 1152, 384}, {8224, 1536, 384}, // 195 blocks split in 2 or 3
		{4112, 384, 1152}, {4112, 1152, 384}, {1536, 4112, 384},
	} {
		require.False(t, wideFills(s[0], s[1], s[2]), "%v", s)
	}
}

// MatMul takes matmul_bcast where lavapipe ran it faster than matmul_vec4
// (the shapes of bcastPays' comment), and wherever matmul_vec4 cannot run.
func TestBcastPays(t *testing.T) {
	for _, c := range []struct {
		K, N int
		want bool
	}{
		{256, 64, false}, {128, 64, false}, {256, 128, false}, {128, 128, false}, // demo MLP products
		{16, 50, false}, {16, 10, false}, // demo attention q k^T
		{64, 64, true}, {64, 192, true}, {64, 257, true}, // demo qkv and projection, ViT-S q k^T
		{384, 1152, true}, {1536, 384, true}, {384, 1536, true}, // ViT-S linear layers
	} {
		require.Equal(t, c.want, bcastPays(c.K, c.N), "K %d, N %d", c.K, c.N)
	}
	// P V of the demo's attention (K 50: no vec4 along A) takes matmul_vec4
	// reading A as scalars: one dispatch, where matmul_bcast took one per
	// 6 images (on a CPU device; a GPU takes matmul_tiled).
	if !dev.Info().IsCPU() {
		return
	}
	p, v, out := zeros(t, 64, 50, 50), zeros(t, 64, 50, 16), zeros(t, 64, 50, 16)
	prof := gpu.NewProfile()
	dev.SetProfile(prof)
	defer dev.SetProfile(nil)
	rec := dev.Record()
	require.NoError(t, MatMul(rec, out, p, v, MatMulOpts{}))
	run(t, rec)
	var kernels []string
	for _, e := range prof.Entries() {
		kernels = append(kernels, e.Kernel)
	}
	require.Len(t, kernels, 1)
	require.True(t, strings.HasPrefix(kernels[0], "matmul_vec4"), "P V ran as %v", kernels)
}

func TestPlanBcast(t *testing.T) {
	// A browser's limits: 64 KiB uniform bindings on 256-byte offsets, so
	// 16384 - 64 floats of data per window.
	l := gpu.Limits{UniformOffsetAlign: 256, MaxUniformBinding: 64 << 10}
	// [48 heads, 257 tokens, 64]: 16448 floats per batch exceed a window,
	// so two row ranges of each, of whole 32-row tiles.
	p, ok := planBcast(l, 48, 257, 64)
	require.True(t, ok)
	require.Equal(t, []bcastWindow{{0, 1, 0, 160}, {0, 1, 160, 257}}, p.windows[:2])
	require.Len(t, p.windows, 96)
	require.Equal(t, 32, p.tm)
	// [100, 50, 50]: 2500 floats per batch, 6 batches per window.
	p, ok = planBcast(l, 100, 50, 50)
	require.True(t, ok)
	require.Len(t, p.windows, 17)
	require.Equal(t, bcastWindow{96, 4, 0, 50}, p.windows[16])
	require.Equal(t, 32, p.tm)
	// [3, 10, 64]: one window, tiles of 16 rows (a power of two).
	p, ok = planBcast(l, 3, 10, 64)
	require.True(t, ok)
	require.Equal(t, []bcastWindow{{0, 3, 0, 10}}, p.windows)
	require.Equal(t, 16, p.tm)
	// [1, 3, 8000]: two rows a window, in tiles of 2 (no tile overhangs).
	p, ok = planBcast(l, 1, 3, 8000)
	require.True(t, ok)
	require.Equal(t, []bcastWindow{{0, 1, 0, 2}, {0, 1, 2, 3}}, p.windows)
	require.Equal(t, 2, p.tm)
	// [1, 40, 1100]: 14 rows fit a window; 3 windows of 14, 14, 12 rows
	// (never more than fit, though tiles of 16 overhang by an eighth).
	p, ok = planBcast(l, 1, 40, 1100)
	require.True(t, ok)
	require.Equal(t, []bcastWindow{{0, 1, 0, 14}, {0, 1, 14, 28}, {0, 1, 28, 40}}, p.windows)
	require.Equal(t, 16, p.tm)
	// [1, 2056, 1536] (fc2 of 8 images): 10 rows fit; tiles of 16 would
	// overhang by 6, so tiles of 10.
	p, ok = planBcast(l, 1, 2056, 1536)
	require.True(t, ok)
	require.Equal(t, 10, p.tm)
	require.Equal(t, bcastWindow{0, 1, 0, 10}, p.windows[0])
	// Every window fits, for many shapes.
	for M := 1; M < 300; M += 7 {
		for K := 1; K < 3000; K += 37 {
			p, ok := planBcast(l, 2, M, K)
			require.True(t, ok)
			covered := 0
			for _, w := range p.windows {
				require.LessOrEqual(t, ((w.batches-1)*M+w.rowHi-w.rowLo)*K, 16320, "M %d K %d %v", M, K, w)
				covered += w.batches * (w.rowHi - w.rowLo)
				if w.batches == 1 && w.rowHi-w.rowLo < M {
					// A row range: its tiles overhang what fits by at most an eighth.
					require.LessOrEqual(t, 8*(p.tm-16320/K), p.tm, "M %d K %d tm %d", M, K, p.tm)
				}
			}
			require.Equal(t, 2*M, covered, "M %d K %d", M, K)
		}
	}
	// A row longer than a window: no plan.
	_, ok = planBcast(l, 1, 2, 16384-63)
	require.False(t, ok)
}

// TestMatMulHeads checks HeadsLayout on every kernel: the qkv Linear split
// into three parts of [B, H, T, Dh] (odd T, parts a padded stride apart,
// whose gaps must stay untouched), a one-part split of y = x W, and a head
// merge (P V, and P^T dO with A transposed, accumulating) into part 1 of a
// token-major [B, T, 3D].
func TestMatMulHeads(t *testing.T) {
	const B, T, H, Dh = 3, 7, 2, 6
	const D = H * Dh
	rng := rand.New(rand.NewPCG(7, 8))
	split := func(y []float64, parts int, out []float64) {
		stride := PartStride(B*T, D)
		for r := 0; r < B*T; r++ {
			for n := 0; n < parts*D; n++ {
				part, h, d := n/D, n%D/Dh, n%Dh
				out[part*stride+((r/T*H+h)*T+r%T)*Dh+d] = y[r*parts*D+n]
			}
		}
	}
	for _, K := range []int{20, 21} {
		for _, k := range matmulKernels {
			t.Run(fmt.Sprint("K", K, "_", k.name), func(t *testing.T) {
				// qkv = x W^T + b, split into q, k, v.
				x64, x32 := randn(rng, B*T*K, 1)
				w64, w32 := randn(rng, 3*D*K, 0.3)
				b64, b32 := randn(rng, 3*D, 1)
				n := 2*PartStride(B*T, D) + B*T*D + 5
				c64, c32 := randn(rng, n, 1)
				out := upload(t, c32, n)
				rec := dev.Record()
				require.NoError(t, k.matMul(rec, out, upload(t, x32, B, T, K), upload(t, w32, 3*D, K), MatMulOpts{
					TransB: true, Bias: upload(t, b32, 3*D), Heads: &HeadsLayout{T: T, H: H, Dh: Dh, Parts: 3}}))
				run(t, rec)
				y := ref.MatMul(x64, w64, 1, B*T, 3*D, K, false, true, true)
				for i := range y {
					y[i] += b64[i%(3*D)]
				}
				split(y, 3, c64)
				requireClose(t, c64, read(t, out), mmAtol, mmRtol, "qkv split")

				// dO = dy W, one part.
				w64, w32 = randn(rng, K*D, 0.3)
				out = zeros(t, B, H, T, Dh)
				rec = dev.Record()
				require.NoError(t, k.matMul(rec, out, upload(t, x32, B, T, K), upload(t, w32, K, D), MatMulOpts{
					Heads: &HeadsLayout{T: T, H: H, Dh: Dh, Parts: 1}}))
				run(t, rec)
				want := make([]float64, B*T*D)
				split(ref.MatMul(x64, w64, 1, B*T, D, K, false, false, true), 1, want)
				requireClose(t, want, read(t, out), mmAtol, mmRtol, "one-part split")

				// Heads merged into part 1 of [B, T, 3D]: P V, then += P^T dO.
				p64, p32 := randn(rng, B*H*T*T, 1)
				v64, v32 := randn(rng, B*H*T*Dh, 1)
				c64, c32 = randn(rng, B*T*3*D, 1)
				out = upload(t, c32, B, T, 3*D)
				merge := &HeadsLayout{Merge: true, T: T, H: H, Dh: Dh, Parts: 3, Part: 1}
				rec = dev.Record()
				pt, vt := upload(t, p32, B*H, T, T), upload(t, v32, B*H, T, Dh)
				require.NoError(t, k.matMul(rec, out, pt, vt, MatMulOpts{Heads: merge}))
				require.NoError(t, k.matMul(rec, out, pt, vt, MatMulOpts{TransA: true, Heads: merge, Accumulate: true}))
				run(t, rec)
				pv := ref.MatMul(p64, v64, B*H, T, Dh, T, false, false, false)
				ptv := ref.MatMul(p64, v64, B*H, T, Dh, T, true, false, false)
				for bh := 0; bh < B*H; bh++ {
					for i := 0; i < T*Dh; i++ {
						c64[(bh/H*T+i/Dh)*3*D+D+bh%H*Dh+i%Dh] = pv[bh*T*Dh+i] + ptv[bh*T*Dh+i]
					}
				}
				requireClose(t, c64, read(t, out), mmAtol, mmRtol, "merge")
			})
		}
	}
}

func TestMatMulHeadsBadLayout(t *testing.T) {
	x, w := zeros(t, 2, 7, 4), zeros(t, 12, 4)
	cases := []struct {
		name string
		c    *gpu.Tensor
		o    MatMulOpts
		want string
	}{
		{"T does not divide rows", zeros(t, 256), MatMulOpts{TransB: true, Heads: &HeadsLayout{T: 5, H: 2, Dh: 2, Parts: 3}},
			"splitting needs one product of B x T rows and Parts x D columns (a shared B) into C of 3 parts 64 floats apart"},
		{"C too small", zeros(t, 2*7*12), MatMulOpts{TransB: true, Heads: &HeadsLayout{T: 7, H: 2, Dh: 2, Parts: 3}},
			"into C of 3 parts 64 floats apart"},
		{"merge of a flattened product", zeros(t, 2, 7, 12), MatMulOpts{TransB: true, Heads: &HeadsLayout{Merge: true, T: 7, H: 2, Dh: 6, Parts: 1}},
			"merging needs 1 batches of [14, 12]"},
		{"row scale", zeros(t, 256), MatMulOpts{TransB: true, RowScale: zeros(t, 14), Heads: &HeadsLayout{T: 7, H: 2, Dh: 2, Parts: 3}},
			"no pre-activation or row scale with it"},
		{"part", zeros(t, 256), MatMulOpts{TransB: true, Heads: &HeadsLayout{T: 7, H: 2, Dh: 2, Parts: 3, Part: 3}},
			"want T, H, Dh, Parts >= 1 and 0 <= Part < Parts"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := MatMul(dev.Record(), c.c, x, w, c.o)
			require.ErrorContains(t, err, "matmul: A [2x7x4] x B [12x4] -> C")
			require.ErrorContains(t, err, c.want)
		})
	}
}

func TestMatMulBadShapes(t *testing.T) {
	a, b := zeros(t, 4, 5), zeros(t, 6, 7)
	c := zeros(t, 4, 7)
	rec := dev.Record()
	err := MatMul(rec, c, a, b, MatMulOpts{})
	require.ErrorContains(t, err, "matmul: A [4x5] (transposed false) x B [6x7] (transposed false) -> C [4x7]: shapes do not agree")
	require.Error(t, rec.Submit())
	err = MatMul(dev.Record(), c, a, zeros(t, 5, 7), MatMulOpts{Bias: zeros(t, 3)})
	require.ErrorContains(t, err, "matmul: bias [3] for 7 columns")
}

func TestGELUReferenceGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	x, _ := randn(rng, 50, 2)
	w, _ := randn(rng, 50, 1)
	grad := make([]float64, len(x))
	for i := range x {
		grad[i] = w[i] * ref.GELUGrad(x[i])
	}
	checkGradient(t, func(x []float64) float64 { return dot(w, ref.Map(x, ref.GELU)) }, x, grad, "gelu")
}

var _ = gpu.Read

func TestMatMulTiledBadTiling(t *testing.T) {
	a, b, c := zeros(t, 8, 8), zeros(t, 8, 8), zeros(t, 8, 8)
	for _, tc := range []struct {
		tiling Tiling
		msg    string
	}{
		{Tiling{Tile: 6, BK: 8, Contig: true}, "Tile a multiple of 4"},
		{Tiling{Tile: 8, BK: 8, Spread: true}, "Spread only with Contig"},
		{Tiling{Tile: 0, BK: 8}, "Tile, BK >= 1"},
		{Tiling{Tile: 4, BK: 2}, "Tile BK a multiple of 16"},
		{Tiling{Tile: 4, BK: 4, Vec: true}, "64 and BK of 4 with Vec"},
		{Tiling{Tile: 4, BK: 16, Split: -1}, "Split >= 0"},
		{Tiling{Tile: 8, BK: 4096}, "bytes of workgroup memory, over the device's"},
	} {
		rec := dev.Record()
		require.ErrorContains(t, MatMulTiled(rec, c, a, b, MatMulOpts{}, tc.tiling), tc.msg)
		require.Error(t, rec.Submit(), "the failed op poisons the recording")
	}
}

// TestMatMulChunkedWeightGradient checks weight gradients dW (+)= dY^T X
// long enough in k (the tokens) that bcastRows takes them in chunks, each
// transposed into scratch, the later chunks adding into C: 4224 tokens x
// 256 columns is over maxTransposed, so 4096 tokens and then 128; 68 x 300
// takes chunks of a length that keeps each start where a storage binding
// may start on any device (with 256-byte alignment 3492 tokens of 68 rows
// would not; lavapipe asks for less).
func TestMatMulChunkedWeightGradient(t *testing.T) {
	for _, s := range []struct{ M, K, N int }{{64, 4224, 256}, {68, 4224, 300}} {
		require.Greater(t, s.K*s.N, maxTransposed)
		rng := rand.New(rand.NewPCG(11, 12))
		dy64, dy32 := randn(rng, s.K*s.M, 1)
		x64, x32 := randn(rng, s.K*s.N, 1)
		c64, c32 := randn(rng, s.M*s.N, 1)
		for _, acc := range []bool{false, true} {
			out := upload(t, c32, s.M, s.N)
			rec := dev.Record()
			require.NoError(t, matMul(rec, out, upload(t, dy32, s.K, s.M), upload(t, x32, s.K, s.N), MatMulOpts{TransA: true, Accumulate: acc}, Tiling{}, bcastStorage))
			run(t, rec)
			want := ref.MatMul(dy64, x64, 1, s.M, s.N, s.K, true, false, true)
			if acc {
				for i := range want {
					want[i] += c64[i]
				}
			}
			requireClose(t, want, read(t, out), mmAtol, mmRtol, fmt.Sprint(s, " accumulate ", acc))
		}
	}
}

// TestTransposed moves every element of batched matrices to its place, in
// the vec4 form (rows and columns multiples of 4) and the scalar one, with
// columns in runs that do not divide them evenly.
func TestTransposed(t *testing.T) {
	rng := rand.New(rand.NewPCG(61, 62))
	for _, s := range [][3]int{{6400, 64, 1}, {300, 12, 2}, {8, 4, 3}, {37, 5, 3}, {1000, 9, 1}, {2, 700, 1}} {
		rows, cols, batch := s[0], s[1], s[2]
		t.Run(fmt.Sprintf("%dx%dx%d", batch, rows, cols), func(t *testing.T) {
			x64, x32 := randn(rng, batch*rows*cols, 1)
			rec := dev.Record()
			got, err := transposed(rec, "test transposed", upload(t, x32, batch, rows, cols), batch, rows, cols)
			require.NoError(t, err)
			run(t, rec)
			want := make([]float64, len(x64))
			for b := range batch {
				for r := range rows {
					for c := range cols {
						want[(b*cols+c)*rows+r] = x64[(b*rows+r)*cols+c]
					}
				}
			}
			require.Equal(t, want, read(t, got))
		})
	}
}
