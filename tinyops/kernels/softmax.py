"""The softmax family's row kernels, compiled: logsumexp, softmax and log_softmax of (R, n) rows, and the
softmax and log_softmax backward.

Shapes: R = rows, n = entries per row. ``x``, ``y``, ``dy`` (R, n) float32/float64, C-contiguous; ``lse``
(R,) in x's dtype. The public ops (:mod:`tinyops.ops.softmax`) move the reduced axes last and flatten
them into these rows; nothing here checks its inputs.

    lse[i]    = m + log1p(r)                      r = sum_{j != a} exp(x_ij - m), m = x_ia the row max
    softmax   = exp(x_ij - m) / (1 + r)           (the softmax is also logsumexp's gradient, its "probs")
    log_softmax = (x_ij - m) - log1p(r)

Per row, as the reference (:func:`tinyops.ops.softmax.shifted_rows`), in float64 with the largest term
kept out of the sum:

1. the row max ``m`` (:func:`~tinyops.kernels.cross_entropy.row_max`);
2. ``r``: the exps of the entries below the max, plus the ties but one (``exp(0) = 1`` each); for float32
   rows ``x_j - m`` is exact in float64, for float64 rows it is ``hi + lo`` by TwoSum
   (:func:`~tinyops.kernels.cross_entropy.two_diff_lo`) and ``exp(hi + lo) = exp(hi) * (1 + lo)``;
3. the outputs from ``m`` and ``r``: ``lse = m + log1p(r)``; the softmax divides the exps of pass 2,
   kept in a float64 scratch row (one per thread), by ``1 + r``; log_softmax is ``(x_j - m) - log1p(r)``
   (plus ``lo`` for float64), two terms <= 0: nothing cancels.

Each output is rounded once to x's dtype. **Accuracy** against the exact (mpmath) values, held by
tests/test_softmax_layers.py and tests/test_accuracy.py on the hard regions of :mod:`tinyops.testing.regions`:

- float32: logsumexp and log_softmax within 2 ULP, softmax within 4 ULP (logsumexp near 0 with a max that
  is not: plus the float64 rounding of ``m`` and ``log1p(r)``, ``4 eps64 (|m| + |lse - m| + log2 n + 1)``);
- float64: within ``8 + 2 log2(n)`` ULP (the float64 sum of n terms has no wider type), on outputs that
  are normal numbers;
- against the reference: the same formulas, summed in another order: within 1 ULP of it in float32 (the
  last rounding may fall the other way), within ``2 + 2 log2(n)`` ULP in float64.

The backward accumulates its row sum in float64: ``dx = y * (dy - sum(dy * y))`` (softmax) and
``dx = dy - exp(y) * sum(dy)`` (log_softmax; ``exp`` in y's dtype, as y is rounded to it), each entry
rounded once to y's dtype. Against the formula evaluated in float64 on the same y and dy (held by
tests/test_softmax_layers.py): within ``(2 + log2 n) eps |y| (|dy| + sum |dy| y)`` (softmax) and
``(2 + log2 n) eps (|dy| + exp(y) sum |dy|)`` (log_softmax).

**Rows whose max is not finite** (a ``+inf``, all ``-inf``, all nan) are never shifted by it: logsumexp is
the max itself (nan if the row holds a nan); softmax and log_softmax are nan on the whole row; logsumexp's
probs are torch's gradient ``exp(x - lse)`` (0 beside a ``+inf``, nan at it and on an all ``-inf`` row).
A nan in a row with a finite max makes ``r``, and so every output of the row, nan. ``-inf`` entries have
probability 0 and log-probability ``-inf``. An empty row (n = 0) has logsumexp ``-inf``.

Rows run in parallel with ``prange``; each row is computed by one thread in one order, so the results are
bit-for-bit identical for every thread count. Each driver has a serial twin (one thread pays no pool
start-up) calling the same row function.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import prange

from ._numba import SUM_FLAGS, jit, launch, threads_available, use_threads
from .cross_entropy import BLOCK, add_compensated, row_max, two_diff_lo
from .exp import exp64, exp_of, is_float32

# what a forward computes (a constant of each compiled call site: one driver serves all four)
LSE = 0  # logsumexp only
LSE_PROBS = 1  # logsumexp and its gradient, the softmax (logsumexp_forward's cache)
SOFTMAX = 2
LOG_SOFTMAX = 3

FLAGS = frozenset({"contract"})  # loops that only write: no reassociation, so each formula rounds as written


# ----------------------------------------------------------------------------- pieces of a row


@jit(fastmath=SUM_FLAGS)
def sum_without_max(row: Any, m: float, e: Any) -> float:
    """``r = sum_{j != a} exp(x_j - m)`` in float64: the exps below the max ``m`` (finite) plus the ties but one.

    Each ``exp(x_j - m)`` is kept in ``e`` (float64, at least n entries) for the pass that writes the softmax.

    Summed in blocks of :data:`BLOCK` entries (each block vectorized), the block sums added with their
    rounding errors carried (:func:`add_compensated`): a float64 sum of n terms in one vectorized loop is
    off by up to about ``n / 8`` ulps, one rounding per entry of each accumulator lane.
    """
    total, comp = 0.0, 0.0  # a nan entry (x_j - m != 0) makes them nan
    ties = 0  # entries equal to the max
    n = row.shape[0]
    for j0 in range(0, n, BLOCK):
        s = 0.0
        if is_float32(row):
            for j in range(j0, min(j0 + BLOCK, n)):
                d = np.float64(row[j]) - m  # exact: two float32 differ by a float64
                e_j = exp64(d)
                e[j] = e_j
                s += e_j if d != 0.0 else 0.0
                ties += d == 0.0
        else:
            for j in range(j0, min(j0 + BLOCK, n)):
                hi = row[j] - m
                e_j = exp64(hi)
                e_j += e_j * two_diff_lo(row[j], m, hi)  # exp(hi + lo) = exp(hi) (1 + lo)
                e[j] = e_j
                s += e_j if hi != 0.0 else 0.0
                ties += hi == 0.0
        total, comp = add_compensated(total, comp, s)
    return (total + comp) + (ties - 1)


@jit(fastmath=FLAGS)
def softmax_into(e: Any, den: float, out: Any) -> None:
    """``out_j = e_j / den`` (``e_j = exp(x_j - m)`` in float64), each rounded once to out's dtype."""
    for j in range(out.shape[0]):
        out[j] = e[j] / den


