"""tinyops' documented ULP bounds, in one table: the tests, the accuracy benchmark and ``tinyops audit`` read them here.

A bound is the largest error, in ULPs of the exact value rounded to the dtype (see
:func:`tinyops.testing.exact.ulp_error`), that the default kernels (``precision='accurate'``) allow:

- float32: ``FLOAT32[quantity]``, half an ULP: correctly rounded (the rounding decision and its
  double-double fallback, docs/accuracy.md); float16: ``FLOAT16[quantity]`` (float64 inside, rounded
  once, with no decision);
- float64: ``FLOAT64_BASE + FLOAT64_PER_LOG2_V * log2(V)`` (a sum of V terms in float64, with no wider
  type inside, rounds about log2(V) times), held only where the exact value is a normal number;
- logsumexp in float64 (and float16) gets, on top, the float64 rounding of its two terms ``m + log1p(r)``
  (:func:`lse_slack`): an absolute error far below an ULP unless logsumexp is near 0 while the row
  maximum ``m`` is not (docs/accuracy.md, "Limits");
- the gradient (of the cross-entropy with respect to the logits) only where its exact value is normal.

Quantities: ``loss`` (per-sample cross-entropy), ``grad`` (its gradient), ``lse``, ``log_softmax``,
``softmax``, ``mean`` (the mean reduction). Gradients of logsumexp, softmax and log_softmax for an
arbitrary upstream gradient have no documented bound (:func:`ulp_bound` returns None).

NumPy only, but :func:`lse_slack` imports :mod:`tinyops.testing.exact` (mpmath).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FLOAT16", "FLOAT32", "FLOAT64_BASE", "FLOAT64_PER_LOG2_V", "lse_slack", "normal_mask", "ulp_bound"]

FLOAT32: dict[str, float] = dict.fromkeys(("loss", "grad", "lse", "log_softmax", "softmax", "mean"), 0.5)
FLOAT16: dict[str, float] = {"loss": 2.0, "grad": 4.0, "lse": 2.0, "log_softmax": 2.0, "softmax": 4.0, "mean": 2.0}
FLOAT64_BASE = 8.0
FLOAT64_PER_LOG2_V = 2.0


def ulp_bound(quantity: str, dtype: npt.DTypeLike, V: int = 1) -> float | None:
    """The documented bound of ``quantity`` for input of ``dtype`` with V classes (N rows for ``mean``);
    None for a quantity with no documented bound."""
    if quantity not in FLOAT32:
        return None
    if np.dtype(dtype) == np.float64:
        return FLOAT64_BASE + FLOAT64_PER_LOG2_V * float(np.log2(max(V, 1)))
    return FLOAT16[quantity] if np.dtype(dtype) == np.float16 else FLOAT32[quantity]


def normal_mask(exact_values: npt.ArrayLike, dtype: npt.DTypeLike) -> npt.NDArray[np.bool_]:
    """Where the exact value, rounded to dtype, is a normal number or an infinity (where the bounds apply
    to float64 results and to gradients)."""
    from .exact import round_to

    dt = np.dtype(dtype)
    y = np.abs(np.asarray(round_to(exact_values, dt), dtype=np.float64))
    return np.asarray(np.isinf(y) | (y >= float(np.finfo(dt).tiny)))


def lse_slack(x: npt.ArrayLike, exact_lse: npt.ArrayLike, dtype: npt.DTypeLike) -> npt.NDArray[np.float64]:
    """``4 eps64 (|m| + |lse - m| + log2 V + 1)`` in ULPs of the exact lse rounded to dtype (0 where nan).

    The rounding of ``m`` and ``log1p(r)`` in float64 (and of the sum r): an absolute error that stays
    far below an ULP unless the two terms cancel, i.e. unless logsumexp is near 0 and the max is not.
    ``x`` is (N, V), ``exact_lse`` (N,). 0 for float32, whose logsumexp is correctly rounded.
    """
    from .exact import round_to

    dt = np.dtype(dtype)
    xs = np.asarray(x)
    if dt == np.float32:
        return np.zeros(np.shape(exact_lse), dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        lse = np.asarray(exact_lse).astype(np.float64)
        m = xs.max(axis=-1, initial=-np.inf).astype(np.float64)
        slack = 4 * np.finfo(np.float64).eps * (np.abs(m) + np.abs(lse - m) + np.log2(max(xs.shape[-1], 1)) + 1)
        unit: Any = np.spacing(np.abs(round_to(exact_lse, dt))).astype(np.float64)
        out = slack / unit  # inf where the slack dwarfs the smallest subnormal
    return np.asarray(np.where(np.isnan(out), 0.0, out), dtype=np.float64)
