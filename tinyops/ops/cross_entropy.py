"""Cross-entropy of logits against targets: the seed's naive chain, the row kernel, and the fused op.

Shapes: N = rows (examples), C = classes, M = rows of the row kernel (N * d1 * ... for (N, C, d1, ...)
logits). ``logits`` (N, C), ``target`` (N,) integers in [0, C). Per row
``loss_n = -log softmax(logits_n)[target_n]``; ``reduction`` is 'mean' (default), 'sum' or 'none'.

Three parts, read in order:

1. **the naive chain** (the seed's loss, one primitive at a time, no max shift: it overflows);
2. **the row kernel** (:func:`ce_rows_forward` / :func:`ce_rows_backward`): per-row loss and gradient of
   (M, C) logits against class indices, ``loss = logsumexp(x) - x[t]`` and
   ``dx = g * (softmax(x) - onehot(t))``, in NumPy here and compiled in :mod:`tinyops.kernels.cross_entropy`;
   it checks nothing (the public op and the trainer call it with checked inputs);
3. **the fused op** (:func:`cross_entropy_forward` / :func:`cross_entropy_backward`), torch's
   ``F.cross_entropy``: it validates, moves the class axis last, and takes one of two paths. Class-index
   targets go through the row kernel, every option folded into a per-row upstream gradient ``g``; label
   smoothing and probability targets take the dense path, a target distribution per row. Each path has
   its cache type. :func:`reduce_losses` is the 'mean' / 'sum' / 'none' of both.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import (
    Array,
    Backend,
    Precision,
    Reduction,
    as_float_array,
    as_index_array,
    as_plain_array,
    check_backend,
    check_cache,
    check_dout,
    check_precision,
    check_reduction,
    check_same_dtype,
    check_threads,
)
from . import _dd
from . import primitives as P
from .softmax import (
    DD_ERR,
    EXP_ERR,
    LOG1P_ERR,
    TINY_R,
    ShiftedRows,
    U,
    dd_rows,
    dd_sum_err,
    decided_dd32,
    lse_rows,
    round_dd32,
    row_errors,
    shifted_rows,
    softmax_rows,
    undecided32,
)

if TYPE_CHECKING:
    from types import ModuleType

    from ..kernels.cross_entropy import RowsState as CompiledRowsState


@functools.cache
def _compiled() -> ModuleType:
    """:mod:`tinyops.kernels.cross_entropy`, imported on first use: importing tinyops does not import numba."""
    from ..kernels import cross_entropy

    return cross_entropy


def _check_logits_target(
    logits: npt.ArrayLike, target: npt.ArrayLike, reduction: Reduction
) -> tuple[Array, npt.NDArray[np.integer[Any]]]:
    logits = as_float_array("logits", logits, ndim=2)
    N, C = logits.shape
    check_reduction(reduction)
    target = as_index_array("target", target, C, size_name="number of classes C")
    if target.ndim != 1:
        raise ValueError(f"target must be 1-D (N,), got shape {target.shape}")
    if target.shape[0] != N:
        raise ValueError(f"target has {target.shape[0]} rows but logits has {N} (shape {logits.shape})")
    return logits, target


def _loss_shape(N: int, reduction: Reduction) -> tuple[int, ...]:
    return (N,) if reduction == "none" else ()


# ============================================================================ the naive chain


class CrossEntropyNaiveCache(NamedTuple):
    """One cache per step of the chain, unwound in reverse by the backward."""

    counts: P.ExpCache
    counts_sum: P.SumRowsCache
    probs: P.DivRowsCache
    probs_target: P.PickCache
    logprobs_target: P.LogCache
    loss: P.NegReduceCache


def cross_entropy_naive_forward(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduction = "mean"
) -> tuple[Array, CrossEntropyNaiveCache]:
    """The seed's loss, one primitive at a time, with no max shift:

    ``counts = exp(logits)``, ``probs = counts / counts.sum(1, keepdims=True)``,
    ``loss = -log(probs[range(N), target]).mean()``.

    Equal to :func:`cross_entropy_forward` wherever it is finite (to rounding, as long as the target's
    count and probability are normal numbers, not subnormal), and it overflows as the seed shows:
    once a logit passes the exp threshold (88.72 in float32, 709.78 in float64) its count is ``inf``,
    its probability ``inf / inf = nan`` and every other probability in the row ``0`` (so a loss of
    ``inf`` or ``nan``). NumPy's RuntimeWarnings are left on. Index targets and the three reductions
    only; class weights, ignored rows and label smoothing belong to the fused op.

    Args:
        logits: (N, C) float array.
        target: (N,) integer array with values in [0, C).
        reduction: 'mean' | 'sum' | 'none'.

    Returns:
        ``(loss, cache)``: loss is 0-D (mean, sum) or (N,) (none), logits' dtype; the cache nests the
        cache of every step.

    Raises:
        TypeError: logits not floating; target not integer (floats and bools are rejected).
        ValueError: logits not 2-D, target not 1-D, row counts differ, unknown reduction.
        IndexError: a target is negative or >= C.
    """
    logits, target = _check_logits_target(logits, target, reduction)
    counts, c_counts = P.exp_forward(logits)  # (N, C)
    counts_sum, c_counts_sum = P.sum_rows_forward(counts)  # (N, 1)
    probs, c_probs = P.div_rows_forward(counts, counts_sum)  # (N, C)
    probs_target, c_probs_target = P.pick_forward(probs, target)  # (N,)
    logprobs_target, c_logprobs_target = P.log_forward(probs_target)  # (N,)
    loss, c_loss = P.neg_reduce_forward(logprobs_target, reduction)  # () or (N,)
    cache = CrossEntropyNaiveCache(c_counts, c_counts_sum, c_probs, c_probs_target, c_logprobs_target, c_loss)
    return loss, cache


def cross_entropy_naive_backward(dloss: npt.ArrayLike, cache: CrossEntropyNaiveCache) -> Array:
    """Walk the naive chain backward, one named gradient per intermediate.

    Args:
        dloss: upstream gradient, the loss's shape: 0-D (a Python float is fine) or (N,) for 'none'.
        cache: from :func:`cross_entropy_naive_forward`.

    Returns:
        dlogits: (N, C).

    Derivation (each line is the backward of one primitive, see :mod:`tinyops.ops.primitives`):
        ``dlogprobs_target = -dloss / N`` (mean), ``dprobs_target = dlogprobs_target / probs_target``,
        ``dprobs`` is zero but ``dprobs[n, target[n]] = dprobs_target[n]``,
        ``dcounts = dprobs / counts_sum`` and ``dcounts_sum = -(dprobs * probs / counts_sum).sum(1)``,
        then ``dcounts += dcounts_sum`` (broadcast: counts reaches the loss through both
        ``probs`` and ``counts_sum``), and ``dlogits = counts * dcounts``. Simplified, this is the
        fused op's ``(softmax - onehot) / N`` -- computed the long way, with its rounding.
    """
    check_cache(cache, CrossEntropyNaiveCache, "cross_entropy_naive_forward")
    c = cache
    N = c.loss.shape[0]
    dloss = check_dout(dloss, _loss_shape(N, c.loss.reduction), c.loss.dtype, name="dloss")
    dlogprobs_target = P.neg_reduce_backward(dloss, c.loss)  # (N,)
    dprobs_target = P.log_backward(dlogprobs_target, c.logprobs_target)  # (N,)
    dprobs = P.pick_backward(dprobs_target, c.probs_target)  # (N, C)
    dcounts, dcounts_sum = P.div_rows_backward(dprobs, c.probs)  # (N, C), (N, 1)
    dcounts += P.sum_rows_backward(dcounts_sum, c.counts_sum)  # (N, C): the second path into counts
    dlogits = P.exp_backward(dcounts, c.counts)  # (N, C)
    return dlogits


def cross_entropy_naive(logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduction = "mean") -> Array:
    """The seed's overflowing loss; see :func:`cross_entropy_naive_forward`."""
    return cross_entropy_naive_forward(logits, target, reduction=reduction)[0]


