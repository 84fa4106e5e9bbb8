"""The softmax family's two layers: the compiled row kernels (``tinyops.kernels.softmax``) against the NumPy
reference (``tinyops.ops.softmax``) and against the exact (mpmath) values.

- logsumexp, softmax and log_softmax, both backends, within their ULP bounds of the exact values on every
  hard region of ``tinyops.testing.regions`` (float32 and float64), and the compiled kernel within its
  documented distance of the reference;
- the edge rows (+inf, all -inf, nan, -inf entries, empty reductions, zero rows, 0-D input, axis tuples):
  the same values, infinities and nans as the reference, in the forward and the backward;
- the backward kernels against a float64 evaluation of the same formula;
- threads 1 and 2 give the same bits; no op writes into x or dout; float16 takes the reference;
- ``axis`` positional or keyword in the value functions and the forwards; bad backend and threads rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tinyops
from tinyops._checks import BACKENDS
from tinyops.testing import exact, regions

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
Array = Any

OPS = ("lse", "softmax", "log_softmax")
FORWARDS: dict[str, Callable[..., Any]] = {
    "lse": tinyops.logsumexp_forward,
    "softmax": tinyops.softmax_forward,
    "log_softmax": tinyops.log_softmax_forward,
}
VALUES: dict[str, Callable[..., Any]] = {
    "lse": tinyops.logsumexp,
    "softmax": tinyops.softmax,
    "log_softmax": tinyops.log_softmax,
}
BACKWARDS: dict[str, Callable[..., Any]] = {
    "lse": tinyops.logsumexp_backward,
    "softmax": tinyops.softmax_backward,
    "log_softmax": tinyops.log_softmax_backward,
}

# ULP bounds against the exact values (as tests/test_accuracy.py): float32 lse and log_softmax 2, softmax 4;
# float64 8 + 2 log2(n) on outputs that are normal numbers; lse near 0 with the float64 slack on top.
F32_BOUND = {"lse": 2.0, "softmax": 4.0, "log_softmax": 2.0}


def exact_bound(op: str, dtype: np.dtype[Any], n: int) -> float:
    return F32_BOUND[op] if dtype == F32 else 8.0 + 2.0 * float(np.log2(n))


def lse_slack(x: Array, ref_lse: Array, dtype: np.dtype[Any]) -> Array:
    """The float64 rounding of ``m`` and ``log1p(r)``, ``4 eps64 (|m| + |lse - m| + log2 n + 1)``, in ULPs of lse."""
    lse = ref_lse.astype(np.float64)
    m = x.max(axis=-1).astype(np.float64)
    slack = 4 * np.finfo(np.float64).eps * (np.abs(m) + np.abs(lse - m) + np.log2(x.shape[-1]) + 1)
    with np.errstate(divide="ignore", over="ignore"):
        return slack / np.spacing(np.abs(exact.round_to(ref_lse, dtype))).astype(np.float64)


def ulps_apart(a: Array, b: Array) -> Array:
    """How many ULPs (of the dtype, at the larger of the two) a and b differ; 0 where both are equal."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore"):
        unit = np.spacing(np.maximum(np.abs(a), np.abs(b))).astype(np.float64)
        d = np.abs(a64 - b64) / unit
    return np.where(a64 == b64, 0.0, d)


def run(op: str, x: Array, backend: str, **kw: Any) -> Array:
    return VALUES[op](x, -1, backend=backend, **kw)


# ----------------------------------------------------------------------------- hard regions: exact values

REGION_SIZES = [(5, 2), (4, 27), (2, 700)]


