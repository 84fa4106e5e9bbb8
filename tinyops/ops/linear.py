"""Affine layer: ``out = x @ weight + bias``, weight laid out (in, out) as in the seed.

Shapes: N = rows (any leading dims ``...`` are flattened into N), I = in features, O = out features.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy.typing as npt

from .._checks import as_float_array, check_dout, check_same_dtype


class LinearCache(NamedTuple):
    x: npt.NDArray[Any]  # (..., I)
    weight: npt.NDArray[Any]  # (I, O)
    has_bias: bool


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
    out = x @ weight  # (..., O)
    if bias is not None:
        bias = as_float_array("bias", bias, ndim=1)
        check_same_dtype("bias", bias, "x", x)
        if bias.shape[0] != weight.shape[1]:
            raise ValueError(f"bias must have shape ({weight.shape[1]},), got shape {bias.shape}")
        out += bias  # in place on our own fresh array
    return out, LinearCache(x, weight, bias is not None)


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
    x, weight, has_bias = cache
    I, O = weight.shape
    dout = check_dout(dout, (*x.shape[:-1], O), x.dtype)  # (..., O)
    x2 = x.reshape(-1, I)  # (N, I)
    dout2 = dout.reshape(-1, O)  # (N, O)
    dx = dout @ weight.T  # (..., I)
    dweight = x2.T @ dout2  # (I, O)
    dbias = dout2.sum(axis=0) if has_bias else None  # (O,)
    return dx, dweight, dbias


def linear(x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None) -> npt.NDArray[Any]:
    """``x @ weight + bias``; see :func:`linear_forward`."""
    return linear_forward(x, weight, bias)[0]
