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
   rows ``x_j - m`` is exact in float64; for float64 rows it is ``hi + lo`` by TwoSum
   (:func:`~tinyops.kernels.rounding.two_diff_lo`), each exp an unrounded pair from a table
   (:func:`~tinyops.kernels.exp.exp64_table`) and the sum carries every rounding error
   (:func:`~tinyops.kernels.rounding.sum_without_max64`);
3. the outputs from ``m`` and ``r``: ``lse = m + log1p(r)``; the float32 softmax divides the exps of
   pass 2, kept in a float64 scratch row (one per thread), by ``1 + r``; the float64 one recomputes each
   exp as a pair and multiplies it by ``1 / (1 + r)`` as a pair, rounding once; log_softmax is
   ``(x_j - m) - log1p(r)`` (plus ``lo`` for float64), two terms <= 0: nothing cancels.

Each output is rounded once to x's dtype. **Accuracy** against the exact (mpmath) values, held by
tests/test_rounding.py, tests/test_softmax_layers.py and tests/test_accuracy.py on the hard regions of
:mod:`tinyops.testing.regions`:

- float32: correctly rounded. Each output's float64 value comes with an error bound; where the bound
  does not decide the float32 rounding the row is computed again in float64 pairs (the second tier), then,
  if still undecided, in double-double (:mod:`tinyops.kernels.rounding`). So the reference layer, also
  correctly rounded, gives the same bits;
- float64: within ``8 + 2 log2(n)`` ULP (held), on outputs that are normal numbers; measured in the atlas
  of docs/accuracy.md, within about half an ULP (every sum and ``log1p(r)`` carried as pairs, each output
  rounded once).
  Rows whose exps fall below the normal range are computed in double-double, and a logsumexp that cancels
  (near 0 with the max not) in triple-double (:mod:`tinyops.kernels.td`).

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

