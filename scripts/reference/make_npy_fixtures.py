#!/usr/bin/python3
"""Writes the small .npy files npy/npy_test.go reads (run by hand from the repo root).

Each is written by numpy itself so the Go reader is tested against the real format.
"""
import numpy as np

d = "npy/testdata/"
np.save(d + "f32_2x3.npy", np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1)
np.save(d + "i64_4.npy", np.array([-3, 0, 7, 2**40], dtype=np.int64))
np.save(d + "u8_2x2x2.npy", np.arange(8, dtype=np.uint8).reshape(2, 2, 2) * 30)
np.save(d + "f32_scalar.npy", np.float32(2.5))
np.save(d + "f32_fortran.npy", np.asfortranarray(np.ones((2, 3), dtype=np.float32)))
np.save(d + "f64_2.npy", np.ones(2, dtype=np.float64))
np.save(d + "f32_bigendian.npy", np.ones(2, dtype=">f4"))
