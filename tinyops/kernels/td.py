"""Triple-double arithmetic for one case, compiled: the logsumexp of a float64 row where it cancels.

``lse = m + log1p(r)`` of a row whose max ``m < 0`` is far from the result (log-probabilities, whose
logsumexp is about float64's own rounding of ``|m|``) loses the leading digits of ``log1p(r)``: the
double-double value, good to about ``2^-100 |m|``, is still tens of float64 ULP of a result of
``2^-53 |m|``. Here the row is summed without the shift: every ``x_j <= m < 0``, so each ``exp(x_j)`` is
at most 1, and

    lse = log(T),   T = sum_j exp(x_j)                      (T near 1)

with ``T`` a triple ``t0 + t1 + t2`` of float64 numbers, about 150 bits, good to about ``2^-140`` in
absolute terms. Then one Newton step on libm's ``y0 = log(t0)``:

    lse = y0 + log(T exp(-y0)) = y0 + log1p(d),   d = T exp(-y0) - 1 (|d| about 2^-52),

``d`` a triple too (its leading digits cancel exactly in the triple subtraction), and
``log1p(d) = d - d^2 / 2`` to far below an ULP; ``y0 + log1p(d)`` is rounded once. Within about half an ULP
of the result (held by tests/test_rounding.py against mpmath) unless the result is below about
``2^-80`` (its ULP is then near the triple's absolute error, summed over the row).

A triple ``(a0, a1, a2)`` stands for the exact sum ``a0 + a1 + a2``. The operations are the textbook
ones (TwoSum and the exact product by one fused multiply-add, as :mod:`tinyops.kernels.dd`), each ending
in :func:`renorm`; every product or sum below about ``2^-150`` of the result is dropped. Compiled without
any fastmath flag (TwoSum needs every operation rounded as written). Written for clarity: a triple-double
exp costs several hundred float64 operations, and only the cancelling rows pay it.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from ..ops._dd import LN2, LOG2E
from ._numba import jit
from .dd import two_prod, two_sum
from .exp import scale64

Triple = tuple[float, float, float]


def triple(v: Fraction) -> Triple:
    """The triple nearest an exact number: each part the float64 rounding of what the parts before leave."""
    parts = []
    for _ in range(3):
        parts.append(float(v))
        v -= Fraction(parts[-1])
    return parts[0], parts[1], parts[2]


DEGREE = 13  # expm1 of |z| <= ln(2) / 512 by Taylor: the first term left out, z^14 / 14!, is below 2^-160
SQUARINGS = 8  # exp(t) = exp(t / 2^8)^(2^8)
INV_FACT = np.array([triple(Fraction(1, math.factorial(k))) for k in range(DEGREE + 1)])  # (DEGREE + 1, 3)
LOWEST = -745.2  # exp(x) below this is 0 in float64, and below 2^-1075 of the row's sum here


@jit()
def lse_cancels(m: float, log1p_r: float, lse: float) -> Any:
    """Whether ``lse = m + log1p(r)`` cancels: ``m < 0`` and ``log1p(r) > |lse| / 4`` (the rows that
    :func:`logsumexp_cancelling` computes)."""
    return m < 0.0 and log1p_r > 0.25 * abs(lse)


@jit()
def renorm(a0: float, a1: float, a2: float) -> Any:
    """The triple ``a0 + a1 + a2`` (any three numbers) again, exactly, with the larger parts first: two
    passes of TwoSum from the bottom."""
    s, e2 = two_sum(a1, a2)
    s0, e1 = two_sum(a0, s)
    s1, s2 = two_sum(e1, e2)
    s0, e = two_sum(s0, s1)
    s1, s2 = two_sum(e, s2)
    return s0, s1, s2


@jit()
def td_add(a0: float, a1: float, a2: float, b0: float, b1: float, b2: float) -> Any:
    """``a + b`` of two triples; the only rounding is that of the smallest parts, about ``2^-155`` of the
    larger of ``|a|`` and ``|b|``."""
    s0, e0 = two_sum(a0, b0)
    s1, e1 = two_sum(a1, b1)
    t1, t2 = two_sum(e0, s1)
    return renorm(s0, t1, t2 + (e1 + (a2 + b2)))


@jit()
def td_mul(a0: float, a1: float, a2: float, b0: float, b1: float, b2: float) -> Any:
    """``a * b`` of two triples, within about ``2^-150`` of it relatively: the products of the parts near
    ``2^-53`` and ``2^-106`` of the result are exact pairs or rounded once; smaller ones are left out."""
    p0, q0 = two_prod(a0, b0)
    p1, q1 = two_prod(a0, b1)
    p2, q2 = two_prod(a1, b0)
    s1, e1 = two_sum(p1, p2)
    s1, e2 = two_sum(s1, q0)
    low = (e1 + e2) + (q1 + q2) + (a1 * b1 + (a0 * b2 + a2 * b0))
    return renorm(p0, s1, low)


@jit()
def td_exp(x: float) -> Any:
    """``exp(x)`` of a float64 ``LOWEST <= x <= 709`` as a triple, within about ``2^-145`` of it relatively.

    ``x = k ln 2 + t`` with ``|t| <= ln(2) / 2`` (ln 2 a triple), ``expm1(t / 2^8)`` by its Taylor
    polynomial in Horner form, then ``expm1(2 z) = 2 expm1(z) + expm1(z)^2`` eight times (no cancellation),
    and ``exp(x) = 2^k (1 + expm1(t))``."""
    k = np.rint(x * LOG2E)
    n0, n1, n2 = td_mul(k, 0.0, 0.0, LN2[0], LN2[1], LN2[2])
    t0, t1, t2 = td_add(x, 0.0, 0.0, -n0, -n1, -n2)
    z0, z1, z2 = math.ldexp(t0, -SQUARINGS), math.ldexp(t1, -SQUARINGS), math.ldexp(t2, -SQUARINGS)
    p0, p1, p2 = INV_FACT[DEGREE, 0], INV_FACT[DEGREE, 1], INV_FACT[DEGREE, 2]
    for d in range(DEGREE - 1, 0, -1):  # p = 1/d! + z p
        p0, p1, p2 = td_mul(p0, p1, p2, z0, z1, z2)
        p0, p1, p2 = td_add(p0, p1, p2, INV_FACT[d, 0], INV_FACT[d, 1], INV_FACT[d, 2])
    y0, y1, y2 = td_mul(p0, p1, p2, z0, z1, z2)  # expm1(z)
    for _ in range(SQUARINGS):
        q0, q1, q2 = td_mul(y0, y1, y2, y0, y1, y2)
        y0, y1, y2 = td_add(2.0 * y0, 2.0 * y1, 2.0 * y2, q0, q1, q2)
    e0, e1, e2 = td_add(1.0, 0.0, 0.0, y0, y1, y2)
    return scale64(e0, k), scale64(e1, k), scale64(e2, k)


@jit()
def logsumexp_cancelling(row: Any) -> Any:
    """``log(sum_j exp(x_j))`` of a float64 row whose max is below 0 (and finite), rounded once (see the
    module docstring): the logsumexp of the rows where ``m + log1p(r)`` cancels."""
    s0, s1, s2 = 0.0, 0.0, 0.0
    for j in range(row.shape[0]):
        if row[j] >= LOWEST:
            e0, e1, e2 = td_exp(row[j])
            s0, s1, s2 = td_add(s0, s1, s2, e0, e1, e2)
    y0 = math.log(s0)
    f0, f1, f2 = td_exp(-y0)
    u0, u1, u2 = td_mul(s0, s1, s2, f0, f1, f2)
    d0, d1, _ = td_add(u0, u1, u2, -1.0, 0.0, 0.0)  # T exp(-y0) - 1, its leading digits cancelled exactly
    h, e = two_sum(y0, d0)
    return h + (e + (d1 - 0.5 * d0 * d0))  # y0 + log1p(d), log1p(d) = d - d^2 / 2 + O(2^-156)


@jit()
def td_exp_array(x: Any, out: Any) -> None:
    """``out[i] = td_exp(x[i])`` over a 1-D array, ``out`` (n, 3) (for the tests)."""
    for i in range(x.shape[0]):
        out[i, 0], out[i, 1], out[i, 2] = td_exp(x[i])
