"""Cross-entropy of logits against integer targets: the seed's naive chain and the fused op.

Shapes: N = rows (examples), C = classes. ``logits`` (N, C), ``target`` (N,) integers in [0, C).
Per row ``loss_n = -log softmax(logits_n)[target_n]``; ``reduction`` is 'mean' (default), 'sum' or 'none'.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import Reduction, as_float_array, as_index_array, check_dout, check_reduction, check_same_dtype
from . import primitives as P
from .ce_kernels import Precision, RowsState, ce_rows_backward, ce_rows_forward, check_precision, check_threads
from .softmax import logsumexp_forward

Array = npt.NDArray[Any]


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


# ============================================================================ the fused op


class CrossEntropyCache(NamedTuple):
    """What the fused backward needs. Rows are the M = N * d1 * ... positions, classes last."""

    state: RowsState | None  # index targets, no smoothing: the row kernel's state
    probs: Array | None  # (M, C) softmax, for label smoothing and probability targets
    coef: Array | None  # (M, C) the target distribution times the class weights (0 on ignored rows)
    row_weight: Array | None  # (M,) weight[target] * (target != ignore_index), or None when all are 1
    ignored: npt.NDArray[np.bool_] | None  # (M,) target == ignore_index, or None when no row is
    denom: float  # the divisor of the mean
    reduction: Reduction
    logits_shape: tuple[int, ...]  # (C,), (N, C) or (N, C, d1, ...)
    dtype: np.dtype[Any]  # the logits' dtype


def _check_options(
    reduction: object, label_smoothing: object, ignore_index: object, precision: object, threads: object
) -> float:
    check_reduction(reduction)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.floating, np.integer)):
        raise TypeError(f"label_smoothing must be a float in [0, 1], got {label_smoothing!r}")
    if not 0.0 <= label_smoothing <= 1.0:  # also rejects nan
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__} {ignore_index!r}")
    check_precision(precision)  # checked here too: the dense path never reaches the row kernel
    check_threads(threads)
    return float(label_smoothing)


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


def cross_entropy_forward(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    precision: Precision = "accurate",
    threads: int | None = None,
) -> tuple[Array, CrossEntropyCache]:
    """Fused cross-entropy with torch's signature and semantics (``F.cross_entropy``).

    Per row (the class axis is 1, or 0 for an unbatched (C,) input), with ``lse = logsumexp(logits_n)``:

    - class-index targets: ``loss_n = w[t_n] * (lse - logits[n, t_n])``, computed by the row kernel
      (:mod:`tinyops.ops.ce_kernels`) as ``lse - logits[n, t_n]`` with no ``log`` of a probability,
      so no exp overflows; rows whose target equals ``ignore_index`` have loss 0 and gradient 0;
    - label smoothing ``eps``: ``(1 - eps) * w[t_n] * (lse - logits[n, t_n])
      + eps / C * sum_c w[c] * (lse - logits[n, c])`` (torch's formula: the smoothing term is weighted
      by the class weights too);
    - probability targets ``q`` (a float array of the logits' shape):
      ``loss_n = -sum_c w[c] * q'[n, c] * log_softmax(logits_n)[c]`` with ``q' = (1 - eps) q + eps / C``.

    Reduction 'mean' divides the sum by ``sum_n w[t_n]`` over the non-ignored rows (index targets;
    the count of those rows without weights) or by the number of rows N * d1 * ... (probability
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
        precision: 'accurate' (default: a few ULP, see :mod:`tinyops.ops.ce_kernels`) or 'fast'.
        threads: threads for the row kernel (None: one).

    Returns:
        ``(loss, cache)``: loss of the logits' dtype, 0-D for 'mean'/'sum'.

    Raises:
        TypeError: logits not floating; target neither integer nor floating; weight or probability
            target of another dtype; a non-int ignore_index; a non-number label_smoothing.
        ValueError: logits 0-D; target or weight of the wrong shape; label_smoothing outside [0, 1];
            unknown reduction or precision; ignore_index given with probability targets; bad threads.
        IndexError: a class index outside [0, C) that is not ``ignore_index``.
    """
    eps = _check_options(reduction, label_smoothing, ignore_index, precision, threads)
    logits = as_float_array("logits", logits)
    if logits.ndim == 0:
        raise ValueError("logits must be (C,), (N, C) or (N, C, d1, ...), got a 0-D array")
    dtype = logits.dtype
    C = logits.shape[0] if logits.ndim == 1 else logits.shape[1]
    loss_shape = _loss_shape_of(logits.shape)
    if isinstance(target, (bool, np.bool_)) or not isinstance(target, (np.ndarray, list, tuple, int, np.integer)):
        raise TypeError(f"target must be an integer or floating numpy array, got {type(target).__name__}")
    target = np.asarray(target)
    w = None
    if weight is not None:
        w = as_float_array("weight", weight, ndim=1)
        check_same_dtype("weight", w, "logits", logits)
        if w.shape[0] != C:
            raise ValueError(f"weight must have one entry per class (C = {C}), got shape {w.shape}")
    x = _rows(logits, C)  # (M, C)
    work = x.astype(np.float32) if dtype == np.float16 else x  # float16 is computed in float32
    wk = None if w is None else w.astype(work.dtype)

    if target.dtype.kind == "f":  # ------------------------------------------- probability targets
        if ignore_index != -100:
            raise ValueError(f"ignore_index ({ignore_index}) is not supported with probability targets")
        if target.shape != logits.shape:
            raise ValueError(f"probability target must have the logits' shape {logits.shape}, got {target.shape}")
        check_same_dtype("target", target, "logits", logits)
        q = _rows(target, C).astype(work.dtype)  # (M, C)
        coef = q if eps == 0 else q * (1 - eps) + eps / C  # (M, C)
        if wk is not None:
            coef = coef * wk  # (M, C)
        return _soft_forward(work, coef, None, reduction, float(x.shape[0]), loss_shape, logits.shape, dtype)

    if target.dtype.kind not in "iu":  # --------------------------------------- class-index targets
        raise TypeError(f"target must have an integer (class indices) or floating (probabilities) dtype, "
                        f"got dtype {target.dtype}")  # fmt: skip
    if target.shape != loss_shape:
        raise ValueError(f"target must have shape {loss_shape} (the logits' {logits.shape} without the class "
                         f"axis), got {target.shape}")  # fmt: skip
    t = target.reshape(-1)  # (M,)
    ignored = None  # None: no row is ignored
    if t.size:
        lo, hi = int(t.min()), int(t.max())
        if lo <= ignore_index <= hi:
            ignored = t == ignore_index  # (M,)
            kept = t[~ignored]
            lo, hi = (int(kept.min()), int(kept.max())) if kept.size else (0, 0)
        for v in (lo, hi):
            if not 0 <= v < C:
                raise IndexError(f"target must be in [0, {C}) (C = {C}) or equal ignore_index ({ignore_index}), "
                                 f"got {v}")  # fmt: skip
    t = np.asarray(t if ignored is None else np.where(ignored, 0, t), dtype=np.intp)  # (M,), ignored -> 0
    row_weight = None if ignored is None else (~ignored).astype(work.dtype)  # (M,)
    if wk is not None:
        row_weight = wk[t] if row_weight is None else wk[t] * row_weight  # (M,)
    denom = float(t.shape[0]) if row_weight is None else float(np.sum(row_weight, dtype=np.float64))

    if eps > 0:  # label smoothing: a dense target distribution, computed like probability targets
        coef = np.full(work.shape, eps / C, dtype=work.dtype) if wk is None else np.tile(wk * (eps / C), (len(t), 1))
        coef[np.arange(len(t)), t] += (1 - eps) * (1 if wk is None else wk[t])  # (M, C)
        if ignored is not None:
            coef[ignored] = 0
        return _soft_forward(work, coef, ignored, reduction, denom, loss_shape, logits.shape, dtype)

    losses, _, state = ce_rows_forward(work, t, precision=precision, threads=threads)  # (M,)
    if row_weight is not None:
        with np.errstate(invalid="ignore"):
            losses = losses * row_weight  # 0 * inf = nan, as torch's weight 0 on a -inf target
        if ignored is not None:
            losses[ignored] = 0  # ignored rows: loss 0 whatever their logits
    loss = P.reduce_losses(losses.reshape(loss_shape).astype(dtype, copy=False), reduction, denom=denom)
    return loss, CrossEntropyCache(state, None, None, row_weight, ignored, denom, reduction, logits.shape, dtype)


def _soft_forward(
    x: Array,
    coef: Array,
    ignored: npt.NDArray[np.bool_] | None,
    reduction: Reduction,
    denom: float,
    loss_shape: tuple[int, ...],
    logits_shape: tuple[int, ...],
    dtype: np.dtype[Any],
) -> tuple[Array, CrossEntropyCache]:
    """``loss_n = -sum_c coef[n, c] * log_softmax(x_n)[c]`` for a dense target distribution ``coef``."""
    lse, lse_cache = logsumexp_forward(x, axis=1, keepdims=True)  # (M, 1); the cache holds softmax(x)
    probs = lse_cache.probs  # (M, C)
    if np.isposinf(lse).any():  # a +inf logit: torch's whole gradient row is nan (softmax(inf - inf))
        probs = np.where(np.isposinf(lse), np.nan, probs).astype(x.dtype)
    with np.errstate(invalid="ignore"):
        logp = x - lse  # (M, C) log_softmax
        losses = -np.sum(coef * logp, axis=1)  # (M,); 0 * -inf = nan, as torch
    if ignored is not None:
        losses[ignored] = 0
    loss = P.reduce_losses(losses.reshape(loss_shape).astype(dtype, copy=False), reduction, denom=denom)
    return loss, CrossEntropyCache(None, probs, coef, None, ignored, denom, reduction, logits_shape, dtype)


def cross_entropy_backward(dloss: npt.ArrayLike, cache: CrossEntropyCache) -> Array:
    """Gradient of the fused loss with respect to the logits.

    Args:
        dloss: the loss's shape: 0-D (a Python float is fine) for 'mean'/'sum', else the per-position shape.
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
        (unweighted mean: ``(softmax - onehot) / N``), in :func:`tinyops.ops.ce_kernels.ce_rows_backward`.

        For a dense target distribution ``a_n = w * q'_n`` (label smoothing, probability targets),
        ``loss_n = -sum_c a_c (logits_c - lse)`` and ``d loss_n / d logits_j = p_j sum_c a_c - a_j``:
        ``dlogits = g * (probs * a.sum(1) - a)``. Each row of the unweighted gradient sums to 0.
    """
    state, probs, coef, row_weight, ignored, denom, reduction, shape, dtype = cache
    loss_shape = _loss_shape_of(shape)
    dloss = check_dout(dloss, loss_shape if reduction == "none" else (), dtype, name="dloss")
    M = math.prod(loss_shape)
    work = np.float32 if dtype == np.float16 else dtype
    if reduction == "none":
        g = dloss.reshape(M).astype(work)  # (M,)
    elif reduction == "sum":
        g = np.full(M, dloss, dtype=work)  # (M,)
    else:  # the mean's divisor; if it is 0 (the loss is nan) the kept rows get a nan gradient, as torch's
        g = np.full(M, float(dloss) / denom if denom != 0 else np.nan, dtype=work)  # (M,)
    if row_weight is not None:
        with np.errstate(invalid="ignore"):
            g *= row_weight  # (M,)
    if ignored is not None:
        g[ignored] = 0  # ignored rows: a zero gradient, whatever the rest (all ignored: zeros, as torch)
    if state is not None:
        dx = ce_rows_backward(g, state)  # (M, C) = g * (softmax - onehot)
    else:
        assert probs is not None and coef is not None
        dx = g[:, None] * (probs * coef.sum(axis=1, keepdims=True) - coef)  # (M, C)
    return _unrows(dx.astype(dtype, copy=False), shape)


def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    precision: Precision = "accurate",
    threads: int | None = None,
) -> Array:
    """Fused, stable cross-entropy with torch's options; see :func:`cross_entropy_forward`."""
    return cross_entropy_forward(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                                 label_smoothing=label_smoothing, precision=precision, threads=threads)[0]  # fmt: skip
