"""batchnorm1d against torch: forward, backward and running statistics, float32 and float64, every mode.

The oracle (``BATCHNORM_SPEC``, the same harness as tests/test_oracle.py, both backends) compares the output and the
gradients of x, weight and bias with ``F.batch_norm`` (biased variance, training or eval) or, for
``unbiased=True``, with makemore part 4's formula written out in torch. The new running statistics are
compared with ``nn.BatchNorm1d``'s buffers (momentum or the cumulative average). Then the bad inputs.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tinyops
from tinyops import BatchNormStats, batchnorm1d_backward, batchnorm1d_forward, batchnorm1d_stats
from tinyops._checks import BACKENDS, Backend

from .oracle import Array, Case, OpSpec, Reference, arrays_in, upstream
from .test_oracle import _gradcheck_test, _oracle_test

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)

# ----------------------------------------------------------------------------- the op as the harness sees it
# The harness differentiates the positional floating args (x, weight, bias); the running statistics are
# keyword options (not differentiable, as torch's buffers), and the forward's third result is checked below.


def bn_forward(x: Array, weight: Array | None = None, bias: Array | None = None, *, backend: Backend = "compiled",
               **kw: Any) -> tuple[Array, Any]:
    out, cache, _ = batchnorm1d_forward(x, weight, bias, _stats(kw), backend=backend, **kw)
    return out, cache


def bn_backward(dout: Array, cache: Any) -> tuple[Array, ...]:
    """The gradients of the inputs given (no None in the middle when weight is None but bias is not)."""
    return tuple(g for g in batchnorm1d_backward(dout, cache) if g is not None)


def _stats(kw: dict[str, Any]) -> BatchNormStats | None:
    mean, var, n = kw.pop("running_mean", None), kw.pop("running_var", None), kw.pop("num_batches_tracked", 0)
    return None if mean is None else BatchNormStats(mean, var, n)


def _cshape(x: torch.Tensor) -> tuple[int, ...]:
    return (1, x.shape[1]) if x.ndim == 2 else (1, x.shape[1], 1)


def torch_bn(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
             *, running_mean: Array | None = None, running_var: Array | None = None, num_batches_tracked: int = 0,
             training: bool = True, momentum: float | None = 0.1, eps: float = 1e-5,
             unbiased: bool = False) -> torch.Tensor:
    """F.batch_norm, or makemore part 4's Bessel-corrected batchnorm written out."""
    if unbiased and training:
        dims = (0,) if x.ndim == 2 else (0, 2)
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, keepdim=True, unbiased=True)
        out = (x - mean) * (var + eps) ** -0.5
        out = out if weight is None else out * weight.view(_cshape(x))
        return out if bias is None else out + bias.view(_cshape(x))
    rm = None if running_mean is None else torch.tensor(running_mean, dtype=torch.float64)
    rv = None if running_var is None else torch.tensor(running_var, dtype=torch.float64)
    return F.batch_norm(x, rm, rv, weight, bias, training, 0.0 if momentum is None else momentum, eps)


# ----------------------------------------------------------------------------- error scales


def _norm_stats(r: Reference) -> tuple[Array, Array, int]:
    """The (C,) mean and 1/std that normalized x (the batch's or the running ones), and M."""
    x = r.args64[0]
    axes = (0,) if x.ndim == 2 else (0, 2)
    M = x.size // x.shape[1] if x.shape[1] else 0
    eps = r.kwargs.get("eps", 1e-5)
    if r.kwargs.get("training", True):
        mu = x.mean(axis=axes)
        var = x.var(axis=axes, ddof=1 if r.kwargs.get("unbiased") else 0)
    else:
        mu, var = r.kwargs["running_mean"].astype(np.float64), r.kwargs["running_var"].astype(np.float64)
    return mu, 1 / np.sqrt(var + eps), M


def _per_channel(v: Array, x: Array) -> Array:
    return v.reshape((-1,) if x.ndim == 2 else (-1, 1))


def bn_fwd_scale(r: Reference) -> Array:
    """The mean and the variance are sums of M terms (error ``M eps`` relative to ``max|x|``), and the
    centring ``x - mean`` keeps that error while dividing by the std: relative error of xhat about
    ``M eps (1 + (max|x| + |mean|) / std)``, times |weight|, plus the bias's rounding."""
    x, w, b = (*r.args64, None, None)[:3]
    mu, s, M = _norm_stats(r)
    axes = (0,) if x.ndim == 2 else (0, 2)
    amp = 1 + (np.abs(x).max(axis=axes) + np.abs(mu)) * s  # (C,)
    gain = np.ones_like(mu) if w is None else np.abs(w)
    shift = 0.0 if b is None else np.abs(b)
    return (M + 2) * _per_channel(gain * amp + shift, x) + np.abs(r.out)


