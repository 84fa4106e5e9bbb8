"""``exp`` for the kernels' loops, float32 and float64, written so that a loop calling it vectorizes.

libm's ``exp`` is a function call per element, which stops the compiler from vectorizing the loop
around it. These are the textbook algorithm, in straight-line arithmetic:

1. range reduction: ``n = round(x / ln 2)`` and ``r = x - n ln 2`` with ``|r| <= ln(2) / 2``; ``n ln 2``
   is subtracted in two parts (Cody and Waite): ``LN2_HI`` has trailing zero bits, so ``n * LN2_HI`` is
   exact, and ``LN2_LO`` carries the rest of ln 2;
2. ``exp(r)`` by its Taylor polynomial in Horner form: degree 7 (float32) or 13 (float64) leaves a
   truncation error below ``r^(d+1) / (d+1)!``, under a tenth of an ulp for ``|r| <= 0.347``;
3. ``exp(x) = 2^n exp(r)``, with ``2^n`` built from its exponent bits. It is applied as two factors
   ``2^(n // 2)`` and ``2^(n - n // 2)``, both normal numbers, so that a result in the subnormal range
   rounds once, correctly, instead of being a garbage bit pattern.

``round`` is the add-and-subtract of ``1.5 * 2^p`` (p the mantissa width), which these functions may use
because they are compiled without ``reassoc`` (see :mod:`tinyops.kernels._numba`).

Edges: the input is clamped to where the result is 0 or inf (``x < -746`` gives 0, ``x > 710`` inf, and
likewise -104 / 89 in float32), so ``exp(-inf) = 0`` and ``exp(inf) = inf``; nan passes the clamps
(``nan < a`` is false) and propagates through the polynomial. tests/test_compiled.py measures the error
against the exact (mpmath) values: at most 1 ulp in float64 and 2 ulp in float32 over the whole range.
"""

from __future__ import annotations

from decimal import Context, Decimal, localcontext
from typing import Any

import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

from ._numba import jit

# ---------------------------------------------------------------- bits -> float