def region_rows(region: str, dtype: np.dtype[Any], n: int, v: int) -> Array:
    rng = np.random.default_rng([regions.REGIONS.index(region), n, v, dtype.itemsize])
    x, _ = regions.BUILDERS[region](rng, dtype, n, v)
    return x


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("region", regions.REGIONS)
def test_both_backends_within_ulp_bounds_on_hard_regions(region: str, dtype: np.dtype[Any]) -> None:
    sizes = [(1, 3000)] if region == "long_row" else REGION_SIZES
    for n, v in sizes:
        x = region_rows(region, dtype, n, v)
        ref = exact.reference(x)
        want = {"lse": ref.lse, "softmax": ref.softmax, "log_softmax": ref.log_softmax}
        for op in OPS:
            limit = exact_bound(op, dtype, v)
            mask = np.ones(want[op].shape, bool)
            if dtype == F64:  # normal outputs only (a subnormal float64 is a sum of rounded subnormal exps)
                y = np.abs(exact.round_to(want[op], dtype))
                mask = np.isinf(y) | (y >= np.finfo(dtype).tiny)
            extra = lse_slack(x, ref.lse, dtype) if op == "lse" else 0.0
            for backend in BACKENDS:
                got = run(op, x, backend)
                err = exact.ulp_error(got, want[op], dtype)
                bad = mask & ~(err <= limit + extra)
                assert not bad.any(), f"{region} {op} {backend} ({n}, {v}): {err[bad].max():.3g} ULP > {limit}"


# ----------------------------------------------------------------------------- hard regions: compiled vs reference

# The compiled kernel sums r in another order than NumPy's pairwise sum: float32 outputs are rounded once
# from float64 values that differ by a few float64 ULPs, so they agree within 1 ULP (logsumexp near 0: plus
# the slack); float64 outputs within 2 + 2 log2(n) ULP.


def reference_bound(op: str, x: Array, ref_lse: Array | None) -> Array | float:
    if x.dtype == F32:
        return 1.0 + (lse_slack(x, ref_lse, F32) if op == "lse" else 0.0)
    return 2.0 + 2.0 * float(np.log2(x.shape[-1])) + (lse_slack(x, ref_lse, F64) if op == "lse" else 0.0)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("region", regions.REGIONS)
def test_compiled_within_bounds_of_reference(region: str, dtype: np.dtype[Any]) -> None:
    sizes = [(4, 50_257)] if region == "long_row" else [(64, 2), (64, 27), (16, 1000), (4, 8192)]
    for n, v in sizes:
        x = region_rows(region, dtype, n, v)
        for op in OPS:
            ref = run(op, x, "reference")
            got = run(op, x, "compiled")
            assert got.dtype == ref.dtype == dtype and got.shape == ref.shape
            limit = reference_bound(op, x, ref if op == "lse" else None)
            d = ulps_apart(got, ref)
            assert np.all(d <= limit), f"{region} {op} ({n}, {v}): {d.max():.3g} ULP from the reference"


# ----------------------------------------------------------------------------- edge rows, as the reference

inf, nan = np.inf, np.nan
EDGE_ROWS = np.array(
    [
        [1.0, inf, 2.0, 0.5],  # a +inf: lse +inf, softmax and log_softmax nan
        [1.0, inf, inf, 0.5],
        [-inf, -inf, -inf, -inf],  # all -inf: lse -inf, softmax and log_softmax nan
        [1.0, nan, inf, 0.5],  # nan and +inf: nan
        [0.0, nan, 1.0, 2.0],  # nan beside a finite max: nan
        [nan, nan, nan, nan],
        [0.0, -inf, 1.0, -inf],  # -inf entries: probability 0, log-probability -inf
        [-inf, -inf, 3.0, -inf],  # one finite entry: probability 1
        [5.0, 5.0, 5.0, 5.0],  # ties
        [1e4, 1e4, -1e4, 0.0],
        [700.0, 709.0, 710.0, -745.0],
        [88.0, 89.0, 90.0, -104.0],
    ]
)