def bn_bwd_scale(r: Reference) -> tuple[Array, ...]:
    """dx = g s / M (M dy - sum dy - (M/D) xhat sum(dy xhat)): sums of M terms of size ``|dy| (1 + |xhat|)^2``,
    on top of xhat's own error (``amp`` above); dweight = sum(dy xhat), dbias = sum(dy)."""
    x, w, b = (*r.args64, None, None)[:3]
    mu, s, M = _norm_stats(r)
    axes = (0,) if x.ndim == 2 else (0, 2)
    xhat = (x - _per_channel(mu, x)) * _per_channel(s, x)
    amp = 1 + (np.abs(x).max(axis=axes) + np.abs(mu)) * s  # (C,)
    g = np.ones_like(mu) if w is None else np.abs(w)
    dy = np.abs(r.dout)
    dy_max = dy.max(axis=axes, initial=0.0)
    xh = 1 + np.abs(xhat).max(axis=axes, initial=0.0)
    scales: list[Any] = [(M + 2) * _per_channel(g * s * dy_max * xh**2 * amp, x) + np.abs(r.grads[0])]
    if w is not None:
        scales.append((M + 2) * amp * (dy * (1 + np.abs(xhat))).sum(axis=axes))
    if b is not None:
        scales.append((M + 2) * dy.sum(axis=axes))
    return tuple(scales)


# ----------------------------------------------------------------------------- strategies


@st.composite
def bn_cases(draw: st.DrawFn, smooth: bool = False) -> Case:
    dtype = F64 if smooth else draw(st.sampled_from([F32, F64]))
    training = draw(st.booleans())
    N, C = draw(st.integers(1, 8)), draw(st.integers(1, 5))
    shape = (N, C) if draw(st.booleans()) else (N, C, draw(st.integers(1, 4)))
    if training and N * (shape[2] if len(shape) == 3 else 1) < 2:
        shape = (2, *shape[1:])  # training needs 2 values per channel
    bound = 3.0 if smooth else draw(st.sampled_from([1.0, 10.0, 1e3]))
    elements = st.floats(-bound, bound, width=dtype.itemsize * 8)
    x = draw(hnp.arrays(dtype, shape, elements=elements))
    if not smooth and draw(st.integers(0, 4)) == 0:  # a large common offset: the centring must be careful
        x = (x + dtype.type(draw(st.sampled_from([100.0, -1e3])))).astype(dtype)
    width = dtype.itemsize * 8
    gb = st.floats(0.25, 2.0, width=width) | st.floats(-2.0, -0.25, width=width)  # away from 0: no hidden terms
    weight = draw(st.none() | hnp.arrays(dtype, (C,), elements=gb))
    bias = draw(st.none() | hnp.arrays(dtype, (C,), elements=gb))
    kwargs: dict[str, Any] = {
        "training": training,
        "momentum": draw(st.sampled_from([0.1, 0.001, 1.0, None])),
        "eps": draw(st.sampled_from([1e-5, 1e-3])),
        "unbiased": draw(st.booleans()),
    }
    if not training or draw(st.booleans()):
        kwargs["running_mean"] = draw(hnp.arrays(dtype, (C,), elements=st.floats(-2, 2, width=dtype.itemsize * 8)))
        kwargs["running_var"] = draw(hnp.arrays(dtype, (C,), elements=st.floats(0.125, 3, width=dtype.itemsize * 8)))
        kwargs["num_batches_tracked"] = draw(st.integers(0, 5))
    return Case((x, weight, bias), kwargs, draw(st.integers(0, 2**32 - 1)))


K = {"float32": 2, "float64": 2}  # measured need 0.3 (python -m tests.headroom): tests/ERROR_ANALYSIS.md
BATCHNORM_SPEC = OpSpec(
    "batchnorm1d", bn_forward, bn_backward, torch_bn, bn_cases(), bn_cases(smooth=True),
    fwd_k=K, bwd_k=K, fwd_scale=bn_fwd_scale, bwd_scale=bn_bwd_scale,
)

test_oracle_batchnorm1d = _oracle_test(BATCHNORM_SPEC)
test_gradcheck_batchnorm1d = _gradcheck_test(BATCHNORM_SPEC)


# ----------------------------------------------------------------------------- running statistics


