"""The softmax family: logsumexp, softmax, log_softmax, and the seed's naive softmax.

Shapes: ``x`` has any shape; ``axis`` (int, tuple of ints, or None for all axes; default -1) is
reduced. In the loss these are (N, C) with axis 1. ``R`` below stands for the reduced shape:
``x``'s shape with the reduced axes set to 1.

Every stable op here shifts by the maximum ``m`` before exponentiating. The shift is exact in
exact arithmetic (``logsumexp(x) = m + log(sum(exp(x - m)))``) and keeps every ``exp`` argument
<= 0, so nothing overflows. A non-finite maximum (all ``-inf``, or a ``+inf``) would turn the shift
into ``-inf - -inf = nan``, so it is replaced by 0 (guarded explicitly, no sentinel values):
an all ``-inf`` slice then gives ``logsumexp = -inf`` and ``softmax = nan``, a ``+inf`` gives
``logsumexp = +inf``, and nan propagates -- as in torch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import Axis, as_float_array, check_dout, normalize_axis


def _shifted_exp(x: npt.NDArray[Any], axes: tuple[int, ...]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Return ``(e, m)`` with ``m`` the (guarded) max over ``axes`` (shape R) and ``e = exp(x - m)``."""
    m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)  # R; an empty reduction gives -inf
    m = np.where(np.isfinite(m), m, x.dtype.type(0))  # R; guard: all -inf, +inf or nan -> shift by 0
    with np.errstate(over="ignore"):  # x - m may round to -inf (x near -max, m near +max): exp -> 0, exact
        e = np.exp(x - m)  # x.shape, every argument <= 0 where the max is finite
    return e, m


# ----------------------------------------------------------------------------- logsumexp


class LogsumexpCache(NamedTuple):
    probs: npt.NDArray[Any]  # x.shape: softmax(x) over the axes, the gradient of logsumexp
    axes: tuple[int, ...]  # the reduced axes, non-negative and sorted
    keepdims: bool


def logsumexp_forward(
    x: npt.ArrayLike, *, axis: Axis = -1, keepdims: bool = False
) -> tuple[npt.NDArray[Any], LogsumexpCache]:
    """``out = log(sum(exp(x), axis))``, computed as ``m + log(sum(exp(x - m)))``.

    Args:
        x: float array of any shape.
        axis: int, tuple of ints, or None (all axes). Default -1.
        keepdims: keep the reduced axes with size 1.

    Returns:
        ``(out, cache)``: out has x's dtype and x's shape without (or with size-1) reduced axes.
        Edge cases: a slice of all ``-inf`` gives ``-inf``; any ``+inf`` gives ``+inf``; nan propagates;
        an empty reduction gives ``-inf``.

    Raises:
        TypeError: x is not floating, or axis is not an int/tuple/None.
        ValueError: an axis is out of range or repeated.
    """
    x = as_float_array("x", x)
    axes = normalize_axis(axis, x.ndim)
    e, m = _shifted_exp(x, axes)  # x.shape, R
    s = e.sum(axis=axes, keepdims=True)  # R, >= 1 wherever the max is finite
    with np.errstate(divide="ignore", invalid="ignore"):  # s == 0 only for all -inf slices: log -> -inf
        lse = np.log(s) + m  # R
        probs = e / s  # x.shape; 0/0 = nan for an all -inf slice (torch's gradient there is nan too)
    out = lse if keepdims else np.squeeze(lse, axis=axes)
    return out, LogsumexpCache(probs, axes, keepdims)


def logsumexp_backward(dout: npt.ArrayLike, cache: LogsumexpCache) -> npt.NDArray[Any]:
    """Gradient of ``out = logsumexp(x, axis)`` with respect to x.

    Args:
        dout: shape and dtype of the forward's ``out``.
        cache: from :func:`logsumexp_forward`.

    Returns:
        dx: x's shape.

    Derivation:
        ``d/dx_j log(sum_k exp(x_k)) = exp(x_j) / sum_k exp(x_k) = softmax(x)_j`` -- the gradient of
        logsumexp is softmax (the max shift cancels: it is a constant in the quotient). Each output
        element broadcasts back over its reduced slice, so ``dx = dout[R] * probs``.
    """
    probs, axes, keepdims = cache
    out_shape = tuple(1 if i in axes else n for i, n in enumerate(probs.shape))
    if not keepdims:
        out_shape = tuple(n for i, n in enumerate(out_shape) if i not in axes)
    dout = check_dout(dout, out_shape, probs.dtype)
    dout_r = dout if keepdims else np.expand_dims(dout, axes)  # R
    dx: npt.NDArray[Any] = dout_r * probs  # x.shape
    return dx


def logsumexp(x: npt.ArrayLike, axis: Axis = -1, keepdims: bool = False) -> npt.NDArray[Any]:
    """``log(sum(exp(x), axis))`` without overflow; see :func:`logsumexp_forward`."""
    return logsumexp_forward(x, axis=axis, keepdims=keepdims)[0]


# ----------------------------------------------------------------------------- softmax


class SoftmaxCache(NamedTuple):
    out: npt.NDArray[Any]  # x.shape: the softmax itself, all its backward needs
    axes: tuple[int, ...]


