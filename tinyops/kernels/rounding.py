"""The rounding decision and the double-double fallback of the 'accurate' row kernels, compiled.

Every output of a float32 row is computed in float64 (``v``) together with a bound ``err`` on
``|v - exact|``; if ``v - err`` and ``v + err`` round to the same float32, so does the exact value (rounding
is monotone), and that float32 is the correctly rounded result (:func:`decided32`). Otherwise the row is
computed again as float64 rows are, in pairs of float64 numbers (the second tier: each exp an unrounded
pair, the sum with every rounding error carried, ``log1p(r)`` and each output as pairs, within about
``2^-55`` of the exact values, a bound 100 times smaller), and the outputs decided again; if some still
are not, the row is computed in double-double (:mod:`tinyops.kernels.dd`), whose error is below
``2**-88`` of the terms, and that value is rounded (:func:`round_dd32`). docs/derivations.md derives the
bounds; the constants:

    u = 2^-53                  the float64 unit roundoff
    EXP_ERR   = 2u             exp64 (measured: at most 1.23 u over 3e6 arguments)
    LOG1P_ERR = 2u             libm's log1p and expm1 (measured: at most 1.1 u)
    SUM_ERR   = (BLOCK + 1) u  the row sum: blocks of BLOCK entries summed in any order ((BLOCK - 1) u),
                               the block sums added by Neumaier's compensated sum (2u)
    R_ERR  = EXP_ERR + SUM_ERR + u           relative error of r = sum_{j != a} exp(x_j - m)
    L_ERR  = R_ERR + LOG1P_ERR + 2u          relative error of log1p(r) (r / (1 + r) <= log1p(r))

so that, with ``L = log1p(r)`` and ``rho = r / (1 + r)``,

    lse = m + L, loss = (m - x_t) + L, log_softmax_j = (x_j - m) - L:   err = L_ERR * L + 2u |v|
    softmax_j = e_j / (1 + r), g * e_j / (1 + r):                       err = (EXP_ERR + R_ERR rho + 5u) |v|
    g * (softmax_t - 1) = g * expm1(-loss):                             err = TARGET_ERR |v|,
                                                        TARGET_ERR = L_ERR + LOG1P_ERR + 4u

(the ``2u |v|`` and the extra ``u``'s cover the last float64 rounding and the rounding of ``v +- err``).
The second tier's outputs are pairs, never rounded to float64, decided by :func:`decided_dd32`:

    r from sum_without_max64: within 2^-56 (each exp pair within 2^-58 of the exact exp, the test of
               exp64_pair_array's 0.51 ulp; TwoSum exact; the carries' roundings far smaller)
    L_PAIR_ERR = 2^-55   log1p(r) from log1p_pair (tested within 2^-56), with r's error
    E_PAIR_ERR = 2^-55   an entry g e_j / (1 + r) from entry_pair: the exp's, r's and the quotient's errors

    lse, loss, log_softmax_j:   err = L_PAIR_ERR * L
    softmax_j, g * e_j / (1 + r): err = E_PAIR_ERR |v|

float64 rows have no wider type for the decision. They carry pairs instead: each exp an unrounded pair,
the sum with every rounding error kept (:func:`sum_without_max64`), ``log1p(r)`` a pair
(:func:`log1p_pair`), and each output rounded once from pairs. Rows whose exps fall below the normal
range (``r < 2**-960``, where each exp keeps only its absolute precision) are redone in double-double; a
logsumexp that cancels (``m < 0`` and ``L > |m + L| / 4``), whose result can be as small as float64's own
rounding of ``|m|``, is computed in triple-double (:mod:`tinyops.kernels.td`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import dd
from ._numba import SUM_FLAGS, jit
from .exp import (
    C_HI,
    C_LO,
    INV_C,
    TABLE_BITS,
    TABLE_HI,
    TABLE_LO,
    TABLE_MASK,
    bits_of_f64,
    exp64,
    exp64_table,
    exp_tail,
    fma64,
    is_float32,
    scale64,
)

# entries per block of a row sum. The sum is vectorized within a block and its bound grows with the block,
# (BLOCK - 1) u: blocks of 8 to 32 keep the bound small but made the (1024, 8192) float32 forward 1.5 to 1.7
# times slower than blocks of 64 (measured, medians); a row the bound leaves undecided is computed again
# in pairs instead (the second tier), which the fallback counts show is rare.
BLOCK = 64
U = 2.0**-53
EXP_ERR = 2 * U
LOG1P_ERR = 2 * U
SUM_ERR = (BLOCK + 1) * U
R_ERR = EXP_ERR + SUM_ERR + U
L_ERR = R_ERR + LOG1P_ERR + 2 * U
TARGET_ERR = L_ERR + LOG1P_ERR + 4 * U  # g * expm1(-loss), relative
L_PAIR_ERR = 2.0**-55  # the second tier (see above)
E_PAIR_ERR = 2.0**-55
DD_ERR = 2.0**-88  # the double-double evaluation, relative to the largest term it adds
TINY_R = 2.0**-960  # below this, r is a sum of exps that lost their relative precision (float64 rows)
DD_SCALE = 900  # such a row is summed with every exp scaled by 2^DD_SCALE (below 2^996, the reference's Dekker split)

# per row, how its outputs were decided: by the float64 values (NONE), by the second tier's pairs (PAIRS),
# in double-double (DD), or left open even by the double-double value (UNDECIDED, never seen); a float64
# row whose logsumexp cancels has it in triple-double (TRIPLE, tinyops.kernels.td)
FELL_NONE, FELL_DD, FELL_UNDECIDED, FELL_PAIRS, FELL_TRIPLE = 0, 1, 2, 3, 4


# ----------------------------------------------------------------------------- the decision


@jit()
def decided32(v: float, err: float) -> Any:
    """Whether every number within ``err`` of ``v`` rounds to the same float32 (nan and inf: yes)."""
    if not math.isfinite(v):
        return True
    return np.float32(v - err) == np.float32(v + err)


LOW29 = (1 << 29) - 1  # the float64 mantissa bits below a float32's last one
HALF29 = 1 << 28  # their pattern at a float32 midpoint
TINY32 = 2.0**-126  # below this, float32 numbers are subnormal


@jit()
def midpoint_reach(rel: float) -> Any:
    """A relative error bound ``rel`` in units of the float64 last place, for :func:`near_midpoint32`.

    ``|v| < 2^(e+1)`` and ``ulp(v) = 2^(e-52)``, so ``rel |v| < rel 2^53`` ulps of v; one more covers the
    rounding of the shift in :func:`near_midpoint32`. Valid while the result is below ``2^27``."""
    return np.int64(math.ceil(rel * 2.0**53)) + np.int64(1)


@jit(inline=True)
def near_midpoint32(v: float, reach: Any) -> Any:
    """Whether ``v`` may not decide its float32 rounding: a float32 midpoint lies within ``reach`` float64
    ulps of it (:func:`midpoint_reach`), or ``|v|`` is below float32's normal range (where the midpoints
    are elsewhere; the caller decides those with :func:`decided32`). The integer form of
    ``not decided32(v, rel |v|)``, branch-free, so a loop calling it vectorizes.

    The float32 midpoints of v's binade are the float64 numbers whose low 29 mantissa bits are ``2^28``;
    those of the neighbouring binades are ``2^27`` ulps away or more. inf is decided (low bits 0); a nan
    may count as undecided, which only costs its row a second look."""
    low = bits_of_f64(v) & np.int64(LOW29)
    return (abs(low - np.int64(HALF29)) <= reach) | (abs(v) < TINY32)


@jit()
def round_dd32(h: float, lo: float) -> Any:
    """The float32 nearest to the double-double ``h + lo`` (``h = fl(h + lo)``).

    ``np.float32(h)`` is it unless ``h`` is exactly halfway between two float32 numbers, where the sign
    of ``lo`` says which side the value is on."""
    y = np.float32(h)
    d = h - np.float64(y)  # exact
    if d != 0.0 and lo != 0.0 and (lo > 0.0) == (d > 0.0):
        n = np.float32(h + d)  # the neighbour beyond h, if h is the midpoint
        if np.float64(n) - h == d:
            return n
    return y


@jit()
def dd_sum_err(a: float, log1p_r: float) -> float:
    """The error of ``a +- log1p(r)`` in double-double, ``a`` an exact float64: ``log1p(r)``'s own relative
    error, and the rounding of the addition, below ``2^-104`` of the smaller term (a sum's rounding error
    never exceeds its smaller operand)."""
    return DD_ERR * log1p_r + 2.0**-100 * min(abs(a), log1p_r)


@jit()
def decided_dd32(h: float, lo: float, err: float) -> Any:
    """Whether the double-double ``h + lo``, within ``err`` of the exact value, decides its float32 rounding.

    The two ends ``h + (lo -+ err)`` are renormalized first (TwoSum): :func:`round_dd32` reads the low part
    only as a tie-break, and ``err`` may be far above an ulp of ``h`` (a logsumexp that cancels to 1e-13
    beside an error bound of 1e-16)."""
    if not math.isfinite(h):
        return True
    ah, al = dd.two_sum(h, lo - err)
    bh, bl = dd.two_sum(h, lo + err)
    return round_dd32(ah, al) == round_dd32(bh, bl)


# ----------------------------------------------------------------------------- the fast row sum


@jit(fastmath=SUM_FLAGS)
def sum_without_max(row: Any, m: float, e: Any) -> Any:
    """``r = sum_{j != a} exp(x_j - m)`` as ``(hi, lo)``: the exps below the max ``m`` (finite) plus the ties but one.

    float32 rows (``x_j - m`` is exact in float64): summed in blocks of :data:`BLOCK` entries (each block
    vectorized), the block sums added with their rounding errors carried (:func:`add_compensated`); ``lo``
    is the carried error. If ``e`` is an array (float64, at least n entries), each ``exp(x_j - m)`` is kept
    in it for the pass that writes the softmax. float64 rows: :func:`sum_without_max64` (``e`` unused).
    """
    if not is_float32(row):
        return sum_without_max64(row, m)
    total, comp = 0.0, 0.0  # a nan entry (x_j - m != 0) makes them nan
    ties = 0  # entries equal to the max
    n = row.shape[0]
    full = n - n % BLOCK
    for j0 in range(0, full, BLOCK):  # full blocks: a fixed trip count, which the compiler unrolls
        s, k = block_sum(row, m, e, j0, j0 + BLOCK)
        ties += k
        total, comp = add_compensated(total, comp, s)
    if full < n:
        s, k = block_sum(row, m, e, full, n)
        ties += k
        total, comp = add_compensated(total, comp, s)
    hi, lo = dd.two_sum(total, ties - 1.0)  # the other maxima, exp(0) = 1 each
    return dd.fast_two_sum(hi, lo + comp)


@jit(fastmath=SUM_FLAGS, inline=True)
def block_sum(row: Any, m: float, e: Any, j0: int, j1: int) -> Any:
    """``(sum, ties)`` over entries ``j0 <= j < j1`` of a float32 row for :func:`sum_without_max`: the exps
    below the max, how many entries equal it."""
    s = 0.0
    ties = 0
    for j in range(j0, j1):
        d = np.float64(row[j]) - m  # exact: two float32 differ by a float64
        e_j = exp64(d)
        if e is not None:
            e[j] = e_j
        s += e_j if d != 0.0 else 0.0
        ties += d == 0.0
    return s, ties


LANES = 32  # running sums of a float64 row sum: entries j0 + k of each block of 32 go to lane k (a vector loop)


@jit(fastmath=frozenset({"contract"}))
def sum_without_max64(row: Any, m: float) -> Any:
    """:func:`sum_without_max` of a float64 row, to about ``2^-60`` relative: each exp an unrounded pair
    (:func:`~tinyops.kernels.exp.exp64_table`), its larger part added by TwoSum, its smaller part and the
    TwoSum errors carried apart, in :data:`LANES` running sums (entry ``j`` in lane ``j % LANES``; a row
    shorter than that in one) added in a fixed order."""
    n = row.shape[0]
    lanes = LANES if n >= LANES else 1
    h = np.zeros(lanes)
    c = np.zeros(lanes)
    ties = 0
    full = n - n % lanes
    for j0 in range(0, full, lanes):
        for k in range(lanes):  # one step of every lane: no dependence between them
            big, small, tie = exp_term64(row, m, j0 + k)
            h[k], c[k] = add_term64(h[k], c[k], big, small)
            ties += tie
    for j in range(full, n):
        big, small, tie = exp_term64(row, m, j)
        h[j - full], c[j - full] = add_term64(h[j - full], c[j - full], big, small)
        ties += tie
    hi, lo = h[0], c[0]
    for k in range(1, lanes):
        hi, lo = dd.dd_add(hi, lo, h[k], c[k])
    return dd.dd_add(hi, lo, ties - 1.0, 0.0)  # the other maxima, exp(0) = 1 each


@jit(inline=True)
def exp_term64(row: Any, m: float, j: int) -> Any:
    """Entry j of :func:`sum_without_max64`: ``exp(x_j - m)`` as ``(big, small)`` ((0, 0) at a tie), and
    whether it is a tie."""
    hi = row[j] - m
    lo = two_diff_lo(row[j], m, hi)
    big, small, k = exp64_table(hi, lo)
    tie = hi == 0.0 and lo == 0.0
    return (0.0 if tie else scale64(big, k)), (0.0 if tie else scale64(small, k)), np.int64(tie)


@jit(inline=True)
def add_term64(h: float, c: float, big: float, small: float) -> Any:
    """``h + big`` by TwoSum, its rounding error and ``small`` added to the carry ``c``."""
    s, err = dd.two_sum(h, big)
    return s, c + (err + small)


@jit()
def one_plus(rh: float, rl: float) -> Any:
    """``1 + r`` of a pair ``r = rh + rl`` (r >= 0) as a pair: the softmax's divisor, unrounded."""
    s, e = dd.two_sum(1.0, rh)
    return dd.fast_two_sum(s, e + rl)


