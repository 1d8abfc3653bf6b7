// Package ref is webdino's float64 CPU reference for every GPU op. It is
// written for clarity, not speed: tests compare the WGSL kernels with it and
// check its backward functions against finite differences.
package ref

import "math"

// MatMul returns C[b] = op(A[b]) op(B[b]) for batch matrices; with bShared
// the single B is used for every batch. A is [M,K] ([K,M] when transA), B is
// [K,N] ([N,K] when transB).
func MatMul(a, b []float64, batch, M, N, K int, transA, transB, bShared bool) []float64 {
	c := make([]float64, batch*M*N)
	for p := 0; p < batch; p++ {
		A := a[p*M*K:]
		B := b
		if !bShared {
			B = b[p*K*N:]
		}
		for i := 0; i < M; i++ {
			for j := 0; j < N; j++ {
				var s float64
				for k := 0; k < K; k++ {
					av := A[i*K+k]
					if transA {
						av = A[k*M+i]
					}
					bv := B[k*N+j]
					if transB {
						bv = B[j*K+k]
					}
					s += av * bv
				}
				c[p*M*N+i*N+j] = s
			}
		}
	}
	return c
}

// GELU is the exact GELU x * Phi(x).
func GELU(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }

// GELUGrad is d GELU(x) / dx.
func GELUGrad(x float64) float64 {
	return 0.5*(1+math.Erf(x/math.Sqrt2)) + x*math.Exp(-0.5*x*x)/math.Sqrt(2*math.Pi)
}

// Map applies f elementwise.
func Map(x []float64, f func(float64) float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = f(v)
	}
	return y
}