@jit(fastmath=FLAGS)
def log_softmax_into(row: Any, m: float, log1p_r: float, out: Any) -> None:
    """``out_j = (x_j - m) - log1p(r)``: two terms <= 0 (``+ lo``, the TwoSum error of ``x_j - m``, for float64)."""
    if is_float32(row):
        for j in range(row.shape[0]):
            out[j] = (np.float64(row[j]) - m) - log1p_r
    else:
        for j in range(row.shape[0]):
            hi = row[j] - m
            out[j] = (hi - log1p_r) + two_diff_lo(row[j], m, hi)


@jit(fastmath=FLAGS)
def bad_row(row: Any, mx: float, op: int, lse: Any, y: Any, i: int) -> None:
    """A row whose max is not finite: lse the max (nan if the row holds a nan); softmax, log_softmax nan."""
    has_nan = False
    for j in range(row.shape[0]):
        has_nan |= row[j] != row[j]
    lse_i = np.nan if has_nan else np.float64(mx)
    if op == LSE or op == LSE_PROBS:
        lse[i] = lse_i
    if op == LSE_PROBS:  # torch's gradient of logsumexp there: exp(x - lse), nan at inf - inf
        for j in range(row.shape[0]):
            y[i, j] = exp64(np.float64(row[j]) - lse_i)
    elif op == SOFTMAX or op == LOG_SOFTMAX:
        for j in range(row.shape[0]):
            y[i, j] = np.nan


# ----------------------------------------------------------------------------- forward


