"""The fused cross-entropy's row kernels, compiled: loss, lse and dlogits of (M, C) logits against indices.

Shapes: M = rows, C = classes. ``x`` (M, C) float32/float64, C-contiguous; ``t`` (M,) intp in [0, C).

    loss[m] = logsumexp(x[m]) - x[m, t[m]]                         forward,  (M,)
    dx[m]   = g[m] * (softmax(x[m]) - onehot(t[m]))                backward, (M, C)

Per row, the forward makes two passes over the row (the first brings it into the cache):

1. the row max ``mx``;
2. the sum of ``exp(x_j - mx)``;

and keeps a few numbers a row (the shift ``mx``, the divisor ``den``, the target entry of the gradient,
``softmax_t - 1``, and what the float64 backward and the mean need; ``stats`` below) plus a reference to
``x``: no (M, C) state. The backward makes one pass that
recomputes each exp and writes ``dx_j = exp(x_j - mx) * (g / den)``, then puts ``g * (softmax_t - 1)``
at the target. Two exps per element, but one (M, C) array written, and each row read from memory twice.

**precision='fast'**: everything in x's dtype: ``den = s = sum_j exp(x_j - mx)``, ``lse = mx + log(s)``,
``loss = lse - x_t``, ``softmax_t - 1 = expm1(-loss)``. Its errors are torch's: absolute where
``lse - x_t`` cancels.

**precision='accurate'**: float64 inside, and the largest term kept out of the sum (as the reference,
:func:`tinyops.ops.softmax.shifted_rows`): ``r = sum_{x_j < mx} exp(x_j - mx) + (ties - 1)``, then
``loss = (mx - x_t) + log1p(r)`` (two terms >= 0: nothing cancels), ``lse = mx + log1p(r)``,
``den = 1 + r`` and ``softmax_t - 1 = expm1(-loss)``. For float32 rows ``x_j - mx`` is exact in float64;
for float64 rows it is ``hi + lo`` by TwoSum, each exp is an unrounded pair from a table
(:func:`~tinyops.kernels.exp.exp64_table`), ``r`` is summed with every rounding error carried
(:func:`~tinyops.kernels.rounding.sum_without_max64`), ``r`` is kept as a pair for the backward, which
rounds each gradient entry ``exp(x_j - mx) * g / (1 + r)`` once from pairs, and the target's, at the max,
as ``-r g / (1 + r)`` (:func:`target_entry64`): ``softmax_t - 1`` is never formed by a cancelling
subtraction. Where ``lse = mx + log1p(r)`` cancels (near 0 with the max not: log-probabilities), the lse
is computed in triple-double (:mod:`tinyops.kernels.td`); the loss never cancels.

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

import numba
import numpy as np
import numpy.typing as npt
from numba import prange

from .._checks import Array
from . import dd
from ._numba import MAX_FLAGS, SUM_FLAGS, jit, launch, threads_available
from .exp import exp64, exp_of, is_float32
from .rounding import (
    DD_ERR,
    E_PAIR_ERR,
    EXP_ERR,
    FELL_DD,
    FELL_NONE,
    FELL_PAIRS,
    FELL_TRIPLE,
    FELL_UNDECIDED,
    L_ERR,
    L_PAIR_ERR,
    R_ERR,
    TARGET_ERR,
    TINY_R,
    U,
    add_pairs,
    d_of,
    dd_exp_of,
    dd_row,
    dd_sum_err,
    decided32,
    decided_dd32,
    entry_pair,
    entry_rounded,
    log1p_pair,
    midpoint_reach,
    near_midpoint32,
    one_plus,
    pair_quotient,
    round_dd32,
    sum_without_max,
    sum_without_max64,
    two_diff_lo,
)
from .td import logsumexp_cancelling, lse_cancels

LOSS, LSE = 0, 1  # rows of the forward's ``out`` (2, M), x's dtype
# rows of its ``stats`` (8, M): float64 (accurate) or x's dtype (fast). SHIFT, DEN, DTARGET: what the backward
# needs; FELL: how the row's outputs were decided (FELL_NONE, FELL_PAIRS, FELL_DD, FELL_UNDECIDED,
# FELL_TRIPLE); LOSS64, LOSS_ERR: the loss before its rounding to x's dtype and a bound on its error (what a
# correctly rounded mean needs); R, R_LO: the sum without the max as a pair, ``r = R + R_LO`` (what the
# float64 backward needs; 0 on the other rows)
SHIFT, DEN, DTARGET, FELL, LOSS64, LOSS_ERR, R, R_LO = 0, 1, 2, 3, 4, 5, 6, 7
STATS = 8

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
    stats[FELL, i] = FELL_NONE
    stats[LOSS64, i] = np.nan
    stats[LOSS_ERR, i] = 0.0
    stats[R, i] = np.nan  # likewise for float64 rows, whose backward divides by 1 + r
    stats[R_LO, i] = 0.0


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
    stats[FELL, i] = FELL_NONE
    stats[LOSS64, i] = lse_i - row[t]
    stats[LOSS_ERR, i] = np.inf  # no bound
    stats[R, i] = 0.0
    stats[R_LO, i] = 0.0


@jit()
def accurate_fallback(row: Any, t: int, m: float, r_fast: float, out: Any, stats: Any, i: int) -> None:
    """The row's loss and lse again, in double-double (:func:`~tinyops.kernels.rounding.dd_row`)."""
    scale, rh, rl, lh, ll, _, _ = dd_row(row, m, r_fast)
    gh, gl = d_of(row, t, m)  # x_t - m exactly
    if gh == -np.inf:  # a -inf target: loss +inf
        vh, vl = np.inf, 0.0
    else:
        vh, vl = dd.dd_add(-gh, -gl, lh, ll)  # loss = (m - x_t) + log1p(r)
    wh, wl = dd.dd_add(m, 0.0, lh, ll)  # lse = m + log1p(r)
    status = FELL_DD
    if is_float32(row):
        out[LOSS, i] = round_dd32(vh, vl)
        out[LSE, i] = round_dd32(wh, wl)
        if not (decided_dd32(vh, vl, dd_sum_err(gh, lh)) and decided_dd32(wh, wl, dd_sum_err(m, lh))):
            status = FELL_UNDECIDED
    else:
        out[LOSS, i] = vh
        out[LSE, i] = wh
        stats[R, i] = math.ldexp(rh, -scale)  # r = (rh + rl) 2^-scale, for the backward's target entry
        stats[R_LO, i] = math.ldexp(rl, -scale)
    stats[DTARGET, i] = math.expm1(-vh)
    stats[FELL, i] = status
    stats[LOSS64, i] = vh
    stats[LOSS_ERR, i] = abs(vl) + dd_sum_err(gh, lh)