def softmax_forward(x: npt.ArrayLike, *, axis: Axis = -1) -> tuple[npt.NDArray[Any], SoftmaxCache]:
    """``out = exp(x - m) / sum(exp(x - m), axis)``, the max-subtracted (stable) softmax.

    Args:
        x: float array of any shape.
        axis: int, tuple of ints, or None. Default -1.

    Returns:
        ``(out, cache)``: out has x's shape and dtype, each slice sums to 1. A slice of all ``-inf``,
        or with a ``+inf``, gives nan (as torch).

    Raises:
        TypeError, ValueError: as :func:`logsumexp_forward`.
    """
    x = as_float_array("x", x)
    axes = normalize_axis(axis, x.ndim)
    e, _ = _shifted_exp(x, axes)  # x.shape
    with np.errstate(invalid="ignore"):  # 0/0 (all -inf) and inf/inf (+inf present) -> nan, as torch
        out = e / e.sum(axis=axes, keepdims=True)  # x.shape
    return out, SoftmaxCache(out, axes)


def softmax_backward(dout: npt.ArrayLike, cache: SoftmaxCache) -> npt.NDArray[Any]:
    """Gradient of ``y = softmax(x, axis)`` with respect to x.

    Args:
        dout: x's shape and dtype (the upstream gradient ``dy``).
        cache: from :func:`softmax_forward` or :func:`softmax_naive_forward`.

    Returns:
        dx: x's shape.

    Derivation:
        ``dy_i/dx_j = y_i ([i == j] - y_j)``. The vector-Jacobian product, without forming the
        Jacobian: ``dx_j = sum_i dy_i y_i ([i == j] - y_j) = y_j (dy_j - sum_i dy_i y_i)``, so
        ``dx = y * (dy - sum(dy * y, axis))``.
    """
    y, axes = cache
    dy = check_dout(dout, y.shape, y.dtype)
    dx: npt.NDArray[Any] = y * (dy - (dy * y).sum(axis=axes, keepdims=True))  # x.shape
    return dx


def softmax(x: npt.ArrayLike, axis: Axis = -1) -> npt.NDArray[Any]:
    """Stable softmax; see :func:`softmax_forward`."""
    return softmax_forward(x, axis=axis)[0]


def softmax_naive_forward(x: npt.ArrayLike, *, axis: Axis = -1) -> tuple[npt.NDArray[Any], SoftmaxCache]:
    """The seed's softmax, ``counts = exp(x); out = counts / counts.sum(axis)``, with no max shift.

    It is here to be compared with :func:`softmax_forward`: equal wherever it is finite, it breaks
    exactly as the seed shows once an ``exp`` overflows (x > 88.72 in float32, > 709.78 in float64):
    the overflowing entry becomes ``inf / inf = nan`` and the others ``finite / inf = 0``. NumPy's
    RuntimeWarnings are left on: they say what happened. Same signature and cache as the stable one,
    so the backward is :func:`softmax_backward` (it depends only on the output).
    """
    x = as_float_array("x", x)
    axes = normalize_axis(axis, x.ndim)
    counts = np.exp(x)  # x.shape; overflows to inf past the threshold
    out = counts / counts.sum(axis=axes, keepdims=True)  # x.shape
    return out, SoftmaxCache(out, axes)


softmax_naive_backward = softmax_backward  # the softmax gradient depends only on y = softmax(x)


def softmax_naive(x: npt.ArrayLike, axis: Axis = -1) -> npt.NDArray[Any]:
    """The seed's overflowing softmax; see :func:`softmax_naive_forward`."""
    return softmax_naive_forward(x, axis=axis)[0]


# ----------------------------------------------------------------------------- log_softmax


class LogSoftmaxCache(NamedTuple):
    out: npt.NDArray[Any]  # x.shape: log_softmax(x); exp(out) is the softmax the backward needs
    axes: tuple[int, ...]


def log_softmax_forward(x: npt.ArrayLike, *, axis: Axis = -1) -> tuple[npt.NDArray[Any], LogSoftmaxCache]:
    """``out = x - logsumexp(x, axis)``, never ``log(softmax)`` (which is ``-inf`` once softmax underflows).

    Args:
        x: float array of any shape.
        axis: int, tuple of ints, or None. Default -1.

    Returns:
        ``(out, cache)``: out has x's shape and dtype, every entry <= 0.

    Raises:
        TypeError, ValueError: as :func:`logsumexp_forward`.
    """
    x = as_float_array("x", x)
    axes = normalize_axis(axis, x.ndim)
    e, m = _shifted_exp(x, axes)  # x.shape, R
    # an all -inf slice: log 0 = -inf, then -inf - -inf = nan (as torch)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (x - m) - np.log(e.sum(axis=axes, keepdims=True))  # x.shape
    return out, LogSoftmaxCache(out, axes)


def log_softmax_backward(dout: npt.ArrayLike, cache: LogSoftmaxCache) -> npt.NDArray[Any]:
    """Gradient of ``y = log_softmax(x, axis)`` with respect to x.

    Args:
        dout: x's shape and dtype.
        cache: from :func:`log_softmax_forward`.

    Returns:
        dx: x's shape.

    Derivation:
        ``y_i = x_i - logsumexp(x)``, and the gradient of logsumexp is softmax, so
        ``dy_i/dx_j = [i == j] - softmax(x)_j``. The vector-Jacobian product:
        ``dx_j = dy_j - softmax(x)_j sum_i dy_i``, with ``softmax = exp(y)``:
        ``dx = dy - exp(y) * sum(dy, axis)``.
    """
    y, axes = cache
    dy = check_dout(dout, y.shape, y.dtype)
    dx: npt.NDArray[Any] = dy - np.exp(y) * dy.sum(axis=axes, keepdims=True)  # x.shape
    return dx


def log_softmax(x: npt.ArrayLike, axis: Axis = -1) -> npt.NDArray[Any]:
    """``x - logsumexp(x, axis)``; see :func:`log_softmax_forward`."""
    return log_softmax_forward(x, axis=axis)[0]