def torch_module(x: Array, weight: Array | None, bias: Array | None, stats: BatchNormStats, momentum: float | None,
                 eps: float, training: bool) -> tuple[torch.Tensor, torch.nn.BatchNorm1d]:
    affine = weight is not None or bias is not None
    m = torch.nn.BatchNorm1d(x.shape[1], eps=eps, momentum=momentum, affine=affine, dtype=torch.float64)
    with torch.no_grad():
        if weight is not None:
            m.weight.copy_(torch.from_numpy(weight.astype(np.float64)))
        if bias is not None:
            m.bias.copy_(torch.from_numpy(bias.astype(np.float64)))
        m.running_mean.copy_(torch.from_numpy(stats.mean.astype(np.float64)))
        m.running_var.copy_(torch.from_numpy(stats.var.astype(np.float64)))
        m.num_batches_tracked.fill_(stats.num_batches_tracked)
    m.train(training)
    with torch.no_grad():
        out = m(torch.from_numpy(x.astype(np.float64)))
    return out, m


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=bn_cases())
def test_running_stats_match_batchnorm1d_module(backend: Backend, case: Case) -> None:
    """The new running statistics (and num_batches_tracked) are nn.BatchNorm1d's buffers after one call,
    as new arrays: the caller's statistics are untouched and nothing aliases them."""
    x, weight, bias = case.args
    kw = dict(case.kwargs)
    stats = _stats(kw) or batchnorm1d_stats(x.shape[1], x.dtype)
    before = (stats.mean.copy(), stats.var.copy())
    out, _, new = batchnorm1d_forward(x, weight, bias, stats, backend=backend, **kw)
    assert np.array_equal(stats.mean, before[0]) and np.array_equal(stats.var, before[1]), "running stats written"
    assert new is not None
    if not kw["training"]:
        assert new is stats  # eval: unchanged
        return
    assert new.num_batches_tracked == stats.num_batches_tracked + 1
    assert new.mean.dtype == x.dtype and new.var.dtype == x.dtype
    assert not any(np.shares_memory(a, b) for a in (new.mean, new.var) for b in (stats.mean, stats.var, x, out))
    ref_out, m = torch_module(x, weight, bias, stats, kw["momentum"], kw["eps"], training=True)
    tol = 8 * float(np.finfo(x.dtype).eps) * (x.size + 2) * (1 + np.abs(x).max() + np.abs(stats.mean) + stats.var)
    tol_var = tol * (1 + np.abs(x).max())  # the variance is a sum of squares
    assert np.all(np.abs(new.mean - m.running_mean.numpy()) <= tol)
    assert np.all(np.abs(new.var - m.running_var.numpy()) <= tol_var)
    if not kw["unbiased"]:  # the module normalizes with the biased variance
        scale = bn_fwd_scale(Reference((x.astype(np.float64), weight, bias), kw, ref_out.numpy(), out, ()))
        assert np.all(np.abs(out - ref_out.numpy()) <= 8 * float(np.finfo(x.dtype).eps) * scale)


def test_cumulative_average_over_batches() -> None:
    """momentum=None: after k batches the running mean is the plain average of the k batch means, as torch."""
    rng = np.random.default_rng(5)
    stats = batchnorm1d_stats(4, np.float64)
    m = torch.nn.BatchNorm1d(4, momentum=None, dtype=torch.float64)
    means = []
    for _ in range(3):
        x = rng.normal(rng.normal(), 2.0, (6, 4))
        _, _, new = batchnorm1d_forward(x, None, None, stats, momentum=None)
        assert new is not None
        stats = new
        m(torch.from_numpy(x))
        means.append(x.mean(0))
    assert stats.num_batches_tracked == 3 == int(m.num_batches_tracked)
    np.testing.assert_allclose(stats.mean, np.mean(means, axis=0), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(stats.var, m.running_var.detach().numpy(), rtol=1e-13)


def test_eval_accepts_a_single_row_and_training_does_not_like_torch() -> None:
    x = np.random.default_rng(0).normal(size=(1, 3))
    stats = BatchNormStats(np.array([0.1, -0.2, 0.3]), np.array([1.5, 0.5, 2.0]), 4)
    out, _, _ = batchnorm1d_forward(x, None, None, stats, training=False)
    np.testing.assert_allclose(out, (x - stats.mean) / np.sqrt(stats.var + 1e-5), rtol=1e-14)
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel"):
        F.batch_norm(torch.from_numpy(x), None, None, training=True)
    with pytest.raises(ValueError, match=r"^batchnorm1d in training needs more than 1 value per channel.*\(1, 3\)"):
        batchnorm1d_forward(x, None, None, stats)


def test_value_function_and_cache_hold_no_input() -> None:
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=(5, 3)), rng.normal(size=3), rng.normal(size=3)
    out, cache, _ = batchnorm1d_forward(x, w, b)
    ref = F.batch_norm(torch.from_numpy(x), None, None, torch.from_numpy(w), torch.from_numpy(b), training=True)
    for backend in ("reference", "compiled"):  # the value function against torch, on both layers
        np.testing.assert_allclose(tinyops.batchnorm1d(x, w, b, backend=backend), ref.numpy(), rtol=1e-13, atol=1e-14)
    assert not any(np.shares_memory(a, x) for a in arrays_in(cache))
    dx, dw, db = batchnorm1d_backward(upstream(out.shape, out.dtype, 3), cache)
    assert dx.shape == x.shape and dw is not None and dw.shape == (3,) and db is not None and db.shape == (3,)