@jit(fastmath=SUM_FLAGS)
def accurate_row(row: Any, t: int, out: Any, stats: Any, i: int) -> None:
    """'accurate' on one row, in float64: ``r`` = the sum of the exps without one largest term, then
    ``loss = (m - x_t) + log1p(r)``, ``lse = m + log1p(r)``, ``softmax_t - 1 = expm1(-loss)``.

    float32 rows: loss and lse are checked to decide their rounding, else the row goes on to the slow
    tiers (:func:`accurate_redo`); float64 rows, in pairs, are redone in double-double where
    ``r < 2^-960``, and their lse in triple-double where it cancels
    (:func:`~tinyops.kernels.td.logsumexp_cancelling`)."""
    mx = row_max(row)
    if not math.isfinite(mx):
        bad_row(row, mx, out, stats, i)
        return
    m = np.float64(mx)
    rh, rl = sum_without_max(row, m, None)
    xt = np.float64(row[t])
    fell = FELL_NONE
    if is_float32(row):
        log1p_r = math.log1p(rh)
        loss_i = (m - xt) + log1p_r  # two terms >= 0, the first exact
        lse_i = m + log1p_r
        err = L_ERR * log1p_r
        redo = not decided32(loss_i, err + 2 * U * loss_i) or not decided32(lse_i, err + 2 * U * abs(lse_i))
        cancels = False
        stats[LOSS_ERR, i] = err + U * loss_i
    else:
        lh, ll = log1p_pair(rh, rl)
        gap = m - xt
        loss_i = add_pairs(gap, two_diff_lo(m, xt, gap), lh, ll)[0]  # (m - x_t) + log1p(r), pairs
        lse_i = add_pairs(m, 0.0, lh, ll)[0]
        redo = bool(0.0 < rh < TINY_R)
        cancels = lse_cancels(m, lh, lse_i)
        stats[LOSS_ERR, i] = np.inf
    out[LOSS, i] = loss_i
    out[LSE, i] = lse_i
    stats[SHIFT, i] = m
    stats[DEN, i] = one_plus(rh, rl)[0]
    stats[R, i] = rh
    stats[R_LO, i] = rl
    stats[DTARGET, i] = math.expm1(-loss_i)
    stats[FELL, i] = fell
    stats[LOSS64, i] = loss_i
    if redo:
        accurate_redo(row, t, m, rh, out, stats, i)
    if cancels:
        out[LSE, i] = logsumexp_cancelling(row)
        stats[FELL, i] = FELL_TRIPLE


