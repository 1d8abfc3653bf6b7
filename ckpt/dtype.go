package ckpt

import (
	"encoding/binary"
	"math"
)

// dtype is a stored element type; everything is float32 once loaded.
type dtype string

const (
	f32  dtype = "f32"
	f16  dtype = "f16"
	bf16 dtype = "bf16"
)

func (d dtype) size() int {
	switch d {
	case f32:
		return 4
	case f16, bf16:
		return 2
	}
	return 0
}

// decode converts little-endian elements of type d in b to float32 in dst
// (len(dst) * d.size() == len(b)).
func (d dtype) decode(dst []float32, b []byte) {
	switch d {
	case f32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case f16:
		for i := range dst {
			dst[i] = halfToFloat(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case bf16:
		// bfloat16 is the top half of a float32.
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
	}
}

// halfToFloat widens an IEEE 754 binary16 value exactly (subnormals, inf and
// NaN included).
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf, NaN
		return math.Float32frombits(sign | 0xff<<23 | man<<13)
	case exp == 0 && man == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: man * 2^-24
		f := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
}
