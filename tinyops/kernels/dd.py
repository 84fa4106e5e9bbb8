"""Double-double arithmetic for the kernels' fallback, compiled: one scalar at a time.

The same algorithms as the NumPy reference, :mod:`tinyops.ops._dd` (its docstring has the derivation and
the sources), written again for numba: a pair ``(hi, lo)`` of float64 numbers carries about 106 bits. The
row kernels call these only on the rows whose float64 result cannot decide its rounding (see
:mod:`tinyops.kernels.rounding`), so they are written for clarity, not speed.

Compiled without any fastmath flag: TwoSum is exact only if every operation rounds as written (no
reassociation, no contraction into fused multiply-adds). The exact product uses the hardware's fused
multiply-add where the reference splits its factors (Dekker): the same pair, in two operations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ops._dd import INV_FACT, LN2, LOG2E
from ._numba import jit
from .exp import fma64, scale64

LN2_1, LN2_2, LN2_3 = LN2


@jit()
def two_sum(a: float, b: float) -> Any:
    """``(s, e)``: ``s = fl(a + b)``, ``s + e == a + b`` exactly."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@jit()
def fast_two_sum(a: float, b: float) -> Any:
    """``two_sum`` for ``|a| >= |b|``."""
    s = a + b
    return s, b - (s - a)


@jit()
def two_prod(a: float, b: float) -> Any:
    """``(p, e)``: ``p = fl(a * b)``, ``p + e == a * b`` exactly (the error of a product is ``fma(a, b, -p)``)."""
    p = a * b
    return p, fma64(a, b, -p)


@jit()
def dd_add(ah: float, al: float, bh: float, bl: float) -> Any:
    """``a + b`` of two double-doubles."""
    s, e = two_sum(ah, bh)
    t, f = two_sum(al, bl)
    s, e = fast_two_sum(s, e + t)
    return fast_two_sum(s, e + f)


@jit()
def dd_mul(ah: float, al: float, bh: float, bl: float) -> Any:
    """``a * b`` of two double-doubles."""
    p, e = two_prod(ah, bh)
    return fast_two_sum(p, e + (ah * bl + al * bh))


@jit()
def dd_div(ah: float, al: float, bh: float, bl: float) -> Any:
    """``a / b`` of two double-doubles."""
    q1 = ah / bh
    ph, pl = dd_mul(bh, bl, q1, 0.0)
    rh, rl = dd_add(ah, al, -ph, -pl)
    return fast_two_sum(q1, (rh + rl) / bh)


C = [c for pair in INV_FACT for c in pair]  # 1/k! as (hi, lo) pairs, k = 0..13: scalar constants below
C1H, C1L, C2H, C2L, C3H, C3L, C4H, C4L, C5H, C5L, C6H, C6L, C7H, C7L = C[2:16]
C8, C9, C10, C11, C12, C13 = C[16], C[18], C[20], C[22], C[24], C[26]


@jit()
def expm1_reduced(th: float, tl: float) -> Any:
    """``expm1(t)`` for ``|t| <= 0.35``: Taylor of ``t / 16`` (degrees 8..13 in float64), four squarings."""
    th, tl = th * 0.0625, tl * 0.0625
    tail = ((((C13 * th + C12) * th + C11) * th + C10) * th + C9) * th + C8
    sh, sl = dd_add(tail * th, 0.0, C7H, C7L)  # s = 1/k! + t s, k = 7..1
    sh, sl = dd_mul(sh, sl, th, tl)
    sh, sl = dd_add(sh, sl, C6H, C6L)
    sh, sl = dd_mul(sh, sl, th, tl)
    sh, sl = dd_add(sh, sl, C5H, C5L)
    sh, sl = dd_mul(sh, sl, th, tl)
    sh, sl = dd_add(sh, sl, C4H, C4L)
    sh, sl = dd_mul(sh, sl, th, tl)
    sh, sl = dd_add(sh, sl, C3H, C3L)
    sh, sl = dd_mul(sh, sl, th, tl)
    sh, sl = dd_add(sh, sl, C2H, C2L)
    sh, sl = dd_mul(sh, sl, th, tl)
    sh, sl = dd_add(sh, sl, C1H, C1L)
    yh, yl = dd_mul(sh, sl, th, tl)
    yh, yl = twice(yh, yl)  # expm1(2 z) = expm1(z) (2 + expm1(z)), four times: t / 16 -> t
    yh, yl = twice(yh, yl)
    yh, yl = twice(yh, yl)
    return twice(yh, yl)