@jit()
def pair_quotient(g: float, dh: float, dl: float) -> Any:
    """``g / (dh + dl)`` as a pair ``(qh, ql)``, to about ``2^-100`` relative: ``qh = fl(g / dh)``, and the
    remainder ``g - qh dh`` is exact by one fused multiply-add."""
    qh = g / dh
    if not math.isfinite(qh):  # g or the divisor not finite: no remainder to carry
        return qh, 0.0
    return qh, (fma64(-qh, dh, g) - qh * dl) / dh


@jit()
def expm1_pair(y: float) -> Any:
    """``exp(y) - 1`` for ``0 <= y <= 700`` as a pair ``(h, l)``, within about ``2^-60`` of it, relatively
    (what :func:`log1p_pair`'s Newton step needs).

    As :func:`~tinyops.kernels.exp.exp64_table`, ``y = n ln(2) / 64 + r``, but ``r`` is kept as a pair
    (``y - n C_HI`` is exact, ``- n C_LO`` adds its rounding error ``rr``) and ``exp(r) - 1 = r + (rr + r^2
    P(r))``. Then, with ``2^(j/64) = T_hi + T_lo`` and ``k = n // 64``,

        exp(y) - 1 = (2^k T_hi - 1) + 2^k T_hi r + 2^k (T_hi (rr + r^2 P) + T_lo (1 + r))

    where ``2^k T_hi - 1`` is exact (``2^k T_hi >= 1``, an integer number of its ulps), ``T_hi r`` is an
    exact pair, and only the last, small term rounds."""
    n = np.rint(y * INV_C)  # round(y * 64 / ln 2), >= 0
    r, rr = dd.two_sum(y - n * C_HI, -(n * C_LO))  # y - n C_HI exact
    ql = rr + (r * r) * exp_tail(r)  # expm1(r + rr) = r + ql
    k = np.int64(n)
    j = k & np.int64(TABLE_MASK)
    t_hi = TABLE_HI[j]
    two_k = scale64(1.0, np.float64(k >> np.int64(TABLE_BITS)))
    ph, pe = dd.two_prod(t_hi, r)
    s, e = dd.two_sum(two_k * t_hi - 1.0, two_k * ph)  # both exact
    return dd.fast_two_sum(s, e + two_k * (pe + t_hi * ql + TABLE_LO[j] * (1.0 + r)))