# ============================================================================ the row kernel


class RowsCache(NamedTuple):
    """The reference row kernel's cache: the softmax of every row and the gradient's target entries.

    'accurate' keeps the softmax unrounded (float64) with what deciding the rounding of ``g * softmax``
    needs: the rows, their max and ``r``; and each loss before its rounding with a bound on its error
    (for a correctly rounded mean)."""

    probs: Array  # (M, C) softmax(x): float64 (accurate) or x's dtype (fast)
    target: npt.NDArray[np.intp]  # (M,)
    dtarget: Array  # (M,) softmax_t - 1 = expm1(-loss): float64 (accurate) or x's dtype (fast)
    x: Array | None = None  # (M, C) the logits (accurate)
    m: Array | None = None  # (M,) float64 row max (accurate)
    r: Array | None = None  # (M,) float64 sum_{j != a} exp(x_j - m) (accurate)
    loss64: Array | None = None  # (M,) float64 loss before its rounding (accurate)
    loss_err: Array | None = None  # (M,) float64 bound on |loss64 - exact loss| (inf where there is none)
    fell: Array | None = None  # (M,) int8: 0 decided in float64, 1 redone in double-double, 2 open after it


def ce_rows_forward(
    x: Array,
    t: npt.NDArray[np.intp],
    *,
    precision: Precision = "accurate",
    backend: Backend = "compiled",
    threads: int | None = None,
) -> tuple[Array, Array, RowsCache | CompiledRowsState]:
    """Per-row cross-entropy of (M, C) logits against (M,) class indices; checks nothing.

    The entry point for callers whose inputs are already checked (:func:`cross_entropy_forward`,
    :func:`~tinyops.ops.linear_cross_entropy.linear_cross_entropy_forward`, :class:`tinyops.mlp.Trainer`).

    Args:
        x: (M, C) float32/float64, C-contiguous.
        t: (M,) intp, values in [0, C).
        precision: 'accurate' or 'fast' (below).
        backend: 'compiled' (:mod:`tinyops.kernels.cross_entropy`) or 'reference' (this NumPy).
        threads: rows in parallel on this many threads (compiled backend; None: one). Bit-identical results.

    Returns:
        ``(loss (M,), lse (M,), state)``: loss and lse in x's dtype; state for :func:`ce_rows_backward`.
        The compiled state keeps a reference to ``x`` (the backward reads it again); the reference state
        keeps the (M, C) softmax.

    'accurate' (float64 inside): with ``m`` the row max and ``r = sum_{j != argmax} exp(x_j - m)`` (the
    largest term kept out of the sum, :func:`~tinyops.ops.softmax.shifted_rows`),

        loss = (m - x[t]) + log1p(r)       two terms >= 0: nothing cancels, even for a confident row
        lse  = m + log1p(r)
        softmax_t - 1 = expm1(-loss)       the gradient's target entry: ``p - 1`` cancels when p is near 1

    float32: the loss, lse and (in the backward) the gradient correctly rounded: a float32 result the float64
    value and its error bound do not decide is computed again in double-double
    (:func:`~tinyops.ops.softmax.dd_rows`; the compiled kernels first sum ``r`` again exactly).

    'fast' (x's dtype inside): the classic ``lse = m + log(sum(exp(x - m)))``, ``loss = lse - x[t]``:
    torch's formula, with its absolute error where ``lse - x[t]`` cancels.

    Rows whose max is not finite (a ``+inf``, all ``-inf``, all nan) have a nan loss and gradient and
    ``lse`` equal to the max (nan if the row holds a nan); a nan elsewhere makes the row nan; ``-inf``
    entries have probability 0 (a ``-inf`` target gives ``loss = +inf``). As torch.
    """
    if backend == "compiled":
        threads = 1 if threads is None else threads  # checked by the caller (check_threads)
        return _compiled().ce_rows_forward(x, t, precision=precision, threads=threads)  # type: ignore[no-any-return]
    if x.shape[0] == 0:  # no rows (maybe no classes either): nothing to reduce
        return np.empty(0, x.dtype), np.empty(0, x.dtype), RowsCache(x.copy(), t, np.empty(0, x.dtype))
    rows = np.arange(x.shape[0])
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # rows with a non-finite max: below
        if precision == "accurate":
            s = shifted_rows(x)  # float64: m, r, log1p(r); exp(x - m) in s.e
            probs = s.e / (1.0 + s.r)[:, None]  # (M, C) float64 softmax, rounded in the backward
            loss, loss_lo, loss_err, lse, fell = _accurate_losses(s, t)  # (M,) float64 x3, x's dtype, int8
            m, bad = s.m, s.bad
        else:
            m = x.max(axis=1)  # (M,)
            bad = None if np.isfinite(m).all() else ~np.isfinite(m)
            shift = m if bad is None else np.where(bad, 0, m)  # a non-finite max is not subtracted
            counts = np.exp(x - shift[:, None])  # (M, C)
            counts_sum = counts.sum(axis=1)  # (M,)
            lse = np.log(counts_sum) + shift  # (M,)
            loss = lse - x[rows, t]  # (M,)
            probs = counts / counts_sum[:, None]  # (M, C)
        dtarget = np.expm1(-loss)  # (M,) softmax_t - 1 = exp(-loss) - 1
    if bad is not None:  # a +inf, all -inf, or a nan max: as torch
        loss[bad], lse[bad], dtarget[bad], probs[bad] = np.nan, m[bad], np.nan, np.nan
    if precision != "accurate":
        return loss.astype(x.dtype), lse.astype(x.dtype), RowsCache(probs, t, dtarget)
    out = round_dd32(loss, loss_lo) if x.dtype == np.float32 else loss.astype(x.dtype)  # (M,) one rounding
    return out, lse, RowsCache(probs, t, dtarget, x, s.m, s.r, loss, loss_err, fell)


