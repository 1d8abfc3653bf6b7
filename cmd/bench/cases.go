package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// benchCase is one timed kernel workload. setup allocates its tensors from e
// (released after the case) and returns the function that records one run.
// flops is the arithmetic of one run (reported in GFLOP/s against the FMA
// peak); memory-bound cases leave it 0 and set bytes, the bytes read plus
// written (GB/s against the copy bandwidth). numpy, when set, times the same
// matmul with numpy as a baseline.
type benchCase struct {
	name   string
	flops  float64
	bytes  float64
	numpy  *npMatMul
	matmul *mmCase // the shape of a matmul case (tilingCases re-times it)
	setup  func(e *env) func(rec *gpu.Recorder) error
}

// sizes are the shapes of one run: ViT-S/14 training shapes, or small ones
// for -quick.
type sizes struct {
	tokens  int      // rows of the activations: images x 257 tokens
	linears [][2]int // in x out features of the ViT-S/14 linears: qkv, fc1, fc2
	square  int      // a square matmul for comparison with other reports
	fmaWG   int      // workgroups of the FMA peak kernel
	fmaIter int      // steps of each FMA chain
	copyLen int      // floats copied by the bandwidth kernel (beyond the caches)
}

var (
	fullSizes = sizes{tokens: 8 * 257, linears: [][2]int{{384, 1152}, {384, 1536}, {1536, 384}}, square: 1024,
		fmaWG: 1024, fmaIter: 512, copyLen: 16 << 20}
	quickSizes = sizes{tokens: 257, linears: [][2]int{{96, 288}, {96, 384}, {384, 96}}, square: 256,
		fmaWG: 128, fmaIter: 128, copyLen: 1 << 20}
)

// The ceilings every case is divided by.
const (
	peakFMA  = "peak/fma"
	peakCopy = "peak/copy"
)

const (
	fmaWGSize = 64 // invocations per workgroup of bench_fma
	// fmaChains is the independent vec4 chains per invocation. Mesa 26's
	// lavapipe needs many to hide its latency (GFLOP/s at 2, 6, 16, 32 chains:
	// 17, 49, 64, 66; Mesa 25.0: 52, 86, 94, 95), so fewer would understate its
	// ceiling and flatter every ratio.
	fmaChains = 16
)