from . import dd
from ._numba import jit, launch, threads_available, use_threads
from .cross_entropy import row_max
from .exp import exp64, exp_of, is_float32
from .rounding import (
    BLOCK,
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
    TINY_R,
    U,
    add_compensated,
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

# what a forward computes (a constant of each compiled call site: one driver serves all four)
LSE = 0  # logsumexp only
LSE_PROBS = 1  # logsumexp and its gradient, the softmax (logsumexp_forward's cache)
SOFTMAX = 2
LOG_SOFTMAX = 3

FLAGS = frozenset({"contract"})  # loops that only write: no reassociation, so each formula rounds as written


# ----------------------------------------------------------------------------- pieces of a row


@jit(fastmath=FLAGS)
def softmax_into(e: Any, den: float, out: Any, rel: float) -> int:
    """``out_j = e_j / den`` (``e_j = exp(x_j - m)`` in float64), each rounded once to out's dtype.

    Returns how many float32 entries the float64 quotient, within ``rel * |v|`` of the exact one, does
    not decide (0 for float64)."""
    undecided = 0
    reach = midpoint_reach(rel)
    for j in range(out.shape[0]):
        v = e[j] / den
        out[j] = v
        if is_float32(out):
            undecided += near_midpoint32(v, reach)
    if undecided > 0:  # near a midpoint, or below float32's normal range: the float test, per entry
        undecided = 0
        for j in range(out.shape[0]):
            v = e[j] / den
            undecided += not decided32(v, rel * v)
    return undecided


@jit(fastmath=FLAGS)
def softmax64_into(row: Any, m: float, rh: float, rl: float, out: Any) -> None:
    """``out_j = exp(x_j - m) / (1 + r)`` of a float64 row, each rounded once from pairs
    (:func:`~tinyops.kernels.rounding.entry_rounded`, with ``1 / (1 + r)`` as a pair)."""
    dh, dl = one_plus(rh, rl)
    qh, ql = pair_quotient(1.0, dh, dl)
    for j in range(row.shape[0]):
        out[j] = entry_rounded(row, j, m, qh, ql)


@jit(fastmath=FLAGS)
def log_softmax_into(row: Any, m: float, log1p_r: float, log1p_r_lo: float, out: Any, err: float) -> int:
    """``out_j = (x_j - m) - log1p(r)``: two terms <= 0. float64 rows: both are pairs (``x_j - m`` by TwoSum,
    ``log1p(r) = log1p_r + log1p_r_lo``), rounded once; float32 rows: ``log1p_r_lo`` is not used.

    Returns how many float32 entries are not decided, the float64 value within ``err + 2u |v|``."""
    undecided = 0
    if is_float32(row):
        for j in range(row.shape[0]):
            v = (np.float64(row[j]) - m) - log1p_r
            out[j] = v
            w = err + 2 * U * abs(v)
            undecided += math.isfinite(v) and np.float32(v - w) != np.float32(v + w)  # -inf: decided
    else:
        for j in range(row.shape[0]):
            hi = row[j] - m
            out[j] = add_pairs(hi, two_diff_lo(row[j], m, hi), -log1p_r, -log1p_r_lo)[0]
    return undecided


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


@jit()
def fallback_row(row: Any, op: int, lse: Any, y: Any, i: int, m: float, r_fast: float) -> int:
    """Row ``i`` again, in double-double (:func:`~tinyops.kernels.rounding.dd_row`); returns FELL_DD, or
    FELL_UNDECIDED if even that value leaves a float32 rounding open."""
    scale, _, _, lh, ll, dh, dl = dd_row(row, m, r_fast)
    f32 = is_float32(row)
    status = FELL_DD
    if op == LSE or op == LSE_PROBS:
        vh, vl = dd.dd_add(m, 0.0, lh, ll)
        lse[i] = round_dd32(vh, vl) if f32 else vh
        if f32 and not decided_dd32(vh, vl, dd_sum_err(m, lh)):
            status = FELL_UNDECIDED
    if op == LSE_PROBS or op == SOFTMAX:
        for j in range(row.shape[0]):
            eh, el = dd_exp_of(row, j, m, scale)
            ph, pl = dd.dd_div(eh, el, dh, dl)
            ph, pl = math.ldexp(ph, -scale), math.ldexp(pl, -scale)
            y[i, j] = round_dd32(ph, pl) if f32 else ph
            if f32 and not decided_dd32(ph, pl, DD_ERR * ph):
                status = FELL_UNDECIDED
    elif op == LOG_SOFTMAX:
        for j in range(row.shape[0]):
            xh, xl = d_of(row, j, m)
            if xh == -np.inf:
                y[i, j] = -np.inf
                continue
            vh, vl = dd.dd_add(xh, xl, -lh, -ll)
            y[i, j] = round_dd32(vh, vl) if f32 else vh
            if f32 and not decided_dd32(vh, vl, dd_sum_err(xh, lh)):
                status = FELL_UNDECIDED
    return status


# ----------------------------------------------------------------------------- forward


@jit(fastmath=FLAGS)
def outputs32(row: Any, op: int, lse: Any, y: Any, i: int, e: Any, m: float, r: float) -> int:
    """The outputs ``op`` asks for of a float32 row from ``m`` and ``r`` (relative error ``R_ERR``): how many
    of them the float64 values do not decide."""
    log1p_r = math.log1p(r)
    undecided = 0
    if op == LSE or op == LSE_PROBS:
        v = m + log1p_r
        lse[i] = v
        undecided += not decided32(v, L_ERR * log1p_r + 2 * U * abs(v))
    if op == LSE_PROBS or op == SOFTMAX:
        den = 1.0 + r
        undecided += softmax_into(e, den, y[i], EXP_ERR + R_ERR * (r / den) + 5 * U)
    elif op == LOG_SOFTMAX:
        undecided += log_softmax_into(row, m, log1p_r, 0.0, y[i], L_ERR * log1p_r)
    return undecided


@jit()
def forward_redo(row: Any, op: int, lse: Any, y: Any, i: int, m: float, r_fast: float) -> int:
    """The slow tiers of a float32 row with undecided outputs: the row in pairs, as float64 rows are
    computed (the second tier), each output decided again from its pair; then the double-double row.
    Returns its FELL_* status."""
    rh, rl = sum_without_max64(row, m)
    lh, ll = log1p_pair(rh, rl)
    err = L_PAIR_ERR * lh  # of lse and of each log_softmax entry
    undecided = 0
    if op == LSE or op == LSE_PROBS:
        vh, vl = add_pairs(m, 0.0, lh, ll)
        lse[i] = round_dd32(vh, vl)
        undecided += not decided_dd32(vh, vl, err)
    if op == LSE_PROBS or op == SOFTMAX:
        dh, dl = one_plus(rh, rl)
        qh, ql = pair_quotient(1.0, dh, dl)  # 1 / (1 + r)
        for j in range(row.shape[0]):
            vh, vl = entry_pair(row, j, m, qh, ql)
            y[i, j] = round_dd32(vh, vl)
            undecided += not decided_dd32(vh, vl, E_PAIR_ERR * abs(vh))
    elif op == LOG_SOFTMAX:
        for j in range(row.shape[0]):
            vh, vl = add_pairs(np.float64(row[j]) - m, 0.0, -lh, -ll)  # x_j - m exact
            y[i, j] = round_dd32(vh, vl)
            undecided += not decided_dd32(vh, vl, err)
    if undecided == 0:
        return FELL_PAIRS
    return fallback_row(row, op, lse, y, i, m, r_fast)  # type: ignore[no-any-return]


@jit(fastmath=FLAGS)
def forward_row(x: Any, op: int, lse: Any, y: Any, i: int, e: Any, fell: Any) -> None:
    """Row ``i``: max, ``r``, then the outputs ``op`` asks for (``lse[i]`` and/or ``y[i]``); ``e`` (n,) scratch.

    float32 rows: each output's rounding is decided from its float64 value and error bound, else the row
    goes on to the slow tiers (:func:`forward_redo`; ``fell[i]`` says how it was decided). float64 rows, in
    pairs: redone in double-double where the exps keep only absolute precision (``r < 2^-960``), and
    logsumexp in triple-double where it cancels, near 0 with the max not
    (:func:`~tinyops.kernels.td.logsumexp_cancelling`)."""
    row = x[i]
    mx = row_max(row)
    fell[i] = FELL_NONE
    if not math.isfinite(mx):
        bad_row(row, mx, op, lse, y, i)
        return
    m = np.float64(mx)
    rh, rl = sum_without_max(row, m, e)
    if is_float32(row):
        if outputs32(row, op, lse, y, i, e, m, rh) > 0:
            fell[i] = forward_redo(row, op, lse, y, i, m, rh)
        return
    lh, ll = log1p_pair(rh, rl)
    if op == LSE or op == LSE_PROBS:
        lse[i] = add_pairs(m, 0.0, lh, ll)[0]
    if op == LSE_PROBS or op == SOFTMAX:
        softmax64_into(row, m, rh, rl, y[i])
    elif op == LOG_SOFTMAX:
        log_softmax_into(row, m, lh, ll, y[i], 0.0)
    if 0.0 < rh < TINY_R:
        fell[i] = fallback_row(row, op, lse, y, i, m, rh)
    if (op == LSE or op == LSE_PROBS) and lse_cancels(m, lh, lse[i]):
        lse[i] = logsumexp_cancelling(row)
        fell[i] = FELL_TRIPLE


@jit(parallel=True)
def forward_parallel(x: Any, op: int, lse: Any, y: Any, e: Any, fell: Any) -> None:
    for i in prange(x.shape[0]):
        forward_row(x, op, lse, y, i, e[numba.get_thread_id()], fell)  # e: one scratch row per thread


@jit()
def forward_serial(x: Any, op: int, lse: Any, y: Any, e: Any, fell: Any) -> None:
    for i in range(x.shape[0]):
        forward_row(x, op, lse, y, i, e[0], fell)


def forward_counted(x: Any, op: int, threads: int) -> tuple[Any, Any, Any]:
    """:func:`forward`, and ``fell`` (R,) int8: per row one of the FELL_* codes of
    :mod:`tinyops.kernels.rounding`."""
    R, n = x.shape
    lse = np.empty(R if op in (LSE, LSE_PROBS) else 0, x.dtype)  # (R,)
    y = np.empty((R, n) if op != LSE else (0, 0), x.dtype)  # (R, n)
    fell = np.empty(R, np.int8)
    if threads == 1:
        forward_serial(x, op, lse, y, np.empty((1, n)), fell)
    else:
        use_threads(threads)
        forward_parallel(x, op, lse, y, np.empty((threads_available(), n)), fell)  # (threads, n) float64
    return lse, y, fell


def forward(x: Any, op: int, threads: int) -> tuple[Any, Any]:
    """``(lse (R,), y (R, n))`` of the rows of ``x`` (R, n) for ``op`` (an output not asked for is empty)."""
    lse, y, _ = forward_counted(x, op, threads)
    return lse, y


# ----------------------------------------------------------------------------- backward


@jit(fastmath=FLAGS)
def sum64(a: Any, b: Any) -> float:
    """``sum_j a_j b_j`` (``b`` an array) or ``sum_j a_j`` (``b`` None) in float64, in blocks as
    :func:`sum_without_max`, each block in the fixed order of :func:`lanes8`."""
    total, comp = 0.0, 0.0
    n = a.shape[0]
    for j0 in range(0, n, BLOCK):
        j1 = min(j0 + BLOCK, n)
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        j = j0
        while j + 8 <= j1:
            s0 += term64(a, b, j)
            s1 += term64(a, b, j + 1)
            s2 += term64(a, b, j + 2)
            s3 += term64(a, b, j + 3)
            s4 += term64(a, b, j + 4)
            s5 += term64(a, b, j + 5)
            s6 += term64(a, b, j + 6)
            s7 += term64(a, b, j + 7)
            j += 8
        while j < j1:
            s0 += term64(a, b, j)
            j += 1
        total, comp = add_compensated(total, comp, lanes8(s0, s1, s2, s3, s4, s5, s6, s7))
    return total + comp


@jit(inline=True)
def term64(a: Any, b: Any, j: int) -> float:
    """Entry j of :func:`sum64`'s sum: ``a_j b_j``, or ``a_j`` when ``b`` is None (a branch of the compiled
    specialization, not of the loop)."""
    if b is None:
        return np.float64(a[j])
    return np.float64(a[j]) * np.float64(b[j])


@jit(inline=True)
def lanes8(s0: float, s1: float, s2: float, s3: float, s4: float, s5: float, s6: float, s7: float) -> float:
    """The eight lanes of a block sum added pairwise. Lane k holds entries k, k + 8, k + 16, ... of the block
    (the tail of a short block goes to lane 0), so the order of every addition is written here, and the
    compiler may not change it: these sums are compiled without ``reassoc``, which would let it pick an
    order per compilation, and a row computed by the serial driver and by the parallel one (compiled
    apart, or one loaded from numba's cache) could then differ in the last bits."""
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@jit(fastmath=FLAGS)
def backward_row(y: Any, dy: Any, dx: Any, op: int, i: int) -> None:
    """Row ``i`` of dx: softmax ``y * (dy - sum(dy * y))``, log_softmax ``dy - exp(y) * sum(dy)``."""
    yi, dyi, dxi = y[i], dy[i], dx[i]
    if op == SOFTMAX:
        s = sum64(dyi, yi)
        for j in range(yi.shape[0]):
            dxi[j] = np.float64(yi[j]) * (np.float64(dyi[j]) - s)
    else:
        s = sum64(dyi, None)
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