def _accurate_losses(s: ShiftedRows, t: npt.NDArray[np.intp]) -> tuple[Array, Array, Array, Array, Array]:
    """``(loss (M,) float64, loss_lo (M,), loss_err (M,), lse (M,) in x's dtype, fell (M,) int8)`` of the
    accurate forward.

    ``loss = (m - x_t) + log1p(r)``; float32 rows whose loss the float64 value does not decide (and float64
    rows with ``r < 2^-960``) are redone in double-double: there ``loss + loss_lo`` is the double-double
    (loss_lo is 0 elsewhere) and ``loss_err`` covers the low part. ``fell`` as
    :func:`~tinyops.ops.softmax.lse_rows`, for both the loss and lse."""
    assert s.x is not None
    x = s.x
    M = x.shape[0]
    xt = x[np.arange(M), t].astype(np.float64)  # (M,)
    loss = (s.m - xt) + s.log1p_r  # (M,) two terms >= 0, the first exact for float32 rows
    if x.dtype == np.float64:  # plus the rounding error of m - x_t (none from an infinite x_t)
        lo = _dd.two_sum(s.m, -xt)[1]
        loss = (s.m - xt) + (s.log1p_r + np.where(np.isfinite(lo), lo, 0.0))
    lse, fell = lse_rows(s)  # (M,) x's dtype
    good = np.isfinite(s.m)
    l_err = row_errors(x.shape[1])[1]
    loss_err = l_err * s.log1p_r + U * np.abs(loss)  # (M,)
    if x.dtype == np.float32:
        redo = good & undecided32(loss, loss_err + U * np.abs(loss))
    else:
        redo = good & (s.r > 0) & (s.r < TINY_R)
        loss_err[:] = np.inf
    loss_lo = np.zeros_like(loss)
    if redo.any():
        k = np.flatnonzero(redo)
        dd = dd_rows(x[k], s.m[k], s.r[k])
        dh, dl = dd.d[0][np.arange(k.size), t[k]], dd.d[1][np.arange(k.size), t[k]]  # x_t - m
        vh, vl = _dd.dd_add(-dh, -dl, *dd.log1p_r)
        vh = np.where(np.isneginf(dh), np.inf, vh)  # a -inf target: loss +inf
        vl = np.where(np.isneginf(dh), 0.0, vl)
        err = dd_sum_err(dh, dd.log1p_r[0])
        loss[k], loss_lo[k], loss_err[k] = vh, vl, np.abs(vl) + err
        if x.dtype == np.float32:
            fell[k] = np.maximum(fell[k], 1 + ~decided_dd32(vh, vl, err))
        else:
            fell[k] = np.maximum(fell[k], 1)
    return loss, loss_lo, loss_err, lse, fell


def ce_rows_backward(g: Array, state: RowsCache | CompiledRowsState, *, out: Array | None = None) -> Array:
    """``dx = g[:, None] * (softmax(x) - onehot(t))``, (M, C), from :func:`ce_rows_forward`'s state; checks nothing.

    Args:
        g: (M,) per-row upstream gradient in x's dtype (0 for ignored rows), or (1,): one for every row.
        state: from :func:`ce_rows_forward`.
        out: None (a new array) or an (M, C) array of x's dtype to write dx into (a buffer reused from
            call to call). With a compiled state it may be the logits themselves (each element is read
            before it is written), but no other view of them.

    Returns:
        dx: (M, C), x's dtype; ``out`` if given.

    Derivation:
        ``loss = logsumexp(x) - x[t]``; the gradient of logsumexp is softmax and that of ``x[t]`` is
        ``onehot(t)``, so ``d loss / dx = softmax - onehot`` and ``dx = g * (softmax - onehot)``:
        ``g * softmax`` everywhere, then ``g * (softmax_t - 1)`` at the target, with ``softmax_t - 1``
        taken from the forward (``expm1(-loss)``, no cancellation when ``softmax_t`` is near 1).
    """
    if not isinstance(state, RowsCache):
        return _compiled().ce_rows_backward(g, state, out)  # type: ignore[no-any-return]
    if len(state.target) == 0:
        return state.probs.astype(g.dtype) if out is None else out
    if state.x is not None:  # accurate
        return ce_rows_backward_decided(g, state, out)[0]
    probs, t, dtarget = state[:3]
    dx = np.multiply(probs, g[:, None], out=out)  # (M, C) g * softmax
    dx[np.arange(len(t)), t] = g * dtarget  # g * (softmax_t - 1): one entry per row, assignment is a scatter
    return dx


def ce_rows_backward_decided(g: Array, state: RowsCache, out: Array | None = None) -> tuple[Array, Array]:
    """The accurate reference backward: ``(dx, fell (M,) int8)``.

    ``g * softmax`` and ``g * expm1(-loss)`` are formed in float64 from the unrounded softmax; float32 rows
    whose roundings these do not decide are redone in double-double (``g * (softmax_t - 1)`` there is
    ``-g (1 + r - e_t) / (1 + r)``, with ``1 + r - e_t = r`` when x_t is a max: no cancellation)."""
    assert state.x is not None and state.m is not None and state.r is not None
    probs, t, dtarget, x = state.probs, state.target, state.dtarget, state.x
    M = len(t)
    rows = np.arange(M)
    g64 = g.astype(np.float64)[:, None]  # (M, 1) or (1, 1)
    v = probs * g64  # (M, C) float64
    v[rows, t] = (g64[:, 0] * dtarget) if g64.shape[0] == M else g64[0, 0] * dtarget
    dx = v.astype(g.dtype) if out is None else out
    if out is not None:
        out[...] = v
    fell = np.zeros(M, np.int8)
    if x.dtype != np.float32:
        return dx, fell
    r_err, l_err = row_errors(x.shape[1])
    with np.errstate(invalid="ignore"):
        rel = EXP_ERR + r_err * (state.r / (1.0 + state.r)) + 5 * U  # (M,)
        err = rel[:, None] * np.abs(v)  # (M, C)
        err[rows, t] = (l_err + LOG1P_ERR + 4 * U) * np.abs(v[rows, t])
    redo = undecided32(v, err).any(axis=1) & np.isfinite(state.m)
    if redo.any():
        k = np.flatnonzero(redo)
        dd = dd_rows(x[k], state.m[k], state.r[k])
        eh, el = dd.e
        tk = t[k]
        kr = np.arange(k.size)
        at_max = dd.d[0][kr, tk] == 0.0
        rest = _dd.dd_add(eh[kr, tk], el[kr, tk], -dd.den[0], -dd.den[1])  # -(1 + r - e_t)
        eh[kr, tk] = np.where(at_max, -dd.r[0], rest[0])
        el[kr, tk] = np.where(at_max, -dd.r[1], rest[1])
        ph, pl = _dd.dd_div(eh, el, dd.den[0][:, None], dd.den[1][:, None])  # (k, C)
        gk = g64[k] if g64.shape[0] == M else np.broadcast_to(g64, (k.size, 1))
        ph, pl = _dd.dd_mul(ph, pl, gk, 0.0)
        dx[k] = round_dd32(ph, pl)
        fell[k] = 1 + (~decided_dd32(ph, pl, DD_ERR * np.abs(ph))).any(axis=1)
    return dx, fell


