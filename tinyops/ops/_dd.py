"""Double-double arithmetic on NumPy arrays: the slow, precise evaluation behind the row kernels' fallback.

A double-double is an unevaluated sum ``hi + lo`` of two float64 numbers with ``|lo| <= ulp(hi) / 2``:
about 106 significant bits. Every function takes and returns the two parts as separate arrays (or
floats), elementwise, with no branches (``np.where`` picks between the two sides of a case). The
algorithms are the classic error-free transformations (Dekker 1971, Knuth's TwoSum; Hida, Li and Bailey's
QD library for the double-double operations):

- ``two_sum(a, b)``: ``s + e == a + b`` exactly, ``s = fl(a + b)``;
- ``two_prod(a, b)``: ``p + e == a * b`` exactly, by Dekker's split of each factor into two 26-bit halves
  (NumPy has no fused multiply-add);
- ``dd_add``, ``dd_mul``, ``dd_div``: relative errors of a few units of ``2**-104``;
- ``dd_expm1``/``dd_exp`` of a double-double argument (``x - m`` of a float64 row is one) and
  ``dd_log1p`` of a double-double ``r >= 0``: relative errors below ``2**-96`` and ``2**-92`` (measured against mpmath
  by tests/test_rounding.py).

``dd_exp``: ``x = k ln 2 + t`` with ln 2 carried in three parts, ``t / 16`` into a Taylor polynomial of
``expm1`` (degree 13, the terms of degree 8 and up in float64, where their rounding is below ``2**-104``
of the result), then four squarings ``y -> y (2 + y)`` (``(1 + y)^2 - 1``, no cancellation) and
``2^k (1 + y)``. ``dd_log1p``: one Newton step on ``exp(y) = 1 + r`` from ``y0 = log1p(hi)``,
``y = y0 + (expm1(-y0) + r + r expm1(-y0))`` (each term to ``2**-104`` of itself, so nothing cancels
away the precision), or the series ``r - r^2/2 + r^3/3`` for ``r < 2**-40``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

Pair = tuple[Any, Any]

SPLITTER = 134217729.0  # 2^27 + 1: Dekker's split of a float64 into two halves of 26 bits
LOG2E = 1.4426950408889634
LN2 = (0.6931471805599453, 2.3190468138462996e-17, 5.707708438416212e-34)  # ln 2 = sum, to 2^-160


def _dd_of(f: Fraction) -> tuple[float, float]:
    hi = float(f)
    return hi, float(f - Fraction(hi))


INV_FACT = [_dd_of(Fraction(1, math.factorial(k))) for k in range(14)]  # 1/k! as double-doubles, k = 0..13


def two_sum(a: Any, b: Any) -> Pair:
    """``(s, e)``: ``s = fl(a + b)`` and ``s + e == a + b`` exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def fast_two_sum(a: Any, b: Any) -> Pair:
    """``two_sum`` for ``|a| >= |b|`` (or a == 0), in three operations (Dekker)."""
    s = a + b
    return s, b - (s - a)


def split(a: Any) -> Pair:
    """``a = hi + lo`` with both halves of at most 26 significant bits."""
    t = SPLITTER * a
    hi = t - (t - a)
    return hi, a - hi


def two_prod(a: Any, b: Any) -> Pair:
    """``(p, e)``: ``p = fl(a * b)`` and ``p + e == a * b`` exactly (Dekker; |a|, |b| < 2^996)."""
    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def dd_add(ah: Any, al: Any, bh: Any, bl: Any) -> Pair:
    """``a + b`` of two double-doubles (the accurate version: both parts summed with their errors)."""
    s, e = two_sum(ah, bh)
    t, f = two_sum(al, bl)
    s, e = fast_two_sum(s, e + t)
    return fast_two_sum(s, e + f)


def dd_mul(ah: Any, al: Any, bh: Any, bl: Any) -> Pair:
    """``a * b`` of two double-doubles."""
    p, e = two_prod(ah, bh)
    return fast_two_sum(p, e + (ah * bl + al * bh))


def dd_div(ah: Any, al: Any, bh: Any, bl: Any) -> Pair:
    """``a / b`` of two double-doubles: a float64 quotient and one correction from the remainder."""
    q1 = ah / bh
    ph, pl = dd_mul(bh, bl, q1, 0.0)
    rh, rl = dd_add(ah, al, -ph, -pl)
    return fast_two_sum(q1, (rh + rl) / bh)