# ----------------------------------------------------------------------------- bad input

X = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
W = np.array([0.5, 1.5, -1.0], np.float32)
STATS = batchnorm1d_stats(3)
fwd = batchnorm1d_forward

BAD = [
    ("x-4d", partial(fwd, X.reshape(1, 4, 3, 1)),
     ValueError, r"^batchnorm1d expects x of shape \(N, C\) or \(N, C, L\), got a 4-D array of shape \(1, 4, 3, 1\)"),
    ("x-1d", partial(fwd, X[0]), ValueError, r"^batchnorm1d expects x .* 1-D array of shape \(3,\)"),
    ("x-int", partial(fwd, X.astype(np.int64)), TypeError, r"^x must have a floating dtype.*int64"),
    ("weight-channels", partial(fwd, X, W[:2]),
     ValueError, r"^weight must have shape \(3,\) for 3 channels.*got \(2,\)"),
    ("bias-channels", partial(fwd, X, W, np.ones(4, np.float32)),
     ValueError, r"^bias must have shape \(3,\).*got \(4,\)"),
    ("weight-dtype", partial(fwd, X, W.astype(np.float64)),
     TypeError, r"^weight has dtype float64 but x has dtype float32"),
    ("running-channels", partial(fwd, X, W, W, batchnorm1d_stats(5)),
     ValueError, r"^running.mean must have shape \(3,\).*got \(5,\)"),
    ("running-dtype", partial(fwd, X, W, W, batchnorm1d_stats(3, np.float64)),
     TypeError, r"^running.mean has dtype float64"),
    ("running-type", partial(fwd, X, W, W, (STATS.mean, STATS.var, 0)),
     TypeError, r"^running must be a BatchNormStats or None, got tuple"),
    ("eval-no-stats", partial(fwd, X, W, W, None, training=False),
     ValueError, r"^eval mode \(training=False\).*running is None"),
    ("eval-negative-var", partial(fwd, X, W, W, BatchNormStats(STATS.mean, -STATS.var, 0), training=False), ValueError,
     r"^running.var must be >= 0 in eval mode, got minimum -1\.0"),
    ("train-one-row", partial(fwd, X[:1], W, W, STATS),
     ValueError, r"^batchnorm1d in training needs more than 1 value.*\(1, 3\)"),
    ("train-one-value-3d", partial(fwd, X[:1, :, None], W, W, STATS), ValueError, r"more than 1 value.*\(1, 3, 1\)"),
    ("momentum-range", partial(fwd, X, W, W, STATS, momentum=1.5),
     ValueError, r"^momentum must be a number in \[0, 1\] or None, got 1\.5"),
    ("momentum-str", partial(fwd, X, W, W, STATS, momentum="0.1"), ValueError, r"^momentum .* got '0\.1'"),
    ("eps-negative", partial(fwd, X, W, W, STATS, eps=-1e-5),
     ValueError, r"^eps must be a finite number >= 0, got -1e-05"),
    ("training-str", partial(fwd, X, W, W, STATS, training="no"), TypeError, r"^training must be a bool, got str 'no'"),
    ("stats-size", partial(batchnorm1d_stats, 0), ValueError, r"^num_features must be a positive int, got 0"),
]


@pytest.mark.parametrize(("call", "exc", "pattern"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(call: Any, exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        call()


def test_bad_dout() -> None:
    _, cache, _ = batchnorm1d_forward(X, W, W)
    with pytest.raises(
        ValueError, match=re.escape("dout must have the forward output's shape (4, 3), got shape (3, 4)")
    ):
        batchnorm1d_backward(X.T.copy(), cache)
    with pytest.raises(TypeError, match=r"^dout must have the forward output's dtype float32, got dtype float64"):
        batchnorm1d_backward(X.astype(np.float64), cache)