# ============================================================================ the fused op


class Losses64(NamedTuple):
    """The row kernel's float32 losses before their rounding, for a correctly rounded mean and sum."""

    value: Array  # (M,) float64: the loss of each row (times its weight)
    err: Array  # (M,) float64: a bound on |value - exact|
    x: Array  # (M, C) the logits, to redo the rows in double-double
    t: npt.NDArray[np.intp]  # (M,)
    weight: Array | None  # (M,) the row weights, or None


def ce_rows_losses64(state: RowsCache | CompiledRowsState, row_weight: Array | None = None) -> Losses64 | None:
    """:class:`Losses64` of an accurate float32 row-kernel state (either layer), else None."""
    if isinstance(state, RowsCache):
        if state.loss64 is None or state.loss_err is None or state.x is None:
            return None
        value, err, x = state.loss64, state.loss_err, state.x
    else:
        if not state.accurate:
            return None
        ce = _compiled()
        value, err, x = state.stats[ce.LOSS64], state.stats[ce.LOSS_ERR], state.x
    if x.dtype != np.float32 or not np.isfinite(value).all():
        return None
    if row_weight is not None:
        w = row_weight.astype(np.float64)
        value = value * w  # one rounding more
        err = err * np.abs(w) + U * np.abs(value)
    return Losses64(value, err, x, state.target, row_weight)


def _losses64_of(state: Any, dtype: np.dtype[Any]) -> Losses64 | None:
    """:class:`Losses64` of a :class:`LossRowsState` whose losses are the row kernel's float32 ones (times the
    row weights); None with a z-loss, a softcap or the dense path (their mean is not decided)."""
    if dtype != np.float32 or state.kernel is None or state.z_loss or state.cap_slope is not None:
        return None
    return ce_rows_losses64(state.kernel, state.row_weight)


def _decided_total(total: float, err: float, reduction: Reduction, n: float) -> Any:
    """The float32 sum (or mean over n) if a float64 sum within ``err`` of the exact one decides it, else None."""
    v, e = (total, err) if reduction == "sum" else (total / n, err / n + 2 * U * abs(total / n))
    return None if undecided32(np.asarray(v), np.asarray(e)) else np.float32(v)


def _reduce_decided(exact: Losses64, reduction: Reduction, n: float) -> Any:
    """The correctly rounded float32 sum or mean (over n) of the exact per-row losses.

    Three tries, each decided as the rows are (:func:`~tinyops.ops.softmax.undecided32`):

    1. NumPy's sum of the float64 losses: in any order, a sum of M terms is within ``(M - 1) u sum|v|``
       of the exact sum of the terms (Higham, *Accuracy and Stability of Numerical Algorithms*, 4.2), to
       which the losses' own error bounds add;
    2. ``math.fsum``: the sum of the terms correctly rounded (within u of it), the same bounds added;
    3. every row redone in double-double and the ``hi`` and ``lo`` parts summed by ``math.fsum``."""
    M = exact.value.size
    if M * U < 2.0**-30:  # the bound below, to first order in u, then a margin for its higher orders
        total = float(exact.value.sum())
        err = (float(exact.err.sum()) + (M + 1) * U * float(np.abs(exact.value).sum())) * (1 + 2.0**-28)
        if (decided := _decided_total(total, err, reduction, n)) is not None:
            return decided
    total = math.fsum(exact.value.tolist())
    err = math.fsum(exact.err.tolist()) * (1 + 2.0**-40) + 2 * U * abs(total)
    if (decided := _decided_total(total, err, reduction, n)) is not None:
        return decided
    x, t = exact.x, exact.t
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        s = shifted_rows(x)
        dd = dd_rows(x, s.m, s.r)
    rows = np.arange(x.shape[0])
    vh, vl = _dd.dd_add(-dd.d[0][rows, t], -dd.d[1][rows, t], *dd.log1p_r)  # (M,) (m - x_t) + log1p(r)
    parts = [vh, vl]
    if exact.weight is not None:
        w = exact.weight.astype(np.float64)
        ph, pl = _dd.two_prod(vh, w)
        parts = [ph, pl + vl * w]
    terms = np.concatenate(parts).tolist()
    total = math.fsum(terms)
    rest = math.fsum([*terms, -total])  # the part of the sum below total's last bit
    if reduction == "mean":
        qh, ql = _dd.dd_div(np.array([total]), np.array([rest]), np.array([n]), np.array([0.0]))
        total, rest = float(qh[0]), float(ql[0])
    return round_dd32(np.array([total]), np.array([rest]))[0]


def reduce_losses(
    losses: Array, reduction: Reduction, *, denom: float | None = None, exact: Losses64 | None = None
) -> Array:
    """``losses.sum() / denom`` (mean; ``denom`` defaults to the number of losses), ``losses.sum()`` or
    ``losses``, as a 0-D array (like torch's 0-D tensor) of the losses' dtype.

    float16 and float32 losses are summed in float64, which cannot overflow and keeps the result within
    an ulp; float64 losses by pairwise summation, and a mean whose sum overflows although every loss is
    finite is redone as ``sum(losses / denom)``. A mean over a divisor of 0 (no rows, or no row counted)
    is nan, as torch's ``0 / 0``. ``exact`` (float32 losses of the accurate row kernel,
    :func:`ce_rows_losses64`): the result is the correctly rounded mean or sum of the exact per-row losses.
    """
    if reduction == "none":
        return losses
    n_exact = float(losses.size) if denom is None else denom
    if exact is not None and losses.dtype == np.float32 and n_exact != 0:
        return np.asarray(_reduce_decided(exact, reduction, n_exact), dtype=np.float32)
    if losses.dtype.itemsize < 8:
        total = float(losses.sum(dtype=np.float64))
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            total = float(losses.sum())
    if reduction == "sum":
        return np.asarray(total, dtype=losses.dtype)
    n = float(losses.size) if denom is None else denom
    if n == 0:
        return np.asarray(np.nan, dtype=losses.dtype)
    mean = total / n
    if math.isinf(mean) and np.isfinite(losses).all():  # the float64 sum overflowed, the mean does not
        mean = float((losses / n).sum())
    return np.asarray(mean, dtype=losses.dtype)


