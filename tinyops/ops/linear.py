"""Affine layer: ``out = x @ weight + bias``, weight laid out (in, out) as in the seed.

Shapes: N = rows (any leading dims ``...`` are flattened into N), I = in features, O = out features.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import Array, as_float_array, check_cache, check_dout, check_same_dtype


class LinearCache(NamedTuple):
    x: npt.NDArray[Any]  # (..., I)
    weight: npt.NDArray[Any]  # (I, O)
    has_bias: bool


# ============================================================================ the entry points (no checks)


def linear_rows_forward(x: Array, weight: Array, bias: Array | None = None, *, out: Array | None = None) -> Array:
    """``out = x @ weight + bias`` for (N, I) rows ``x``; checks nothing.

    The entry point of :func:`linear_forward` and of :class:`tinyops.mlp.Trainer`. A bias is the weight
    row of an input that is always 1: with ``x1 = [x, 1]`` (N, I + 1) and ``w1 = [weight; bias]``
    (I + 1, O), ``x1 @ w1 = x @ weight + bias`` in one product (the trainer keeps its inputs and
    parameters laid out that way and calls this with ``bias=None``).

    Args:
        x: (N, I); weight: (I, O); bias: (O,) or None; all of one dtype.
        out: None (a new array) or a C-contiguous (N, O) array of that dtype.

    Returns:
        out (N, O).
    """
    out = np.dot(x, weight, out=out)  # (N, O) np.dot: the BLAS product of ``@``, less overhead per call
    if bias is not None:
        out += bias
    return out


def linear_rows_backward(
    dout: Array, x: Array, weight: Array, *, has_bias: bool, dx: Array | None = None, dweight: Array | None = None,
    dbias: Array | None = None,
) -> tuple[Array, Array, Array | None]:
    """``(dx, dweight, dbias)`` of :func:`linear_rows_forward` for (N, O) ``dout``; checks nothing.

    The derivation is :func:`linear_backward`'s: ``dx = dout @ weight.T``, ``dweight = x.T @ dout``,
    ``dbias = dout.sum(0)``. With the bias as a weight row (``x1 = [x, 1]``, ``w1 = [weight; bias]``,
    ``has_bias=False``), ``x1.T @ dout`` is ``[dweight; dbias]`` in one product, and ``dout @ w1.T`` has
    one column more than dx (the gradient of the constant 1, not needed).

    Args:
        dout: (N, O); x: (N, I); weight: (I, O).
        has_bias: whether to return ``dbias`` (else None).
        dx, dweight, dbias: None (new arrays) or C-contiguous arrays of shape (N, I), (I, O), (O,).

    Returns:
        ``(dx, dweight, dbias)``.
    """
    dx = np.dot(dout, weight.T, out=dx)  # (N, I)
    dweight = np.dot(x.T, dout, out=dweight)  # (I, O)
    return dx, dweight, (np.sum(dout, axis=0, out=dbias) if has_bias else None)  # (O,)


# ============================================================================ the op


def linear_forward(
    x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None
) -> tuple[npt.NDArray[Any], LinearCache]:
    """``out = x @ weight + bias`` (the seed's ``emb.view(-1, 6) @ W1 + b1``).

    Args:
        x: (..., I) float array; any leading dims.
        weight: (I, O), same dtype as x.
        bias: (O,) or None, same dtype as x.

    Returns:
        ``(out, cache)``: out is (..., O); the cache holds x and weight (references, not copies).

    Raises:
        TypeError: a non-floating input, or dtypes that differ.
        ValueError: x is 0-D, weight is not 2-D, bias is not 1-D, or the sizes do not match.
    """
    x = as_float_array("x", x)
    weight = as_float_array("weight", weight, ndim=2)
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension (..., in_features), got a 0-D array")
    check_same_dtype("weight", weight, "x", x)
    if x.shape[-1] != weight.shape[0]:
        raise ValueError(
            f"x has {x.shape[-1]} features (shape {x.shape}) but weight expects {weight.shape[0]} "
            f"(shape {weight.shape}, laid out (in_features, out_features))"
        )
    if bias is not None:
        bias = as_float_array("bias", bias, ndim=1)
        check_same_dtype("bias", bias, "x", x)
        if bias.shape[0] != weight.shape[1]:
            raise ValueError(f"bias must have shape ({weight.shape[1]},), got shape {bias.shape}")
    N = math.prod(x.shape[:-1])  # (not -1: with 0 in features the rows could not be inferred)
    out = linear_rows_forward(x.reshape(N, weight.shape[0]), weight, bias)  # (N, O) leading dims flattened
    return out.reshape(*x.shape[:-1], weight.shape[1]), LinearCache(x, weight, bias is not None)


def linear_backward(
    dout: npt.ArrayLike, cache: LinearCache
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any] | None]:
    """Gradients of ``out = x @ weight + bias``.

    Args:
        dout: (..., O) upstream gradient.
        cache: from :func:`linear_forward`.

    Returns:
        ``(dx, dweight, dbias)``: (..., I), (I, O), and (O,) or None when the forward had no bias.

    Derivation:
        Flatten the leading dims into N rows. ``out[n, o] = sum_i x[n, i] weight[i, o] + bias[o]``, so
        ``d out[n, o] / d x[n, i] = weight[i, o]``, ``d out[n, o] / d weight[i, o] = x[n, i]`` and
        ``d out[n, o] / d bias[o] = 1``. Summing over what each input touches:
        ``dx = dout @ weight.T``, ``dweight = x.T @ dout`` (sum over rows n),
        ``dbias = dout.sum(0)``.
    """
    check_cache(cache, LinearCache, "linear_forward")
    x, weight, has_bias = cache
    I, O = weight.shape
    dout = check_dout(dout, (*x.shape[:-1], O), x.dtype)  # (..., O)
    N = math.prod(x.shape[:-1])
    dx, dweight, dbias = linear_rows_backward(dout.reshape(N, O), x.reshape(N, I), weight, has_bias=has_bias)
    return dx.reshape(x.shape), dweight, dbias


def linear(x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None) -> npt.NDArray[Any]:
    """``x @ weight + bias``; see :func:`linear_forward`."""
    return linear_forward(x, weight, bias)[0]