@jit()
def accurate_redo(row: Any, t: int, m: float, r_fast: float, out: Any, stats: Any, i: int) -> None:
    """The slow tiers of a row whose loss or lse the first evaluation did not decide: for float32 rows, the
    row in pairs as float64 rows are computed (the second tier) and the two decided again; then the
    double-double row."""
    if is_float32(row):
        rh, rl = sum_without_max64(row, m)
        lh, ll = log1p_pair(rh, rl)
        vh, vl = add_pairs(m - np.float64(row[t]), 0.0, lh, ll)  # loss; m - x_t exact
        wh, wl = add_pairs(m, 0.0, lh, ll)  # lse
        err = L_PAIR_ERR * lh
        if decided_dd32(vh, vl, err) and decided_dd32(wh, wl, err):
            out[LOSS, i] = round_dd32(vh, vl)
            out[LSE, i] = round_dd32(wh, wl)
            stats[DTARGET, i] = math.expm1(-vh)
            stats[FELL, i] = FELL_PAIRS
            stats[LOSS64, i] = vh
            stats[LOSS_ERR, i] = err + abs(vl)
            return
    accurate_fallback(row, t, m, r_fast, out, stats, i)


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


@jit()
def backward_fallback(row: Any, t: int, g: float, shift: float, drow: Any) -> int:
    """``drow = g * (softmax(row) - onehot(t))`` in double-double, each entry rounded once to float32.

    ``g * (softmax_t - 1) = -g * (den - e_t) / den``, with ``den - e_t`` = r when x_t is a max (else no
    cancellation: ``den - e_t >= 1``). Returns FELL_DD, or FELL_UNDECIDED if a rounding stays open."""
    scale, rh, rl, _, _, dh, dl = dd_row(row, shift, 1.0)  # float32 rows: r is never below the normal range
    status = FELL_DD
    for j in range(row.shape[0]):
        eh, el = dd_exp_of(row, j, shift, scale)
        if j == t:
            if np.float64(row[t]) == shift:
                eh, el = -rh, -rl
            else:
                eh, el = dd.dd_add(eh, el, -dh, -dl)
        ph, pl = dd.dd_div(eh, el, dh, dl)
        ph, pl = dd.dd_mul(ph, pl, g, 0.0)
        drow[j] = round_dd32(ph, pl)
        if not decided_dd32(ph, pl, DD_ERR * abs(ph)):
            status = FELL_UNDECIDED
    return status


@jit(fastmath=SUM_FLAGS)
def grad_row32(src: Any, t: int, g: Any, shift: float, den: float, dtarget: float, drow: Any) -> int:
    """``drow = g * (softmax - onehot(t))`` of a float32 row from float64 values, the softmax's divisor
    ``den`` with relative error ``R_ERR * r / (1 + r) + u``; returns how many entries are not decided. The
    target entry ``g * expm1(-loss)`` inherits the loss's relative error (``TARGET_ERR``)."""
    scale = np.float64(g) / den
    rel = EXP_ERR + R_ERR * ((den - 1.0) / den) + 5 * U
    reach = midpoint_reach(rel)
    undecided = 0
    for j in range(src.shape[0]):
        v = exp64(np.float64(src[j]) - shift) * scale  # rounded once to float32
        drow[j] = v
        undecided += near_midpoint32(v, reach)
    if undecided > 0:  # near a midpoint, or below float32's normal range: the float test, per entry
        undecided = 0
        for j in range(src.shape[0]):
            v = exp64(np.float64(src[j]) - shift) * scale
            undecided += not decided32(v, rel * abs(v))
    if src.shape[0] > 0:
        v = g * dtarget  # g * (softmax_t - 1)
        drow[t] = v
        undecided += not decided32(v, TARGET_ERR * abs(v))
    return undecided