class LossOptions(NamedTuple):
    """The per-row options of the fused loss, checked (:func:`_check_options`); shared with the fused
    linear + cross-entropy, which calls :func:`loss_rows_forward` chunk by chunk."""

    label_smoothing: float = 0.0
    z_loss: float = 0.0  # adds z_loss * lse**2 to each counted row's loss
    softcap: float | None = None  # logits -> softcap * tanh(logits / softcap) first
    precision: Precision = "accurate"
    backend: Backend = "compiled"
    threads: int = 1


class RowTargets(NamedTuple):
    """The targets of M rows: class indices (``t``, with ``ignored``) or probabilities (``q``)."""

    t: npt.NDArray[np.intp] | None  # (M,) class indices, 0 on ignored rows; None for probability targets
    q: Array | None  # (M, C) probabilities in the rows' dtype; None for class indices
    ignored: npt.NDArray[np.bool_] | None  # (M,) rows whose target is ignore_index, or None when none is

    def rows(self, r0: int, r1: int) -> RowTargets:
        """The targets of rows ``r0:r1``."""
        return RowTargets(
            None if self.t is None else self.t[r0:r1],
            None if self.q is None else self.q[r0:r1],
            None if self.ignored is None else self.ignored[r0:r1],
        )


def mean_denominator(targets: RowTargets, weight: Array | None) -> float:
    """The divisor of the mean, over all rows at once (never per chunk): ``sum_n w[t_n]`` over the rows not
    ignored (their count without weights) for class indices; the number of rows for probabilities (torch)."""
    if targets.t is None:
        assert targets.q is not None
        return float(targets.q.shape[0])
    M = targets.t.shape[0]
    if weight is None:
        return float(M if targets.ignored is None else M - int(np.count_nonzero(targets.ignored)))
    row_weight = weight[targets.t] if targets.ignored is None else np.where(targets.ignored, 0, weight[targets.t])
    return float(np.sum(row_weight, dtype=np.float64))


class LossRowsState(NamedTuple):
    """What :func:`loss_rows_backward` needs from one call of :func:`loss_rows_forward` on M rows."""

    kernel: RowsCache | CompiledRowsState | None  # the row kernel's (index targets, no smoothing), else None
    probs: Array | None  # (M, C) softmax of the (capped) logits: the dense path's
    coef: Array | None  # (M, C) target distribution times class weights, 0 on ignored rows: the dense path's
    t: npt.NDArray[np.intp] | None  # (M,) class indices (kernel path)
    row_weight: Array | None  # (M,) w[t] * (not ignored) (kernel path), or None when every row weighs 1
    kept: npt.NDArray[np.bool_] | None  # (M,) rows not ignored, or None when all are
    lse: Array  # (M,) float64: logsumexp of each row of the (capped) logits
    z_loss: float
    cap_slope: Array | None  # (M, C) d capped / d logits = 1 - tanh(logits / c)**2; None without softcap


def loss_rows_forward(
    x: Array, targets: RowTargets, weight: Array | None, opts: LossOptions, *, overwrite: bool = False
) -> tuple[Array, LossRowsState]:
    """Per-row losses of (M, C) logits (float32/float64, C-contiguous, classes last) with every option;
    checks nothing. The one formula of the fused loss, for :func:`cross_entropy_forward` and for each
    chunk of :func:`~tinyops.ops.linear_cross_entropy.linear_cross_entropy_forward`.

    With ``z = softcap * tanh(x / softcap)`` (or ``z = x``), ``lse = logsumexp(z)`` and the target
    distribution ``a`` (one-hot, smoothed, or probabilities, times the class weights):

        loss_n = sum_c a[n, c] * (lse_n - z[n, c]) + z_loss * lse_n**2      (0 on ignored rows)

    Class-index targets without smoothing go through the row kernel (:func:`ce_rows_forward`, on the layer
    ``opts.backend`` names); the rest through a dense target distribution, in float64 pieces
    (:func:`~tinyops.ops.softmax.shifted_rows`). ``overwrite``: x may be written over (the capped logits).

    Returns ``(losses (M,) in x's dtype, state)``; ``state.lse`` holds the rows' logsumexp.
    """
    M, C = x.shape
    cap_slope = None
    if opts.softcap is not None:
        c = opts.softcap
        tanh = np.tanh(x.astype(np.float64) / c) if x.dtype != np.float64 else np.tanh(x / c)  # (M, C) float64
        capped = np.multiply(c, tanh, out=x if overwrite else None, casting="same_kind")  # (M, C) z = c tanh(x / c)
        cap_slope = (1.0 - tanh * tanh).astype(x.dtype, copy=False)  # (M, C) dz/dx = 1 - tanh^2
        x = capped
    t, ignored = targets.t, targets.ignored
    kept = None if ignored is None else ~ignored
    z = opts.z_loss
    if t is not None and opts.label_smoothing == 0:  # one-hot targets: the row kernel
        losses, lse_x, kernel = ce_rows_forward(x, t, precision=opts.precision, backend=opts.backend,
                                                threads=opts.threads)  # (M,), (M,)
        lse = lse_x.astype(np.float64)  # (M,)
        row_weight = None if kept is None else kept.astype(x.dtype)  # (M,)
        if weight is not None:
            row_weight = weight[t] if row_weight is None else weight[t] * row_weight  # (M,)
        if row_weight is not None:
            with np.errstate(invalid="ignore"):
                losses = losses * row_weight  # 0 * inf = nan, as torch's weight 0 on a -inf target
        if z:
            with np.errstate(invalid="ignore", over="ignore"):
                losses = (losses + z * lse * lse).astype(x.dtype)  # (M,) the z-loss, in float64 then rounded
        if ignored is not None:
            losses[ignored] = 0  # ignored rows: loss 0 whatever their logits
        return losses, LossRowsState(kernel, None, None, t, row_weight, kept, lse, z, cap_slope)

    # a dense target distribution a (M, C): label smoothing, probability targets
    eps = opts.label_smoothing
    if t is None:
        assert targets.q is not None
        coef = targets.q if eps == 0 else targets.q * (1 - eps) + eps / C  # (M, C)
        if weight is not None:
            coef = coef * weight  # (M, C)
    else:
        coef = np.full(x.shape, eps / C, dtype=x.dtype) if weight is None else np.tile(weight * (eps / C), (M, 1))
        coef[np.arange(M), t] += (1 - eps) * (1 if weight is None else weight[t])  # (M, C)
        if ignored is not None:
            coef[ignored] = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # rows with a non-finite max: nan
        s = shifted_rows(x)  # float64 pieces of each row's logsumexp
        lse = s.m + s.log1p_r  # (M,)
        if s.bad is not None:
            lse[s.bad] = s.m[s.bad]  # +inf, -inf or nan: as torch
        probs = softmax_rows(s, out=np.empty(x.shape, x.dtype))  # (M, C), nan on those rows
        logp = x - lse.astype(x.dtype)[:, None]  # (M, C) log_softmax
        losses = -np.sum(coef * logp, axis=1)  # (M,); 0 * -inf = nan, as torch
        if z:
            losses = (losses + z * lse * lse).astype(x.dtype)  # (M,) the z-loss
    if t is not None and eps == 1:
        # torch adds the target term as (1 - eps) * -log p_t: with eps = 1 that is 0 * inf = nan where the
        # target's logit is -inf (the smoothing term alone would give +inf); the gradient is the sum's
        losses[np.isneginf(x[np.arange(M), t])] = np.nan
    if ignored is not None:
        losses[ignored] = 0
    return losses, LossRowsState(None, probs, coef, None, None, kept, lse, z, cap_slope)


