"""Properties of the softmax family and the two losses, beyond agreement with torch.

- softmax slices sum to 1 and are invariant to a shift of x;
- ``log_softmax(x) == x - logsumexp(x)`` and the gradient of logsumexp is softmax, both against a
  logsumexp written plainly in float64 here;
- every row of the fused ``dlogits`` sums to 0;
- the naive chain equals the fused loss wherever it is finite, and overflows (inf/nan) exactly
  where the same chain in torch does, in the same dtype;
- the stable ops raise no floating-point error on finite input, and stay finite.
"""

from __future__ import annotations

from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import tinyops

from .oracle import Array

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
dtypes = st.sampled_from([F32, F64])
TH = {F32: float(np.log(np.finfo(np.float32).max)), F64: float(np.log(np.finfo(np.float64).max))}


def eps(dtype: np.dtype[Any]) -> float:
    return float(np.finfo(dtype).eps)


EPS64 = float(np.finfo(np.float64).eps)


def plain_lse(x: Array) -> Array:
    """float64 ``m + log(sum(exp(x - m)))`` over axis 1, kept dims: off by about ``eps64 * (|lse| + n)``."""
    x64 = x.astype(np.float64)
    m = x64.max(axis=1, keepdims=True)
    return np.asarray(m + np.log(np.exp(x64 - m).sum(axis=1, keepdims=True)))