@jit()
def log1p_pair(rh: float, rl: float) -> Any:
    """``log1p(r)`` of a pair ``r = rh + rl >= 0`` as a pair ``(lh, ll)``, within about ``2^-58`` relatively:
    libm's ``y0 = log1p(rh)``, then one Newton step, ``log1p(r) = y0 + (r - expm1(y0)) / exp(y0)`` to
    second order in a correction of about ``2^-53 y0``, with ``expm1(y0)`` a pair
    (:func:`expm1_pair`); ``rh - expm1(y0)`` is exact (the two are within a factor of 2)."""
    y0 = math.log1p(rh)
    eh, el = expm1_pair(y0)
    d = ((rh - eh) + (rl - el)) / (1.0 + eh)
    return dd.fast_two_sum(y0, d)


@jit()
def add_pairs(ah: float, al: float, bh: float, bl: float) -> Any:
    """``(ah + al) + (bh + bl)`` of two pairs as a pair ``(h, l)``, ``h`` the sum rounded once (TwoSum of the
    high parts, the rest added to its error); an infinite ``ah + bh`` is ``(ah + bh, 0)``. Not inlined by
    numba: its operations keep their own (no) fastmath flags in a caller that reassociates."""
    s, e = dd.two_sum(ah, bh)
    if not math.isfinite(s):
        return s, 0.0
    return dd.fast_two_sum(s, e + (al + bl))