def loss_rows_backward(g: Array, state: LossRowsState, *, out: Array | None = None) -> Array:
    """``dx`` (M, C) for the per-row upstream gradients ``g`` (M,) of :func:`loss_rows_forward`'s losses;
    checks nothing. ``out``: as :func:`ce_rows_backward` (the compiled path may write over the logits).

    Derivation (docs/derivations.md has it in full): with ``p = softmax(z)``,
    ``d loss_n / d z = (sum_c a[n, c]) p - a[n] + 2 z_loss lse_n p`` (the gradient of logsumexp is
    softmax); one-hot targets of weight ``rho_n``: ``rho_n (p - onehot) + 2 z_loss lse_n p``, which is
    ``(rho_n g + gz_n) (p - onehot)`` plus ``gz_n`` at the target with ``gz_n = 2 z_loss lse_n g_n``: the
    row kernel's form and one entry a row. Then the softcap's chain rule, ``dx = dz * (1 - tanh^2)``.
    """
    kept, z = state.kept, state.z_loss
    if state.kernel is not None:
        gk = g if state.row_weight is None else g * state.row_weight  # (M,) or (1,)
        gz = None
        if z:
            gz = (np.broadcast_to(g, state.lse.shape) * (2 * z * state.lse)).astype(gk.dtype)  # (M,)
            if kept is not None:
                gz[~kept] = 0
            gk = gk + gz  # (M,)
        if kept is not None:
            gk = np.where(kept, gk, 0).astype(gk.dtype)  # ignored rows: a zero gradient whatever the rest
        dx = ce_rows_backward(gk, state.kernel, out=out)  # (M, C) (rho g + gz) (p - onehot)
        if gz is not None:
            assert state.t is not None
            dx[np.arange(len(state.t)), state.t] += gz  # + gz at the target: one entry per row
    else:
        assert state.probs is not None and state.coef is not None
        probs, coef = state.probs, state.coef
        gd = np.broadcast_to(g, state.lse.shape)  # (M,)
        if kept is not None:
            gd = np.where(kept, gd, 0).astype(g.dtype)
        dx = gd[:, None] * (probs * coef.sum(axis=1, keepdims=True) - coef)  # (M, C)
        if z:
            dx += (gd * (2 * z * state.lse)).astype(dx.dtype)[:, None] * probs  # (M, C) the z-loss: 2 z lse p
        if out is not None:
            out[...] = dx
            dx = out
    if state.cap_slope is not None:
        dx *= state.cap_slope  # dz/dx = 1 - tanh(x / c)^2
    return dx


class CrossEntropyCache(NamedTuple):
    """The fused op's cache. Rows are the M = N * d1 * ... positions, classes last."""

    rows: LossRowsState  # from loss_rows_forward
    denom: float  # the divisor of the mean
    reduction: Reduction
    logits_shape: tuple[int, ...]  # (C,), (N, C) or (N, C, d1, ...)
    dtype: np.dtype[Any]  # the logits' dtype


CrossEntropyDenseCache = CrossEntropyCache  # one cache for both target kinds (the name is kept for callers)


def _check_options(
    reduction: object,
    label_smoothing: object,
    ignore_index: object,
    precision: object,
    backend: object,
    threads: object,
    z_loss: object = 0.0,
    softcap: object = None,
    return_lse: object = False,
) -> LossOptions:
    check_reduction(reduction)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.floating, np.integer)):
        raise TypeError(f"label_smoothing must be a float in [0, 1], got {label_smoothing!r}")
    if not 0.0 <= label_smoothing <= 1.0:  # also rejects nan
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__} {ignore_index!r}")
    if isinstance(z_loss, bool) or not isinstance(z_loss, (int, float, np.floating, np.integer)):
        raise TypeError(f"z_loss must be a float >= 0, got {type(z_loss).__name__} {z_loss!r}")
    if not 0.0 <= z_loss < math.inf:  # also rejects nan
        raise ValueError(f"z_loss must be a finite float >= 0, got {z_loss!r}")
    if softcap is not None:
        if isinstance(softcap, bool) or not isinstance(softcap, (int, float, np.floating, np.integer)):
            raise TypeError(f"softcap must be None or a float > 0, got {type(softcap).__name__} {softcap!r}")
        if not 0.0 < softcap < math.inf:
            raise ValueError(f"softcap must be None or a finite float > 0, got {softcap!r}")
    if not isinstance(return_lse, (bool, np.bool_)):
        raise TypeError(f"return_lse must be a bool, got {type(return_lse).__name__} {return_lse!r}")
    check_precision(precision)  # checked here too: the dense path never reaches the row kernel
    check_backend(backend)
    nthreads = check_threads(threads)
    return LossOptions(
        float(label_smoothing), float(z_loss), None if softcap is None else float(softcap),
        precision, backend, nthreads,  # type: ignore[arg-type]  # checked above
    )


