"""logsumexp with weights ``b`` and ``return_sign``, against SciPy's ``scipy.special.logsumexp``.

- drawn inputs (shapes, broadcast weights with zeros and negative entries, axes, keepdims): the value
  against an exact mpmath sum, the sign, nan and infinities against SciPy, the gradients with respect to
  x and b against torch's float64 autograd of ``m + log|sum(b * exp(x - m))|``;
- every case of SciPy's own tests of ``logsumexp`` (scipy/special/tests/test_logsumexp.py), real
  dtypes: the same answer, or the documented difference;
- bad input.
"""

from __future__ import annotations

import math
from typing import Any

import hypothesis.extra.numpy as hnp
import mpmath
import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from scipy.special import logsumexp as scipy_logsumexp

import tinyops
from tinyops._checks import normalize_axis

Array = Any
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
inf, nan = np.inf, np.nan


# ----------------------------------------------------------------------------- references


def exact(x: Array, b: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    """``log|sum b exp(x)|`` and ``sum |b| exp(x) / |sum b exp(x)|`` (the condition number) over ``axes``
    of the broadcast inputs, with mpmath at 60 digits (finite inputs)."""
    x, b = np.broadcast_arrays(x.astype(np.float64), b.astype(np.float64))
    keep = [i for i in range(x.ndim) if i not in axes]
    xs = np.moveaxis(x, axes, list(range(x.ndim - len(axes), x.ndim))).reshape(-1, math.prod(x.shape[i] for i in axes))
    bs = np.moveaxis(b, axes, list(range(b.ndim - len(axes), b.ndim))).reshape(xs.shape)
    out, cond = np.empty(xs.shape[0]), np.empty(xs.shape[0])
    with mpmath.workdps(60):
        for r in range(xs.shape[0]):
            terms = [mpmath.mpf(float(bj)) * mpmath.exp(mpmath.mpf(float(xj))) for xj, bj in zip(xs[r], bs[r],
                                                                                                  strict=True)]
            s, a = mpmath.fsum(terms), mpmath.fsum(abs(t) for t in terms)
            out[r] = float(mpmath.log(abs(s))) if s != 0 else -inf
            cond[r] = float(a / abs(s)) if s != 0 else inf
    shape = tuple(x.shape[i] for i in keep)
    return out.reshape(shape), cond.reshape(shape)


def torch_grads(x: Array, b: Array, axes: tuple[int, ...], dout: Array) -> tuple[Array, Array]:
    """torch float64 autograd of ``m + log|sum(b * exp(x - m))|`` (m, the max of x, held constant), finite x."""
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    bt = torch.tensor(b.astype(np.float64), requires_grad=True)
    xb, bb = torch.broadcast_tensors(xt, bt)
    m = torch.amax(xb, dim=axes, keepdim=True).detach()
    out = torch.log(torch.abs(torch.sum(bb * torch.exp(xb - m), dim=axes, keepdim=True))) + m
    (out * torch.from_numpy(dout.astype(np.float64))).sum().backward()
    assert xt.grad is not None and bt.grad is not None
    return xt.grad.numpy(), bt.grad.numpy()


# ----------------------------------------------------------------------------- drawn cases


@st.composite
def weighted_cases(draw: st.DrawFn) -> tuple[Array, Array, Any, bool]:
    dtype = draw(st.sampled_from([F32, F64]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    # b's shape: a suffix of the broadcast shape with some sides 1; or x is the smaller one
    k = draw(st.integers(1, len(shape)))
    b_shape = tuple(1 if draw(st.booleans()) else n for n in shape[len(shape) - k :])
    x_shape = shape
    if draw(st.booleans()):
        x_shape, b_shape = b_shape, shape
    full = np.broadcast_shapes(x_shape, b_shape)
    bound = draw(st.sampled_from([1.0, 10.0, 60.0]))
    el = st.floats(-bound, bound, width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False)
    x = draw(hnp.arrays(dtype, x_shape, elements=el))
    w = dtype.itemsize * 8  # weights 0, or of a size whose gradient 1 / b stays finite in the dtype
    bel = st.one_of(st.just(0.0), st.floats(2**-10, 3, width=w), st.floats(-3, -(2**-10), width=w))
    b = draw(hnp.arrays(dtype, b_shape, elements=bel))
    nd = len(full)
    axis = draw(st.one_of(st.integers(-nd, nd - 1), st.none(),
                          st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True).map(tuple)))
    return x, b, axis, draw(st.booleans())


@example(case=(np.array([0.0, 2.0], np.float32), np.array([0.03125, 0.0], np.float32), 0, False), seed=158107023)
@given(case=weighted_cases(), seed=st.integers(0, 2**32 - 1))
def test_weighted_logsumexp_against_exact_scipy_and_torch(case: tuple[Array, Array, Any, bool], seed: int) -> None:
    x, b, axis, keepdims = case
    dtype = x.dtype
    eps = float(np.finfo(dtype).eps)
    x0, b0 = x.copy(), b.copy()
    (out, sign), cache = tinyops.logsumexp_forward(x, axis, keepdims=keepdims, b=b, return_sign=True)
    full = np.broadcast_shapes(x.shape, b.shape)
    axes = normalize_axis(axis, len(full))
    ref, cond = exact(x, b, axes)
    if keepdims:
        ref, cond = np.expand_dims(ref, axes), np.expand_dims(cond, axes)
    s_val, s_sign = scipy_logsumexp(x.astype(np.float64), axis=axis, b=b.astype(np.float64), keepdims=keepdims,
                                    return_sign=True)
    assert out.dtype == dtype and sign.dtype == dtype and out.shape == np.shape(s_val) == sign.shape
    # the value: within a few ulp of the exact one, times the sum's condition number
    fin = np.isfinite(ref)
    tol = 4 * eps * (1 + np.abs(np.where(fin, ref, 0)) + np.where(fin, cond, 0))
    with np.errstate(invalid="ignore"):  # -inf - -inf where the exact sum is 0 (not compared)
        err = np.abs(out.astype(np.float64) - ref)
    assert np.all(err[fin] <= tol[fin]), f"out {out} exact {ref} cond {cond}"
    # the sign: SciPy's wherever the sum is well away from 0
    well = cond < 1e-3 / eps
    np.testing.assert_array_equal(sign[well], np.asarray(s_sign)[well])
    # without return_sign: nan exactly where the sum is negative
    plain = tinyops.logsumexp(x, axis, keepdims=keepdims, b=b)
    np.testing.assert_array_equal(np.isnan(plain)[well], (np.asarray(s_sign) < 0)[well])
    # gradients against torch's autograd, on rows whose sum is not near 0
    dout = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
    dx, db = tinyops.logsumexp_backward(dout, cache)
    assert dx.shape == x.shape and db.shape == b.shape and dx.dtype == dtype and db.dtype == dtype
    assert np.array_equal(x, x0) and np.array_equal(b, b0)
    if np.all(well) and np.all(fin):
        gx, gb = torch_grads(x, b, axes, dout if keepdims else np.expand_dims(dout, axes))
        with np.errstate(over="ignore"):  # an exact gradient beyond the dtype's range rounds to inf in it
            gx, gb = (np.where(np.isinf(g.astype(dtype)), g.astype(dtype), g) for g in (gx, gb))
        rel = np.max(cond, initial=1) * 8 * eps * np.prod([full[i] for i in axes])
        for got, want in ((dx, gx), (db, gb)):  # inf where the exact value rounds to inf, else close
            finite = np.isfinite(want)
            # relative to the larger of dout and the gradient itself: d lse / d b_j = exp(x_j - lse) / sign
            # is far above dout where the weights are small (b = [1/32, 0] gives 236 dout)
            size = np.max(np.abs(dout), initial=0) + np.abs(want[finite]).max(initial=0)
            np.testing.assert_allclose(got, want, rtol=0, atol=rel * size)


@pytest.mark.parametrize("backend", ["compiled", "reference"])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_unit_weights_give_logsumexp_and_softmax(backend: str, dtype: np.dtype[Any]) -> None:
    """b = 1 gives the unweighted value within an ulp, and its gradients: softmax for x, exp(x - out) for b."""
    x = np.random.default_rng(3).normal(0, 5, (4, 7)).astype(dtype)
    (out, sign), cache = tinyops.logsumexp_forward(x, 1, b=np.ones_like(x), return_sign=True)
    plain, pcache = tinyops.logsumexp_forward(x, 1, backend=backend)
    np.testing.assert_allclose(out, plain, rtol=2 * np.finfo(dtype).eps)
    assert np.all(sign == 1)
    dout = np.linspace(0.5, 1.5, 4).astype(dtype)
    dx, db = tinyops.logsumexp_backward(dout, cache)
    np.testing.assert_allclose(dx, tinyops.logsumexp_backward(dout, pcache), rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(db, dx, rtol=4 * np.finfo(dtype).eps)  # b = 1: exp(x - out) is the softmax


def test_return_sign_without_weights() -> None:
    """SciPy's signs without b: 1, 0 for an all -inf (empty) sum, nan for nan; the value is logsumexp's."""
    x = np.array([[1.0, 2.0], [-inf, -inf], [nan, 0.0], [inf, 1.0]])
    out, sign = tinyops.logsumexp(x, 1, return_sign=True)
    s_out, s_sign = scipy_logsumexp(x, axis=1, return_sign=True)
    np.testing.assert_array_equal(sign, s_sign)
    np.testing.assert_allclose(out, s_out, rtol=1e-15)
    np.testing.assert_array_equal(out, tinyops.logsumexp(x, 1))


# ----------------------------------------------------------------------------- SciPy's own test cases


def _both(a: Any, **kw: Any) -> tuple[Any, Any]:
    a = np.asarray(a, dtype=np.float64) if not isinstance(a, np.ndarray) or a.dtype.kind != "f" else a
    kw = dict(kw)
    axis = kw.pop("axis", None)  # SciPy's default: every axis
    keepdims = kw.pop("keepdims", False)
    kw_t = dict(kw)
    if "b" in kw_t:
        kw_t["b"] = np.asarray(kw_t["b"], dtype=a.dtype)
    ours = tinyops.logsumexp(a, axis, keepdims=keepdims, **kw_t)
    return ours, scipy_logsumexp(a, axis=axis, keepdims=keepdims, **kw)


SCIPY_CASES: list[tuple[str, Any, dict[str, Any]]] = [
    ("large-arange", np.arange(200.0), {}),
    ("two-1000", [1000.0, 1000.0], {}),
    ("many-10000", np.full(1000, 10000.0), {}),
    ("tiny-logs", np.log(np.full((2, 100_000), 1e-40)), {}),
    ("tiny-logs-axis0", np.log(np.full((2, 100_000), 1e-40)), {"axis": 0}),
    ("tiny-logs-axis1", np.log(np.full((2, 100_000), 1e-40)), {"axis": 1}),
    ("inf", [inf], {}),
    ("-inf", [-inf], {}),
    ("nan", [nan], {}),
    ("all--inf", [-inf, -inf], {}),
    ("magnitudes", [[1e10, 1e-10], [-1e10, -inf]], {"axis": -1}),
    ("magnitudes-keepdims", [[1e10, 1e-10], [-1e10, -inf]], {"axis": -1, "keepdims": True}),
    ("magnitudes-two-axes", [[1e10, 1e-10], [-1e10, -inf]], {"axis": (-1, -2)}),
    ("b-arange", np.arange(200.0), {"b": np.arange(200.0, 0.0, -1.0)}),
    ("b-1.2", [1000.0, 1000.0], {"b": [1.2, 1.2]}),
    ("b-linspace", np.log(np.full((2, 100_000), 1e-40)), {"b": np.tile(np.linspace(1, 1000, 100_000), (2, 1))}),
    ("b-linspace-axis0", np.log(np.full((2, 100_000), 1e-40)),
     {"b": np.tile(np.linspace(1, 1000, 100_000), (2, 1)), "axis": 0}),
    ("sign", [1.0, 1.0, 1.0], {"b": [1.0, -1.0, -1.0], "return_sign": True}),
    ("sign-zero", [1.0, 1.0], {"b": [1.0, -1.0], "return_sign": True}),
    ("b-zero", [1.0, 10000.0], {"b": [1.0, 0.0]}),
    ("dtypes-ab", [2.0, 1.0], {"b": [1.0, -1.0]}),
    ("gh18295", [0.0, -40.0], {}),
    ("gh22903-positive", [3.06409428, 0.37251854, 3.87471931], {"b": [1.88190708, 2.84174795, -0.85016884]}),
    ("gh22903-negative", [3.06409428, 0.37251854, 3.87471931], {"b": [1.88190708, 2.84174795, -3.85016884]}),
    ("gh23548-inf", [inf], {"return_sign": True}),
    ("gh23548-inf-negative-b", [inf], {"b": [-1.0], "return_sign": True}),
    ("gh22601-inf-inf", [inf, inf], {}),
    ("gh22601-inf--inf", [inf, -inf], {}),
    ("gh22601--inf--inf", [-inf, -inf], {}),
    ("inf-with-negative-weight", [inf, inf], {"b": [-1.0, 1.0], "return_sign": True}),
    ("nan-weight", [1.0, 2.0], {"b": [nan, 1.0], "return_sign": True}),
    ("zero-weights-only", [1.0, 2.0], {"b": [0.0, 0.0], "return_sign": True}),
    ("0-D", np.array(3.0), {"b": np.array(-2.0), "return_sign": True}),
]


@pytest.mark.parametrize(("name", "a", "kw"), SCIPY_CASES, ids=[c[0] for c in SCIPY_CASES])
def test_scipy_cases(name: str, a: Any, kw: dict[str, Any]) -> None:
    ours, theirs = _both(a, **kw)
    ours_t, theirs_t = (ours, theirs) if kw.get("return_sign") else ((ours,), (theirs,))
    for o, t in zip(ours_t, theirs_t, strict=True):
        o, t = np.asarray(o), np.asarray(t, dtype=np.float64)
        assert o.shape == t.shape, name
        np.testing.assert_array_equal(np.isnan(o), np.isnan(t), err_msg=name)
        np.testing.assert_allclose(o, t, rtol=1e-13, atol=0, err_msg=name)


def test_scipy_shapes() -> None:
    """SciPy's shape tests: (1, 2, 3, 4) over axis 2 and (1, 3); b (3, 1, 5) broadcast against x (4, 1, 2, 1)."""
    a = np.ones((1, 2, 3, 4))
    r, s = tinyops.logsumexp(a, 2, b=np.ones_like(a), return_sign=True)
    assert r.shape == s.shape == (1, 2, 4)
    r, s = tinyops.logsumexp(a, (1, 3), b=np.ones_like(a), return_sign=True)
    assert r.shape == s.shape == (1, 3)
    x, b = np.random.default_rng(1).normal(size=(4, 1, 2, 1)), np.random.default_rng(2).uniform(0.5, 2, (3, 1, 5))
    np.testing.assert_allclose(tinyops.logsumexp(x, None, b=b), scipy_logsumexp(x, b=b), rtol=1e-14)
    np.testing.assert_allclose(tinyops.logsumexp(x, (0, 2), b=b), scipy_logsumexp(x, axis=(0, 2), b=b), rtol=1e-14)
    out, cache = tinyops.logsumexp_forward(x, (0, 2), b=b)
    dx, db = tinyops.logsumexp_backward(np.ones_like(out), cache)
    assert dx.shape == x.shape and db.shape == b.shape


@pytest.mark.parametrize("dtype", [F32, F64])
def test_scipy_dtypes(dtype: np.dtype[Any]) -> None:
    """float32 in, float32 out (and float64); SciPy's value within an ulp of the dtype."""
    a = np.array([1000.0, 1000.0], dtype)
    out = tinyops.logsumexp(a, b=np.array([1.0, -0.5], dtype))
    assert out.dtype == dtype
    np.testing.assert_allclose(out, 1000 + math.log(0.5), rtol=float(np.finfo(dtype).eps))
    out = tinyops.logsumexp(np.array([2.0, 1.0], dtype), b=np.array([1.0, -1.0], dtype))
    np.testing.assert_allclose(out, math.log(math.exp(2) - math.exp(1)), rtol=float(np.finfo(dtype).eps))


def test_no_writeback() -> None:
    a, b = np.array([5.0, 4.0]), np.array([3.0, 2.0])
    _, cache = tinyops.logsumexp_forward(a, b=b)
    dout = np.array(1.5)
    tinyops.logsumexp_backward(dout, cache)
    np.testing.assert_array_equal(a, [5.0, 4.0])
    np.testing.assert_array_equal(b, [3.0, 2.0])
    assert dout == 1.5


# ----------------------------------------------------------------------------- where we differ from SciPy, on purpose


def test_zero_weight_drops_an_inf_or_nan_entry_always() -> None:
    """SciPy drops an entry of weight 0, but redoes an infinite result as log(sum(b * exp(x))), where
    0 * exp(nan) is nan again; here the entry stays dropped, and its x gradient is 0."""
    x, b = np.array([inf, nan]), np.array([1.0, 0.0])
    assert np.isnan(scipy_logsumexp(x, b=b))
    out, cache = tinyops.logsumexp_forward(x, b=b)
    assert out == inf
    dx, _ = tinyops.logsumexp_backward(np.array(1.0), cache)
    assert dx[1] == 0
    assert tinyops.logsumexp(np.array([1.0, nan, inf]), b=np.array([2.0, 0.0, 0.0])) == 1.0 + math.log(2.0)


@pytest.mark.parametrize("low", [-32.0, -34.0])
def test_gradient_of_a_dropped_entry_above_the_dtype_range_is_formed_in_float64(low: float) -> None:
    """``db = dout * exp(x - out)`` of a weight-0 entry far above the rest, rounded once from float64:
    exp(89) overflows float32 and 0.125 * exp(89) does not; 0.125 * exp(91) does, and is inf (found by the
    thorough profile)."""
    x, b = np.array([low, 57.0], F32), np.array([1.0, 0.0], F32)
    out, cache = tinyops.logsumexp_forward(x, b=b)
    assert out == np.float32(low)
    dx, db = tinyops.logsumexp_backward(np.float32(0.125), cache)
    assert dx.dtype == db.dtype == F32
    np.testing.assert_array_equal(dx, [0.125, 0.0])  # the dropped entry has no dx
    exact_db = 0.125 * float(mpmath.exp(57 - low))
    if exact_db > float(np.finfo(F32).max):
        assert db[1] == np.inf
    else:
        np.testing.assert_allclose(db, [0.125, exact_db], rtol=float(np.finfo(F32).eps))


def test_cancelling_maxima_are_summed_around_the_max() -> None:
    """Weights of the maxima that cancel: SciPy's redo overflows to nan; the sum below the max remains."""
    x, b = np.array([1000.0, 1000.0, 999.0]), np.array([1.0, -1.0, 1.0])
    assert np.isnan(scipy_logsumexp(x, b=b))
    assert tinyops.logsumexp(x, b=b) == 999.0


def test_empty_reduction_sign_is_zero() -> None:
    """An empty sum is 0: -inf with sign 0 (SciPy says -1, the sign of its -inf)."""
    out, sign = tinyops.logsumexp(np.zeros((2, 0)), 1, b=np.ones((2, 0)), return_sign=True)
    np.testing.assert_array_equal(out, [-inf, -inf])
    np.testing.assert_array_equal(sign, [0.0, 0.0])


# ----------------------------------------------------------------------------- bad input

X = np.array([[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize(
    ("kw", "exc", "pattern"),
    [
        ({"b": np.array([1, 2])}, TypeError, r"^b must have a floating dtype"),
        ({"b": np.array([1j, 2j])}, TypeError, r"^b must have a floating dtype.*complex"),
        ({"b": np.array([1.0, 2.0], np.float32)}, TypeError, r"^b has dtype float32 but x has dtype float64"),
        ({"b": np.ones(3)}, ValueError, r"^b of shape \(3,\) does not broadcast against x of shape \(2, 2\)"),
        ({"return_sign": "yes"}, TypeError, r"^return_sign must be a bool"),
    ],
)
def test_bad_input(kw: dict[str, Any], exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        tinyops.logsumexp(X, **kw)
    with pytest.raises(TypeError, match=r"^x must have a floating dtype.*complex"):
        tinyops.logsumexp(X.astype(complex), b=X)