@jit(inline=True)
def entry_parts(row: Any, j: int, m: float, qh: float, ql: float) -> Any:
    """``exp(x_j - m) * (qh + ql) = (big qh + rest) 2^k``: ``(big, rest, k)``, ``rest`` the small products.
    ``x_j - m`` by TwoSum, its exp an unrounded pair (:func:`~tinyops.kernels.exp.exp64_table`)."""
    hi = row[j] - m
    big, small, k = exp64_table(hi, two_diff_lo(row[j], m, hi))
    return big, big * ql + small * qh, k


@jit()
def entry_rounded(row: Any, j: int, m: float, qh: float, ql: float) -> Any:
    """``exp(x_j - m) * (qh + ql)`` rounded once to float64, within about ``0.5 ulp + 2^-55`` relatively (the
    product of the two larger parts fused with the rest): the softmax (``q = 1 / (1 + r)``) and the
    cross-entropy gradient (``q = g / (1 + r)``) of float64 rows."""
    big, rest, k = entry_parts(row, j, m, qh, ql)
    return scale64(fma64(big, qh, rest), k)


@jit()
def entry_pair(row: Any, j: int, m: float, qh: float, ql: float) -> Any:
    """:func:`entry_rounded` unrounded, as a pair ``(h, l)``, within about ``2^-55`` relatively (the second
    tier of float32 rows): the product of the two larger parts is exact by one fused multiply-add."""
    big, rest, k = entry_parts(row, j, m, qh, ql)
    p, pe = dd.two_prod(big, qh)
    h, lo = dd.fast_two_sum(p, pe + rest)
    return scale64(h, k), scale64(lo, k)


