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

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import as_float_array, check_dout, check_same_dtype

Array = npt.NDArray[Any]


class BatchNormStats(NamedTuple):
    """Running statistics of one batchnorm layer (torch's buffers), as immutable values.

    ``mean`` and ``var`` are (C,); ``num_batches_tracked`` counts the training batches seen, which makes
    the cumulative average (``momentum=None``) work as in torch.
    """

    mean: Array  # (C,)
    var: Array  # (C,)
    num_batches_tracked: int


class BatchNormCache(NamedTuple):
    xhat: Array  # (N, C[, L]) the normalized input (x - mean) * inv_std
    inv_std: Array  # (C,) 1 / sqrt(var + eps), var from the batch (training) or the running stats (eval)
    weight: Array | None  # (C,) or None
    has_bias: bool
    training: bool
    unbiased: bool


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
    if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or num_features < 1:
        raise ValueError(f"num_features must be a positive int, got {num_features!r}")
    return BatchNormStats(np.zeros(num_features, dtype), np.ones(num_features, dtype), 0)


def _channel_shape(ndim: int, C: int) -> tuple[int, ...]:
    return (C,) if ndim == 2 else (C, 1)  # broadcasts a (C,) vector against (N, C) or (N, C, L)


def _reduce_axes(ndim: int) -> tuple[int, ...]:
    return (0,) if ndim == 2 else (0, 2)


def _sum_per_channel(ndim: int) -> str:
    return "nc,nc->c" if ndim == 2 else "ncl,ncl->c"  # einsum: sum over all but the channel axis of a * b


def _check_channel_vector(name: str, value: npt.ArrayLike, C: int, x: Array) -> Array:
    arr = as_float_array(name, value)
    if arr.shape != (C,):
        raise ValueError(f"{name} must have shape ({C},) for {C} channels (x has shape {x.shape}), got {arr.shape}")
    check_same_dtype(name, arr, "x", x)
    return arr


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
        eps: added to the variance before the square root, >= 0.
        unbiased: normalize with the Bessel-corrected batch variance (divide by M - 1) instead of torch's
            biased one (divide by M), as makemore part 4 does. Training only; the running variance is
            fed the unbiased variance either way.

    Returns:
        ``(out, cache, new_running)``: out has x's shape and dtype; the cache holds the normalized
        input, the (C,) inverse standard deviation and the weight; ``new_running`` is a new
        :class:`BatchNormStats` (training; num_batches_tracked + 1) or ``running`` itself (eval), or
        None when ``running`` is None.

    Raises:
        TypeError: a non-floating input, dtypes that differ, ``running`` not a BatchNormStats.
        ValueError: x not 2-D or 3-D (e.g. a 4-D input), a weight/bias/running stat whose length is not
            C, momentum outside [0, 1], a negative or non-finite eps, eval mode without running stats or
            with a negative running variance, or a training batch with 1 value per channel (as torch).
    """
    x = as_float_array("x", x)
    if x.ndim not in (2, 3):
        raise ValueError(
            f"batchnorm1d expects x of shape (N, C) or (N, C, L), got a {x.ndim}-D array of shape {x.shape}"
        )
    C = x.shape[1]
    cshape = _channel_shape(x.ndim, C)
    axes = _reduce_axes(x.ndim)
    M = x.shape[0] * (x.shape[2] if x.ndim == 3 else 1)  # values per channel: N or N * L
    w = None if weight is None else _check_channel_vector("weight", weight, C, x)
    b = None if bias is None else _check_channel_vector("bias", bias, C, x)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"training must be a bool, got {type(training).__name__} {training!r}")
    if momentum is not None and (
        isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0
    ):
        raise ValueError(f"momentum must be a number in [0, 1] or None, got {momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if running is not None:
        if not isinstance(running, BatchNormStats):
            raise TypeError(f"running must be a BatchNormStats or None, got {type(running).__name__}")
        _check_channel_vector("running.mean", running.mean, C, x)
        _check_channel_vector("running.var", running.var, C, x)

    if not training:
        if running is None:
            raise ValueError("eval mode (training=False) normalizes with the running statistics: running is None")
        if (running.var < 0).any():  # it would turn the output into nan
            raise ValueError(f"running.var must be >= 0 in eval mode, got minimum {float(running.var.min())!r}")
        inv_std = 1.0 / np.sqrt(running.var + x.dtype.type(eps))  # (C,)
        xhat = (x - running.mean.reshape(cshape)) * inv_std.reshape(cshape)  # (N, C[, L])
        new_running: BatchNormStats | None = running
    else:
        if M <= 1:
            raise ValueError(
                f"batchnorm1d in training needs more than 1 value per channel, got input of shape {x.shape}"
            )
        mean = x.sum(axis=axes) / M  # (C,)  (what x.mean computes, without its overhead)
        xc = x - mean.reshape(cshape)  # (N, C[, L]) centered
        sq_sum = np.einsum(_sum_per_channel(x.ndim), xc, xc)  # (C,) sum of squared deviations
        var = sq_sum / (M - 1 if unbiased else M)  # (C,) the variance that normalizes
        inv_std = 1.0 / np.sqrt(var + x.dtype.type(eps))  # (C,)
        xhat = xc
        xhat *= inv_std.reshape(cshape)  # in place on our own centered copy
        new_running = None
        if running is not None:
            n = running.num_batches_tracked + 1
            f = x.dtype.type(1.0 / n if momentum is None else momentum)
            var_unbiased = sq_sum / (M - 1)  # (C,) torch feeds the running var the unbiased variance
            new_running = BatchNormStats(
                (1 - f) * running.mean + f * mean,  # new arrays: the caller's stats are not touched
                (1 - f) * running.var + f * var_unbiased,
                n,
            )
    out = xhat * w.reshape(cshape) if w is not None else xhat.copy()  # (N, C[, L])
    if b is not None:
        out += b.reshape(cshape)
    cache = BatchNormCache(xhat, inv_std, w, b is not None, bool(training), bool(unbiased))
    return out, cache, new_running


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
    xhat, inv_std, weight, has_bias, training, unbiased = cache
    dout = check_dout(dout, xhat.shape, xhat.dtype)
    cshape = _channel_shape(xhat.ndim, xhat.shape[1])
    axes = _reduce_axes(xhat.ndim)
    dbias = dout.sum(axis=axes)  # (C,)
    dweight = np.einsum(_sum_per_channel(xhat.ndim), dout, xhat)  # (C,) sum(dout * xhat)
    g_s = inv_std if weight is None else weight * inv_std  # (C,)
    if not training:
        dx = dout * g_s.reshape(cshape)
    else:
        M = xhat.shape[0] * (xhat.shape[2] if xhat.ndim == 3 else 1)
        D = M - 1 if unbiased else M
        dx = xhat * ((M / D) * dweight).reshape(cshape)  # (M/D) * xhat * sum(dout * xhat)
        dx += dbias.reshape(cshape)  # + sum(dout)
        np.subtract(M * dout, dx, out=dx)  # M * dout - sum(dout) - (M/D) * xhat * sum(dout * xhat)
        dx *= (g_s / M).reshape(cshape)
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
) -> Array:
    """The normalized output only (the new running stats are dropped); see :func:`batchnorm1d_forward`."""
    return batchnorm1d_forward(
        x, weight, bias, running, training=training, momentum=momentum, eps=eps, unbiased=unbiased
    )[0]
