"""The fused cross-entropy's row kernels, compiled: loss, lse and dlogits of (M, C) logits against indices.

Shapes: M = rows, C = classes. ``x`` (M, C) float32/float64, C-contiguous; ``t`` (M,) intp in [0, C).

    loss[m] = logsumexp(x[m]) - x[m, t[m]]                         forward,  (M,)
    dx[m]   = g[m] * (softmax(x[m]) - onehot(t[m]))                backward, (M, C)

Per row, the forward makes two passes over the row (the first brings it into the cache):

1. the row max ``mx``;
2. the sum of ``exp(x_j - mx)``;

and keeps three numbers a row (the shift ``mx``, the divisor ``den`` and the target entry of the
gradient, ``softmax_t - 1``) plus a reference to ``x``: no (M, C) state. The backward makes one pass that
recomputes each exp and writes ``dx_j = exp(x_j - mx) * (g / den)``, then puts ``g * (softmax_t - 1)``
at the target. Two exps per element, but one (M, C) array written, and each row read from memory twice.

**precision='fast'**: everything in x's dtype: ``den = s = sum_j exp(x_j - mx)``, ``lse = mx + log(s)``,
``loss = lse - x_t``, ``softmax_t - 1 = expm1(-loss)``. Its errors are torch's: absolute where
``lse - x_t`` cancels.

**precision='accurate'**: float64 inside, and the largest term kept out of the sum (as the reference,
:func:`tinyops.ops.softmax.shifted_rows`): ``r = sum_{x_j < mx} exp(x_j - mx) + (ties - 1)``, then
``loss = (mx - x_t) + log1p(r)`` (two terms >= 0: nothing cancels), ``lse = mx + log1p(r)``,
``den = 1 + r`` and ``softmax_t - 1 = expm1(-loss)``. For float32 rows ``x_j - mx`` is exact in float64;
for float64 rows it is ``hi + lo`` by TwoSum and ``exp(hi + lo) = exp(hi) * (1 + lo)``.

**Rows whose max is not finite** (a ``+inf``, all ``-inf``, or all nan) are never shifted by it: their
loss and gradient are nan, their lse the max itself (``+inf``/``-inf``), or nan if the row holds a nan.
A nan elsewhere in a row with a finite max makes its sum, and so its loss and gradient, nan. ``-inf``
entries give ``exp(-inf) = 0``: probability 0. As torch.

Each driver has a serial twin with the same row function: one thread pays no thread-pool start-up, which
costs more than the whole work of a training batch (32 x 27; docs/benchmarks.md has the timings). The same
row function means the same bits.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from numba import prange

from .._checks import Array
from ._numba import MAX_FLAGS, SUM_FLAGS, jit, launch
from .exp import exp64, exp64_for32, exp_of, is_float32

# entries per block of a float64 row sum (accurate_row; tinyops.kernels.softmax.sum_without_max). Measured
# on float64 rows of 8192 (near ties, log-normalized, normal): 16, 32, 64, 128 and 256 all came within 3-4 ulp
# of the reference (one loop over the row: 55 ulp), at the same (4096, 8192) time within the timing noise.
BLOCK = 64
LOSS, LSE = 0, 1  # rows of the forward's ``out`` (2, M), x's dtype
SHIFT, DEN, DTARGET = 0, 1, 2  # rows of its ``stats`` (3, M): float64 (accurate) or x's dtype (fast)

# ----------------------------------------------------------------------------- pieces of a row


@jit(fastmath=MAX_FLAGS)
def row_max(row: Any) -> Any:
    """The largest entry of a row (-inf for an empty one). It may skip a nan: the sum after it sees the nan."""
    mx = row.dtype.type(-np.inf)
    for j in range(row.shape[0]):
        v = row[j]
        if v > mx:
            mx = v
    return mx


@jit()
def two_diff_lo(a: float, b: float, hi: float) -> float:
    """TwoSum: the rounding error of ``hi = fl(a - b)``, so that ``hi + lo == a - b`` exactly (0 if not finite)."""
    bb = hi - a
    lo = (a - (hi - bb)) + (-b - bb)
    return lo if math.isfinite(lo) else 0.0


@jit()
def add_compensated(total: float, comp: float, s: float) -> tuple[float, float]:
    """``total + s`` by Neumaier's compensated sum: the new total and the running rounding error ``comp``."""
    t = total + s
    if abs(total) >= abs(s):
        comp += (total - t) + s
    else:
        comp += (s - t) + total
    return t, comp