@jit()
def two_diff_lo(a: float, b: float, hi: float) -> float:
    """TwoSum: the rounding error of ``hi = fl(a - b)``, so that ``hi + lo == a - b`` exactly (0 if not finite)."""
    bb = hi - a
    lo = (a - (hi - bb)) + (-b - bb)
    return lo if math.isfinite(lo) else 0.0


@jit()
def add_compensated(total: float, comp: float, s: float) -> Any:
    """``total + s`` by Neumaier's compensated sum: the new total and the running rounding error ``comp``."""
    t = total + s
    if abs(total) >= abs(s):
        comp += (total - t) + s
    else:
        comp += (s - t) + total
    return t, comp


# ----------------------------------------------------------------------------- the double-double row


@jit()
def d_of(row: Any, j: int, m: float) -> Any:
    """``x_j - m`` exactly, as a double-double."""
    if is_float32(row):
        return np.float64(row[j]) - m, 0.0
    hi = row[j] - m
    return hi, two_diff_lo(row[j], m, hi)


@jit()
def dd_sum_without_max(row: Any, m: float, scale: int) -> Any:
    """``r * 2^scale`` in double-double: :func:`sum_without_max` with every exp from :func:`dd.dd_exp`."""
    rh, rl = 0.0, 0.0
    ties = 0
    for j in range(row.shape[0]):
        dh, dl = d_of(row, j, m)
        if dh == 0.0 and dl == 0.0:
            ties += 1
            continue
        eh, el = dd.dd_exp(dh, dl, scale)
        rh, rl = dd.dd_add(rh, rl, eh, el)
    return dd.dd_add(rh, rl, math.ldexp(ties - 1.0, scale), 0.0)


@jit()
def dd_row(row: Any, m: float, r_fast: float) -> Any:
    """The double-double pieces of a row: ``(scale, rh, rl, lh, ll, dh, dl)``.

    ``r * 2^scale = rh + rl`` (scale is :data:`DD_SCALE` when ``r_fast`` is below :data:`TINY_R`, else 0),
    ``log1p(r) = lh + ll`` and the softmax's divisor ``1 + r = dh + dl``."""
    scale = DD_SCALE if r_fast < TINY_R else 0
    rh, rl = dd_sum_without_max(row, m, scale)
    if scale == 0:
        lh, ll = dd.dd_log1p(rh, rl)
        dh, dl = dd.dd_add(1.0, 0.0, rh, rl)
    else:  # r < 2^-900: log1p(r) = r - r^2 / 2 = r to far below its last bit
        lh, ll = math.ldexp(rh, -scale), math.ldexp(rl, -scale)
        dh, dl = dd.fast_two_sum(1.0, lh)
    return scale, rh, rl, lh, ll, dh, dl


@jit()
def dd_exp_of(row: Any, j: int, m: float, scale: int) -> Any:
    """``exp(x_j - m) * 2^scale`` in double-double."""
    xh, xl = d_of(row, j, m)
    return dd.dd_exp(xh, xl, scale)