def _loss_shape_of(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The per-position loss shape: the logits' shape without the class axis (axis 1, or 0 when 1-D)."""
    return () if len(shape) == 1 else shape[:1] + shape[2:]


def _rows(a: Array, C: int) -> Array:
    """(C,) -> (1, C); (N, C) as it is; (N, C, d1, ...) -> (N * d1 * ..., C) with the class axis last."""
    if a.ndim == 1:
        return a[None, :]
    if a.ndim == 2 and a.flags.c_contiguous:
        return a
    M = math.prod(_loss_shape_of(a.shape))  # (not -1: C may be 0)
    if a.ndim > 2:
        a = np.moveaxis(a, 1, -1)
    return np.ascontiguousarray(a.reshape(M, C))


def _unrows(a: Array, shape: tuple[int, ...]) -> Array:
    """The inverse of :func:`_rows`: (M, C) back to the logits' layout, as a new C-contiguous array."""
    if len(shape) <= 2:
        return a.reshape(shape)
    N, C, *spatial = shape
    return np.ascontiguousarray(np.moveaxis(a.reshape(N, *spatial, C), -1, 1))


def _check_index_target(
    target: Array, logits_shape: tuple[int, ...], C: int, ignore_index: int, backend: Backend
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_] | None]:
    """Class indices of the loss's shape, in [0, C) or ``ignore_index``: ``(t (M,) intp, ignored (M,) or None)``.

    Ignored rows get the class 0 in ``t`` (any valid index: their gradient is zeroed)."""
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"target must have an integer (class indices) or floating (probabilities) dtype, got dtype {target.dtype}"
        )
    loss_shape = _loss_shape_of(logits_shape)
    if target.shape != loss_shape:
        raise ValueError(
            f"target must have shape {loss_shape} (the logits' {logits_shape} without the class axis), "
            f"got {target.shape}"
        )
    t = target.reshape(-1)  # (M,)
    ignored = None  # None: no row is ignored
    if t.size:
        lo, hi = _compiled().index_bounds(t) if backend == "compiled" else (int(t.min()), int(t.max()))
        if lo <= ignore_index <= hi:
            ignored = t == ignore_index  # (M,)
            kept = t[~ignored]
            lo, hi = (int(kept.min()), int(kept.max())) if kept.size else (0, 0)
        for v in (lo, hi):
            if not 0 <= v < C:
                raise IndexError(
                    f"target must be in [0, {C}) (C = {C}) or equal ignore_index ({ignore_index}), got {v}"
                )
    t = np.asarray(t if ignored is None else np.where(ignored, 0, t), dtype=np.intp)  # (M,)
    return t, ignored


def check_targets(
    target: Any,
    logits_shape: tuple[int, ...],
    dtype: np.dtype[Any],
    ignore_index: int,
    backend: Backend,
    *,
    name: str = "logits",
) -> RowTargets:
    """Check class-index or probability targets against logits of ``logits_shape`` (class axis 1, or 0 when
    1-D) and dtype ``dtype``; return them as rows (classes last)."""
    if isinstance(target, (bool, np.bool_)) or not isinstance(target, (np.ndarray, list, tuple, int, np.integer)):
        raise TypeError(f"target must be an integer or floating numpy array, got {type(target).__name__}")
    target = as_plain_array("target", target)  # a masked target is refused, a matrix or memmap viewed as an array
    C = logits_shape[0] if len(logits_shape) == 1 else logits_shape[1]
    if target.dtype.kind == "f":  # probability targets
        if ignore_index != -100:
            raise ValueError(f"ignore_index ({ignore_index}) is not supported with probability targets")
        if target.shape != logits_shape:
            raise ValueError(f"probability target must have the {name}' shape {logits_shape}, got {target.shape}")
        if target.dtype != dtype:
            raise TypeError(f"target has dtype {target.dtype} but {name} has dtype {dtype}; they must match")
        return RowTargets(None, _rows(target, C), None)
    t, ignored = _check_index_target(target, logits_shape, C, ignore_index, backend)  # (M,), (M,) or None
    return RowTargets(t, None, ignored)