@jit()
def twice(yh: float, yl: float) -> Any:
    """``expm1(2 z)`` from ``y = expm1(z)``: ``y (2 + y) = 2y + y^2``, no cancellation."""
    ph, pl = dd_mul(yh, yl, yh, yl)
    return dd_add(2.0 * yh, 2.0 * yl, ph, pl)


@jit()
def reduce(xh: float, xl: float) -> Any:
    """``(k, th, tl)`` with ``x = k ln 2 + t``, ``|t| <= 0.35``."""
    k = np.rint(xh * LOG2E)
    ph, pl = two_prod(k, LN2_1)
    th, tl = two_sum(xh, -ph)
    qh, ql = two_prod(k, LN2_2)
    th, tl = dd_add(th, tl + (xl - pl), -qh, -(ql + k * LN2_3))
    return k, th, tl


@jit()
def dd_exp(xh: float, xl: float, scale: int) -> Any:
    """``exp(x) * 2^scale`` of a double-double ``x`` (0 below -745.2, inf above 709.78, those limits moved by
    ``scale * ln 2``; nan propagates)."""
    shift = scale * LN2_1
    if xh + shift < -745.2:
        return 0.0, 0.0
    if xh + shift > 709.782712893384:
        return np.inf, 0.0
    k, th, tl = reduce(xh, xl)
    yh, yl = expm1_reduced(th, tl)
    eh, el = fast_two_sum(1.0, yh)
    el += yl
    n = k + scale
    return scale64(eh, n), scale64(el, n)  # 2^n as two factors, each a normal number: one rounding


@jit()
def dd_expm1(xh: float, xl: float) -> Any:
    """``exp(x) - 1`` of a double-double ``x <= 1``."""
    k, th, tl = reduce(xh, xl)
    if k == 0.0:
        return expm1_reduced(th, tl)
    eh, el = dd_exp(xh, xl, 0)
    return dd_add(eh, el, -1.0, 0.0)


@jit()
def dd_log1p(rh: float, rl: float) -> Any:
    """``log(1 + r)`` of a double-double ``r >= 0``."""
    if rh < 2.0**-40:  # r - r^2/2 + r^3/3
        qh, ql = dd_mul(rh, rl, rh, rl)
        sh, sl = dd_add(rh, rl, -0.5 * qh, -0.5 * ql)
        return fast_two_sum(sh, sl + qh * rh / 3.0)
    y0 = math.log1p(rh)  # one Newton step: y = y0 + (c + r + r c), c = expm1(-y0)
    ch, cl = dd_expm1(-y0, 0.0)
    dh, dl = dd_add(ch, cl, rh, rl)
    ph, pl = dd_mul(rh, rl, ch, cl)
    dh, dl = dd_add(dh, dl, ph, pl)
    nh, nl = fast_two_sum(y0, dh)
    return fast_two_sum(nh, nl + dl)


@jit()
def dd_exp_array(xh: Any, xl: Any, oh: Any, ol: Any) -> None:
    """``(oh, ol) = dd_exp(xh, xl)`` elementwise over 1-D arrays (for the tests)."""
    for i in range(xh.shape[0]):
        oh[i], ol[i] = dd_exp(xh[i], xl[i], 0)


@jit()
def dd_log1p_array(xh: Any, xl: Any, oh: Any, ol: Any) -> None:
    """``(oh, ol) = dd_log1p(xh, xl)`` elementwise over 1-D arrays (for the tests)."""
    for i in range(xh.shape[0]):
        oh[i], ol[i] = dd_log1p(xh[i], xl[i])
