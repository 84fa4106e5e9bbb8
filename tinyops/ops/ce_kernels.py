"""Row kernels of the fused cross-entropy: the per-row loss and gradient of (M, C) logits.

The public op (:mod:`tinyops.ops.cross_entropy`) validates its inputs, moves the class axis last and
flattens every option (class weights, ignored rows, reductions) into a per-row upstream gradient ``g``;
what is left, and hot, is this:

    loss[m] = logsumexp(x[m]) - x[m, t[m]]                         forward,  (M,)
    dx[m]   = g[m] * (softmax(x[m]) - onehot(t[m]))                backward, (M, C)

Shapes: M = rows, C = classes. ``x`` is a C-contiguous (M, C) float32/float64 array, ``t`` an (M,)
integer array already checked to lie in [0, C). Both functions return arrays of x's dtype and never
write into their inputs.

Infinities, row by row, as torch: a ``+inf`` logit gives a nan loss (and nan gradient); ``-inf`` at the
target gives ``+inf``; ``-inf`` elsewhere contributes exp(-inf) = 0 (finite loss, zero probability there);
a row of all ``-inf`` gives nan; nan propagates. A row with ``g[m] == 0`` gets a zero gradient when the row
is finite (and nan otherwise, as torch's ``0 * nan``).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
Precision = Literal["accurate", "fast"]
PRECISIONS: tuple[Precision, ...] = ("accurate", "fast")


class RowsState(NamedTuple):
    """What the backward needs: the softmax of every row and the targets."""

    probs: Array  # (M, C) softmax(x)
    target: npt.NDArray[np.intp]  # (M,)


def ce_rows_forward(
    x: Array, t: npt.NDArray[np.intp], *, precision: Precision = "accurate", threads: int | None = None
) -> tuple[Array, Array, RowsState]:
    """Per-row cross-entropy of (M, C) logits against (M,) class indices.

    Args:
        x: (M, C) float32/float64, C-contiguous.
        t: (M,) intp, values in [0, C).
        precision: 'accurate' (the default of the public op) or 'fast'.
        threads: worker threads for the row blocks (None: one).

    Returns:
        ``(loss, lse, state)``: loss (M,) and lse (M,) in x's dtype; state for :func:`ce_rows_backward`.
    """
    M = x.shape[0]
    m = np.max(x, axis=1, keepdims=True, initial=-np.inf)  # (M, 1)
    m = np.where(np.isfinite(m), m, x.dtype.type(0))  # guard: all -inf, +inf or nan -> shift by 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(x - m)  # (M, C), every argument <= 0 where the max is finite
        s = e.sum(axis=1, keepdims=True)  # (M, 1)
        lse = (np.log(s) + m)[:, 0]  # (M,)
        probs = e / s  # (M, C)
        loss = lse - x[np.arange(M), t]  # (M,)
    return loss, lse, RowsState(probs, t)


def ce_rows_backward(g: Array, state: RowsState) -> Array:
    """``dx = g[:, None] * (softmax(x) - onehot(t))``, (M, C), from the forward's state.

    Args:
        g: (M,) per-row upstream gradient in x's dtype (0 for ignored rows).
        state: from :func:`ce_rows_forward`.
    """
    probs, t = state
    dx = probs.copy()  # (M, C)  never write into the state
    dx[np.arange(t.shape[0]), t] -= 1  # softmax - onehot
    dx *= g[:, None]
    return dx
