"""The logits of linear + cross-entropy, each row on its own: ``out[n] = x[n] @ w``, in a fixed order.

Shapes: N = rows, D = features, V = classes. ``x`` (N, D), ``w`` (D, V), ``out`` (N, V), one dtype
(float32 or float64), C-contiguous.

    out[n, v] = (...((0 + x[n, 0] w[0, v]) + x[n, 1] w[1, v]) + ...) + x[n, D-1] w[D-1, v]

each product and each sum rounded on its own (no fused multiply-add, no reordering): the bits of row n
depend on ``x[n]`` and ``w`` only, never on the other rows, the batch size or the thread count. This is
what a BLAS product does not promise (its kernels for a one-row and a 256-row product round differently),
and what ``linear_cross_entropy(..., batch_invariant=True)`` needs for a row's loss to be the same alone
and in a batch. The NumPy reference (``x[:, d, None] * w[d]`` added for d = 0, 1, ...) makes the same
roundings in the same order, so the two layers agree to the bit.

The price: it is a plain loop, about 10x slower than BLAS (measured on N = 256, D = 128, V = 8192 float32,
2 threads: 0.45 s against 0.04 s). Each work item is one row and one block of ``COLS`` columns, whose
accumulator stays in the L1 cache while the D weight rows stream past it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange

from ._numba import jit, launch

COLS = 1024  # columns per work item: a 4-8 KiB accumulator (1024 float32 or float64), in L1


@jit()
def axpy(acc: Any, a: Any, wrow: Any, c0: int, n: int) -> None:
    """``acc += a * wrow[c0 : c0 + n]``, one rounding per product and per sum (compiled without fastmath)."""
    for v in range(n):
        acc[v] += a * wrow[c0 + v]


@jit()
def block(x: Any, w: Any, out: Any, k: int, nc: int) -> None:
    """Work item k: row ``k // nc`` and column block ``k % nc``, over d = 0, 1, ..., D - 1 in order."""
    r, c0 = k // nc, (k % nc) * COLS
    n = min(COLS, w.shape[1] - c0)
    acc = np.zeros(n, out.dtype)
    for d in range(x.shape[1]):
        axpy(acc, x[r, d], w[d], c0, n)
    out[r, c0 : c0 + n] = acc


@jit(parallel=True)
def rows_matmul_parallel(x: Any, w: Any, out: Any) -> None:
    nc = (w.shape[1] + COLS - 1) // COLS
    for k in prange(x.shape[0] * nc):
        block(x, w, out, k, nc)


@jit()
def rows_matmul_serial(x: Any, w: Any, out: Any) -> None:
    nc = (w.shape[1] + COLS - 1) // COLS
    for k in range(x.shape[0] * nc):
        block(x, w, out, k, nc)


def rows_matmul(x: Any, w: Any, out: Any, threads: int = 1) -> Any:
    """``out = x @ w`` row by row in the fixed order above, into ``out`` (N, V); nothing is checked."""
    launch(rows_matmul_serial, rows_matmul_parallel, threads, x, w, out)
    return out
