"""Logits in the numerically hard regions of the softmax family and the cross-entropy (NumPy only).

Each builder takes a NumPy random generator, a float dtype and the shape (N rows, V classes) and returns
``(logits (N, V) dtype, target (N,) int64)``. Parameters left as None are drawn per row from ``rng``
in the ranges of the one table ``PARAMS`` (also in each docstring); a number given fixes it for every
row. ``tinyops.testing.strategies`` draws the same parameters, in the same ranges, with hypothesis;
``tinyops.audit`` and ``benchmarks/bench_accuracy.py`` draw a fixed-seed corpus.

The regions, and why each is hard:

- ``benign``: standard normal logits (scale 1 to 3), the baseline.
- ``confident``: the target logit ``gap`` above every other one, so ``loss = log1p(sum exp(-gaps))`` is
  tiny: ``lse - x[target]`` cancels, and so does ``p_target - 1``.
- ``near_tie``: every logit within a few ulps of one value: the probabilities are all close to 1/V.
- ``wide_scale``: spread 10 to 3e4: most probabilities underflow, the loss is large.
- ``tiny_scale``: spread 1e-8 to 1e-2: nearly uniform, ``log(V)`` plus a tiny correction.
- ``offset``: all logits near +1e4 or -1e4 (spread 1e-2 to 10): ``x - max`` loses the digits of x.
- ``masked``: 10% to 90% of the entries ``-inf`` (never the target), as attention or vocabulary masks.
- ``exp_overflow``: logits near ``log(max float)`` (88.72 in float32, 709.78 in float64), where a plain
  ``exp(x)`` overflows.
- ``exp_underflow``: the non-target logits near ``log(smallest normal)`` or ``log(smallest subnormal)``
  below the target (-87.3 / -103.3 in float32, -708.4 / -744.4 in float64), where ``exp(x - max)``
  underflows; half the rows are also shifted by that threshold.
- ``long_row``: V up to 50,257 (GPT-2's vocabulary), normal spread 0.5 to 5; a quarter of the rows confident.
- ``log_normalized``: log-probabilities, rows already shifted by their own logsumexp (computed in float64,
  then rounded to the dtype), so that ``logsumexp`` is within rounding of 0 while the row maximum is not:
  ``m + log1p(r)`` cancels. Half the rows are ties at ``-log(V)`` (a few ulps apart).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BUILDERS",
    "PARAMS",
    "REGIONS",
    "Range",
    "benign",
    "confident",
    "exp_overflow",
    "exp_underflow",
    "log_normalized",
    "long_row",
    "masked",
    "near_tie",
    "offset",
    "tiny_scale",
    "wide_scale",
]

from .._checks import Array

Logits = tuple[Array, npt.NDArray[np.int64]]
Param = float | None


@dataclass(frozen=True)
class Range:
    """A parameter's range ``[lo, hi]`` (``hi_float64`` replaces ``hi`` for float64 input when given).

    The builders draw it per row, uniformly or, with ``log``, log-uniformly; the hypothesis strategies
    draw it in the same interval (``integer`` parameters as integers).
    """

    lo: float
    hi: float
    log: bool = False
    hi_float64: float | None = None
    integer: bool = False

    def bounds(self, dtype: npt.DTypeLike) -> tuple[float, float]:
        """``(lo, hi)`` for input of ``dtype``."""
        wide = np.dtype(dtype) == np.float64 and self.hi_float64 is not None
        return self.lo, float(self.hi_float64) if wide and self.hi_float64 is not None else self.hi


# The one table of every region's parameter ranges, read by the builders below and by
# tinyops.testing.strategies: region -> parameter -> range.
PARAMS: dict[str, dict[str, Range]] = {
    "benign": {"spread": Range(1.0, 3.0)},
    "confident": {"gap": Range(1.0, 110.0, log=True, hi_float64=750.0), "spread": Range(0.1, 3.0, log=True)},
    "near_tie": {"center": Range(-100.0, 100.0), "ulps": Range(0, 8, integer=True)},
    "wide_scale": {"spread": Range(10.0, 3e4, log=True)},
    "tiny_scale": {"spread": Range(1e-8, 1e-2, log=True)},
    "offset": {"shift": Range(1e4, 1e4), "spread": Range(1e-2, 10.0, log=True)},  # shift: +-1e4, random sign
    "masked": {"fraction": Range(0.1, 0.9), "spread": Range(0.5, 5.0, log=True)},
    "exp_overflow": {"spread": Range(1e-3, 3.0, log=True)},
    "exp_underflow": {"spread": Range(1e-3, 3.0, log=True)},
    "long_row": {"spread": Range(0.5, 5.0, log=True), "gap": Range(5.0, 40.0, log=True)},
    "log_normalized": {"spread": Range(0.5, 5.0, log=True), "ulps": Range(0, 3, integer=True)},
}


def _check(dtype: npt.DTypeLike, n: int, v: int) -> np.dtype[Any]:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float16, float32 or float64, got {dt}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if v < 1:
        raise ValueError(f"v must be >= 1, got {v}")
    return dt


def _per_row(rng: np.random.Generator, value: Param, n: int, region: str, name: str, dtype: np.dtype[Any]) -> Array:
    """(n, 1) column: ``value`` for every row, else drawn per row in ``PARAMS[region][name]``."""
    if value is not None:
        return np.full((n, 1), float(value))
    r = PARAMS[region][name]
    lo, hi = r.bounds(dtype)
    if r.integer:
        return rng.integers(int(lo), int(hi) + 1, size=(n, 1)).astype(np.float64)
    if r.log:
        return np.exp(rng.uniform(np.log(lo), np.log(hi), size=(n, 1)))
    return rng.uniform(lo, hi, size=(n, 1))


def _targets(rng: np.random.Generator, n: int, v: int) -> npt.NDArray[np.int64]:
    return rng.integers(0, v, size=n).astype(np.int64)


def _make_confident(x: Array, target: npt.NDArray[np.int64], gap: Array) -> None:
    """Set ``x[n, target_n] = max(other logits of row n) + gap[n]`` in place (float64 x, gap (n, 1))."""
    n = x.shape[0]
    rows = np.arange(n)
    others = x.copy()
    others[rows, target] = -np.inf
    top = np.max(others, axis=1, initial=-np.inf)
    top = np.where(np.isfinite(top), top, 0.0)  # V == 1: no other logit
    x[rows, target] = top + gap[:, 0]


def benign(rng: np.random.Generator, dtype: npt.DTypeLike, n: int, v: int, *, spread: Param = None) -> Logits:
    """Normal logits, spread in [1, 3]."""
    dt = _check(dtype, n, v)
    x = rng.standard_normal((n, v)) * _per_row(rng, spread, n, "benign", "spread", dt)
    return x.astype(dt), _targets(rng, n, v)


def confident(
    rng: np.random.Generator, dtype: npt.DTypeLike, n: int, v: int, *, gap: Param = None, spread: Param = None
) -> Logits:
    """Target logit ``gap`` above the others (normal, spread in [0.1, 3]).

    ``gap`` is log-uniform in [1, 110] for float16/float32 (losses from ~0.3 down past the smallest
    normal float32, 1e-38) and in [1, 750] for float64 (down past 1e-308, and to 0).
    """
    dt = _check(dtype, n, v)
    x = rng.standard_normal((n, v)) * _per_row(rng, spread, n, "confident", "spread", dt)
    target = _targets(rng, n, v)
    _make_confident(x, target, _per_row(rng, gap, n, "confident", "gap", dt))
    return x.astype(dt), target


def near_tie(
    rng: np.random.Generator, dtype: npt.DTypeLike, n: int, v: int, *, center: Param = None, ulps: int | None = None
) -> Logits:
    """Every logit ``center + k * ulp(center)`` for integers ``|k| <= ulps``; center in [-100, 100], ulps in
    [0, 8] (one for all rows)."""
    dt = _check(dtype, n, v)
    c = _per_row(rng, center, n, "near_tie", "center", dt).astype(dt)
    u = int(_per_row(rng, None if ulps is None else float(ulps), 1, "near_tie", "ulps", dt)[0, 0])
    k = rng.integers(-u, u + 1, size=(n, v)).astype(dt)
    x = c + k * np.spacing(np.abs(c))  # exact: a few ulps around c
    return x.astype(dt), _targets(rng, n, v)


def wide_scale(rng: np.random.Generator, dtype: npt.DTypeLike, n: int, v: int, *, spread: Param = None) -> Logits:
    """Normal logits with spread log-uniform in [10, 3e4]."""
    dt = _check(dtype, n, v)
    x = rng.standard_normal((n, v)) * _per_row(rng, spread, n, "wide_scale", "spread", dt)
    return x.astype(dt), _targets(rng, n, v)


def tiny_scale(rng: np.random.Generator, dtype: npt.DTypeLike, n: int, v: int, *, spread: Param = None) -> Logits:
    """Normal logits with spread log-uniform in [1e-8, 1e-2]."""
    dt = _check(dtype, n, v)
    x = rng.standard_normal((n, v)) * _per_row(rng, spread, n, "tiny_scale", "spread", dt)
    return x.astype(dt), _targets(rng, n, v)


def offset(
    rng: np.random.Generator,
    dtype: npt.DTypeLike,
    n: int,
    v: int,
    *,
    shift: Param = None,
    spread: Param = None,
) -> Logits:
    """``shift`` (+1e4 or -1e4, a random sign per row) plus normal logits, spread log-uniform in [1e-2, 10]."""
    dt = _check(dtype, n, v)
    size = PARAMS["offset"]["shift"].hi
    s = np.full((n, 1), float(shift)) if shift is not None else rng.choice([-size, size], size=(n, 1))
    x = s + rng.standard_normal((n, v)) * _per_row(rng, spread, n, "offset", "spread", dt)
    return x.astype(dt), _targets(rng, n, v)


def masked(
    rng: np.random.Generator,
    dtype: npt.DTypeLike,
    n: int,
    v: int,
    *,
    fraction: Param = None,
    spread: Param = None,
) -> Logits:
    """Normal logits (spread in [0.5, 5]) with a fraction in [0.1, 0.9] of entries ``-inf``, never the target."""
    dt = _check(dtype, n, v)
    x = rng.standard_normal((n, v)) * _per_row(rng, spread, n, "masked", "spread", dt)
    target = _targets(rng, n, v)
    mask = rng.uniform(size=(n, v)) < _per_row(rng, fraction, n, "masked", "fraction", dt)
    mask[np.arange(n), target] = False
    x[mask] = -np.inf
    return x.astype(dt), target


def exp_overflow(rng: np.random.Generator, dtype: npt.DTypeLike, n: int, v: int, *, spread: Param = None) -> Logits:
    """``log(max float)`` plus normal logits, spread log-uniform in [1e-3, 3]; a plain exp overflows on half."""
    dt = _check(dtype, n, v)
    top = float(np.log(np.finfo(dt).max))
    x = top + rng.standard_normal((n, v)) * _per_row(rng, spread, n, "exp_overflow", "spread", dt)
    return x.astype(dt), _targets(rng, n, v)


def exp_underflow(rng: np.random.Generator, dtype: npt.DTypeLike, n: int, v: int, *, spread: Param = None) -> Logits:
    """Target at 0, the others at an underflow threshold of exp plus normal noise (spread in [1e-3, 3]).

    The threshold is ``log(smallest normal)`` or ``log(smallest subnormal)`` of the dtype (chosen per row);
    half the rows are shifted by that threshold as a whole, so that the plain ``exp(x)`` underflows too.
    """
    dt = _check(dtype, n, v)
    fi = np.finfo(dt)
    thresholds = np.array([np.log(float(fi.tiny)), np.log(float(fi.smallest_subnormal))])
    th = rng.choice(thresholds, size=(n, 1))
    target = _targets(rng, n, v)
    x = th + rng.standard_normal((n, v)) * _per_row(rng, spread, n, "exp_underflow", "spread", dt)
    x[np.arange(n), target] = 0.0
    x = x + np.where(rng.uniform(size=(n, 1)) < 0.5, th, 0.0)
    return x.astype(dt), target


def long_row(
    rng: np.random.Generator,
    dtype: npt.DTypeLike,
    n: int,
    v: int = 50_257,
    *,
    spread: Param = None,
    confident_fraction: float = 0.25,
) -> Logits:
    """Normal logits over a long row (default V = 50,257), spread in [0.5, 5]; a fraction confident.

    The confident rows have their target 5 to 40 above the others (loss from ~7e-2 down to ~1e-13).
    """
    dt = _check(dtype, n, v)
    x = rng.standard_normal((n, v)) * _per_row(rng, spread, n, "long_row", "spread", dt)
    target = _targets(rng, n, v)
    conf = np.flatnonzero(rng.uniform(size=n) < confident_fraction)
    if conf.size:
        sub = x[conf]
        _make_confident(sub, target[conf], _per_row(rng, None, conf.size, "long_row", "gap", dt))
        x[conf] = sub
    return x.astype(dt), target


def log_normalized(
    rng: np.random.Generator, dtype: npt.DTypeLike, n: int, v: int, *, spread: Param = None, ulps: int | None = None
) -> Logits:
    """Rows minus their logsumexp (normal logits, spread in [0.5, 5]); half the rows ``-log(V)`` +- ``ulps``
    ulps (ulps in [0, 3], one for all rows)."""
    dt = _check(dtype, n, v)
    x = rng.standard_normal((n, v)) * _per_row(rng, spread, n, "log_normalized", "spread", dt)
    m = x.max(axis=1, keepdims=True)
    x = x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))  # float64: logsumexp within 1e-15 of 0
    tie = rng.uniform(size=n) < 0.5
    u = int(_per_row(rng, None if ulps is None else float(ulps), 1, "log_normalized", "ulps", dt)[0, 0])
    c = np.full(int(tie.sum()), -np.log(v)).astype(dt)[:, None]
    k = rng.integers(-u, u + 1, size=(int(tie.sum()), v)).astype(dt)
    out = x.astype(dt)
    out[tie] = c + k * np.spacing(np.abs(c))
    return out, _targets(rng, n, v)


Builder = Callable[..., Logits]
BUILDERS: dict[str, Builder] = {
    "benign": benign,
    "confident": confident,
    "near_tie": near_tie,
    "wide_scale": wide_scale,
    "tiny_scale": tiny_scale,
    "offset": offset,
    "masked": masked,
    "exp_overflow": exp_overflow,
    "exp_underflow": exp_underflow,
    "long_row": long_row,
    "log_normalized": log_normalized,
}
REGIONS = tuple(BUILDERS)
