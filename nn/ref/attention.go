package ref

import "math"

// Attention returns multi-head self-attention out = softmax(scale q k^T) v
// [B, T, H*Dh] and the row log-sum-exps lse [B, H, T] of the scaled scores,
// from qkv [B, T, 3*H*Dh] laid out as q, k, v, each split into H heads.
func Attention(qkv []float64, B, T, H, Dh int, scale float64) (out, lse []float64) {
	D := H * Dh
	out = make([]float64, B*T*D)
	lse = make([]float64, B*H*T)
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			for i := 0; i < T; i++ {
				p, l := attnProbs(qkv, b, h, i, T, H, Dh, scale)
				lse[(b*H+h)*T+i] = l
				o := out[(b*T+i)*D+h*Dh:]
				for j := 0; j < T; j++ {
					v := qkv[((b*T+j)*3+2)*D+h*Dh:]
					for d := 0; d < Dh; d++ {
						o[d] += p[j] * v[d]
					}
				}
			}
		}
	}
	return out, lse
}

// AttentionProbs returns the softmax row of query i for every (batch,
// head): [B, H, T].
func AttentionProbs(qkv []float64, B, T, H, Dh, i int, scale float64) []float64 {
	probs := make([]float64, 0, B*H*T)
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			p, _ := attnProbs(qkv, b, h, i, T, H, Dh, scale)
			probs = append(probs, p...)
		}
	}
	return probs
}

// attnProbs returns softmax_j(scale q_i.k_j) and its log-sum-exp.
func attnProbs(qkv []float64, b, h, i, T, H, Dh int, scale float64) ([]float64, float64) {
	D := H * Dh
	q := qkv[((b*T+i)*3)*D+h*Dh:]
	s := make([]float64, T)
	m := math.Inf(-1)
	for j := range s {
		k := qkv[((b*T+j)*3+1)*D+h*Dh:]
		for d := 0; d < Dh; d++ {
			s[j] += q[d] * k[d]
		}
		s[j] *= scale
		m = math.Max(m, s[j])
	}
	var sum float64
	for j := range s {
		s[j] = math.Exp(s[j] - m)
		sum += s[j]
	}
	for j := range s {
		s[j] /= sum
	}
	return s, m + math.Log(sum)
}

// AttentionBackward returns dqkv [B, T, 3*H*Dh] given dout = dL/dout: with
// P = softmax(S), S = scale q k^T: dv = P^T dout, dP = dout v^T,
// dS = P * (dP - rowsum(dP * P)), dq = scale dS k, dk = scale dS^T q.
func AttentionBackward(qkv, dout []float64, B, T, H, Dh int, scale float64) []float64 {
	D := H * Dh
	dqkv := make([]float64, len(qkv))
	at := func(b, t, s, h int) int { return ((b*T+t)*3+s)*D + h*Dh }
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			for i := 0; i < T; i++ {
				p, _ := attnProbs(qkv, b, h, i, T, H, Dh, scale)
				g := dout[(b*T+i)*D+h*Dh:]
				dp := make([]float64, T)
				var rowsum float64
				for j := 0; j < T; j++ {
					v := qkv[at(b, j, 2, h):]
					for d := 0; d < Dh; d++ {
						dp[j] += g[d] * v[d]
						dqkv[at(b, j, 2, h)+d] += p[j] * g[d]
					}
					rowsum += p[j] * dp[j]
				}
				for j := 0; j < T; j++ {
					ds := p[j] * (dp[j] - rowsum) * scale
					for d := 0; d < Dh; d++ {
						dqkv[at(b, i, 0, h)+d] += ds * qkv[at(b, j, 1, h)+d]
						dqkv[at(b, j, 1, h)+d] += ds * qkv[at(b, i, 0, h)+d]
					}
				}
			}
		}
	}
	return dqkv
}