def _expm1_reduced(th: Any, tl: Any) -> Pair:
    """``expm1(t)`` for ``|t| <= 0.35`` (double-double): Taylor of ``t / 16``, then four squarings."""
    th, tl = th * 0.0625, tl * 0.0625  # exact
    tail = INV_FACT[13][0]  # degrees 8..13 in float64: below 2^-104 of the result after rounding
    for k in range(12, 7, -1):
        tail = tail * th + INV_FACT[k][0]
    sh, sl = tail * th, 0.0 * th  # s = sum_{k>=7} t^(k-7) / k! ... built from the top, in double-double
    sh, sl = dd_add(sh, sl, INV_FACT[7][0], INV_FACT[7][1])
    for k in range(6, 0, -1):  # s = 1/k! + t s
        sh, sl = dd_mul(sh, sl, th, tl)
        sh, sl = dd_add(sh, sl, INV_FACT[k][0], INV_FACT[k][1])
    yh, yl = dd_mul(sh, sl, th, tl)  # expm1(t / 16)
    for _ in range(4):  # expm1(2 z) = expm1(z) (2 + expm1(z))
        ph, pl = dd_mul(yh, yl, yh, yl)
        yh, yl = dd_add(2.0 * yh, 2.0 * yl, ph, pl)
    return yh, yl


def _reduce(xh: Any, xl: Any) -> tuple[Any, Any, Any]:
    """``(k, th, tl)`` with ``x = k ln 2 + t``, ``|t| <= 0.35``; x clamped to [-1500, 710] first."""
    xh = np.clip(xh, -1500.0, 710.0)  # (the results outside are set apart by the callers)
    k = np.rint(xh * LOG2E)
    ph, pl = two_prod(k, LN2[0])  # exact
    th, tl = two_sum(xh, -ph)  # exact
    qh, ql = two_prod(k, LN2[1])
    return k, *dd_add(th, tl + (xl - pl), -qh, -(ql + k * LN2[2]))


def dd_exp(xh: Any, xl: Any, scale: Any = 0) -> Pair:
    """``exp(x) * 2^scale`` of a double-double x (0 below -745.2, inf above 709.78); nan propagates.

    ``scale`` keeps the exps of a row whose terms are all below the normal range in it (then the
    limits above move by ``scale * ln 2``)."""
    k, th, tl = _reduce(xh, xl)
    yh, yl = _expm1_reduced(th, tl)
    eh, el = fast_two_sum(1.0, yh)
    el = el + yl
    ki = (k.astype(np.int64) if isinstance(k, np.ndarray) else int(k)) + scale
    with np.errstate(over="ignore"):
        hi = np.ldexp(eh, ki)  # one rounding, also into the subnormals
        lo = np.ldexp(el, ki)
    shift = scale * LN2[0]
    big, small = xh + shift > 709.782712893384, xh + shift < -745.2
    return np.where(big, np.inf, np.where(small, 0.0, hi)), np.where(big | small, 0.0, lo)


def dd_expm1(xh: Any, xl: Any) -> Pair:
    """``exp(x) - 1`` of a double-double x with ``-746 <= x <= 1``, to a relative ``2**-96``."""
    k, th, tl = _reduce(xh, xl)
    yh, yl = _expm1_reduced(th, tl)  # the answer where k == 0
    eh, el = dd_exp(xh, xl)
    mh, ml = dd_add(eh, el, -1.0, 0.0)  # |expm1| >= 0.29 where k != 0: nothing cancels
    return np.where(k == 0, yh, mh), np.where(k == 0, yl, ml)


def dd_log1p(rh: Any, rl: Any) -> Pair:
    """``log(1 + r)`` of a double-double ``r >= 0``, to a relative ``2**-92``."""
    with np.errstate(invalid="ignore", over="ignore"):
        # r < 2^-40: r - r^2/2 + r^3/3, the next term r^4/4 below 2^-120 of the result
        qh, ql = dd_mul(rh, rl, rh, rl)
        sh, sl = dd_add(rh, rl, -0.5 * qh, -0.5 * ql)
        sh, sl = fast_two_sum(sh, sl + qh * rh / 3.0)
        # else: one Newton step from y0 = log1p(rh), y = y0 + (1 + r) exp(-y0) - 1 = y0 + (c + r + r c)
        y0 = np.log1p(rh)
        ch, cl = dd_expm1(-y0, 0.0 * y0)
        dh, dl = dd_add(ch, cl, rh, rl)
        ph, pl = dd_mul(rh, rl, ch, cl)
        dh, dl = dd_add(dh, dl, ph, pl)
        nh, nl = fast_two_sum(y0, dh)
        nl = nl + dl
        nh, nl = fast_two_sum(nh, nl)
    small = rh < 2.0**-40
    return np.where(small, sh, nh), np.where(small, sl, nl)