@jit()
def bad_row(row: Any, mx: float, out: Any, stats: Any, i: int) -> None:
    """A row whose max is not finite: loss and gradient nan, lse the max (nan if the row holds a nan)."""
    has_nan = False
    for j in range(row.shape[0]):
        has_nan |= row[j] != row[j]
    out[LOSS, i] = np.nan
    out[LSE, i] = np.nan if has_nan else mx
    stats[SHIFT, i] = 0.0
    stats[DEN, i] = np.nan  # the backward's exp(x - 0) / nan: a nan gradient row
    stats[DTARGET, i] = np.nan


# ----------------------------------------------------------------------------- forward


@jit(fastmath=SUM_FLAGS)
def fast_row(row: Any, t: int, out: Any, stats: Any, i: int) -> None:
    """'fast' on one row, in its dtype: ``s = sum exp(x - mx)``, ``lse = mx + log(s)``, ``loss = lse - x_t``."""
    mx = row_max(row)
    if not math.isfinite(mx):
        bad_row(row, mx, out, stats, i)
        return
    s = row.dtype.type(0.0)
    for j in range(row.shape[0]):
        s += exp_of(row[j] - mx)
    lse_i = mx + np.log(s)
    out[LOSS, i] = lse_i - row[t]
    out[LSE, i] = lse_i
    stats[SHIFT, i] = mx
    stats[DEN, i] = s
    stats[DTARGET, i] = math.expm1(-(lse_i - row[t]))  # softmax_t - 1 = exp(-loss) - 1


@jit()
def accurate_epilogue(mx: float, xt: float, r: float, out: Any, stats: Any, i: int) -> None:
    """'accurate': ``loss = (mx - x_t) + log1p(r)``, ``lse = mx + log1p(r)``, ``softmax_t - 1 = expm1(-loss)``.

    Compiled without reassociation: the order of these sums is the accuracy."""
    log1p_r = math.log1p(r)
    loss_i = (mx - xt) + log1p_r  # two terms >= 0
    out[LOSS, i] = loss_i
    out[LSE, i] = mx + log1p_r
    stats[SHIFT, i] = mx
    stats[DEN, i] = 1.0 + r
    stats[DTARGET, i] = math.expm1(-loss_i)


@jit(fastmath=SUM_FLAGS)
def accurate_row(row: Any, t: int, out: Any, stats: Any, i: int) -> None:
    """'accurate' on one row, in float64: ``r`` = the sum of the exps without one largest term."""
    mx = row_max(row)
    if not math.isfinite(mx):
        bad_row(row, mx, out, stats, i)
        return
    m64 = np.float64(mx)
    r = 0.0  # sum_{x_j < mx} exp(x_j - mx); a nan entry (d != 0) makes it nan
    ties = 0  # entries equal to the max; all but one of them add exp(0) = 1 to r
    if is_float32(row):
        for j in range(row.shape[0]):
            d = np.float64(row[j]) - m64  # exact: two float32 differ by a float64
            r += exp64_for32(d) if d != 0.0 else 0.0
            ties += d == 0.0
    else:  # float64 rows: in blocks, the block sums added with their rounding errors carried (a float64 sum
        # of n terms in one vectorized loop is off by about n / 8 ulps; see tinyops.kernels.softmax)
        n = row.shape[0]
        comp = 0.0
        for j0 in range(0, n, BLOCK):
            s = 0.0
            for j in range(j0, min(j0 + BLOCK, n)):
                hi = row[j] - m64
                e = exp64(hi)
                e += e * two_diff_lo(row[j], m64, hi)  # exp(hi + lo) = exp(hi) (1 + lo)
                s += e if hi != 0.0 else 0.0
                ties += hi == 0.0
            r, comp = add_compensated(r, comp, s)
        r += comp
    accurate_epilogue(m64, np.float64(row[t]), r + (ties - 1), out, stats, i)


@jit(parallel=True)
def forward_parallel(x: Any, t: Any, out: Any, stats: Any, accurate: bool) -> None:
    for i in prange(x.shape[0]):
        if accurate:
            accurate_row(x[i], t[i], out, stats, i)
        else:
            fast_row(x[i], t[i], out, stats, i)


@jit()
def forward_serial(x: Any, t: Any, out: Any, stats: Any, accurate: bool) -> None:
    for i in range(x.shape[0]):
        if accurate:
            accurate_row(x[i], t[i], out, stats, i)
        else:
            fast_row(x[i], t[i], out, stats, i)


# ----------------------------------------------------------------------------- backward