def cross_entropy_forward(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    precision: Precision = "accurate",
    backend: Backend = "compiled",
    threads: int | None = None,
) -> tuple[Any, CrossEntropyCache]:
    """Fused cross-entropy with torch's signature and semantics (``F.cross_entropy``), plus the options of
    the fused-loss libraries (``z_loss``, ``softcap``, ``return_lse``).

    Per row (the class axis is 1, or 0 for an unbatched (C,) input), with ``lse = logsumexp(logits_n)``:

    - class-index targets: ``loss_n = w[t_n] * (lse - logits[n, t_n])``, computed by the row kernel
      (:func:`ce_rows_forward`) with no ``log`` of a probability, so no exp overflows; rows whose target
      equals ``ignore_index`` have loss 0 and gradient 0;
    - label smoothing ``eps``: ``(1 - eps) * w[t_n] * (lse - logits[n, t_n])
      + eps / C * sum_c w[c] * (lse - logits[n, c])`` (torch's formula: the smoothing term is weighted
      by the class weights too);
    - probability targets ``q`` (a float array of the logits' shape):
      ``loss_n = -sum_c w[c] * q'[n, c] * log_softmax(logits_n)[c]`` with ``q' = (1 - eps) q + eps / C``;
    - ``z_loss``: adds ``z_loss * lse**2`` to each row's loss (not to ignored rows; not weighted by the
      class weight), as PaLM's auxiliary loss and Liger's ``lse_square_scale``: it pulls ``lse`` towards 0;
    - ``softcap`` ``c``: the logits are first replaced by ``c * tanh(logits / c)`` (Gemma 2's logit
      soft-capping), and everything above (lse included) is of the capped logits.

    Reduction 'mean' divides the sum (z-loss included) by ``sum_n w[t_n]`` over the non-ignored rows (index
    targets; the count of those rows without weights) or by the number of rows N * d1 * ... (probability
    targets, as torch); all rows ignored (or no rows) gives a mean of nan with a zero gradient and a
    sum of 0; kept rows whose weights sum to 0 give a mean of nan and a nan gradient on those rows (torch's
    ``0 / 0``). 'sum' and the mean accumulate in float64.

    Infinities as torch: a ``+inf`` logit gives nan; ``-inf`` at the target gives ``+inf``; ``-inf``
    elsewhere gives a finite loss and a zero gradient there (with label smoothing, or a probability
    target, ``-inf`` anywhere gives ``+inf``, or nan where its weight or probability is 0:
    ``0 * -inf``); nan propagates.

    Differences from torch, on purpose: a negative ``label_smoothing`` is rejected (torch silently
    treats it as 0); ``weight`` and probability targets must have the logits' dtype (no silent cast);
    float16 logits are computed in float32 and rounded back.

    Args:
        logits: (C,), (N, C) or (N, C, d1, ..., dk) float array.
        target: class indices, integers of shape (), (N,) or (N, d1, ..., dk) with values in [0, C) or
            equal to ``ignore_index``; or probabilities, a float array of the logits' shape and dtype.
        weight: (C,) class weights of the logits' dtype, or None.
        ignore_index: the target value that marks a row to skip (index targets only).
        reduction: 'mean' | 'sum' | 'none' ('none': the loss per position, shape (), (N,) or (N, d1, ...)).
        label_smoothing: eps in [0, 1].
        z_loss: the z-loss coefficient, a finite float >= 0 (0: none; PaLM uses 1e-4).
        softcap: None, or the soft cap ``c > 0`` of the logits.
        return_lse: also return each position's ``lse`` (of the capped logits), the loss's per-position
            shape; it is a by-product, not differentiated (the backward takes ``dloss`` only).
        precision: 'accurate' (default: float64 inside; float32 correctly rounded) or 'fast' (the logits' dtype inside,
            torch's formula); see :func:`ce_rows_forward`. The dense path is always accurate.
        backend: 'compiled' (default) or 'reference': which layer runs the row kernel (index targets).
        threads: rows in parallel on this many threads (compiled backend; None: one).

    Returns:
        ``(loss, cache)``, or ``((loss, lse), cache)`` with ``return_lse``: loss of the logits' dtype,
        0-D for 'mean'/'sum'.

    Raises:
        TypeError: logits not floating; target neither integer nor floating; weight or probability
            target of another dtype; a non-int ignore_index; a non-number label_smoothing, z_loss or
            softcap; a non-bool return_lse.
        ValueError: logits 0-D; target or weight of the wrong shape; label_smoothing outside [0, 1];
            z_loss negative or not finite; softcap not > 0; unknown reduction, precision or backend;
            ignore_index given with probability targets; bad threads.
        IndexError: a class index outside [0, C) that is not ``ignore_index``.
    """
    opts = _check_options(
        reduction, label_smoothing, ignore_index, precision, backend, threads, z_loss, softcap, return_lse
    )
    logits = as_float_array("logits", logits)
    if logits.ndim == 0:
        raise ValueError("logits must be (C,), (N, C) or (N, C, d1, ...), got a 0-D array")
    dtype = logits.dtype
    C = logits.shape[0] if logits.ndim == 1 else logits.shape[1]
    loss_shape = _loss_shape_of(logits.shape)
    w = None
    if weight is not None:
        w = as_float_array("weight", weight, ndim=1)
        check_same_dtype("weight", w, "logits", logits)
        if w.shape[0] != C:
            raise ValueError(f"weight must have one entry per class (C = {C}), got shape {w.shape}")
    targets = check_targets(target, logits.shape, dtype, ignore_index, opts.backend)
    x = _rows(logits, C)  # (M, C)
    work = x.astype(np.float32) if dtype == np.float16 else x  # float16 is computed in float32
    wk = None if w is None else w.astype(work.dtype)
    if targets.q is not None and targets.q.dtype != work.dtype:
        targets = targets._replace(q=targets.q.astype(work.dtype))
    denom = mean_denominator(targets, wk)
    losses, state = loss_rows_forward(work, targets, wk, opts)  # (M,)
    exact = _losses64_of(state, dtype)  # float32: the mean and sum correctly rounded
    loss = reduce_losses(losses.reshape(loss_shape).astype(dtype, copy=False), reduction, denom=denom, exact=exact)
    cache = CrossEntropyCache(state, denom, reduction, logits.shape, dtype)
    if return_lse:
        return (loss, state.lse.astype(dtype).reshape(loss_shape)), cache
    return loss, cache


def cross_entropy_backward(dloss: npt.ArrayLike, cache: CrossEntropyCache) -> Array:
    """Gradient of the fused loss with respect to the logits.

    Args:
        dloss: the loss's shape: 0-D (a Python float is fine) for 'mean'/'sum', else the per-position shape.
            (With ``return_lse``, the gradient of the loss only: the lse is not differentiated.)
        cache: from :func:`cross_entropy_forward`.

    Returns:
        dlogits: the logits' shape and dtype.

    Derivation:
        ``loss_n = logsumexp(logits_n) - logits[n, t_n]``. The gradient of logsumexp is softmax,
        and ``d logits[n, t_n] / d logits[n, c] = [c == t_n]``, so
        ``d loss_n / d logits[n, c] = softmax(logits_n)_c - [c == t_n]``. The mean scales each row by
        ``1/N`` (the sum by 1; 'none' by ``dloss_n``), a class weight by ``w[t_n]`` (and the mean's
        divisor becomes ``sum_n w[t_n]``); ignored rows by 0. So per row
        ``g_n = dloss * w[t_n] / denom`` and ``dlogits = g * (softmax - onehot(target))``
        (unweighted mean: ``(softmax - onehot) / N``), in :func:`ce_rows_backward`.

        For a dense target distribution ``a_n = w * q'_n`` (label smoothing, probability targets),
        ``loss_n = -sum_c a_c (logits_c - lse)`` and ``d loss_n / d logits_j = p_j sum_c a_c - a_j``:
        ``dlogits = g * (probs * a.sum(1) - a)``. Each row of the unweighted gradient sums to 0.
        The z-loss adds ``2 z_loss lse_n p`` per row; the softcap multiplies by ``1 - tanh^2``
        (:func:`loss_rows_backward`).
    """
    check_cache(cache, CrossEntropyCache, "cross_entropy_forward")
    shape, dtype, reduction, denom = cache.logits_shape, cache.dtype, cache.reduction, cache.denom
    loss_shape = _loss_shape_of(shape)
    dloss = check_dout(dloss, loss_shape if reduction == "none" else (), dtype, name="dloss")
    M = math.prod(loss_shape)
    work = np.float32 if dtype == np.float16 else dtype
    if reduction == "none":
        g = dloss.reshape(M).astype(work)  # (M,)
    else:  # the mean's divisor; if it is 0 (the loss is nan) the kept rows get a nan gradient, as torch's
        g_all = float(dloss) if reduction == "sum" else float(dloss) / denom if denom != 0 else math.nan
        uniform = cache.rows.kernel is not None and cache.rows.row_weight is None and cache.rows.kept is None
        g = np.full(1 if uniform and not cache.rows.z_loss else M, g_all, dtype=work)  # (M,), or (1,): every row
    dx = loss_rows_backward(g, cache.rows)  # (M, C)
    return _unrows(dx.astype(dtype, copy=False), shape)


def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    precision: Precision = "accurate",
    backend: Backend = "compiled",
    threads: int | None = None,
) -> Any:
    """Fused, stable cross-entropy with torch's options; see :func:`cross_entropy_forward`. Returns the
    loss, or ``(loss, lse)`` with ``return_lse``."""
    out, _ = cross_entropy_forward(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        return_lse=return_lse,
        precision=precision,
        backend=backend,
        threads=threads,
    )
    return out
