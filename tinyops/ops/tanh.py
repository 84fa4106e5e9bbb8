"""Elementwise tanh. Shapes: any; ``out`` has the shape of ``x``."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import as_float_array, check_dout


class TanhCache(NamedTuple):
    out: npt.NDArray[Any]  # tanh(x), same shape as x: the backward needs only the output


def tanh_forward(x: npt.ArrayLike) -> tuple[npt.NDArray[Any], TanhCache]:
    """``out = tanh(x)``.

    Args:
        x: float array of any shape.

    Returns:
        ``(out, cache)``: out has x's shape and dtype; the cache holds out.

    Raises:
        TypeError: x is not a floating array.
    """
    x = as_float_array("x", x)
    out = np.tanh(x)
    return out, TanhCache(out)


def tanh_backward(dout: npt.ArrayLike, cache: TanhCache) -> npt.NDArray[Any]:
    """Gradient of ``out = tanh(x)`` with respect to x.

    Args:
        dout: upstream gradient, shape and dtype of ``out``.
        cache: from :func:`tanh_forward`.

    Returns:
        dx: shape of x.

    Derivation:
        ``tanh(x) = (e^x - e^-x) / (e^x + e^-x)``; the quotient rule gives
        ``d tanh / dx = 1 - tanh(x)^2 = 1 - out^2``, so, elementwise,
        ``dx = (1 - out**2) * dout``.
    """
    (out,) = cache
    dout = check_dout(dout, out.shape, out.dtype)
    dx: npt.NDArray[Any] = (1 - out**2) * dout
    return dx


def tanh(x: npt.ArrayLike) -> npt.NDArray[Any]:
    """Elementwise tanh; see :func:`tanh_forward`."""
    return tanh_forward(x)[0]
