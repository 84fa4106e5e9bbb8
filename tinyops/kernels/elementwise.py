"""Elementwise and per-channel kernels of the training step: tanh and its backward, batchnorm.

Shapes: R = rows, K = columns processed; N = batch, C = channels, L = length (batchnorm's (N, C, L) input
is handled as (N, C*L) rows, each channel owning L adjacent columns).

    y[r, k]  = tanh(x[r, k])                                   tanh forward
    dx[r, k] = (1 - y[r, k]**2) * dout[r, k]                   tanh backward

Every array is 2-D and C-contiguous; the tanh kernels read and write the first K columns of each row, so an
array may carry extra trailing columns (the training step's ``[h, 1]`` buffer holds a column of ones after
``h``: tanh writes ``h`` straight into it). Rows run in parallel (``prange``) in the ``_parallel`` drivers;
the serial twins call the same row function, so the bits never depend on the thread count.

**tanh** (float32 and float64, each in its own dtype, straight-line code so the loop vectorizes):

- ``|x| < 0.55``: ``tanh(x) = x + x^3 P(x^2)`` with P the Chebyshev fit (mpmath ``chebyfit``) of
  ``(tanh(x) - x) / x^3`` on ``x^2`` in [0, 0.3025]: degree 4 in float32, 10 in float64; the fit's
  relative error is below 4e-9 and 3e-18;
- ``|x| >= 0.55``: ``tanh(|x|) = 1 - 2 / (exp(2|x|) + 1)``, with the vectorizable exp of
  :mod:`tinyops.kernels.exp`; there ``tanh >= 0.5``, so the subtraction loses no bit of the quotient.
  ``2|x|`` is clamped at 20 (float32) / 40 (float64), where tanh is 1 to the last bit;
- the sign is put back with ``copysign`` (``tanh(-0) = -0``); nan stays nan (it fails both the ``<`` and the
  clamp's ``>``), ``tanh(+-inf) = +-1``.

tests/test_compiled_elementwise.py measures the error against mpmath: at most 2 ulp in either dtype.

**batchnorm** (training: the batch's statistics; eval: given ones). Per channel, over its M values:
the mean, then the sum of squared deviations (two passes: no cancellation), ``var`` = that sum over
``M - 1`` (unbiased) or M, ``inv_std = 1 / sqrt(var + eps)``, then one pass that writes
``xhat = (x - mean) * inv_std`` and ``out = weight * xhat + bias``. The backward (the one-line form of
:func:`tinyops.ops.batchnorm.batchnorm1d_backward`'s derivation) makes one pass for ``sum(dout)`` and
``sum(dout * xhat)`` and one that writes dx. The sums accumulate row after row in the array's dtype (each
column its own accumulator, so the loop vectorizes across columns without reordering any sum).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import prange
from numba.core import types
from numba.extending import overload

from ._numba import jit, launch
from .exp import exp32, exp64

ELEMENTWISE_FLAGS = frozenset({"contract"})  # fused multiply-adds only: no sum here is reordered

# ----------------------------------------------------------------------------- tanh of one number

F32 = np.float32
SMALL = 0.55  # below: the polynomial; from here on tanh >= 0.5 and 1 - 2 / (exp(2x) + 1) is exact enough


@jit(fastmath=ELEMENTWISE_FLAGS)
def tanh32(x: Any) -> Any:
    """``tanh(x)`` of a float32, within 2 ulp."""
    a = abs(x)
    u = a * a
    p = F32(-0.006610227831114734)  # P(u), Chebyshev fit on [0, 0.55^2], Horner
    p = p * u + F32(0.021309388664443474)
    p = p * u + F32(-0.05390942882746055)
    p = p * u + F32(0.1333311372902087)
    p = p * u + F32(-0.3333333200797698)
    small = a + a * u * p  # x + x^3 P(x^2)
    a2 = a + a
    a2 = F32(20.0) if a2 > F32(20.0) else a2  # exp(20) > 2^28: 2 / (t + 1) is below half an ulp of 1
    big = F32(1.0) - F32(2.0) / (exp32(a2) + F32(1.0))
    return math.copysign(small if a < F32(SMALL) else big, x)


@jit(fastmath=ELEMENTWISE_FLAGS)
def tanh64(x: Any) -> Any:
    """``tanh(x)`` of a float64, within 2 ulp."""
    a = abs(x)
    u = a * a
    p = -2.060276537636634e-05  # P(u), Chebyshev fit on [0, 0.55^2], Horner
    p = p * u + 8.511313685577672e-05
    p = p * u + -0.0002346347410887237
    p = p * u + 0.0005889360520074057
    p = p * u + -0.001455661830100716
    p = p * u + 0.003592110378689024
    p = p * u + -0.008863234397814355
    p = p * u + 0.021869488493666944
    p = p * u + -0.053968253967434016
    p = p * u + 0.13333333333332714
    p = p * u + -0.3333333333333333
    small = a + a * u * p
    a2 = a + a
    a2 = 40.0 if a2 > 40.0 else a2  # exp(40) > 2^57
    big = 1.0 - 2.0 / (exp64(a2) + 1.0)
    return math.copysign(small if a < SMALL else big, x)


def tanh_of(x: Any) -> Any:
    """``tanh32(x)`` for a float32, ``tanh64(x)`` for a float64 (inside compiled code only)."""
    raise NotImplementedError("tanh_of is for compiled code")


@overload(tanh_of, strict=False)
def _tanh_of(x: Any) -> Any:
    if x == types.float32:
        return lambda x: tanh32(x)
    return lambda x: tanh64(x)


# ----------------------------------------------------------------------------- tanh over rows


@jit(fastmath=ELEMENTWISE_FLAGS)
def tanh_row(x: Any, y: Any, K: int) -> None:
    for k in range(K):
        y[k] = tanh_of(x[k])


@jit(fastmath=ELEMENTWISE_FLAGS)
def tanh_forward_serial(x: Any, y: Any, K: int) -> None:
    """``y[:, :K] = tanh(x[:, :K])``: x, y (R, >= K)."""
    for r in range(x.shape[0]):
        tanh_row(x[r], y[r], K)


@jit(parallel=True, fastmath=ELEMENTWISE_FLAGS)
def tanh_forward_parallel(x: Any, y: Any, K: int) -> None:
    for r in prange(x.shape[0]):
        tanh_row(x[r], y[r], K)


@jit(fastmath=ELEMENTWISE_FLAGS)
def tanh_backward_row(y: Any, dout: Any, dx: Any, K: int) -> None:
    one = y.dtype.type(1.0)
    for k in range(K):
        dx[k] = (one - y[k] * y[k]) * dout[k]


@jit(fastmath=ELEMENTWISE_FLAGS)
def tanh_backward_serial(y: Any, dout: Any, dx: Any, K: int) -> None:
    """``dx[:, :K] = (1 - y**2) * dout`` on the first K columns: y, dout, dx (R, >= K)."""
    for r in range(y.shape[0]):
        tanh_backward_row(y[r], dout[r], dx[r], K)


@jit(parallel=True, fastmath=ELEMENTWISE_FLAGS)
def tanh_backward_parallel(y: Any, dout: Any, dx: Any, K: int) -> None:
    for r in prange(y.shape[0]):
        tanh_backward_row(y[r], dout[r], dx[r], K)


# ----------------------------------------------------------------------------- batchnorm


@jit(fastmath=ELEMENTWISE_FLAGS)
def per_channel(colsums: Any, L: int, out: Any) -> None:
    """``out[c] = sum_l colsums[c * L + l]``: the K = C * L column sums folded into C channels."""
    for c in range(out.shape[0]):
        s = colsums.dtype.type(0.0)
        for j in range(L):
            s += colsums[c * L + j]
        out[c] = s


@jit(fastmath=ELEMENTWISE_FLAGS)
def per_column(v: Any, L: int, out: Any) -> None:
    """``out[c * L + l] = v[c]``: a channel vector spread over its L columns."""
    for c in range(v.shape[0]):
        for j in range(L):
            out[c * L + j] = v[c]


@jit(fastmath=ELEMENTWISE_FLAGS)
def batchnorm_forward(
    x: Any, L: int, weight: Any, bias: Any, eps: float, unbiased: bool, training: bool, stats: Any,
    xhat: Any, out: Any,
) -> None:
    """Normalize x (N, K = C*L) per channel; write xhat and out (N, K).

    ``stats`` (3, C): training writes [mean; unbiased var; inv_std] of the batch into it; eval reads the
    running [mean; var] from its first two rows and writes inv_std into the third.
    """
    N, K = x.shape
    C = stats.shape[1]
    dt = x.dtype.type
    mean, var, inv_std = stats[0], stats[1], stats[2]
    col = np.zeros(K, x.dtype)  # (K,) per-column sums, then per-column mean and scale
    if training:
        M = N * L
        for n in range(N):  # pass 1: the mean
            row = x[n]
            for k in range(K):
                col[k] += row[k]
        per_channel(col, L, mean)
        for c in range(C):
            mean[c] = mean[c] / dt(M)
        per_column(mean, L, col)
        sq = np.zeros(K, x.dtype)  # pass 2: the sum of squared deviations
        for n in range(N):
            row = x[n]
            for k in range(K):
                d = row[k] - col[k]
                sq[k] += d * d
        per_channel(sq, L, var)  # var = sum of squares for now
        for c in range(C):
            ss = var[c]
            v_norm = ss / dt(M - 1 if unbiased else M)  # the variance that normalizes
            inv_std[c] = dt(1.0) / math.sqrt(v_norm + dt(eps))
            var[c] = ss / dt(M - 1)  # the running variance is fed the unbiased one
    else:
        for c in range(C):
            inv_std[c] = dt(1.0) / math.sqrt(var[c] + dt(eps))
        per_column(mean, L, col)
    scale = np.empty(K, x.dtype)  # (K,) inv_std per column
    gain = np.empty(K, x.dtype)
    shift = np.empty(K, x.dtype)
    per_column(inv_std, L, scale)
    per_column(weight, L, gain)
    per_column(bias, L, shift)
    for n in range(N):  # pass 3: xhat and out
        row, xh, o = x[n], xhat[n], out[n]
        for k in range(K):
            v = (row[k] - col[k]) * scale[k]
            xh[k] = v
            o[k] = v * gain[k] + shift[k]


@jit(fastmath=ELEMENTWISE_FLAGS)
def batchnorm_backward(
    dout: Any, xhat: Any, L: int, g_s: Any, training: bool, m_over_d: float, dx: Any, dweight: Any, dbias: Any
) -> None:
    """dx (N, K), dweight and dbias (C,) from dout and xhat (N, K = C*L); ``g_s`` (C,) = weight * inv_std.

    Training: ``dx = g_s / M * (M * dout - dbias - (M / D) * xhat * dweight)``; eval: ``dx = g_s * dout``.
    """
    N, K = dout.shape
    dt = dout.dtype.type
    M = N * L
    sum_d = np.zeros(K, dout.dtype)  # (K,) per-column sum(dout), then sum(dout * xhat)
    sum_dx = np.zeros(K, dout.dtype)
    for n in range(N):
        d, xh = dout[n], xhat[n]
        for k in range(K):
            sum_d[k] += d[k]
            sum_dx[k] += d[k] * xh[k]
    per_channel(sum_d, L, dbias)
    per_channel(sum_dx, L, dweight)
    a = np.empty(K, dout.dtype)  # (K,) coefficient of dout
    b = np.empty(K, dout.dtype)  # (K,) coefficient of xhat
    c0 = np.empty(K, dout.dtype)  # (K,) constant term
    if training:
        per_column(g_s, L, a)  # g_s, spread over the columns
        for k in range(K):
            c = k // L
            s = a[k] / dt(M)
            b[k] = -s * dt(m_over_d) * dweight[c]
            c0[k] = -s * dbias[c]
    else:
        per_column(g_s, L, a)
        b[:] = 0
        c0[:] = 0
    for n in range(N):
        d, xh, o = dout[n], xhat[n], dx[n]
        for k in range(K):
            o[k] = a[k] * d[k] + b[k] * xh[k] + c0[k]


@jit(fastmath=ELEMENTWISE_FLAGS)
def running_update(running: Any, batch: Any, f: float, out: Any) -> None:
    """``out = (1 - f) * running + f * batch`` elementwise over (2, C) [mean; var] (out may be running)."""
    dt = running.dtype.type
    keep = dt(1.0) - dt(f)
    for i in range(running.shape[0]):
        for c in range(running.shape[1]):
            out[i, c] = keep * running[i, c] + dt(f) * batch[i, c]


# ----------------------------------------------------------------------------- drivers (called by tinyops.ops)


def tanh_forward(x: Any, y: Any, K: int, threads: int) -> None:
    """``y[:, :K] = tanh(x[:, :K])`` on ``threads`` threads (1: the serial twin)."""
    launch(tanh_forward_serial, tanh_forward_parallel, threads, x, y, K)


def tanh_backward(y: Any, dout: Any, dx: Any, K: int, threads: int) -> None:
    """``dx[:, :K] = (1 - y[:, :K]**2) * dout[:, :K]`` on ``threads`` threads (1: the serial twin)."""
    launch(tanh_backward_serial, tanh_backward_parallel, threads, y, dout, dx, K)


@jit(fastmath=ELEMENTWISE_FLAGS)
def sgd_step(param: Any, grad: Any, lr: float) -> None:
    """``param -= lr * grad`` in place over 1-D arrays: one pass (the multiply-add may be fused)."""
    step = param.dtype.type(lr)
    for i in range(param.shape[0]):
        param[i] -= step * grad[i]