@intrinsic
def _f32_from_bits(typingctx: Any, bits: Any) -> Any:
    """Reinterpret an int32 as the float32 with the same bits."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _f64_from_bits(typingctx: Any, bits: Any) -> Any:
    """Reinterpret an int64 as the float64 with the same bits."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _bits_of_f64(typingctx: Any, x: Any) -> Any:
    """Reinterpret a float64 as the int64 with the same bits."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _fma64(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """``a * b + c`` of float64s rounded once (the hardware's fused multiply-add)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.fma(*args)

    return types.float64(types.float64, types.float64, types.float64), codegen


@jit()
def fma64(a: Any, b: Any, c: Any) -> Any:
    """``a * b + c`` rounded once, in compiled code (whatever the caller's fastmath flags)."""
    return _fma64(np.float64(a), np.float64(b), np.float64(c))


@jit()
def bits_of_f64(x: Any) -> Any:
    """The bits of a float64, as an int64 (inside compiled code)."""
    return _bits_of_f64(np.float64(x))


# ---------------------------------------------------------------- float32

F32 = np.float32
LOG2E_32 = F32(1.4426950408889634)
LN2_HI_32 = F32(0.693145751953125)  # 12 significant bits: n * LN2_HI is exact for |n| < 2^12
LN2_LO_32 = F32(1.428606765330187e-06)  # ln 2 - LN2_HI
ROUND_32 = F32(12582912.0)  # 1.5 * 2^23: (z + ROUND) - ROUND rounds z to an integer


@jit(fastmath=frozenset({"contract"}))
def exp32(x: Any) -> Any:
    """``exp(x)`` of a float32, within 2 ulp."""
    x = F32(-104.0) if x < F32(-104.0) else x  # exp(-104) < 2^-149 / 2: rounds to 0
    x = F32(89.0) if x > F32(89.0) else x  # exp(89) > float32 max: inf
    n = (x * LOG2E_32 + ROUND_32) - ROUND_32  # round(x / ln 2)
    r = (x - n * LN2_HI_32) - n * LN2_LO_32  # |r| <= ln(2) / 2
    p = F32(1.0 / 5040)  # Taylor, degree 7, Horner: 1 + r + r^2/2 + ... + r^7/7!
    p = p * r + F32(1.0 / 720)
    p = p * r + F32(1.0 / 120)
    p = p * r + F32(1.0 / 24)
    p = p * r + F32(1.0 / 6)
    p = p * r + F32(0.5)
    p = p * r + F32(1.0)
    p = p * r + F32(1.0)
    k = np.int32(n)
    k1 = k >> np.int32(1)  # 2^n = 2^k1 * 2^(n - k1), both factors normal
    scale1 = _f32_from_bits((k1 + np.int32(127)) << np.int32(23))
    scale2 = _f32_from_bits((k - k1 + np.int32(127)) << np.int32(23))
    return (p * scale1) * scale2


# ---------------------------------------------------------------- float64

F64 = np.float64
LOG2E_64 = 1.4426950408889634
LN2_HI_64 = 0.6931471803691238  # 32 significant bits: n * LN2_HI is exact for |n| < 2^21
LN2_LO_64 = 1.9082149292705877e-10  # ln 2 - LN2_HI
ROUND_64 = 6755399441055744.0  # 1.5 * 2^52


@jit(fastmath=frozenset({"contract"}))
def reduce64(x: Any) -> tuple[Any, Any]:
    """Steps 1 of the float64 exp: ``(n, r)`` with ``x = n ln 2 + r``, ``|r| <= ln(2) / 2``, x clamped first."""
    x = -746.0 if x < -746.0 else x  # exp(-746) < 2^-1074 / 2: rounds to 0
    x = 710.0 if x > 710.0 else x  # exp(710) > float64 max: inf
    n = (x * LOG2E_64 + ROUND_64) - ROUND_64  # round(x / ln 2)
    return n, (x - n * LN2_HI_64) - n * LN2_LO_64


@jit(fastmath=frozenset({"contract"}))
def scale64(p: Any, n: Any) -> Any:
    """Step 3 of the float64 exp: ``p * 2^n`` as ``(p * 2^k1) * 2^(n - k1)``, both factors normal."""
    k = np.int64(n)
    k1 = k >> np.int64(1)
    scale1 = _f64_from_bits((k1 + np.int64(1023)) << np.int64(52))
    scale2 = _f64_from_bits((k - k1 + np.int64(1023)) << np.int64(52))
    return (p * scale1) * scale2


@jit(fastmath=frozenset({"contract"}))
def exp64(x: Any) -> Any:
    """``exp(x)`` of a float64, within 1 ulp."""
    n, r = reduce64(x)
    p = 1.0 / 6227020800.0  # Taylor, degree 13, Horner: 1 + r + r^2/2 + ... + r^13/13!
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return scale64(p, n)


# ---------------------------------------------------------------- float64, to half an ulp, of a pair


def _table_of_2_to_the(k: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``2^(j / k)`` for ``j = 0 .. k - 1`` as pairs ``hi + lo`` (hi the nearest float64, lo the rest),
    from 60-digit decimal arithmetic."""
    ln2 = Decimal(2).ln(Context(prec=60))
    hi, lo = np.empty(k), np.empty(k)
    with localcontext(Context(prec=60)):
        for j in range(k):
            t = (ln2 * j / k).exp()
            hi[j] = float(t)
            lo[j] = float(t - Decimal(hi[j]))
    return hi, lo


TABLE_BITS = 6  # 64 entries: |r| <= ln(2) / 128, so that exp(r) - 1 needs only degree 6 and is tiny
TABLE_HI, TABLE_LO = _table_of_2_to_the(1 << TABLE_BITS)
TABLE_MASK = (1 << TABLE_BITS) - 1
INV_C = 92.33248261689366  # 64 / ln 2
C_HI = 0.010830424696905538  # ln(2) / 64 to 32 significant bits: n * C_HI is exact for |n| < 2^21
C_LO = -6.563929801064195e-13  # ln(2) / 64 - C_HI


@jit(fastmath=frozenset({"contract"}))
def exp_tail(r: Any) -> Any:
    """``(exp(r) - 1 - r) / r^2`` for ``|r| <= ln(2) / 128``: ``1/2 + r/6 + r^2/24 + r^3/120 + r^4/720``,
    Horner (the next term, ``r^5 / 5040``, is below ``2^-65`` of ``exp(r)``)."""
    p = 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    return p * r + 0.5


@jit(fastmath=frozenset({"contract"}))
def exp64_table(hi: Any, lo: Any) -> tuple[Any, Any, Any]:
    """``exp(hi + lo) = (big + small) * 2^k`` of a float64 pair (``|lo| <= ulp(hi) / 2``, as TwoSum gives):
    ``(big, small, k)``, ``big + small`` within about ``2^-60`` of it, relatively, and ``1 <= big < 2``.

    :func:`exp64` rounds at every Horner step of a polynomial on ``|r| <= 0.35`` and ends within 1 ulp;
    here the reduction goes 64 times further, to ``|r| <= ln(2) / 128``, with a table:

    1. ``n = round(x * 64 / ln 2)``, ``x = hi + lo = n ln(2) / 64 + r``: ``hi - n C_HI`` is exact, and
       ``- n C_LO + lo`` are roundings of numbers near 2^-60;
    2. ``exp(r) - 1 = q``, degree 6 (truncation below ``r^7 / 7! < 2^-65``), tiny: its rounding errors
       are far below an ulp of the result;
    3. ``exp(x) = 2^(n // 64) * 2^(j / 64) * (1 + q)``, ``j = n mod 64``, with ``2^(j / 64)`` a pair from
       the table: ``big = T_hi`` and ``small = T_hi q + T_lo``, and ``k = n // 64``.

    Edges as :func:`exp64`: the clamp is on ``hi``, and a clamped ``hi`` drops ``lo`` (the TwoSum error of a
    huge difference is itself huge, but the result is 0 or inf either way)."""
    inside = -746.0 <= hi <= 710.0  # nan: not inside, and passes the clamps below
    x = -746.0 if hi < -746.0 else hi
    x = 710.0 if hi > 710.0 else x
    n = (x * INV_C + ROUND_64) - ROUND_64  # round(x * 64 / ln 2)
    r = ((x - n * C_HI) - n * C_LO) + (lo if inside else 0.0)  # |r| <= ln(2) / 128 + a little
    q = r + (r * r) * exp_tail(r)  # exp(r) - 1
    k = np.int64(n)
    j = k & np.int64(TABLE_MASK)
    t_hi = TABLE_HI[j]
    return t_hi, t_hi * q + TABLE_LO[j], np.float64(k >> np.int64(TABLE_BITS))


@jit(fastmath=frozenset({"contract"}))
def exp32_array(x: Any, out: Any) -> None:
    """``out[i] = exp32(x[i])`` over 1-D float32 arrays (for tests and the benchmark's exp floor)."""
    for i in range(x.shape[0]):
        out[i] = exp32(x[i])


@jit(fastmath=frozenset({"contract"}))
def exp64_array(x: Any, out: Any) -> None:
    """``out[i] = exp64(x[i])`` over 1-D float64 arrays (for tests and the benchmark's exp floor)."""
    for i in range(x.shape[0]):
        out[i] = exp64(x[i])


@jit(fastmath=frozenset({"contract"}))
def exp64_pair_array(hi: Any, lo: Any, out: Any) -> None:
    """``out[i] = exp(hi[i] + lo[i])`` over 1-D float64 arrays, :func:`exp64_table`'s pair rounded once (for
    tests: within 0.51 ulp)."""
    for i in range(hi.shape[0]):
        big, small, k = exp64_table(hi[i], lo[i])
        out[i] = scale64(big + small, k)


# ---------------------------------------------------------------- by dtype, chosen when a kernel compiles


def exp_of(x: Any) -> Any:
    """``exp32(x)`` for a float32, ``exp64(x)`` for a float64 (inside compiled code only)."""
    raise NotImplementedError("exp_of is for compiled code")


@overload(exp_of, strict=False)
def _exp_of(x: Any) -> Any:
    if x == types.float32:
        return lambda x: exp32(x)
    return lambda x: exp64(x)


def is_float32(a: Any) -> bool:
    """Whether an array is float32 (inside compiled code only): a constant per compiled specialization."""
    raise NotImplementedError("is_float32 is for compiled code")


@overload(is_float32, strict=False)
def _is_float32(a: Any) -> Any:
    answer = a.dtype == types.float32
    return lambda a: answer