EDGE_SHAPES: list[tuple[Array, Any, bool]] = [
    (EDGE_ROWS, -1, False),
    (EDGE_ROWS, 1, True),
    (EDGE_ROWS.T, 0, False),  # columns: the rows are gathered from a strided view
    (EDGE_ROWS.reshape(3, 4, 4), (0, 2), True),  # an axis tuple
    (EDGE_ROWS.reshape(3, 4, 4), None, False),  # every axis
    (EDGE_ROWS.reshape(3, 4, 4), (), False),  # no axis: rows of one entry
    (np.array(2.5), -1, False),  # 0-D
    (np.array(-inf), None, True),
    (np.array(nan), 0, False),
    (np.zeros((3, 0)), 1, False),  # empty reduction: lse -inf
    (np.zeros((3, 0)), -1, True),
    (np.zeros((0, 4)), 1, False),  # zero rows
    (np.zeros((2, 0, 3)), (0, 2), True),
]


def same_values(got: Array, want: Array, dtype: np.dtype[Any], what: str, atol: float = 0.0) -> None:
    """Same shape and dtype, nan and infinities at the same places, finite values within 4 ULP (or atol)."""
    assert got.shape == want.shape and got.dtype == want.dtype == dtype, what
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: nan at other places: {got} vs {want}"
    assert np.array_equal(got[np.isinf(want)], want[np.isinf(want)]), f"{what}: infinities differ: {got} vs {want}"
    finite = np.isfinite(want)
    with np.errstate(invalid="ignore"):
        close = (ulps_apart(got, want) <= 4) | (np.abs(got - want) <= atol)
    assert np.all(close[finite]), f"{what}: {got} vs {want}"


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize(("x", "axis", "keepdims"), EDGE_SHAPES)
def test_edge_cases_as_the_reference(x: Array, axis: Any, keepdims: bool, dtype: np.dtype[Any]) -> None:
    x = x.astype(dtype)
    before = x.copy()
    rng = np.random.default_rng(7)
    with np.errstate(all="ignore"):
        n = max(1, x.size // max(1, tinyops.logsumexp(x, axis, backend="reference").size))  # the reduced size
    for op in OPS:
        kw = {"keepdims": keepdims} if op == "lse" else {}
        with np.errstate(all="ignore"):
            ref, ref_cache = FORWARDS[op](x, axis, backend="reference", **kw)
            got, cache = FORWARDS[op](x, axis, backend="compiled", **kw)
            value = VALUES[op](x, axis, backend="compiled", **kw)
            dout = (rng.uniform(0.5, 1.5, ref.shape) * rng.choice([-1, 1], ref.shape)).astype(dtype)
            dout_before = dout.copy()
            dx_ref = BACKWARDS[op](dout, ref_cache)
            dx = BACKWARDS[op](dout, cache)
        same_values(got, ref, dtype, f"{op} forward")
        same_values(value, ref, dtype, f"{op} value")
        # the backward's row sums round differently (float64 in the kernel): |dout| < 1.5, |y| <= 1 (softmax)
        same_values(dx, dx_ref, dtype, f"{op} backward", atol=4 * float(np.finfo(dtype).eps) * (n + 1) * 1.5)
        assert cache.backend == "compiled" and ref_cache.backend == "reference"
        assert np.array_equal(dout, dout_before)
    assert np.array_equal(x, before, equal_nan=True)


def test_empty_reduction_and_single_entries() -> None:
    for backend in BACKENDS:
        assert np.array_equal(tinyops.logsumexp(np.zeros((2, 0), np.float32), backend=backend), [-inf, -inf])
        assert tinyops.softmax(np.zeros((2, 0), np.float32), backend=backend).shape == (2, 0)
        assert tinyops.logsumexp(np.float32(3.5), backend=backend) == np.float32(3.5)
        assert tinyops.softmax(np.array(3.5, np.float64), backend=backend) == 1.0
        assert tinyops.log_softmax(np.array([[-inf, 2.0]]), backend=backend).tolist() == [[-inf, 0.0]]


# ----------------------------------------------------------------------------- the backward kernels


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize(("shape", "axis"), [((7, 27), -1), ((3, 1000), 1), ((4, 5, 6), (0, 2)), ((6, 5), 0)])
def test_backward_as_the_float64_formula(op: str, dtype: np.dtype[Any], shape: tuple[int, ...], axis: Any) -> None:
    """Both backends against the same formula evaluated in float64 on the same y and dy."""
    rng = np.random.default_rng(list(shape))
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 8.0)).astype(dtype)
    dy = (rng.standard_normal(shape) + 0.3).astype(dtype)
    axes = tuple(range(x.ndim)) if axis is None else np.atleast_1d(axis) % x.ndim
    axes = tuple(int(a) for a in axes)
    eps = float(np.finfo(dtype).eps)
    for backend in BACKENDS:
        y, cache = FORWARDS[op](x, axis, backend=backend)
        dx = BACKWARDS[op](dy, cache)
        y64, dy64 = y.astype(np.float64), dy.astype(np.float64)
        if op == "softmax":
            s = (dy64 * y64).sum(axis=axes, keepdims=True)
            want = y64 * (dy64 - s)
            scale = np.abs(y64) * (np.abs(dy64) + (np.abs(dy64) * y64).sum(axis=axes, keepdims=True))
        else:
            s = dy64.sum(axis=axes, keepdims=True)
            want = dy64 - np.exp(y64) * s
            scale = np.abs(dy64) + np.exp(y64) * np.abs(dy64).sum(axis=axes, keepdims=True)
        n = int(np.prod([shape[a] for a in axes]))
        k = 2.0 + np.log2(n)  # the rounding of the row sum (float64 in the kernel, x's dtype in the reference)
        assert dx.dtype == dtype and dx.shape == x.shape
        assert np.all(np.abs(dx - want) <= k * eps * scale), f"{backend}: {np.abs(dx - want).max()}"


