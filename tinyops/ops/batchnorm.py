"""Batch normalization over the batch (and length) axes, per channel, as ``torch.nn.BatchNorm1d``.

Shapes: N = batch, C = channels (features), L = length. ``x`` is (N, C) or (N, C, L); the statistics are
taken per channel over the M = N (or N * L) values of that channel; ``weight`` and ``bias`` are (C,).

Training: ``out = weight * (x - mean) / sqrt(var + eps) + bias`` with the batch's mean and variance
(biased, divided by M, as torch; or Bessel-corrected, divided by M - 1, with ``unbiased=True`` as in
makemore part 4), and new running statistics returned as new arrays (the caller's are never written):
``running = (1 - f) * running + f * batch`` with ``f = momentum``, or ``f = 1 / num_batches_tracked``
(a cumulative average) when ``momentum`` is None; the running variance is always fed the unbiased
batch variance, as torch does. Eval: the same formula with the running mean and variance.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import (
    Array,
    Backend,
    as_float_array,
    check_backend,
    check_bool,
    check_cache,
    check_dout,
    check_same_dtype,
    is_int,
    is_number,
)


class BatchNormStats(NamedTuple):
    """Running statistics of one batchnorm layer (torch's buffers), as immutable values.

    ``mean`` and ``var`` are (C,); ``num_batches_tracked`` counts the training batches seen, which makes
    the cumulative average (``momentum=None``) work as in torch.
    """

    mean: Array  # (C,)
    var: Array  # (C,)
    num_batches_tracked: int


class BatchNormCache(NamedTuple):
    xhat: Array  # (N, C[, L]) the normalized input (x - mean) * inv_std, in the working dtype
    inv_std: Array  # (C,) 1 / sqrt(var + eps), var from the batch (training) or the running stats (eval)
    weight: Array | None  # (C,) or None, in the working dtype
    has_bias: bool
    training: bool
    unbiased: bool
    backend: Backend
    dtype: np.dtype[Any]  # x's dtype (float16 input is worked on in float32: xhat and inv_std are float32)


def batchnorm1d_stats(num_features: int, dtype: npt.DTypeLike = np.float32) -> BatchNormStats:
    """Fresh running statistics, as torch initializes them: mean 0, var 1, no batch tracked.

    Args:
        num_features: C, the number of channels.
        dtype: the statistics' float dtype (that of the x they will normalize). Default float32.

    Returns:
        :class:`BatchNormStats` with (C,) mean zeros and var ones, and num_batches_tracked 0.

    Raises:
        ValueError: num_features is not a positive int.
    """
    if not is_int(num_features) or num_features < 1:
        raise ValueError(f"num_features must be a positive int, got {num_features!r}")
    return BatchNormStats(np.zeros(num_features, dtype), np.ones(num_features, dtype), 0)


def _check_channel_vector(name: str, value: npt.ArrayLike, C: int, x: Array) -> Array:
    arr = as_float_array(name, value)
    if arr.shape != (C,):
        raise ValueError(f"{name} must have shape ({C},) for {C} channels (x has shape {x.shape}), got {arr.shape}")
    check_same_dtype(name, arr, "x", x)
    return arr


def _as_3d(a: Array) -> Array:
    """(N, C) as (N, C, 1), (N, C, L) as it is: the entry points see one layout, C-contiguous."""
    a = np.ascontiguousarray(a)
    return a.reshape(*a.shape, 1) if a.ndim == 2 else a


@functools.cache
def _kernels() -> Any:
    """:mod:`tinyops.kernels.elementwise`, imported on first use: importing tinyops does not import numba."""
    from ..kernels import elementwise

    return elementwise


# ============================================================================ the entry points (no checks)


def batchnorm_rows_forward(
    x: Array, weight: Array, bias: Array, stats: Array, *, training: bool, eps: float, unbiased: bool,
    out: Array | None = None, xhat: Array | None = None, backend: Backend = "compiled",
) -> tuple[Array, Array]:
    """Normalize each channel of (N, C, L) ``x``, then scale and shift: ``out = weight * xhat + bias``; checks nothing.

    The entry point of :func:`batchnorm1d_forward` and of :class:`tinyops.mlp.Trainer`.

    Args:
        x: (N, C, L) float32/float64, C-contiguous (an (N, C) input is (N, C, 1); the M = N * L values of
            a channel are normalized together).
        weight, bias: (C,) (ones and zeros stand for a missing weight or bias).
        stats: (3, C) array ``[mean; var; inv_std]``, written in place. Training: the batch's mean, its
            unbiased variance (what the running variance is fed, whatever ``unbiased`` says) and
            ``inv_std = 1 / sqrt(var + eps)`` of the normalizing variance (divided by M - 1 if
            ``unbiased`` else M). Eval: rows 0 and 1 hold the running mean and variance on entry;
            row 2 receives inv_std.
        training, eps, unbiased: as :func:`batchnorm1d_forward` (training needs M > 1).
        out, xhat: None (new arrays) or C-contiguous arrays of x's shape and dtype to write into.
        backend: 'compiled' (:mod:`tinyops.kernels.elementwise`) or 'reference' (the NumPy below).

    Returns:
        ``(out, xhat)``: x's shape.
    """
    N, C, L = x.shape
    out = np.empty_like(x) if out is None else out
    xhat = np.empty_like(x) if xhat is None else xhat
    if backend == "compiled":
        kernels = _kernels()
        kernels.batchnorm_forward(x.reshape(N, C * L), L, weight, bias, eps, unbiased, training, stats,
                                  xhat.reshape(N, C * L), out.reshape(N, C * L))
        return out, xhat
    dt = x.dtype.type
    if training:
        M = N * L  # values per channel
        mean = x.sum(axis=(0, 2)) / dt(M)  # (C,)
        xc = x - mean[:, None]  # (N, C, L) centered
        sq_sum = np.einsum("ncl,ncl->c", xc, xc)  # (C,) sum of squared deviations
        var = sq_sum / dt(M - 1 if unbiased else M)  # (C,) the variance that normalizes
        stats[0], stats[1] = mean, sq_sum / dt(M - 1)  # torch feeds the running var the unbiased variance
    else:
        var = stats[1]  # (C,) the running variance
        xc = x - stats[0][:, None]  # (N, C, L)
    stats[2] = dt(1.0) / np.sqrt(var + dt(eps))  # (C,) inv_std
    np.multiply(xc, stats[2][:, None], out=xhat)  # (N, C, L) xhat = (x - mean) * inv_std
    np.multiply(xhat, weight[:, None], out=out)  # out = weight * xhat + bias
    out += bias[:, None]
    return out, xhat


def batchnorm_rows_backward(
    dout: Array, xhat: Array, g_s: Array, *, training: bool, unbiased: bool, dx: Array | None = None,
    dweight: Array | None = None, dbias: Array | None = None, backend: Backend = "compiled",
) -> tuple[Array, Array, Array]:
    """``(dx, dweight, dbias)`` of :func:`batchnorm_rows_forward`; checks nothing. The derivation is
    :func:`batchnorm1d_backward`'s.

    Args:
        dout, xhat: (N, C, L), C-contiguous.
        g_s: (C,) ``weight * inv_std`` (``inv_std`` alone without a weight).
        training, unbiased: as the forward.
        dx: None or a C-contiguous (N, C, L) array to write into; dweight, dbias: None or (C,) arrays.
        backend: 'compiled' or 'reference'.

    Returns:
        ``(dx, dweight, dbias)``: (N, C, L), (C,), (C,); ``dweight = sum(dout * xhat)`` and
        ``dbias = sum(dout)`` per channel.
    """
    N, C, L = dout.shape
    dx = np.empty_like(dout) if dx is None else dx
    dweight = np.empty(C, dout.dtype) if dweight is None else dweight
    dbias = np.empty(C, dout.dtype) if dbias is None else dbias
    M = N * L
    m_over_d = M / (M - 1) if training and unbiased else 1.0  # M / D (eval: unused)
    if backend == "compiled":
        kernels = _kernels()
        kernels.batchnorm_backward(dout.reshape(N, C * L), xhat.reshape(N, C * L), L, g_s, training, m_over_d,
                                   dx.reshape(N, C * L), dweight, dbias)
        return dx, dweight, dbias
    dout.sum(axis=(0, 2), out=dbias)  # (C,) sum(dout)
    np.einsum("ncl,ncl->c", dout, xhat, out=dweight)  # (C,) sum(dout * xhat)
    if not training:  # the statistics are constants: dx = g * s * dout
        np.multiply(dout, g_s[:, None], out=dx)
        return dx, dweight, dbias
    dt = dout.dtype.type
    np.multiply(xhat, (dt(m_over_d) * dweight)[:, None], out=dx)  # (M/D) * xhat * sum(dout * xhat)
    dx += dbias[:, None]  # + sum(dout)
    np.subtract(dt(M) * dout, dx, out=dx)  # M * dout - sum(dout) - (M/D) * xhat * sum(dout * xhat)
    dx *= (g_s / dt(M))[:, None]  # times g * s / M
    return dx, dweight, dbias


def batchnorm_running_update(
    running: Array, batch: Array, f: float, *, out: Array | None = None, backend: Backend = "compiled"
) -> Array:
    """``(1 - f) * running + f * batch`` over (2, C) ``[mean; var]`` arrays; checks nothing.

    ``out`` may be ``running`` itself (the trainer updates its statistics in place). The running variance
    is fed the batch's unbiased variance (row 1 of :func:`batchnorm_rows_forward`'s stats).
    """
    out = np.empty_like(running) if out is None else out
    if backend == "compiled":
        kernels = _kernels()
        kernels.running_update(running, batch, f, out)
        return out
    dt = running.dtype.type
    np.add((dt(1) - dt(f)) * running, dt(f) * batch, out=out)
    return out


# ============================================================================ the op


def batchnorm1d_forward(
    x: npt.ArrayLike,
    weight: npt.ArrayLike | None = None,
    bias: npt.ArrayLike | None = None,
    running: BatchNormStats | None = None,
    *,
    training: bool = True,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    unbiased: bool = False,
    backend: Backend = "compiled",
) -> tuple[Array, BatchNormCache, BatchNormStats | None]:
    """Normalize each channel, scale by ``weight`` and shift by ``bias``; update the running statistics.

    Args:
        x: (N, C) or (N, C, L) float array.
        weight: (C,) gain (torch's ``gamma``), or None for 1. Same dtype as x.
        bias: (C,) shift (``beta``), or None for 0. Same dtype as x.
        running: running statistics (see :func:`batchnorm1d_stats`), or None to track none
            (training only). Mean and var must be (C,) in x's dtype.
        training: True: normalize with the batch's statistics and return updated running stats;
            False (eval): normalize with ``running`` and return it unchanged.
        momentum: weight of the new batch in the running average, in [0, 1]; None for a cumulative
            average (``1 / num_batches_tracked``), as torch.
        eps: added to the variance before the square root: > 0 in training (as torch: a channel of equal
            values would divide 0 by 0), >= 0 in eval. A Python or NumPy number.
        unbiased: normalize with the Bessel-corrected batch variance (divide by M - 1) instead of torch's
            biased one (divide by M), as makemore part 4 does. Training only; the running variance is
            fed the unbiased variance either way.
        backend: 'compiled' (default; :mod:`tinyops.kernels.elementwise`) or 'reference' (plain NumPy).
            The backward uses the same. float16 input (x, weight, bias, running stats) is computed in
            float32 and rounded once: float16 cannot even hold a batch of more than 65,504 values' count.

    Returns:
        ``(out, cache, new_running)``: out has x's shape and dtype; the cache holds the normalized
        input, the (C,) inverse standard deviation and the weight; ``new_running`` is a new
        :class:`BatchNormStats` (training; num_batches_tracked + 1) or ``running`` itself, unchanged
        (eval), or None when ``running`` is None. An empty training batch (N = 0 or L = 0) gives an empty
        out and running statistics with the same mean and var (new arrays) and num_batches_tracked + 1,
        as torch's ``BatchNorm1d``.

    Raises:
        TypeError: a non-floating input, dtypes that differ, ``running`` not a BatchNormStats.
        ValueError: x not 2-D or 3-D (e.g. a 4-D input), a weight/bias/running stat whose length is not
            C, momentum outside [0, 1], a non-finite eps, or one <= 0 in training (< 0 in eval), eval mode
            without running stats or with a negative running variance, a num_batches_tracked that is not an
            int >= 0, a training batch with 1 value per channel (as torch), an unknown backend.
    """
    check_backend(backend)
    x = as_float_array("x", x)
    if x.ndim not in (2, 3):
        raise ValueError(
            f"batchnorm1d expects x of shape (N, C) or (N, C, L), got a {x.ndim}-D array of shape {x.shape}"
        )
    C = x.shape[1]
    M = x.shape[0] * (x.shape[2] if x.ndim == 3 else 1)  # values per channel: N or N * L
    w = None if weight is None else _check_channel_vector("weight", weight, C, x)
    b = None if bias is None else _check_channel_vector("bias", bias, C, x)
    training = check_bool("training", training)
    unbiased = check_bool("unbiased", unbiased)
    if momentum is not None and (not is_number(momentum) or not 0.0 <= momentum <= 1.0):  # (also nan)
        raise ValueError(f"momentum must be a number in [0, 1] or None, got {momentum!r}")
    if not is_number(eps) or not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if training and eps == 0:  # as torch: a channel of equal values would give 0 / 0
        raise ValueError(f"eps must be > 0 in training (a channel of equal values would divide 0 by 0), got {eps!r}")
    eps = float(eps)
    if running is not None:
        if not isinstance(running, BatchNormStats):
            raise TypeError(f"running must be a BatchNormStats or None, got {type(running).__name__}")
        if not is_int(running.num_batches_tracked) or running.num_batches_tracked < 0:
            raise ValueError(f"running.num_batches_tracked must be an int >= 0, got {running.num_batches_tracked!r}")
        _check_channel_vector("running.mean", running.mean, C, x)
        _check_channel_vector("running.var", running.var, C, x)
    if not training:
        if running is None:
            raise ValueError("eval mode (training=False) normalizes with the running statistics: running is None")
        if (running.var < 0).any():  # it would turn the output into nan
            raise ValueError(f"running.var must be >= 0 in eval mode, got minimum {float(running.var.min())!r}")
    elif M == 1:
        raise ValueError(f"batchnorm1d in training needs more than 1 value per channel, got input of shape {x.shape}")
    work = np.dtype(np.float32) if x.dtype == np.float16 else x.dtype  # float16: computed in float32

    if training and M == 0:  # an empty batch, as torch: nothing to normalize, the statistics stay as they are
        new_stats = None if running is None else BatchNormStats(
            running.mean.copy(), running.var.copy(), int(running.num_batches_tracked) + 1
        )
        cache = BatchNormCache(np.empty(x.shape, work), np.zeros(C, work), None if w is None else w.astype(work),
                               b is not None, True, unbiased, backend, x.dtype)
        return np.empty(x.shape, x.dtype), cache, new_stats

    stats = np.empty((3, C), work)  # [mean; var; inv_std]
    if not training:
        assert running is not None
        stats[0], stats[1] = running.mean, running.var
    ones_or_w = np.ones(C, work) if w is None else w.astype(work, copy=False)
    zeros_or_b = np.zeros(C, work) if b is None else b.astype(work, copy=False)
    x3 = _as_3d(x).astype(work, copy=False)
    out, xhat = batchnorm_rows_forward(x3, ones_or_w, zeros_or_b, stats, training=training, eps=eps,
                                       unbiased=unbiased, backend=backend)
    new_running: BatchNormStats | None = running
    if training:
        new_running = None
        if running is not None:
            n = int(running.num_batches_tracked) + 1
            f = 1.0 / n if momentum is None else float(momentum)
            old = np.stack([running.mean, running.var]).astype(work)  # (2, C) new arrays: the caller's are not touched
            new = batchnorm_running_update(old, stats[:2], f, out=old, backend=backend).astype(x.dtype, copy=False)
            new_running = BatchNormStats(new[0], new[1], n)
    w_work = None if w is None else ones_or_w
    cache = BatchNormCache(xhat.reshape(x.shape), stats[2], w_work, b is not None, training, unbiased, backend, x.dtype)
    return out.reshape(x.shape).astype(x.dtype, copy=False), cache, new_running


def batchnorm1d_backward(dout: npt.ArrayLike, cache: BatchNormCache) -> tuple[Array, Array | None, Array | None]:
    """Gradients of batchnorm with respect to x, weight and bias (the running stats get none).

    Args:
        dout: upstream gradient, shape and dtype of the forward's out.
        cache: from :func:`batchnorm1d_forward`.

    Returns:
        ``(dx, dweight, dbias)``: x's shape, and (C,) each (None where the forward had no weight / bias).

    Derivation (per channel; sums run over the M values of the channel; ``g`` = weight, or 1):
        ``out = g * xhat + b``, ``xhat = (x - mu) * s``, ``s = (var + eps)^-1/2``,
        ``mu = sum(x) / M``, ``var = sum((x - mu)^2) / D`` with ``D = M`` (biased) or ``M - 1`` (unbiased).
        ``dbias = sum(dout)``, ``dweight = sum(dout * xhat)``, ``dxhat = g * dout``.
        ``dvar = sum(dxhat * (x - mu)) * (-1/2) s^3``; ``dmu = -s sum(dxhat)`` (its term through var,
        ``dvar * (-2/D) sum(x - mu)``, is 0); ``dx = s dxhat + dvar * 2 (x - mu) / D + dmu / M``.
        Substituting ``x - mu = xhat / s`` and pulling out ``g s / M``, the fused one-line form:
        ``dx = g * s / M * (M * dout - sum(dout) - (M / D) * xhat * sum(dout * xhat))``
        (makemore part 4's ``dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0)
        - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))``).
        In eval mode mu and s are constants (running stats): ``dx = g * s * dout``.
    """
    check_cache(cache, BatchNormCache, "batchnorm1d_forward")
    xhat, inv_std, weight, has_bias, training, unbiased, backend, dtype = cache
    dout = check_dout(dout, xhat.shape, dtype).astype(xhat.dtype, copy=False)  # float16: worked on in float32
    C = inv_std.shape[0]
    if xhat.size == 0:  # an empty batch: no gradient flows (as torch: zeros for weight and bias)
        dx, dweight, dbias = np.zeros(xhat.shape, dtype), np.zeros(C, dtype), np.zeros(C, dtype)
    else:
        g_s = inv_std if weight is None else weight * inv_std  # (C,)
        dx3, dweight, dbias = batchnorm_rows_backward(_as_3d(dout), _as_3d(xhat), g_s, training=training,
                                                      unbiased=unbiased, backend=backend)
        dx, dweight, dbias = (a.astype(dtype, copy=False) for a in (dx3.reshape(xhat.shape), dweight, dbias))
    return dx, (dweight if weight is not None else None), (dbias if has_bias else None)


def batchnorm1d(
    x: npt.ArrayLike,
    weight: npt.ArrayLike | None = None,
    bias: npt.ArrayLike | None = None,
    running: BatchNormStats | None = None,
    *,
    training: bool = True,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    unbiased: bool = False,
    backend: Backend = "compiled",
) -> Array:
    """The normalized output only (the new running stats are dropped); see :func:`batchnorm1d_forward`."""
    return batchnorm1d_forward(
        x, weight, bias, running, training=training, momentum=momentum, eps=eps, unbiased=unbiased, backend=backend
    )[0]
