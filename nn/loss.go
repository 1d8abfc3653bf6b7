package nn

import "github.com/webdino/webdino/gpu"

// rowsOf returns the rows R and row length K of a [..., K] tensor.
func rowsOf(x *gpu.Tensor) (R, K int) {
	K = x.Dim(-1)
	return x.Len() / K, K
}

// SoftmaxCrossEntropy records the DINO / iBOT loss per row of student logits
// s [..., K] against teacher probabilities t of the same shape:
//
//	loss[r] = -sum_k t[r, k] log softmax(s[r] / tau)_k
//
// and saves lse[r] = logsumexp(s[r] / tau) and tsum[r] = sum_k t[r, k], which
// the backward needs (teacher rows need not sum to one, e.g. after
// Sinkhorn-Knopp). loss, lse and tsum have one element per row.
func SoftmaxCrossEntropy(rec *gpu.Recorder, loss, lse, tsum, student, teacher *gpu.Tensor, tau float32) error {
	const op = "softmax_xent"
	if err := notNil(rec, op, []string{"loss", "lse", "tsum", "student", "teacher"}, loss, lse, tsum, student, teacher); err != nil {
		return err
	}
	R, K := rowsOf(student)
	if teacher.Len() != student.Len() || teacher.Dim(-1) != K {
		return shapeErr(rec, op, "student %s, teacher %s: shapes differ", student, teacher)
	}
	if loss.Len() != R || lse.Len() != R || tsum.Len() != R {
		return shapeErr(rec, op, "student %s -> loss %s, lse %s, tsum %s: want %d rows each", student, loss, lse, tsum, R)
	}
	if !(tau > 0) {
		return shapeErr(rec, op, "temperature %g must be positive", tau)
	}
	k := gpu.Kernel{Name: "softmax_xent", Access: []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite, gpu.ReadWrite, gpu.ReadWrite}}
	return rec.Dispatch(k, rec.Groups(R, 1), []uint32{gpu.U32(R), gpu.U32(K), gpu.F32(1 / tau)}, student, teacher, loss, lse, tsum)
}

// RowEntropy records h[r] = -sum_k q[r, k] log q[r, k] for rows of
// probabilities q [R, K] (entries of 0 count 0).
func RowEntropy(rec *gpu.Recorder, h, q *gpu.Tensor) error {
	const op = "row_entropy"
	if err := notNil(rec, op, []string{"h", "q"}, h, q); err != nil {
		return err
	}
	R, K := rowsOf(q)
	if h.Len() != R {
		return shapeErr(rec, op, "q %s -> h %s: want %d rows", q, h, R)
	}
	k := gpu.Kernel{Name: "row_entropy", Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, rec.Groups(R, 1), []uint32{gpu.U32(R), gpu.U32(K)}, q, h)
}

// SoftmaxCrossEntropyBackward records the student gradient of
// SoftmaxCrossEntropy scaled per row by the upstream gradient dLoss [R]:
//
//	dStudent[r, k] (+)= dLoss[r] (softmax(s[r] / tau)_k tsum[r] - t[r, k]) / tau
//
// using the lse and tsum the forward saved. dStudent may be student itself
// (without accumulate): the gradient then replaces the logits.
func SoftmaxCrossEntropyBackward(rec *gpu.Recorder, dStudent, dLoss, student, teacher, lse, tsum *gpu.Tensor, tau float32, accumulate bool) error {
	const op = "softmax_xent_backward"
	if err := notNil(rec, op, []string{"dStudent", "dLoss", "student", "teacher", "lse", "tsum"}, dStudent, dLoss, student, teacher, lse, tsum); err != nil {
		return err
	}
	R, K := rowsOf(student)
	if teacher.Len() != student.Len() || teacher.Dim(-1) != K || dStudent.Len() != student.Len() || dStudent.Dim(-1) != K {
		return shapeErr(rec, op, "student %s, teacher %s, dStudent %s: shapes differ", student, teacher, dStudent)
	}
	if dLoss.Len() != R || lse.Len() != R || tsum.Len() != R {
		return shapeErr(rec, op, "student %s with dLoss %s, lse %s, tsum %s: want %d rows each", student, dLoss, lse, tsum, R)
	}
	if !(tau > 0) {
		return shapeErr(rec, op, "temperature %g must be positive", tau)
	}
	params := []uint32{gpu.U32(R), gpu.U32(K), gpu.F32(1 / tau)}
	if same(dStudent, student) {
		if accumulate {
			return shapeErr(rec, op, "dStudent is student %s: in place it cannot accumulate", student)
		}
		k := gpu.Kernel{Name: "softmax_xent_backward", Data: struct{ Accumulate, InPlace bool }{false, true},
			Access: []gpu.Access{gpu.ReadWrite, gpu.Read, gpu.Read, gpu.Read, gpu.Read}}
		return rec.Dispatch(k, rec.Groups(R, 1), params, dStudent, teacher, lse, tsum, dLoss)
	}
	k := gpu.Kernel{Name: "softmax_xent_backward", Data: struct{ Accumulate, InPlace bool }{accumulate, false},
		Access: []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, rec.Groups(R, 1), params, student, teacher, lse, tsum, dLoss, dStudent)
}

// TeacherSoftmax records probs[r] = softmax((t[r] - center) / temp) for
// teacher logits t [..., K] and center [K] (nil for none), DINO's centred and
// sharpened teacher. probs may be logits itself. The teacher gets no
// gradient, so it has no backward.
func TeacherSoftmax(rec *gpu.Recorder, probs, logits, center *gpu.Tensor, temp float32) error {
	const op = "teacher_softmax"
	if err := notNil(rec, op, []string{"probs", "logits"}, probs, logits); err != nil {
		return err
	}
	R, K := rowsOf(logits)
	if probs.Len() != logits.Len() || probs.Dim(-1) != K {
		return shapeErr(rec, op, "logits %s -> probs %s: shapes differ", logits, probs)
	}
	if center != nil && center.Len() != K {
		return shapeErr(rec, op, "logits %s, center %s: want %d elements", logits, center, K)
	}
	if !(temp > 0) {
		return shapeErr(rec, op, "temperature %g must be positive", temp)
	}
	inPlace := same(probs, logits)
	k := gpu.Kernel{Name: "teacher_softmax", Data: struct{ Center, InPlace bool }{center != nil, inPlace},
		Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	bufs := []*gpu.Tensor{logits, probs}
	if inPlace {
		k.Access, bufs = []gpu.Access{gpu.ReadWrite}, []*gpu.Tensor{logits}
	}
	if center != nil {
		k.Access = append(k.Access, gpu.Read)
		bufs = append(bufs, center)
	}
	return rec.Dispatch(k, rec.Groups(R, 1), []uint32{gpu.U32(R), gpu.U32(K), gpu.F32(1 / temp)}, bufs...)
}

// CenterUpdate records center = momentum center + (1 - momentum) mean_r
// logits[r], the EMA of the teacher logits [..., K] over its rows.
func CenterUpdate(rec *gpu.Recorder, center, logits *gpu.Tensor, momentum float32) error {
	const op = "center_update"
	if err := notNil(rec, op, []string{"center", "logits"}, center, logits); err != nil {
		return err
	}
	R, K := rowsOf(logits)
	if center.Len() != K {
		return shapeErr(rec, op, "logits %s, center %s: want %d elements", logits, center, K)
	}
	k := gpu.Kernel{Name: "center_update", Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, rec.Groups(K, 64), []uint32{gpu.U32(R), gpu.U32(K), gpu.F32(momentum)}, logits, center)
}
