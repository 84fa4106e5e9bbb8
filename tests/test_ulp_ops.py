"""Exact-reference tests of the ops whose torch comparison cannot be tight: tanh, linear's float32
accumulation, batchnorm's float32 forward. The reference is computed here (mpmath at 40 digits, or float64
from float32 inputs, whose products are exact), and the error is measured in units of the float32/float64
rounding of the quantity the analysis names (tests/ERROR_ANALYSIS.md), on both backends.
"""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np
import pytest

import tinyops
from tinyops._checks import BACKENDS

Array = np.ndarray[Any, Any]
U32 = float(np.finfo(np.float32).eps) / 2  # the unit roundoff


def ulps(ours: Array, exact: Array, dtype: type) -> Array:
    """``|ours - exact|`` in units of the spacing of ``exact`` rounded to ``dtype`` (its ulp)."""
    exact = np.asarray(exact, dtype=np.float64)
    spacing = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    return np.asarray(np.abs(ours.astype(np.float64) - exact) / spacing)


def tanh_inputs(dtype: type) -> Array:
    rng = np.random.default_rng(31)
    parts = [rng.uniform(-10, 10, 1500), rng.uniform(-1e-3, 1e-3, 300), 3 * rng.standard_normal(500),
             [0.0, -0.0, 1e-30, 0.5493, 9.0, 19.0, -20.0]]
    return np.concatenate(parts).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_within_two_ulps(dtype: type, backend: str) -> None:
    """tanh is well conditioned everywhere, so its result can be within an ulp or two: measured 1.44 ulp in
    float32 and 1.0 in float64 (the largest over these inputs); the bound is 2."""
    x = tanh_inputs(dtype)
    with mpmath.workdps(40):
        exact = np.array([float(mpmath.tanh(mpmath.mpf(float(v)))) for v in x])
    err = ulps(tinyops.tanh(x, backend=backend), exact, dtype)
    worst = int(np.argmax(err))
    assert err.max() <= 2, f"tanh({x[worst]!r}) is {err.max():.2f} ulp off"


@pytest.mark.parametrize("K", [16, 64, 256, 1024])
def test_linear_float32_accumulation(K: int) -> None:
    """Each float32 output is a sum of K products; the exact value is the float64 product of the float32
    inputs (each product exact, the float64 sum off by ``K * 2**-53``: nothing at float32's scale). The
    classic bound is ``K u sum_k |x_k w_k|``; blocked BLAS accumulation does far better and does not grow
    with K: measured at most 3.1 of ``u sum |x w|`` (median 0.16-0.24) for these K. A sum accumulated in
    a narrower type, or with terms dropped, is many times over the bounds below."""
    rng = np.random.default_rng(K)
    x = rng.standard_normal((64, K)).astype(np.float32)
    w = rng.standard_normal((K, 32)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    out = tinyops.linear(x, w, b)
    exact = x.astype(np.float64) @ w.astype(np.float64) + b
    scale = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64) + np.abs(b)
    ratio = np.abs(out - exact) / (U32 * scale)
    assert out.dtype == np.float32
    assert ratio.max() <= min(K + 1, 8), f"K = {K}: {ratio.max():.2f} u sum|x w|"
    assert np.median(ratio) <= 0.5, f"K = {K}: median {np.median(ratio):.2f} u sum|x w|"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("M", [8, 32, 256])
def test_batchnorm_float32_forward(M: int, backend: str) -> None:
    """float32 batchnorm against float64 on the same inputs. ``out = w * xhat + b`` may cancel, so the unit
    is the rounding of its parts, ``u (|w| (|xhat| + A) + |b|)`` with ``A = (|x| + |mean|) / std`` (the
    centring ``x - mean`` rounds at the magnitude of x, then is divided by the std) times the sums' length
    (the mean and the variance add M terms, pairwise: ``log2 M``). Measured at most 0.52 of it (M = 8 to 256,
    values 5 +- 3; both backends); the bound is 2."""
    rng = np.random.default_rng(M)
    x = (3 * rng.standard_normal((M, 16)) + 5).astype(np.float32)
    w = rng.uniform(0.5, 2, 16).astype(np.float32)
    b = rng.uniform(-1, 1, 16).astype(np.float32)
    out = tinyops.batchnorm1d(x, w, b, backend=backend)
    x64 = x.astype(np.float64)
    mean, std = x64.mean(axis=0), np.sqrt(x64.var(axis=0) + 1e-5)
    xhat = (x64 - mean) / std
    exact = w * xhat + b
    amp = (np.abs(x64) + np.abs(mean)) / std
    unit = U32 * (np.abs(w) * (np.abs(xhat) + amp) + np.abs(b)) * (2 + np.log2(M))
    ratio = np.abs(out - exact) / unit
    assert out.dtype == np.float32
    assert ratio.max() <= 2, f"M = {M}: {ratio.max():.2f} units"