@jit()
def backward_redo(src: Any, t: int, g: Any, shift: float, dtarget: float, drow: Any) -> int:
    """The slow tiers of a float32 row whose gradient the float64 values did not decide: the row in pairs
    (the second tier: ``r`` by :func:`sum_without_max64`, each entry by :func:`entry_pair`), then, if an entry
    is still undecided, the double-double row. Returns its FELL_* status."""
    rh, rl = sum_without_max64(src, shift)
    dh, dl = one_plus(rh, rl)
    qh, ql = pair_quotient(np.float64(g), dh, dl)  # g / (1 + r)
    undecided = 0
    for j in range(src.shape[0]):
        vh, vl = entry_pair(src, j, shift, qh, ql)
        drow[j] = round_dd32(vh, vl)
        undecided += not decided_dd32(vh, vl, E_PAIR_ERR * abs(vh))
    if src.shape[0] > 0:
        v = g * dtarget  # g * (softmax_t - 1), as the first tier
        drow[t] = v
        undecided += not decided32(v, TARGET_ERR * abs(v))
    if undecided == 0:
        return FELL_PAIRS
    return backward_fallback(src, t, np.float64(g), shift, drow)  # type: ignore[no-any-return]


@jit()
def target_entry64(row: Any, t: int, g: float, shift: float, rh: float, rl: float, qh: float, ql: float) -> Any:
    """``g * (softmax_t - 1)`` of a float64 row, rounded once from pairs (``r = rh + rl``,
    ``q = qh + ql = g / (1 + r)``).

    A target at the max: ``-r q``, so ``1 - softmax_t = r / (1 + r)`` is never formed by a subtraction
    that cancels. Any other target: ``exp(x_t - m) q - g``, a pair
    (:func:`~tinyops.kernels.rounding.entry_pair`) minus ``g``, at least ``|g| / 2`` in size: nothing
    cancels."""
    if row[t] == shift:
        p, pe = dd.two_prod(rh, qh)
        return -(p + (pe + (rh * ql + rl * qh)))
    vh, vl = entry_pair(row, t, shift, qh, ql)
    s, e = dd.two_sum(vh, -np.float64(g))
    return s + (e + vl)


@jit(fastmath=SUM_FLAGS)
def backward_row(row: Any, t: int, g: Any, stats: Any, i: int, into: Any, accurate: bool, keep: Any) -> int:
    """``drow = g * (softmax(row) - onehot(t))`` of row ``i``, with ``softmax = exp(row - shift) / den``
    recomputed from the forward's ``stats`` (float64 rows: ``1 + r`` as a pair from the pair ``r``).

    ``into``: the row of dx, or None to write over ``row`` itself (one array: the compiler sees the
    loop is a map and vectorizes it; two views of one array would make it check for overlap, and fall
    back to scalar code when they do). ``keep``: a float32 scratch row to copy ``row`` into first when
    writing over it, so that a float32 row whose roundings are not all decided can be redone
    (:func:`backward_fallback`). Returns the row's FELL_* status."""
    drow = row if into is None else into
    shift, den, dtarget = stats[SHIFT, i], stats[DEN, i], stats[DTARGET, i]
    status = FELL_NONE
    if accurate:
        if is_float32(row):
            src = row
            if into is None:
                for j in range(row.shape[0]):
                    keep[j] = row[j]
                src = keep
            if grad_row32(src, t, g, shift, den, dtarget, drow) > 0:
                status = backward_redo(src, t, g, shift, dtarget, drow)
            return status
        r, r_lo = stats[R, i], stats[R_LO, i]
        dh, dl = one_plus(r, r_lo)
        qh, ql = pair_quotient(np.float64(g), dh, dl)  # g / (1 + r), a pair
        vt = 0.0
        if row.shape[0] > 0:
            vt = target_entry64(row, t, g, shift, r, r_lo, qh, ql)  # g * (softmax_t - 1)
        for j in range(row.shape[0]):
            drow[j] = entry_rounded(row, j, shift, qh, ql)  # exp(x_j - m) g / (1 + r)
    else:
        scale_x = g / den  # x's dtype
        for j in range(row.shape[0]):
            drow[j] = exp_of(row[j] - shift) * scale_x
        vt = g * dtarget
    if row.shape[0] > 0:
        drow[t] = vt  # g * (softmax_t - 1), computed before row may be written over
    return status