func ceilings(s sizes) []benchCase {
	chains := make([]int, fmaChains)
	for i := range chains {
		chains[i] = i
	}
	n := s.fmaWG * fmaWGSize
	return []benchCase{{
		name:  peakFMA,
		flops: float64(n) * float64(s.fmaIter) * fmaChains * 4 * 2,
		setup: func(e *env) func(*gpu.Recorder) error {
			y := e.zeros(n * 4)
			k := gpu.Kernel{Name: "bench_fma", Data: struct {
				WG     int
				Chains []int
			}{fmaWGSize, chains}, Access: []gpu.Access{gpu.ReadWrite}}
			return func(rec *gpu.Recorder) error {
				return rec.Dispatch(k, rec.Groups(n, fmaWGSize), []uint32{gpu.U32(s.fmaIter), gpu.F32(0.999), gpu.F32(0.001)}, y)
			}
		},
	}, {
		name:  peakCopy,
		bytes: 2 * 4 * float64(s.copyLen),
		setup: func(e *env) func(*gpu.Recorder) error {
			x, y := e.randn(s.copyLen), e.zeros(s.copyLen)
			k := gpu.Kernel{Name: "bench_copy", Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
			return func(rec *gpu.Recorder) error {
				return rec.Dispatch(k, rec.Groups(s.copyLen/4, 256), []uint32{gpu.U32(s.copyLen / 4)}, x, y)
			}
		},
	}}
}

// kernelCases lists the timed workloads. Adding an op is one entry: a name
// (family/shape), its flops or bytes per run, and a setup that allocates
// inputs with e.randn or e.zeros and returns a closure recording the op, e.g.
//
//	{name: "layernorm/2056x384", bytes: 2 * 4 * 2056 * 384, setup: func(e *env) func(*gpu.Recorder) error {
//		x, y := e.randn(2056, 384), e.zeros(2056, 384)
//		return func(rec *gpu.Recorder) error { return nn.LayerNorm(rec, y, x, ...) }
//	}}
//
// The ops after matmul are counted this way: attention over T = 257 tokens,
// H = 6 heads of D = 64 dims per image does 4*T*T*D*H flops forward (Q K^T
// and P V) and 3x that forward+backward; LayerNorm and softmax are memory
// bound, so they report bytes read plus written.
func kernelCases(s sizes) []benchCase {
	var cs []benchCase
	T := s.tokens
	for _, l := range s.linears {
		in, out := l[0], l[1]
		// A linear layer y = x W^T with W [out, in], and its two gradients:
		// dx = dy W and dW = dy^T x.
		cs = append(cs,
			matmulCase("linear_fwd", T, in, out, false, true),
			matmulCase("linear_dx", T, out, in, false, false),
			matmulCase("linear_dw", out, T, in, true, false))
	}
	cs = append(cs, matmulCase("matmul", s.square, s.square, s.square, false, false))
	B, D := T/257, s.linears[0][0]
	// Attention both ways, at ViT-S/14's 257 tokens and at the demo's 50
	// (the global crops of a batch of 64, heads of 16).
	for _, fused := range []bool{false, true} {
		cs = append(cs, attentionCase(B, 257, D/64, 64, false, fused), attentionCase(B, 257, D/64, 64, true, fused),
			attentionCase(128, 50, 4, 16, false, fused), attentionCase(128, 50, 4, 16, true, fused))
	}
	cs = append(cs, rowCase("layernorm", T, D), rowCase("softmax", B*(D/64)*257, 257))
	return cs
}

// attentionCase is multi-head attention over B images of T tokens, H heads
// of Dh, composed or fused (nn.NewAttnTensors), forward (4 B H T^2 Dh FLOPs
// in the two matmuls) or forward and backward (the backward adds the
// recomputed scores and four matmuls: 16 B H T^2 Dh in all). The fused
// backward recomputes more than that; it is credited with the same FLOPs,
// so that the two ways compare by their figures.
func attentionCase(B, T, H, Dh int, backward, fused bool) benchCase {
	kind, flops := "attention_fwd", 4.0
	if backward {
		kind, flops = "attention_fwd_bwd", 16.0
	}
	if fused {
		kind = strings.Replace(kind, "attention", "attention_fused", 1)
	}
	name := fmt.Sprintf("%s/B%d_T%d_H%d_Dh%d", kind, B, T, H, Dh)
	return benchCase{
		name:  name,
		flops: flops * float64(B*H*T*T*Dh),
		setup: func(e *env) func(*gpu.Recorder) error {
			D := H * Dh
			out, dqkv := e.zeros(B, T, D), e.zeros(B, T, 3*D)
			randn := func(shape ...int) *gpu.Tensor { return e.randn(shape...) }
			a, g := nn.NewAttnTensors(randn, B, T, H, Dh, fused), nn.NewAttnGrads(randn, B, T, H, Dh, fused)
			scale := float32(1 / math.Sqrt(float64(Dh)))
			return func(rec *gpu.Recorder) error {
				if err := nn.Attention(rec, out, scale, a); err != nil || !backward {
					return err
				}
				return nn.AttentionBackward(rec, dqkv, out, scale, a, g)
			}
		},
	}
}

// rowCase is a row op over R rows of D: LayerNorm (reads x, writes y) or
// softmax; memory-bound, so reported in GB/s against the copy bandwidth.
func rowCase(op string, R, D int) benchCase {
	return benchCase{
		name:  fmt.Sprintf("%s/%dx%d", op, R, D),
		bytes: 2 * 4 * float64(R*D),
		setup: func(e *env) func(*gpu.Recorder) error {
			x, y := e.randn(R, D), e.zeros(R, D)
			if op == "softmax" {
				return func(rec *gpu.Recorder) error { return nn.Softmax(rec, y, x, 1) }
			}
			gamma, beta, mean, rstd := e.randn(D), e.randn(D), e.zeros(R), e.zeros(R)
			return func(rec *gpu.Recorder) error { return nn.LayerNorm(rec, y, mean, rstd, x, gamma, beta, 1e-6) }
		},
	}
}

// tilingCases time every matmul case of cs again through matmul_tiled with
// each tiling, named matmul_tiled/TILING/family/MxKxN.
func tilingCases(cs []benchCase, tilings []nn.Tiling) []benchCase {
	var out []benchCase
	for _, t := range tilings {
		for _, c := range cs {
			if m := c.matmul; m != nil {
				out = append(out, matmulCase(fmt.Sprintf("matmul_tiled/%s/%s", tilingName(t), m.family), m.M, m.K, m.N, m.ta, m.tb, t))
			}
		}
	}
	return out
}

// tilingName writes t as -tilings reads it: TILExBK, then c for Contig, w
// for Spread, p for Prefetch, v for Vec and sN for Split N.
func tilingName(t nn.Tiling) string {
	s := fmt.Sprintf("%dx%d", t.Tile, t.BK)
	for _, f := range []struct {
		on     bool
		letter string
	}{{t.Contig, "c"}, {t.Spread, "w"}, {t.Prefetch, "p"}, {t.Vec, "v"}} {
		if f.on {
			s += f.letter
		}
	}
	if t.Split > 0 {
		s += fmt.Sprintf("s%d", t.Split)
	}
	return s
}

// parseTilings reads -tilings: comma-separated TILExBK[c][p][v][sN], e.g.
// 8x8,4x16cpv,4x16cps1.
func parseTilings(s string) ([]nn.Tiling, error) {
	var ts []nn.Tiling
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		var t nn.Tiling
		base := f
		if i := strings.LastIndexByte(f, 's'); i >= 0 {
			n, err := strconv.Atoi(f[i+1:])
			if err != nil || n < 1 {
				return nil, fmt.Errorf("-tilings %q: want sN with N >= 1 parts of k at the end", f)
			}
			base, t.Split = f[:i], n
		}
		tiles := strings.TrimRight(base, "cwpv")
		flags := base[len(tiles):]
		t.Contig, t.Spread = strings.Contains(flags, "c"), strings.Contains(flags, "w")
		t.Prefetch, t.Vec = strings.Contains(flags, "p"), strings.Contains(flags, "v")
		if _, err := fmt.Sscanf(tiles, "%dx%d", &t.Tile, &t.BK); err != nil || tilingName(t) != f {
			return nil, fmt.Errorf("-tilings %q: want TILExBK, then c (contiguous), w (spread columns), p (prefetch), v (vec4 loads) and sN (k in N parts) if wanted, in that order, e.g. 8x8,4x16cpv,8x8cwp,4x16cps1", f)
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// mmCase is what matmulCase was given.
type mmCase struct {
	family  string
	M, K, N int
	ta, tb  bool
}

// matmulCase is C[M,N] = op(A) op(B) with A stored [M,K] ([K,M] if ta) and B
// stored [K,N] ([N,K] if tb), named family/MxKxN, through nn.MatMul or, with
// a tiling, nn.MatMulTiled (no numpy twin then: its figures compare tilings).
func matmulCase(family string, M, K, N int, ta, tb bool, tiling ...nn.Tiling) benchCase {
	aShape, bShape := []int{M, K}, []int{K, N}
	if ta {
		aShape = []int{K, M}
	}
	if tb {
		bShape = []int{N, K}
	}
	name := fmt.Sprintf("%s/%dx%dx%d", family, M, K, N)
	c := benchCase{
		name:   name,
		flops:  2 * float64(M) * float64(K) * float64(N),
		numpy:  &npMatMul{Name: name, A: aShape, B: bShape, TransA: ta, TransB: tb},
		matmul: &mmCase{family, M, K, N, ta, tb},
		setup: func(e *env) func(*gpu.Recorder) error {
			a, b, c := e.randn(aShape...), e.randn(bShape...), e.zeros(M, N)
			return func(rec *gpu.Recorder) error {
				o := nn.MatMulOpts{TransA: ta, TransB: tb}
				if len(tiling) > 0 {
					return nn.MatMulTiled(rec, c, a, b, o, tiling[0])
				}
				return nn.MatMul(rec, c, a, b, o)
			}
		},
	}
	if len(tiling) > 0 {
		c.numpy, c.matmul = nil, nil
	}
	return c
}
