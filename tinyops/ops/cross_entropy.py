"""Cross-entropy of logits against integer targets: the seed's naive chain and the fused op.

Shapes: N = rows (examples), C = classes. ``logits`` (N, C), ``target`` (N,) integers in [0, C).
Per row ``loss_n = -log softmax(logits_n)[target_n]``; ``reduction`` is 'mean' (default), 'sum' or 'none'.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import Reduction, as_float_array, as_index_array, check_dout, check_reduction
from . import primitives as P
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
    probs: Array  # (N, C) softmax(logits), already computed by the forward
    target: npt.NDArray[np.integer[Any]]  # (N,)
    reduction: Reduction


def cross_entropy_forward(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduction = "mean"
) -> tuple[Array, CrossEntropyCache]:
    """Fused cross-entropy: ``loss_n = logsumexp(logits_n) - logits[n, target[n]]``, then reduced.

    Fused: one max-shifted exp pass (:func:`logsumexp_forward`) gives both the log-sum-exp and the
    softmax the backward needs;
    no ``log`` of a probability is ever taken, so no exp overflows and a tiny probability never turns
    the loss into ``inf``: the loss is finite for finite logits (unless the true loss itself exceeds
    the dtype's range).

    Args:
        logits: (N, C) float array.
        target: (N,) integer array with values in [0, C).
        reduction: 'mean' (average over rows; nan for N == 0, as torch) | 'sum' | 'none'.

    Returns:
        ``(loss, cache)``: loss is 0-D (mean, sum) or (N,) (none), logits' dtype; the cache holds the
        softmax (N, C), the targets and the reduction.

    Raises:
        TypeError, ValueError, IndexError: as :func:`cross_entropy_naive_forward`.
    """
    logits, target = _check_logits_target(logits, target, reduction)
    lse, lse_cache = logsumexp_forward(logits, axis=1)  # (N,); its cache holds softmax(logits) (N, C)
    rows = np.arange(logits.shape[0])
    losses = lse - logits[rows, target]  # (N,)
    loss = P.reduce_losses(losses, reduction)  # () or (N,)
    return loss, CrossEntropyCache(lse_cache.probs, target, reduction)


def cross_entropy_backward(dloss: npt.ArrayLike, cache: CrossEntropyCache) -> Array:
    """Gradient of the fused loss with respect to the logits.

    Args:
        dloss: the loss's shape: 0-D (a Python float is fine) or (N,) for 'none'.
        cache: from :func:`cross_entropy_forward`.

    Returns:
        dlogits: (N, C), the logits' dtype.

    Derivation:
        ``loss_n = logsumexp(logits_n) - logits[n, t_n]``. The gradient of logsumexp is softmax,
        and ``d logits[n, t_n] / d logits[n, c] = [c == t_n]``, so
        ``d loss_n / d logits[n, c] = softmax(logits_n)_c - [c == t_n]``. The mean scales each row by
        ``1/N`` (the sum by 1; 'none' by ``dloss_n``):
        ``dlogits = (probs - onehot(target)) * dloss / N``. Each row sums to 0.
    """
    probs, target, reduction = cache
    N = probs.shape[0]
    dloss = check_dout(dloss, _loss_shape(N, reduction), probs.dtype, name="dloss")
    if reduction == "none":
        scale = dloss[:, None]  # (N, 1)
    elif reduction == "mean":
        scale = dloss / max(N, 1)  # ()
    else:
        scale = dloss  # ()
    dlogits = probs.copy()  # (N, C)  (never write into the cache)
    dlogits[np.arange(N), target] -= 1  # probs - onehot: p - 1 is exact for p >= 1/2
    dlogits *= scale
    return dlogits


def cross_entropy(logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduction = "mean") -> Array:
    """Fused, stable cross-entropy; see :func:`cross_entropy_forward`."""
    return cross_entropy_forward(logits, target, reduction=reduction)[0]