@jit(fastmath=SUM_FLAGS)
def backward_row(row: Any, t: int, g: Any, shift: Any, den: Any, dtarget: Any, into: Any, accurate: bool) -> None:
    """``drow = g * (softmax(row) - onehot(t))`` with ``softmax = exp(row - shift) / den`` recomputed.

    ``into``: the row of dx, or None to write over ``row`` itself (one array: the compiler sees the
    loop is a map and vectorizes it; two views of one array would make it check for overlap, and fall
    back to scalar code when they do)."""
    drow = row if into is None else into
    if accurate:
        scale = np.float64(g) / den  # float64
        if is_float32(row):
            for j in range(row.shape[0]):
                drow[j] = exp64_for32(np.float64(row[j]) - shift) * scale  # rounded once to float32
        else:
            for j in range(row.shape[0]):
                hi = row[j] - shift
                e = exp64(hi)
                drow[j] = (e + e * two_diff_lo(row[j], shift, hi)) * scale
    else:
        scale_x = g / den  # x's dtype
        for j in range(row.shape[0]):
            drow[j] = exp_of(row[j] - shift) * scale_x
    if row.shape[0] > 0:
        drow[t] = g * dtarget  # g * (softmax_t - 1)


@jit(parallel=True)
def backward_parallel(x: Any, t: Any, g: Any, stats: Any, dx: Any, accurate: bool) -> None:
    uniform = g.shape[0] == 1  # one g for every row (a mean or a sum)
    for i in prange(x.shape[0]):
        gi = g[0] if uniform else g[i]
        into = None if dx is None else dx[i]  # dx None: over the logits
        backward_row(x[i], t[i], gi, stats[SHIFT, i], stats[DEN, i], stats[DTARGET, i], into, accurate)


@jit()
def backward_serial(x: Any, t: Any, g: Any, stats: Any, dx: Any, accurate: bool) -> None:
    uniform = g.shape[0] == 1  # one g for every row (a mean or a sum)
    for i in range(x.shape[0]):
        gi = g[0] if uniform else g[i]
        into = None if dx is None else dx[i]  # dx None: over the logits
        backward_row(x[i], t[i], gi, stats[SHIFT, i], stats[DEN, i], stats[DTARGET, i], into, accurate)


@jit()
def index_bounds(t: Any) -> tuple[int, int]:
    """``(min(t), max(t))`` of a non-empty integer array in one pass (the public op's range check)."""
    lo = hi = t[0]
    for i in range(1, t.shape[0]):
        v = t[i]
        lo = min(lo, v)
        hi = max(hi, v)
    return int(lo), int(hi)


# ----------------------------------------------------------------------------- entry points


class RowsState(NamedTuple):
    """What :func:`ce_rows_backward` needs: a reference to the logits and three numbers a row.

    The backward recomputes ``softmax = exp(x - shift) / den`` and assumes ``x`` unchanged since the
    forward (as torch's saved tensors); nothing here writes into it.
    """

    x: Array  # (M, C) the caller's logits, not copied
    target: npt.NDArray[np.intp]  # (M,)
    stats: Array  # (3, M) [shift; den; dtarget]: float64 if accurate, else x's dtype. shift: the row max
    # (0 on a row whose max is not finite); den: the softmax's divisor, 1 + r (accurate) or s (fast), nan on
    # such a row; dtarget: softmax_t - 1 = expm1(-loss)
    accurate: bool
    threads: int


def ce_rows_forward(
    x: Array, t: npt.NDArray[np.intp], *, precision: str = "accurate", threads: int = 1
) -> tuple[Array, Array, RowsState]:
    """Per-row loss and lse of (M, C) logits ``x`` (C-contiguous float32/float64) against (M,) intp ``t`` in [0, C).

    Returns ``(loss (M,), lse (M,), state)``, loss and lse in x's dtype (views of one (2, M) array).
    Nothing is checked here.
    """
    M = x.shape[0]
    accurate = precision == "accurate"
    out = np.empty((2, M), x.dtype)  # [loss; lse]
    stats = np.empty((3, M), np.float64 if accurate else x.dtype)  # [shift; den; dtarget]
    launch(forward_serial, forward_parallel, threads, x, t, out, stats, accurate)
    return out[LOSS], out[LSE], RowsState(x, t, stats, accurate, threads)


def ce_rows_backward(g: Array, state: RowsState, out: Array | None = None) -> Array:
    """``dx = g[:, None] * (softmax(x) - onehot(t))`` (M, C) into ``out`` (may be ``state.x`` itself) or a new array.

    ``g`` (M,), or (1,) for one value for every row, in x's dtype. The kernel reads each element of x
    before it writes the same element of dx, so ``out`` may be the logits themselves (the backward then
    consumes them), but not a partial view of them.
    """
    x = state.x
    dx = np.empty_like(x) if out is None else out
    into = None if dx is x else dx  # over the logits: the kernel is told so, and vectorizes as a map
    launch(backward_serial, backward_parallel, state.threads, x, state.target, g, state.stats, into, state.accurate)
    return dx