@jit(fastmath=FLAGS)
def forward_row(x: Any, op: int, lse: Any, y: Any, i: int, e: Any) -> None:
    """Row ``i``: max, ``r``, then the outputs ``op`` asks for (``lse[i]`` and/or ``y[i]``); ``e`` (n,) scratch."""
    row = x[i]
    mx = row_max(row)
    if not math.isfinite(mx):
        bad_row(row, mx, op, lse, y, i)
        return
    m = np.float64(mx)
    r = sum_without_max(row, m, e)
    log1p_r = math.log1p(r)
    if op == LSE or op == LSE_PROBS:
        lse[i] = m + log1p_r
    if op == LSE_PROBS or op == SOFTMAX:
        softmax_into(e, 1.0 + r, y[i])
    elif op == LOG_SOFTMAX:
        log_softmax_into(row, m, log1p_r, y[i])


@jit(parallel=True)
def forward_parallel(x: Any, op: int, lse: Any, y: Any, e: Any) -> None:
    for i in prange(x.shape[0]):
        forward_row(x, op, lse, y, i, e[numba.get_thread_id()])  # e: one scratch row per thread


@jit()
def forward_serial(x: Any, op: int, lse: Any, y: Any, e: Any) -> None:
    for i in range(x.shape[0]):
        forward_row(x, op, lse, y, i, e[0])


def forward(x: Any, op: int, threads: int) -> tuple[Any, Any]:
    """``(lse (R,), y (R, n))`` of the rows of ``x`` (R, n) for ``op`` (an output not asked for is empty)."""
    R, n = x.shape
    lse = np.empty(R if op in (LSE, LSE_PROBS) else 0, x.dtype)  # (R,)
    y = np.empty((R, n) if op != LSE else (0, 0), x.dtype)  # (R, n)
    if threads == 1:
        forward_serial(x, op, lse, y, np.empty((1, n)))
    else:
        use_threads(threads)
        forward_parallel(x, op, lse, y, np.empty((threads_available(), n)))  # (threads, n) float64
    return lse, y


# ----------------------------------------------------------------------------- backward


@jit(fastmath=SUM_FLAGS)
def dot64(a: Any, b: Any) -> float:
    """``sum_j a_j b_j`` in float64, in blocks as :func:`sum_without_max`."""
    total, comp = 0.0, 0.0
    n = a.shape[0]
    for j0 in range(0, n, BLOCK):
        s = 0.0
        for j in range(j0, min(j0 + BLOCK, n)):
            s += np.float64(a[j]) * np.float64(b[j])
        total, comp = add_compensated(total, comp, s)
    return total + comp


@jit(fastmath=SUM_FLAGS)
def sum64(a: Any) -> float:
    """``sum_j a_j`` in float64, in blocks as :func:`sum_without_max`."""
    total, comp = 0.0, 0.0
    n = a.shape[0]
    for j0 in range(0, n, BLOCK):
        s = 0.0
        for j in range(j0, min(j0 + BLOCK, n)):
            s += np.float64(a[j])
        total, comp = add_compensated(total, comp, s)
    return total + comp


@jit(fastmath=FLAGS)
def backward_row(y: Any, dy: Any, dx: Any, op: int, i: int) -> None:
    """Row ``i`` of dx: softmax ``y * (dy - sum(dy * y))``, log_softmax ``dy - exp(y) * sum(dy)``."""
    yi, dyi, dxi = y[i], dy[i], dx[i]
    if op == SOFTMAX:
        s = dot64(dyi, yi)
        for j in range(yi.shape[0]):
            dxi[j] = np.float64(yi[j]) * (np.float64(dyi[j]) - s)
    else:
        s = sum64(dyi)
        for j in range(yi.shape[0]):
            dxi[j] = np.float64(dyi[j]) - np.float64(exp_of(yi[j])) * s  # exp in y's dtype: y is rounded to it


@jit(parallel=True)
def backward_parallel(y: Any, dy: Any, dx: Any, op: int) -> None:
    for i in prange(y.shape[0]):
        backward_row(y, dy, dx, op, i)


@jit()
def backward_serial(y: Any, dy: Any, dx: Any, op: int) -> None:
    for i in range(y.shape[0]):
        backward_row(y, dy, dx, op, i)


def backward(y: Any, dy: Any, op: int, threads: int) -> Any:
    """``dx`` (R, n) of the rows of ``y`` and ``dy`` (R, n), for ``op`` SOFTMAX or LOG_SOFTMAX."""
    dx = np.empty_like(y)
    launch(backward_serial, backward_parallel, threads, y, dy, dx, op)
    return dx