# ----------------------------------------------------------------------------- threads, inputs, options


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_threads_give_the_same_bits(dtype: np.dtype[Any]) -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((67, 130)) * 5).astype(dtype)
    x[rng.random(x.shape) < 0.05] = -inf
    x[1], x[3, 7], x[5, 2] = -inf, inf, nan
    dy = rng.standard_normal(x.shape).astype(dtype)
    for op in OPS:
        outs = []
        for threads in (1, 2):
            y, cache = FORWARDS[op](x, backend="compiled", threads=threads)
            g = dy[:, 0] if op == "lse" else dy
            with np.errstate(all="ignore"):
                dx = BACKWARDS[op](g, cache)
            outs.append((y, dx, VALUES[op](x, backend="compiled", threads=threads)))
        for a, b in zip(outs[0], outs[1], strict=True):
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), op


def test_float16_takes_the_reference() -> None:
    x = np.random.default_rng(4).standard_normal((5, 9)).astype(np.float16)
    for op in OPS:
        got, ref = run(op, x, "compiled"), run(op, x, "reference")
        assert got.dtype == np.float16 and np.array_equal(got, ref)


def test_axis_positional_or_keyword() -> None:
    x = np.random.default_rng(5).standard_normal((3, 4, 5)).astype(np.float32)
    for backend in BACKENDS:
        for op in OPS:
            kw: dict[str, Any] = {"backend": backend}
            by_position = VALUES[op](x, 1, **kw)
            assert np.array_equal(by_position, VALUES[op](x, axis=1, **kw))
            assert np.array_equal(FORWARDS[op](x, 1, **kw)[0], FORWARDS[op](x, axis=1, **kw)[0])
            assert not np.array_equal(by_position, VALUES[op](x, 2, **kw))  # the axis is not ignored
    assert tinyops.logsumexp(x, (0, 2), keepdims=True).shape == (1, 4, 1)
    assert np.array_equal(tinyops.softmax_naive(x, 0), tinyops.softmax_naive(x, axis=0))


@pytest.mark.parametrize("op", OPS)
def test_bad_backend_and_threads(op: str) -> None:
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"^backend must be one of 'compiled', 'reference', got 'numba'"):
        VALUES[op](x, backend="numba")
    with pytest.raises(ValueError, match=r"^threads must be None or an int >= 1, got 0"):
        FORWARDS[op](x, threads=0)