@st.composite
def matrices(draw: st.DrawFn, bound: float | None = None, dtype: np.dtype[Any] | None = None) -> Array:
    """(N, C) finite floats within ``bound`` (default: a drawn bound from 1 to 1e4)."""
    dtype = dtype or draw(dtypes)
    bound = bound if bound is not None else draw(st.sampled_from([1.0, 30.0, 1e3, 1e4]))
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12))
    elements = st.floats(-bound, bound, width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def losses(draw: st.DrawFn, bound: float | None = None, dtype: np.dtype[Any] | None = None) -> tuple[Array, Array]:
    logits = draw(matrices(bound, dtype))
    N, C = logits.shape
    target = draw(hnp.arrays(np.int64, (N,), elements=st.integers(0, C - 1)))
    return logits, target


@given(matrices(), st.floats(-100, 100))
def test_softmax_sums_to_one_and_is_shift_invariant(x: Array, shift: float) -> None:
    y = tinyops.softmax(x, axis=1)
    assert np.all(np.abs(y.sum(axis=1) - 1) <= 2 * x.shape[1] * eps(x.dtype))
    x_shifted = x + x.dtype.type(shift)
    # x + shift rounds at the magnitude of x and shift; exp turns that absolute error into relative
    tol = 8 * eps(x.dtype) * (1 + np.abs(x).max() + abs(shift))
    assert np.all(np.abs(tinyops.softmax(x_shifted, axis=1) - y) <= tol * (y + eps(x.dtype)))


@given(matrices())
def test_log_softmax_is_x_minus_logsumexp(x: Array) -> None:
    """Against ``x - lse`` in float64: one rounding of the result (2 eps |out|) plus float64's error in
    forming ``x - lse`` and the sum (eps64 (|x| + |lse| + n))."""
    lse = plain_lse(x)
    ref = x.astype(np.float64) - lse
    tol = 2 * eps(x.dtype) * np.abs(ref) + 4 * EPS64 * (1 + np.abs(x) + np.abs(lse) + x.shape[1])
    assert np.all(np.abs(tinyops.log_softmax(x, axis=1) - ref) <= tol)


@given(matrices(), st.sampled_from(["reference", "compiled"]))
def test_gradient_of_logsumexp_is_softmax(x: Array, backend: str) -> None:
    """``logsumexp_backward(1)`` against ``exp(x - lse)`` in float64: relative to each probability (one
    rounding, and float64's exponent error ``eps64 (|x| + |lse| + n)``), the underflow floor below."""
    _, cache = tinyops.logsumexp_forward(x, axis=1, backend=backend)
    dx = tinyops.logsumexp_backward(np.ones(x.shape[0], x.dtype), cache)
    lse = plain_lse(x)
    p = np.exp(x.astype(np.float64) - lse)
    tol = p * (2 * eps(x.dtype) + 4 * EPS64 * (1 + np.abs(x) + np.abs(lse) + x.shape[1]))
    assert np.all(np.abs(dx - p) <= tol + np.finfo(x.dtype).smallest_subnormal)


@given(losses(), st.sampled_from(["mean", "sum", "none"]), st.integers(0, 2**32 - 1))
def test_fused_dlogits_rows_sum_to_zero(case: tuple[Array, Array], reduction: str, seed: int) -> None:
    logits, target = case
    N, C = logits.shape
    loss, cache = tinyops.cross_entropy_forward(logits, target, reduction=reduction)
    dloss = np.random.default_rng(seed).standard_normal(np.shape(loss)).astype(logits.dtype)
    dlogits = tinyops.cross_entropy_backward(dloss, cache)
    per_row = np.abs(dloss) if reduction == "none" else np.abs(dloss) / (N if reduction == "mean" else 1)
    assert np.all(np.abs(dlogits.sum(axis=1)) <= 4 * C * eps(logits.dtype) * per_row)


@given(losses(bound=1e3))
@example((np.array([[-5, -3, 0, 100]], np.float32), np.array([3])))  # the seed's overflow cell
@example((np.array([[TH[F32], 0.0, -1.0]], np.float32), np.array([1])))
@example((np.array([[TH[F64], 0.0, -1.0]], np.float64), np.array([1])))
@example((np.array([[355.0]], np.float64), np.array([0])))  # counts_sum**2 would overflow in the backward
@example((np.array([[45.0, 0.0]], np.float32), np.array([0])))  # likewise in float32
@example((np.array([[-722.0, -14.0]], np.float64), np.array([0])))  # a subnormal count, a normal probability
def test_naive_equals_fused_wherever_finite(case: tuple[Array, Array]) -> None:
    logits, target = case
    with np.errstate(all="ignore"):
        naive, naive_cache = tinyops.cross_entropy_naive_forward(logits, target, reduction="none")
        dnaive = tinyops.cross_entropy_naive_backward(np.ones_like(naive), naive_cache)
    fused, cache = tinyops.cross_entropy_forward(logits, target, reduction="none")
    dfused = tinyops.cross_entropy_backward(np.ones_like(fused), cache)
    # naive is finite and accurate while no count overflows and neither the target's count nor its
    # probability is subnormal (a subnormal number has lost bits, so its log has too)
    tiny = np.finfo(logits.dtype).smallest_normal
    p_target = naive_cache.logprobs_target.x  # the input of the log step: probs[n, target[n]]
    count_target = naive_cache.counts.out[np.arange(len(target)), target]  # exp(logits[n, target[n]])
    ok = np.isfinite(naive) & (p_target >= tiny) & (count_target >= tiny)
    e = eps(logits.dtype)
    assert np.all(np.abs(naive - fused)[ok] <= 16 * e * (1 + np.abs(fused[ok]) + np.abs(logits[ok]).max(axis=1)))
    rows = ok & np.all(np.isfinite(dnaive), axis=1)
    assert np.all(np.abs(dnaive - dfused)[rows] <= 32 * e)


def _torch_naive_chain(logits: Array, target: Array) -> tuple[Array, Array]:
    """The seed's chain in torch, in the input's own dtype: per-row losses and softmax."""
    t = torch.from_numpy(logits)
    counts = t.exp()
    probs = counts / counts.sum(1, keepdim=True)
    loss = -probs[torch.arange(t.shape[0]), torch.from_numpy(target)].log()
    return loss.numpy(), probs.numpy()


@given(losses(bound=1e3))
@example((np.array([[-5, -3, 0, 100]], np.float32), np.array([3])))
@example((np.array([[-5, -3, 0, 100]], np.float32), np.array([0])))
@example((np.array([[TH[F32], np.nextafter(TH[F32], 1e3, dtype=np.float32), 1.0]], np.float32), np.array([0])))
@example((np.array([[TH[F64], np.nextafter(TH[F64], 1e4), 1.0]], np.float64), np.array([2])))
@example((np.array([[-1e3, -1e3], [1e3, 1e3]], np.float64), np.array([0, 1])))
def test_naive_overflows_exactly_where_torch_does(case: tuple[Array, Array]) -> None:
    logits, target = case
    with np.errstate(all="ignore"):
        loss = tinyops.cross_entropy_naive(logits, target, reduction="none")
        probs = tinyops.softmax_naive(logits, axis=1)
    t_loss, t_probs = _torch_naive_chain(logits, target)
    for ours, theirs in [(loss, t_loss), (probs, t_probs)]:
        assert np.array_equal(np.isnan(ours), np.isnan(theirs))
        assert np.array_equal(np.isposinf(ours), np.isposinf(theirs))
        assert np.array_equal(np.isneginf(ours), np.isneginf(theirs))


def _stable_ops(x: Array, target: Array, seed: int) -> list[Array]:
    rng = np.random.default_rng(seed)
    out = []
    for fwd, bwd, kw in [
        (tinyops.logsumexp_forward, tinyops.logsumexp_backward, {"axis": 1}),
        (tinyops.softmax_forward, tinyops.softmax_backward, {"axis": 1}),
        (tinyops.log_softmax_forward, tinyops.log_softmax_backward, {"axis": 1}),
    ]:
        y, cache = fwd(x, **kw)
        out += [y, bwd(rng.standard_normal(y.shape).astype(x.dtype), cache)]
    with np.errstate(all="ignore"):  # the exact sum of the losses (torch, float64), to skip a sum that truly overflows
        exact_sum = float(np.sum(torch.nn.functional.cross_entropy(
            torch.from_numpy(x.astype(np.float64)), torch.from_numpy(target), reduction="none").numpy()))
    sum_fits = abs(exact_sum) < 0.99 * float(np.finfo(x.dtype).max)
    for reduction in ("mean", "sum", "none") if sum_fits else ("mean", "none"):
        loss, cache = tinyops.cross_entropy_forward(x, target, reduction=reduction)
        out += [loss, tinyops.cross_entropy_backward(rng.standard_normal(loss.shape).astype(x.dtype), cache)]
    return out


@st.composite
def any_finite(draw: st.DrawFn) -> tuple[Array, Array]:
    """Finite values over the dtype's whole range, halved so that ``x - logsumexp(x)`` is representable."""
    dtype = draw(dtypes)
    half = float(np.finfo(dtype).max) / 2
    return draw(losses(bound=draw(st.sampled_from([half, 1e4, 1.0])), dtype=dtype))


@given(any_finite(), st.integers(0, 2**32 - 1))
@example((np.array([[TH[F32] + 1, TH[F32], -TH[F32]]], np.float32), np.array([2])), 0)
@example((np.array([[TH[F64] + 1, TH[F64], -TH[F64]]], np.float64), np.array([0])), 0)
@example((np.array([[-7.1e37, 0.0]] * 3 + [[-7.1e37, 5.7e37]], np.float32), np.array([0, 0, 0, 0])), 0)
@example((np.array([[-8e307, 0.0], [-8e307, 0.0], [-8e307, 8e307]], np.float64), np.array([0, 0, 0])), 0)
@example((np.array([[1.07839787e68, 6.23973758e51]]), np.array([0])), 0)  # x - m and its huge TwoSum error
def test_stable_ops_raise_no_floating_point_error(case: tuple[Array, Array], seed: int) -> None:
    x, target = case
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        outs = _stable_ops(x, target, seed)
    assert all(np.all(np.isfinite(o)) for o in outs)


@given(losses(bound=10.0, dtype=np.dtype(np.float16)))
def test_float16_stays_float16(case: tuple[Array, Array]) -> None:
    """float16 is accepted (for overflow demonstrations: exp overflows past 11.09) and kept, computed wider:
    within about one float16 rounding of torch's float64 answer on the same values."""
    logits, target = case
    xt = torch.from_numpy(logits.astype(np.float64))
    e16 = eps(logits.dtype)
    tiny16 = float(np.finfo(np.float16).smallest_subnormal)
    for op, ref in ((tinyops.softmax, torch.softmax(xt, 1)), (tinyops.log_softmax, torch.log_softmax(xt, 1))):
        y = op(logits, axis=1)
        assert y.dtype == np.float16
        assert np.all(np.abs(y - ref.numpy()) <= e16 * np.abs(ref.numpy()) + tiny16)
    loss = tinyops.cross_entropy(logits, target)
    assert loss.dtype == np.float16
    ref_loss = float(torch.nn.functional.cross_entropy(xt, torch.from_numpy(target)))
    assert abs(float(loss) - ref_loss) <= e16 * abs(ref_loss) + tiny16
