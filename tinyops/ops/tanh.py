"""Elementwise tanh. Shapes: any; ``out`` has the shape of ``x``. The entry points work on (R, K) rows."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import Array, Backend, as_float_array, check_backend, check_cache, check_dout, check_threads


class TanhCache(NamedTuple):
    out: npt.NDArray[Any]  # tanh(x), same shape as x: the backward needs only the output
    backend: Backend
    threads: int


def _rows(a: Array) -> Array:
    """A C-contiguous (R, K) view of ``a`` (a copy only if a is not contiguous): K its last axis."""
    a = np.ascontiguousarray(a)
    return a.reshape(-1, a.shape[-1]) if a.ndim and a.shape[-1] else a.reshape(1, a.size)


@functools.cache
def _kernels() -> Any:
    """:mod:`tinyops.kernels.elementwise`, imported on first use: importing tinyops does not import numba."""
    from ..kernels import elementwise

    return elementwise


# ============================================================================ the entry points (no checks)


def tanh_rows_forward(x: Array, *, out: Array | None = None, backend: Backend = "compiled", threads: int = 1) -> Array:
    """``out[:, :K] = tanh(x)`` for (R, K) rows ``x``; checks nothing.

    The entry point of :func:`tanh_forward` and of :class:`tinyops.mlp.Trainer`.

    Args:
        x: (R, K) float32/float64 (float16: computed in float32), C-contiguous.
        out: None (a new (R, K) array) or a C-contiguous (R, W) array of x's dtype with W >= K: its first
            K columns receive tanh(x) (the trainer's ``[h, 1]`` buffer), the rest are left as they are.
        backend: 'compiled' (:mod:`tinyops.kernels.elementwise`, within 2 ulp) or 'reference' (``np.tanh``).
        threads: rows in parallel on this many threads (compiled). Bit-identical results.

    Returns:
        ``out`` (or the new array).
    """
    K = x.shape[1]
    if out is None:
        out = np.empty(x.shape, x.dtype)
    if backend == "reference":
        np.tanh(x, out=out[:, :K])
        return out
    kernels = _kernels()
    if x.dtype.char in "fd":  # float32, float64
        kernels.tanh_forward(x, out, K, threads)
    else:  # float16, which numba does not compute with: in float32, rounded once
        y32 = np.empty(x.shape, np.float32)
        kernels.tanh_forward(x.astype(np.float32), y32, K, threads)
        out[:, :K] = y32
    return out


def tanh_rows_backward(
    y: Array, dout: Array, *, out: Array | None = None, backend: Backend = "compiled", threads: int = 1
) -> Array:
    """``dx = (1 - y**2) * dout`` over the first K columns of (R, >= K) rows; checks nothing.

    The entry point of :func:`tanh_backward` and of :class:`tinyops.mlp.Trainer`; the derivation is
    :func:`tanh_backward`'s.

    Args:
        y: (R, W1) the forward's output, dout: (R, W2) the upstream gradient, both C-contiguous with
            W1, W2 >= K: their first K columns are read (the trainer's ``[h, 1]`` and its gradient).
        out: None (a new (R, K) array, K = min(W1, W2)) or a C-contiguous (R, K) array of y's dtype.
        backend, threads: as :func:`tanh_rows_forward`.

    Returns:
        dx (R, K): ``out`` if given.
    """
    K = out.shape[1] if out is not None else min(y.shape[1], dout.shape[1])
    if out is None:
        out = np.empty((y.shape[0], K), y.dtype)
    if backend == "reference":
        yk = y[:, :K]
        np.multiply(1 - yk**2, dout[:, :K], out=out)
        return out
    kernels = _kernels()
    if y.dtype.char in "fd":  # float32, float64
        kernels.tanh_backward(y, dout, out, K, threads)
    else:  # float16: in float32, rounded once
        dx32 = np.empty(out.shape, np.float32)
        kernels.tanh_backward(y.astype(np.float32), dout.astype(np.float32), dx32, K, threads)
        out[...] = dx32
    return out


# ============================================================================ the op


def tanh_forward(
    x: npt.ArrayLike, *, backend: Backend = "compiled", threads: int | None = None
) -> tuple[npt.NDArray[Any], TanhCache]:
    """``out = tanh(x)``.

    Args:
        x: float array of any shape.
        backend: 'compiled' (default; :mod:`tinyops.kernels.elementwise`, within 2 ulp of the exact tanh)
            or 'reference' (NumPy's ``np.tanh``). The backward uses the same.
        threads: the compiled layer's threads (None: one); the results do not depend on it.

    Returns:
        ``(out, cache)``: out has x's shape and dtype; the cache holds out.

    Raises:
        TypeError: x is not a floating array.
        ValueError: an unknown backend, or bad threads.
    """
    check_backend(backend)
    n_threads = check_threads(threads)
    x = as_float_array("x", x)
    out = tanh_rows_forward(_rows(x), backend=backend, threads=n_threads).reshape(x.shape)
    return out, TanhCache(out, backend, n_threads)


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
    check_cache(cache, TanhCache, "tanh_forward")
    out, backend, threads = cache
    dout = check_dout(dout, out.shape, out.dtype)
    return tanh_rows_backward(_rows(out), _rows(dout), backend=backend, threads=threads).reshape(out.shape)


def tanh(x: npt.ArrayLike, *, backend: Backend = "compiled", threads: int | None = None) -> npt.NDArray[Any]:
    """Elementwise tanh; see :func:`tanh_forward`."""
    return tanh_forward(x, backend=backend, threads=threads)[0]