@jit(parallel=True)
def backward_parallel(x: Any, t: Any, g: Any, stats: Any, dx: Any, accurate: bool, keep: Any, fell: Any) -> None:
    uniform = g.shape[0] == 1  # one g for every row (a mean or a sum)
    for i in prange(x.shape[0]):
        gi = g[0] if uniform else g[i]
        if dx is not None and accurate and is_float32(x):  # the common case, its loop called directly
            if grad_row32(x[i], t[i], gi, stats[SHIFT, i], stats[DEN, i], stats[DTARGET, i], dx[i]):
                fell[i] = backward_redo(x[i], t[i], gi, stats[SHIFT, i], stats[DTARGET, i], dx[i])
            else:
                fell[i] = FELL_NONE
            continue
        into = None if dx is None else dx[i]  # dx None: over the logits
        fell[i] = backward_row(x[i], t[i], gi, stats, i, into, accurate, keep[numba.get_thread_id()])


@jit()
def backward_serial(x: Any, t: Any, g: Any, stats: Any, dx: Any, accurate: bool, keep: Any, fell: Any) -> None:
    uniform = g.shape[0] == 1  # one g for every row (a mean or a sum)
    for i in range(x.shape[0]):
        gi = g[0] if uniform else g[i]
        if dx is not None and accurate and is_float32(x):  # the common case, its loop called directly
            if grad_row32(x[i], t[i], gi, stats[SHIFT, i], stats[DEN, i], stats[DTARGET, i], dx[i]):
                fell[i] = backward_redo(x[i], t[i], gi, stats[SHIFT, i], stats[DTARGET, i], dx[i])
            else:
                fell[i] = FELL_NONE
            continue
        into = None if dx is None else dx[i]  # dx None: over the logits
        fell[i] = backward_row(x[i], t[i], gi, stats, i, into, accurate, keep[0])


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
    """What :func:`ce_rows_backward` needs: a reference to the logits and a few numbers a row.

    The backward recomputes ``softmax = exp(x - shift) / den`` and assumes ``x`` unchanged since the
    forward (as torch's saved tensors); nothing here writes into it.
    """

    x: Array  # (M, C) the caller's logits, not copied
    target: npt.NDArray[np.intp]  # (M,)
    stats: Array  # (STATS, M) [shift; den; dtarget; fell; loss64; loss_err; r; r_lo]: float64 if accurate,
    # else x's dtype.
    # shift: the row max (0 on a row whose max is not finite); den: the softmax's divisor, 1 + r (accurate) or
    # s (fast), nan on such a row; dtarget: softmax_t - 1 = expm1(-loss)
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
    stats = np.empty((STATS, M), np.float64 if accurate else x.dtype)
    launch(forward_serial, forward_parallel, threads, x, t, out, stats, accurate)
    return out[LOSS], out[LSE], RowsState(x, t, stats, accurate, threads)


def ce_rows_backward_counted(g: Array, state: RowsState, out: Array | None = None) -> tuple[Array, Array]:
    """:func:`ce_rows_backward`, and ``fell`` (M,) int8: per row FELL_NONE, FELL_DD or FELL_UNDECIDED."""
    x = state.x
    dx = np.empty_like(x) if out is None else out
    into = None if dx is x else dx  # over the logits: the kernel is told so, and vectorizes as a map
    in_place_f32 = into is None and state.accurate and x.dtype == np.float32
    keep = np.empty((threads_available() if state.threads > 1 else 1, x.shape[1] if in_place_f32 else 0), x.dtype)
    fell = np.empty(x.shape[0], np.int8)
    args = (x, state.target, g, state.stats, into, state.accurate, keep, fell)
    launch(backward_serial, backward_parallel, state.threads, *args)
    return dx, fell


def ce_rows_backward(g: Array, state: RowsState, out: Array | None = None) -> Array:
    """``dx = g[:, None] * (softmax(x) - onehot(t))`` (M, C) into ``out`` (may be ``state.x`` itself) or a new array.

    ``g`` (M,), or (1,) for one value for every row, in x's dtype. The kernel reads each element of x
    before it writes the same element of dx, so ``out`` may be the logits themselves (the backward then
    consumes them), but not a partial view of them.
    """
    return ce_rows_backward_counted(g, state, out)[0]
