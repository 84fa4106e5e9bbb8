"""Primitive forward/backward pairs: the atoms of the seed's naive cross-entropy chain.

Each pair is one line of math, so each backward is one application of the chain rule. They do no
input checking (the public op that composes them checks once, at its entrance) and they never
write into their inputs or into ``dout``.

Shapes: N = rows, C = classes.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import Array, Reduction


# ---------------------------------------------------------------- exp: out = exp(x)
class ExpCache(NamedTuple):
    out: Array  # exp(x): its own derivative


def exp_forward(x: Array) -> tuple[Array, ExpCache]:
    out = np.exp(x)
    return out, ExpCache(out)


def exp_backward(dout: Array, cache: ExpCache) -> Array:
    """``d exp(x)/dx = exp(x)``, so ``dx = out * dout``."""
    return cache.out * dout


# ---------------------------------------------------------------- sum_rows: out = x.sum(1, keepdims=True)
class SumRowsCache(NamedTuple):
    shape: tuple[int, ...]  # (N, C)


def sum_rows_forward(x: Array) -> tuple[Array, SumRowsCache]:
    return x.sum(axis=1, keepdims=True), SumRowsCache(x.shape)  # (N, 1)


def sum_rows_backward(dout: Array, cache: SumRowsCache) -> Array:
    """Every ``x[n, c]`` enters ``out[n]`` with weight 1, so ``dx = broadcast(dout (N, 1) -> (N, C))``."""
    return np.broadcast_to(dout, cache.shape).copy()  # (N, C), a fresh writable array


# ---------------------------------------------------------------- div_rows: out = a / b, b (N, 1)
class DivRowsCache(NamedTuple):
    out: Array  # (N, C) a / b
    b: Array  # (N, 1)


def div_rows_forward(a: Array, b: Array) -> tuple[Array, DivRowsCache]:
    out = a / b  # (N, C)
    return out, DivRowsCache(out, b)


def div_rows_backward(dout: Array, cache: DivRowsCache) -> tuple[Array, Array]:
    """``d(a/b)/da = 1/b`` and ``d(a/b)/db = -a/b**2 = -out/b``; b was broadcast along the row, so
    its gradient sums over the row: ``da = dout / b``, ``db = -(dout * out / b).sum(1, keepdims=True)``.

    Written with ``out`` so that nothing is squared: ``b**2`` overflows once b > 1.8e19 in float32
    (a logit above 44.4; 354.9 in float64) while the forward is still finite, and the gradient through
    b would silently become 0."""
    out, b = cache
    da = dout / b  # (N, C)
    db = -(dout * out / b).sum(axis=1, keepdims=True)  # (N, 1)
    return da, db


# ---------------------------------------------------------------- pick: out[n] = x[n, target[n]]
class PickCache(NamedTuple):
    target: npt.NDArray[np.integer[Any]]  # (N,)
    shape: tuple[int, ...]  # (N, C)
    dtype: np.dtype[Any]


def pick_forward(x: Array, target: npt.NDArray[np.integer[Any]]) -> tuple[Array, PickCache]:
    rows = np.arange(x.shape[0])
    return x[rows, target], PickCache(target, x.shape, x.dtype)  # (N,)


def pick_backward(dout: Array, cache: PickCache) -> Array:
    """Only the picked entry of each row reaches the output: ``dx`` is zero except
    ``dx[n, target[n]] = dout[n]`` (one entry per row, so plain assignment is a correct scatter)."""
    target, shape, dtype = cache
    dx = np.zeros(shape, dtype=dtype)  # (N, C)
    dx[np.arange(shape[0]), target] = dout
    return dx


# ---------------------------------------------------------------- log: out = log(x)
class LogCache(NamedTuple):
    x: Array


def log_forward(x: Array) -> tuple[Array, LogCache]:
    return np.log(x), LogCache(x)


def log_backward(dout: Array, cache: LogCache) -> Array:
    """``d log(x)/dx = 1/x``, so ``dx = dout / x``."""
    return dout / cache.x


# ---------------------------------------------------------------- neg_reduce: out = -mean(x) | -sum(x) | -x
class NegReduceCache(NamedTuple):
    shape: tuple[int, ...]  # (N,)
    dtype: np.dtype[Any]
    reduction: Reduction


def neg_reduce_forward(x: Array, reduction: Reduction) -> tuple[Array, NegReduceCache]:
    neg = -x  # (N,)
    if reduction == "none":
        out = neg
    else:
        total = float(neg.sum(dtype=np.float64))  # summed in float64, as the fused op's
        N = x.shape[0]
        mean = total / N if N else math.nan  # no rows: nan, as torch's 0 / 0
        out = np.asarray(mean if reduction == "mean" else total, dtype=x.dtype)  # 0-D
    return out, NegReduceCache(x.shape, x.dtype, reduction)


def neg_reduce_backward(dout: Array, cache: NegReduceCache) -> Array:
    """``-mean`` spreads ``-1/N`` to each of the N entries, ``-sum`` gives ``-1``, ``'none'`` gives
    ``-dout`` elementwise: ``dx = -dout / N | -dout | -dout``."""
    shape, dtype, reduction = cache
    if reduction == "none":
        return -dout
    n = shape[0] if reduction == "mean" else 1
    return np.full(shape, -dout / max(n, 1), dtype=dtype)  # (N,)
