"""The softmax family: logsumexp, softmax, log_softmax, and the seed's naive softmax.

Shapes: ``x`` has any shape; ``axis`` (int, tuple of ints, or None for all axes; default -1) is
reduced. In the loss these are (N, C) with axis 1. ``R`` below stands for the reduced shape:
``x``'s shape with the reduced axes set to 1. A 0-D ``x`` counts as one element along axis 0 (or -1),
as in torch.

**Accuracy.** Every stable op here works on rows: the reduced axes are moved last and flattened, so
each slice is a row ``x_1..x_n`` with its largest entry ``m = x_a`` (the first one, on ties). Then

    logsumexp(x) = m + log1p(r),   r = sum_{j != a} exp(x_j - m)     (0 <= r <= n - 1)

The largest term, ``exp(0) = 1``, is kept out of the sum: when it dominates (a confident row),
``log(1 + r)`` of a rounded ``1 + r`` would lose the bits of ``r`` that the result depends on, while
``log1p(r)`` keeps them. From the same pieces: ``softmax_j = exp(x_j - m) / (1 + r)`` (``1 / (1 + r)``
at ``a``) and ``log_softmax_j = (x_j - m) - log1p(r)``, a sum of two terms <= 0, so nothing cancels.

float32 (and float16) inputs are computed in float64: ``x_j - m`` is then exact (two float32 values
differ by a float64 number, unless one is so much smaller that the difference rounds far below what
matters), and one rounding to float32 at the end leaves the result within about 1 ULP. A bound on each
float64 value's error then decides whether that rounding is the correct one; the rows where it does not
(a value next to a float32 midpoint, or a ``logsumexp`` close to 0 next to ``m < 0``, where
``m + log1p(r)`` cancels) are computed again in double-double (:func:`lse_rows`, :func:`dd_rows`): float32
results are correctly rounded. float64 inputs
have no wider type, so ``x_j - m`` is formed exactly as a sum of two float64 numbers ``hi + lo``
(TwoSum) and ``exp(hi + lo) = exp(hi) * (1 + lo)`` to first order: without it, ``x_j - m`` of size
700 would carry a rounding error of up to 700 * eps / 2 into ``exp`` and so into a tiny probability.

**Edge cases**, as torch: a slice of all ``-inf`` gives ``logsumexp = -inf`` and nan softmax and
log_softmax; a ``+inf`` gives ``logsumexp = +inf`` and nan softmax and log_softmax; nan propagates;
an empty reduction gives ``logsumexp = -inf`` (and empty softmax); ``-inf`` entries elsewhere have
probability 0 and log-probability ``-inf``. Such slices (a non-finite maximum) are never shifted by
their maximum (``-inf - -inf`` is nan); their outputs are set by the rules above, explicitly.

**Two layers.** The forwards and value functions take ``backend``: ``'compiled'`` (the default) runs the
row kernels of :mod:`tinyops.kernels.softmax` on the same rows (the same formulas in one loop nest per
row, float32 and float64, ``threads`` rows at a time), ``'reference'`` runs the NumPy in this file, the
definition that the kernels are tested against. float16 inputs take the reference either way. The cache
keeps the backend, so softmax's and log_softmax's backward run in the layer of their forward.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import (
    Axis,
    Backend,
    as_float_array,
    check_backend,
    check_cache,
    check_dout,
    check_threads,
    normalize_axis,
)
from . import _dd

Array = npt.NDArray[Any]


# ----------------------------------------------------------------------------- the row core


class ShiftedRows(NamedTuple):
    """The pieces of ``logsumexp`` of each row of an (R, n) array, n >= 1, in float64.

    ``d = x - m`` is ``d_hi + d_lo`` exactly (``d_lo`` is None for float32/float16 rows, where
    ``d_hi`` is exact); ``e = exp(d)``; ``r`` is the sum of ``e`` without one largest term; the rows
    whose maximum is not finite (``bad``, None when there is none) were shifted by 0 and need the
    explicit rules.
    """

    m: Array  # (R,) float64: the row max as is (nan, +inf or -inf on bad rows)
    d_hi: Array | None  # (R, n) float64: x - m (x - 0 on bad rows); None unless asked for
    d_lo: Array | None  # (R, n) float64 for float64 rows: the rounding error of d_hi, else None
    e: Array  # (R, n) float64: exp(d), 1 at the maxima
    r: Array  # (R,) float64: sum_{j != a} exp(x_j - m), a one index of the max
    log1p_r: Array  # (R,) float64: log1p(r)
    bad: npt.NDArray[np.bool_] | None  # (R,) rows with a non-finite max, or None
    x: Array | None = None  # (R, n) the rows themselves (what the double-double fallback recomputes from)


def shifted_rows(x: Array, *, keep_d: bool = False) -> ShiftedRows:
    """Compute :class:`ShiftedRows` of the rows of ``x`` (R, n), n >= 1, float16/32/64; x is not written.

    ``keep_d``: keep ``d = x - m`` (log_softmax needs it); otherwise ``exp`` overwrites it in place and
    ``d_hi`` is None.

    Run it under ``np.errstate(over=, invalid=, divide="ignore")``: the rows with a non-finite max may
    overflow or make nan on the way (their outputs are set apart by the caller).
    """
    rows = np.arange(x.shape[0])  # (R,)
    a = np.argmax(x, axis=1)  # (R,) the first largest entry; the first nan if the row holds one
    m = x[rows, a].astype(np.float64)  # (R,), so a row holding a nan has m = nan
    bad = None
    shift = m
    if not np.isfinite(m).all():
        bad = ~np.isfinite(m)  # (R,)
        shift = np.where(bad, 0.0, m)  # guard: a non-finite max is not subtracted (inf - inf = nan)
    d_hi = np.subtract(x, shift[:, None], dtype=np.float64)  # (R, n), <= 0 on good rows
    d_lo = None
    if x.dtype == np.float64:  # TwoSum: d_hi + d_lo == x - shift exactly
        bb = d_hi - x  # (R, n)
        d_lo = (x - (d_hi - bb)) + (-shift[:, None] - bb)  # (R, n)
        np.nan_to_num(d_lo, copy=False, nan=0.0, posinf=0.0, neginf=0.0)  # from infinite x: no correction
    e = np.exp(d_hi, out=None if keep_d else d_hi)  # (R, n); on bad rows it may overflow: set apart
    if d_lo is not None:
        e += e * d_lo  # exp(hi + lo) = exp(hi) * (1 + lo) + O(lo^2), |lo| <= ulp(hi) / 2
    # r: the sum without the largest term, exp(0) = 1, which would round the small terms away
    e[rows, a] = 0.0
    r = e.sum(axis=1)  # (R,); other maxima (ties) each add their exp(0) = 1
    e[rows, a] = 1.0
    log1p_r = np.log1p(r)  # (R,)
    return ShiftedRows(m, d_hi if keep_d else None, d_lo, e, r, log1p_r, bad, x)


def softmax_rows(s: ShiftedRows, out: Array | None = None) -> Array:
    """The (R, n) softmax of the rows, ``e / (1 + r)``, nan on bad rows; into ``out`` (any float dtype) if given.

    float32 ``out`` of float32 rows: correctly rounded (the rows whose roundings the float64 quotients do
    not decide are redone in double-double, :func:`softmax_rows_decided`).

    Run it under ``np.errstate(invalid="ignore")`` (inf / inf on a row holding +inf, then set to nan).
    """
    return softmax_rows_decided(s, out)[0]


# ----------------------------------------------------------------------------- deciding the rounding
#
# Every float64 value v above comes with a bound err on |v - exact| (docs/derivations.md derives them; the
# compiled kernels use the same, tinyops.kernels.rounding, with their own row sum). A float32 result is
# decided when v - err and v + err round to the same float32: the exact value, between them, rounds there
# too. The rows where some result is not decided are computed again in double-double (tinyops.ops._dd).
# float64 rows have no wider type to decide with: they are redone where float64 is known to lose digits
# (logsumexp m + log1p(r) cancelling, and exps below the normal range, r < 2^-960).

U = 2.0**-53  # float64's unit roundoff
EXP_ERR = 2 * U  # np.exp, relative (measured: at most 1.17 u)
LOG1P_ERR = 2 * U  # np.log1p, np.expm1, relative (measured: at most 1.1 u)
DD_ERR = 2.0**-88  # the double-double evaluation, relative to the largest term it adds
TINY_R = 2.0**-960
DD_SCALE = 900  # rows with r < TINY_R are summed with every exp scaled by 2^DD_SCALE (below 2^996: Dekker's split)


def row_errors(n: int) -> tuple[float, float]:
    """``(R_ERR, L_ERR)``: relative error bounds of ``r`` and of ``log1p(r)`` for rows of n entries.

    NumPy sums a contiguous row pairwise: up to 8 terms one after the other ((n - 1) u), up to 128 in 8
    accumulators of at most 16 terms, their tree and a tail of up to 7 (25 u), one u more per halving
    above; plus exp's error and the ties added."""
    pairwise = n - 1 if n <= 8 else 25 + max(0, math.ceil(math.log2(n / 128)))
    r_err = EXP_ERR + (pairwise + 1) * U
    return r_err, r_err + LOG1P_ERR + 2 * U


def undecided32(v: Array, err: Array) -> npt.NDArray[np.bool_]:
    """Where some number within ``err`` of the float64 ``v`` rounds to another float32 than ``v`` (not at inf/nan)."""
    with np.errstate(invalid="ignore", over="ignore"):
        out: npt.NDArray[np.bool_] = np.isfinite(v) & (np.float32(v - err) != np.float32(v + err))
    return out


def round_dd32(h: Array, lo: Array) -> Array:
    """The float32 nearest to the double-double ``h + lo``: ``float32(h)``, unless h is a midpoint of two
    float32 numbers and ``lo`` points past it."""
    with np.errstate(invalid="ignore", over="ignore"):
        y = h.astype(np.float32)
        d = h - y  # exact
        n = (h + d).astype(np.float32)  # the neighbour beyond h, if h is the midpoint
        past = (d != 0) & (lo != 0) & ((lo > 0) == (d > 0)) & (n.astype(np.float64) - h == d)
    return np.where(past, n, y)


def decided_dd32(h: Array, lo: Array, err: Array) -> npt.NDArray[np.bool_]:
    """Where the double-double ``h + lo``, within ``err`` of the exact value, decides its float32 rounding.

    The two ends are renormalized first (TwoSum): :func:`round_dd32` reads the low part only as a
    tie-break, and ``err`` may be far above an ulp of ``h`` (a logsumexp that cancels)."""
    with np.errstate(invalid="ignore", over="ignore"):
        below, above = _dd.two_sum(h, lo - err), _dd.two_sum(h, lo + err)
    out: npt.NDArray[np.bool_] = ~np.isfinite(h) | (round_dd32(*below) == round_dd32(*above))
    return out


class DDRows(NamedTuple):
    """Double-double pieces of k rows (the ones redone): each quantity as ``(hi, lo)`` float64 arrays."""

    scale: Array  # (k, 1) int: the exps are scaled by 2^scale (DD_SCALE on rows with r < TINY_R, else 0)
    d: tuple[Array, Array]  # (k, n) x - m, exactly
    e: tuple[Array, Array]  # (k, n) exp(x - m) * 2^scale
    r: tuple[Array, Array]  # (k,) sum_{j != a} exp(x_j - m) * 2^scale
    log1p_r: tuple[Array, Array]  # (k,)
    den: tuple[Array, Array]  # (k,) 1 + r


def dd_rows(x: Array, m: Array, r_fast: Array) -> DDRows:
    """:class:`DDRows` of the rows ``x`` (k, n) with finite maxima ``m`` (k,); ``r_fast`` (k,) the float64 ``r``."""
    k = x.shape[0]
    dh = np.subtract(x, m[:, None], dtype=np.float64)  # (k, n), exact for float32 rows
    dl = np.zeros_like(dh)
    if x.dtype == np.float64:
        with np.errstate(invalid="ignore"):
            dl = _dd.two_sum(x, -m[:, None])[1]  # TwoSum: dh + dl == x - m
        dl = np.where(np.isfinite(dl), dl, 0.0)
    scale = np.where(r_fast < TINY_R, DD_SCALE, 0)[:, None]  # (k, 1)
    eh, el = _dd.dd_exp(dh, dl, scale)  # (k, n)
    a = np.argmax(x, axis=1)  # (k,) one largest entry, left out of r
    rows = np.arange(k)
    th, tl = eh.copy(), el.copy()
    th[rows, a], tl[rows, a] = 0.0, 0.0
    while th.shape[1] > 1:  # pairwise, in double-double
        if th.shape[1] % 2:
            th, tl = np.pad(th, ((0, 0), (0, 1))), np.pad(tl, ((0, 0), (0, 1)))
        th, tl = _dd.dd_add(th[:, 0::2], tl[:, 0::2], th[:, 1::2], tl[:, 1::2])
    rh, rl = th[:, 0], tl[:, 0]  # (k,)
    tiny = scale[:, 0] > 0
    lh, ll = _dd.dd_log1p(np.where(tiny, 0.0, rh), np.where(tiny, 0.0, rl))
    sh, sl = np.ldexp(rh, -scale[:, 0]), np.ldexp(rl, -scale[:, 0])  # r < 2^-900: log1p(r) = r to its last bit
    lh, ll = np.where(tiny, sh, lh), np.where(tiny, sl, ll)
    den = _dd.dd_add(1.0, 0.0, np.where(tiny, 0.0, rh), np.where(tiny, 0.0, rl))
    den = np.where(tiny, 1.0, den[0]), np.where(tiny, sh, den[1])
    return DDRows(scale, (dh, dl), (eh, el), (rh, rl), (lh, ll), den)


def _redo_rows(s: ShiftedRows, redo: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.intp], DDRows]:
    assert s.x is not None
    k = np.flatnonzero(redo)
    return k, dd_rows(s.x[k], s.m[k], s.r[k])


def dd_sum_err(a: Array, log1p_r: Array) -> Array:
    """The error of ``a +- log1p(r)`` in double-double, ``a`` an exact float64: ``log1p(r)``'s own relative
    error, and the rounding of the addition, which is below ``2^-104`` of the smaller term (a sum's rounding
    error never exceeds its smaller operand): a result next to a float32 midpoint by ``a`` alone is decided
    by the sign of ``log1p(r)``."""
    out: Array = DD_ERR * log1p_r + 2.0**-100 * np.minimum(np.abs(a), log1p_r)
    return out


def _finish(vh: Array, vl: Array, dtype: np.dtype[Any], err: Array) -> tuple[Array, npt.NDArray[np.bool_]]:
    """Round a double-double result to dtype; and where it still leaves a float32 rounding open."""
    if dtype == np.float32:
        return round_dd32(vh, vl), ~decided_dd32(vh, vl, err)
    return vh.astype(dtype), np.zeros(vh.shape, bool)


def lse_rows(s: ShiftedRows) -> tuple[Array, Array]:
    """``(lse (R,) in x's dtype, fell (R,) int8)``: ``m + log1p(r)`` decided or redone; fell as the
    compiled kernels' (0: decided in float64, 1: redone in double-double, 2: still open after it).
    Bad rows are left to the caller."""
    assert s.x is not None
    dtype = s.x.dtype
    with np.errstate(invalid="ignore", over="ignore"):
        lse = s.m + s.log1p_r  # (R,)
        good = np.isfinite(s.m)
        if dtype == np.float32:
            l_err = row_errors(s.x.shape[1])[1]
            redo = good & undecided32(lse, l_err * s.log1p_r + 2 * U * np.abs(lse))
        elif dtype == np.float64:
            cancel = (s.m < 0) & (s.log1p_r > 0.25 * np.abs(lse))  # m + log1p(r) cancels
            redo = good & (cancel | ((s.r > 0) & (s.r < TINY_R)))
        else:
            redo = np.zeros(lse.shape, bool)
    redo = np.asarray(redo)
    out = lse.astype(dtype)
    fell = redo.astype(np.int8)
    if redo.any():
        k, dd = _redo_rows(s, redo)
        vh, vl = _dd.dd_add(s.m[k], 0.0, *dd.log1p_r)
        out[k], still = _finish(vh, vl, dtype, dd_sum_err(s.m[k], dd.log1p_r[0]))
        fell[k] += still
    return out, fell


def softmax_rows_decided(s: ShiftedRows, out: Array | None = None) -> tuple[Array, Array]:
    """:func:`softmax_rows` and ``fell`` (R,) int8 (see :func:`lse_rows`)."""
    den = 1.0 + s.r  # (R,)
    dtype = s.e.dtype if out is None else out.dtype
    f32 = dtype == np.float32 and s.x is not None and s.x.dtype == np.float32
    fell = np.zeros(s.r.shape, np.int8)
    if f32:
        assert s.x is not None
        p64 = s.e / den[:, None]  # (R, n) float64
        rel = EXP_ERR + row_errors(s.x.shape[1])[0] * (s.r / den) + 5 * U  # (R,)
        redo: npt.NDArray[np.bool_] = np.asarray(undecided32(p64, rel[:, None] * p64).any(axis=1))  # (R,)
        p: Array = p64.astype(np.float32) if out is None else out
        if out is not None:
            out[...] = p64
    else:
        p = np.divide(s.e, den[:, None], out=out, casting="same_kind")  # (R, n)
        redo = (s.r > 0) & (s.r < TINY_R)
        if dtype != np.float64 or s.x is None:
            redo[:] = False
    if s.bad is not None:
        redo &= ~s.bad
        p[s.bad] = np.nan  # all -inf: 0/0; a +inf: inf/inf (torch: the whole row is nan)
    if redo.any():
        k, dd = _redo_rows(s, redo)
        ph, pl = _dd.dd_div(*dd.e, dd.den[0][:, None], dd.den[1][:, None])  # (k, n)
        ph, pl = np.ldexp(ph, -dd.scale), np.ldexp(pl, -dd.scale)
        p[k], still = _finish(ph, pl, np.dtype(dtype), DD_ERR * np.abs(ph))
        fell[k] = 1 + still.any(axis=1)
    return p, fell


def log_softmax_rows(s: ShiftedRows) -> tuple[Array, Array]:
    """``(log_softmax (R, n) in x's dtype, fell (R,) int8)``: ``(x - m) - log1p(r)`` (``+ d_lo`` for
    float64), decided or redone; needs ``shifted_rows(x, keep_d=True)``. Bad rows are nan."""
    assert s.x is not None and s.d_hi is not None
    dtype = s.x.dtype
    y = s.d_hi - s.log1p_r[:, None]  # (R, n)
    if s.d_lo is not None:
        y += s.d_lo  # (x - m) = d_hi + d_lo exactly
    redo: npt.NDArray[np.bool_] = np.zeros(s.r.shape, bool)
    if dtype == np.float32:
        l_err = row_errors(s.x.shape[1])[1]
        redo = np.asarray(undecided32(y, (l_err * s.log1p_r)[:, None] + 2 * U * np.abs(y)).any(axis=1))
    elif dtype == np.float64:
        redo = (s.r > 0) & (s.r < TINY_R)
    if s.bad is not None:
        redo &= ~s.bad
        y[s.bad] = np.nan  # all -inf: -inf - -inf; a +inf: inf - inf (torch: the whole row is nan)
    out = y.astype(dtype)
    fell = redo.astype(np.int8)
    if redo.any():
        k, dd = _redo_rows(s, redo)
        with np.errstate(invalid="ignore"):
            vh, vl = _dd.dd_add(*dd.d, -dd.log1p_r[0][:, None], -dd.log1p_r[1][:, None])
        vh = np.where(np.isneginf(dd.d[0]), -np.inf, vh)  # a -inf entry: -inf
        vl = np.where(np.isneginf(dd.d[0]), 0.0, vl)
        out[k], still = _finish(vh, vl, dtype, dd_sum_err(dd.d[0], dd.log1p_r[0][:, None]))
        fell[k] += still.any(axis=1)
    return out, fell


# ----------------------------------------------------------------------------- from any shape to rows and back


def _to_rows(x: Array, axes: tuple[int, ...]) -> tuple[Array, tuple[int, ...]]:
    """Move ``axes`` last and flatten them: (R, n) rows and the moved shape (to undo it)."""
    k = len(axes)
    last = tuple(range(x.ndim - k, x.ndim))
    moved = x if axes == last else np.moveaxis(x, axes, last)  # already last (axis -1): nothing to move
    n = math.prod(x.shape[i] for i in axes)
    return moved.reshape(math.prod(moved.shape[: x.ndim - k]), n), moved.shape


def _from_rows(y: Array, moved_shape: tuple[int, ...], axes: tuple[int, ...], ndim: int) -> Array:
    """Undo :func:`_to_rows` for an (R, n) result."""
    k = len(axes)
    last = tuple(range(ndim - k, ndim))
    y = y.reshape(moved_shape)
    return y if axes == last else np.moveaxis(y, last, axes)


class _Rows(NamedTuple):
    x: Array  # the input as an array (a 0-D one viewed as shape (1,))
    shape: tuple[int, ...]  # the input's own shape
    axes: tuple[int, ...]  # the reduced axes, non-negative and sorted
    rows: Array  # (R, n): the reduced axes moved last and flattened
    moved: tuple[int, ...]  # the moved shape, to undo it
    compiled: bool  # run the compiled kernel (backend 'compiled' and a float32/float64 input)
    threads: int


def _prepare(x: npt.ArrayLike, axis: Axis, backend: Backend, threads: int | None) -> _Rows:
    """Validate, and view x as (R, n) rows; a 0-D x is viewed as shape (1,) (axis 0, -1 or None, as torch)."""
    x = as_float_array("x", x)
    check_backend(backend)
    nthreads = check_threads(threads)
    shape = x.shape
    if x.ndim == 0:
        x = x.reshape(1)
    axes = normalize_axis(axis, x.ndim)
    rows, moved = _to_rows(x, axes)
    compiled = backend == "compiled" and x.dtype in (np.float32, np.float64)  # float16: the reference
    if compiled:
        rows = np.ascontiguousarray(rows)
    return _Rows(x, shape, axes, rows, moved, compiled, nthreads)


def _reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


# ----------------------------------------------------------------------------- logsumexp


class LogsumexpCache(NamedTuple):
    probs: Array  # x.shape: softmax(x) over the axes, the gradient of logsumexp
    axes: tuple[int, ...]  # the reduced axes, non-negative and sorted
    keepdims: bool
    out_shape: tuple[int, ...]  # the forward output's shape
    backend: Backend = "reference"  # the layer of the forward (the backward is one product for both)
    # with weights b: ``probs`` is d out / d x = sign * b * exp(x - out) over the broadcast shape of x and b,
    # and these are d out / d b = sign * exp(x - out) (that shape) and the shapes to sum the gradients back to;
    # both in float64 (``exp(x - out)`` of an entry of weight 0 may exceed x's dtype where ``dout * it`` does
    # not), and ``dtype`` is x's
    dweights: Array | None = None
    x_shape: tuple[int, ...] | None = None
    b_shape: tuple[int, ...] | None = None
    dtype: np.dtype[Any] | None = None


def logsumexp_forward(
    x: npt.ArrayLike,
    axis: Axis = -1,
    *,
    keepdims: bool = False,
    b: npt.ArrayLike | None = None,
    return_sign: bool = False,
    backend: Backend = "compiled",
    threads: int | None = None,
) -> tuple[Any, LogsumexpCache]:
    """``out = log(sum(exp(x), axis))``, computed as ``m + log1p(sum_{j != a} exp(x_j - m))``; with
    weights, ``log(|sum(b * exp(x), axis)|)`` (SciPy's ``scipy.special.logsumexp``; see
    :func:`_logsumexp_weighted`).

    Correctly rounded for float32 inputs, also where ``m + log1p(r)`` cancels (``m < 0`` and ``log1p(r)``
    close to ``-m``: computed in double-double); see the module docstring for how.

    Args:
        x: float array of any shape (0-D counts as one element).
        axis: int, tuple of ints, or None (all axes). Default -1.
        keepdims: keep the reduced axes with size 1.
        b: None, or weights of x's dtype that broadcast against x (negative ones too): the sum is
            ``sum(b * exp(x))``, and an entry whose weight is 0 is dropped even where x is inf or nan.
            The axes are those of the broadcast shape. Always computed by the NumPy reference.
        return_sign: return ``(out, sign)``: ``out = log|sum|`` and ``sign`` its sign (1, 0 or -1, nan
            where out is nan); without it a negative sum gives nan, as SciPy.
        backend: ``'compiled'`` (the row kernel of :mod:`tinyops.kernels.softmax`, for float32 and
            float64; float16 takes the reference) or ``'reference'`` (the NumPy below).
        threads: rows in parallel on this many threads (None: one); compiled backend only.

    Returns:
        ``(out, cache)``, or ``((out, sign), cache)`` with ``return_sign``: out has x's dtype and x's
        (with ``b``: the broadcast) shape without (or with size-1) reduced axes.
        Edge cases: a slice of all ``-inf`` gives ``-inf``; any ``+inf`` gives ``+inf``; nan propagates;
        an empty reduction gives ``-inf`` (sign 0).

    Raises:
        TypeError: x or b is not floating (complex is refused), b of another dtype, axis not an
            int/tuple/None, return_sign not a bool.
        ValueError: an axis is out of range or repeated; b does not broadcast against x; an unknown
            backend; threads not None or >= 1.
    """
    if not isinstance(return_sign, (bool, np.bool_)):
        raise TypeError(f"return_sign must be a bool, got {type(return_sign).__name__} {return_sign!r}")
    if b is not None:
        return _logsumexp_weighted(x, b, axis, keepdims, bool(return_sign), backend, threads)
    p = _prepare(x, axis, backend, threads)
    x, rows = p.x, p.rows  # rows: (R, n)
    if p.compiled:
        from ..kernels import softmax as kernels

        lse, probs = kernels.forward(rows, kernels.LSE_PROBS, p.threads)  # (R,), (R, n) in x's dtype
    elif rows.shape[1] == 0:  # an empty sum is 0: log 0 = -inf; no probabilities
        lse = np.full(rows.shape[0], -np.inf)
        probs = rows.copy()  # (R, 0)
    else:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite rows, set below
            s = shifted_rows(rows)
            lse = lse_rows(s)[0]  # (R,) m + log1p(r), in x's dtype
            probs = softmax_rows(s, out=np.empty_like(s.e, dtype=x.dtype))  # (R, n)
            if s.bad is not None:  # the max as is: nan, +inf, or -inf (an all -inf row)
                lse[s.bad] = s.m[s.bad]  # torch's gradient there: exp(x - lse), nan at inf - inf
                probs[s.bad] = np.exp(rows[s.bad].astype(np.float64) - lse[s.bad, None])
    out_shape = () if len(p.shape) == 0 else _reduced_shape(x.shape, p.axes, keepdims)
    out = lse.astype(x.dtype, copy=False).reshape(out_shape)
    probs_x = _from_rows(probs, p.moved, p.axes, x.ndim).reshape(p.shape)
    cache = LogsumexpCache(probs_x, p.axes if len(p.shape) else (), keepdims, out_shape, backend)
    if return_sign:  # the sum of exps is > 0, or 0 where out = -inf
        with np.errstate(invalid="ignore"):
            sign = np.where(np.isnan(out), np.nan, (out > -np.inf).astype(out.dtype)).astype(out.dtype)
        return (out, sign.reshape(out_shape)), cache
    return out, cache


def _sum_to(g: Array, shape: tuple[int, ...]) -> Array:
    """Sum a gradient over the axes that broadcasting added or stretched, back to ``shape``."""
    lead = g.ndim - len(shape)
    stretched = tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    out: Array = g.sum(axis=tuple(range(lead)) + stretched, keepdims=True) if lead or stretched else g
    return out.reshape(shape)


def _weighted_rows(x: Array, b: Array) -> tuple[Array, Array, Array, Array]:
    """``log|sum_j b_j exp(x_j)|`` of each row of (R, n) x and b, n >= 1, in float64: ``(out, sign, dx, db)``.

    With ``m`` the largest x whose weight is not 0, ``w`` the sum of the weights at the maxima and ``rest``
    the sum of ``b_j exp(x_j - m)`` below them, ``S = e^m (w + rest)`` and, as SciPy,

        out = m + log|w| + log|1 + q|,   q = rest / w,   sign = sign(w) sign(1 + q)

    (``log1p(q)``, or ``log1p(-q - 2)`` when ``1 + q < 0``): with unit weights this is logsumexp's own
    ``m + log1p(r)``. When the weights of the maxima cancel (``w = 0``), ``out = m + log|w + rest|``. Rows
    whose max is not finite use ``log|sum b exp(x)|`` as it is (inf, -inf or nan). The gradients
    ``dx = b exp(x - m) / (w + rest)`` and ``db = exp(x - m) / (w + rest)`` (0 in dx where b = 0).
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        dropped = b == 0  # (R, n) b == 0 drops an entry, even an inf or nan one
        xz = np.where(dropped, -np.inf, x).astype(x.dtype)  # (R, n)
        s = shifted_rows(xz)  # float64: m, e = exp(xz - m), bad rows
        b64 = b.astype(np.float64)  # (R, n)
        top = xz == s.m[:, None]  # (R, n) the maxima (ties included)
        be = b64 * s.e  # (R, n) b exp(x - m)
        w = np.where(top, b64, 0.0).sum(axis=1)  # (R,)
        rest = np.where(top, 0.0, be).sum(axis=1)  # (R,)
        total = w + rest  # (R,) S e^-m
        q = rest / w  # (R,)
        out = s.m + np.log(np.abs(w)) + np.where(q >= -1, np.log1p(q), np.log1p(-q - 2))  # (R,)
        sign = np.sign(w) * np.sign(1 + q)  # (R,)
        direct = ~np.isfinite(q)  # w == 0 (the maxima cancel), or q overflowed
        out[direct] = s.m[direct] + np.log(np.abs(total[direct]))
        sign[direct] = np.sign(total[direct])
        shift = s.m if s.bad is None else np.where(s.bad, 0.0, s.m)  # (R,)
        e_all = np.where(dropped, np.exp(x.astype(np.float64) - shift[:, None]), s.e)  # (R, n) exp(x - m)
        db = e_all / total[:, None]  # (R, n) d out / d b = exp(x) / S
        dx = be / total[:, None]  # (R, n) d out / d x = b exp(x) / S
        if s.bad is not None:  # +inf, nan, or every entry -inf or dropped: the sum as it is
            xb, bb, db_ = x[s.bad].astype(np.float64), b64[s.bad], dropped[s.bad]
            tot = np.where(db_, 0.0, bb * np.exp(xb)).sum(axis=1)
            out[s.bad], sign[s.bad] = np.log(np.abs(tot)), np.sign(tot)
            db[s.bad] = sign[s.bad, None] * np.exp(xb - out[s.bad, None])
            dx[s.bad] = np.where(db_, 0.0, bb * db[s.bad])
    return out, sign, dx, db


def _logsumexp_weighted(
    x: npt.ArrayLike, b: npt.ArrayLike, axis: Axis, keepdims: bool, return_sign: bool, backend: Backend,
    threads: int | None,
) -> tuple[Any, LogsumexpCache]:
    """:func:`logsumexp_forward` with weights ``b``, SciPy 1.17's semantics (reference layer only).

    Where SciPy's answer is not its own rule: an infinite result keeps dropping the entries of weight 0
    (SciPy redoes such rows as ``log(sum(b * exp(x)))``, where ``0 * exp(nan)`` is nan again); maxima whose
    weights cancel are summed around the max (SciPy's redo overflows to nan); an empty reduction has
    sign 0 (SciPy: -1, the sign of its ``-inf``).
    """
    x = as_float_array("x", x)
    b = as_float_array("b", b)
    if b.dtype != x.dtype:
        raise TypeError(f"b has dtype {b.dtype} but x has dtype {x.dtype}; they must match")
    check_backend(backend)
    check_threads(threads)
    try:
        shape = np.broadcast_shapes(x.shape, b.shape)
    except ValueError:
        raise ValueError(f"b of shape {b.shape} does not broadcast against x of shape {x.shape}") from None
    full = (1,) if len(shape) == 0 else shape  # a 0-D input counts as one element
    axes = normalize_axis(axis, len(full))
    xr, moved = _to_rows(np.broadcast_to(x, full), axes)  # (R, n)
    br, _ = _to_rows(np.broadcast_to(b, full), axes)  # (R, n)
    if xr.shape[1] == 0:  # an empty sum: 0, log 0 = -inf
        out64, sign64 = np.full(xr.shape[0], -np.inf), np.zeros(xr.shape[0])
        dx64, db64 = np.zeros(xr.shape), np.zeros(xr.shape)
    else:
        out64, sign64, dx64, db64 = _weighted_rows(xr, br)  # (R,), (R,), (R, n), (R, n)
    if not return_sign:  # the log of a negative sum is nan (as SciPy), and so is its gradient
        neg = sign64 < 0
        out64[neg] = np.nan
        dx64[neg], db64[neg] = np.nan, np.nan
    out_shape = () if len(shape) == 0 else _reduced_shape(full, axes, keepdims)
    out = out64.astype(x.dtype).reshape(out_shape)
    dx_full = _from_rows(dx64, moved, axes, len(full)).reshape(shape)  # float64
    db_full = _from_rows(db64, moved, axes, len(full)).reshape(shape)
    cache = LogsumexpCache(dx_full, axes if len(shape) else (), keepdims, out_shape, "reference", db_full,
                           x.shape, b.shape, x.dtype)
    if return_sign:
        return (out, sign64.astype(x.dtype).reshape(out_shape)), cache
    return out, cache


def logsumexp_backward(dout: npt.ArrayLike, cache: LogsumexpCache) -> Any:
    """Gradient of ``out = logsumexp(x, axis)`` with respect to x (and to the weights b, if given).

    Args:
        dout: shape and dtype of the forward's ``out`` (with ``return_sign``, of the value: the sign is
            piecewise constant and has no gradient).
        cache: from :func:`logsumexp_forward`.

    Returns:
        dx: x's shape; with weights, ``(dx, db)`` in the shapes of x and b. A slice of all ``-inf`` gets a
        nan gradient, and a ``+inf`` entry nan (0 at its finite neighbours): torch's ``exp(x - out)``.
        With weights, an entry of weight 0 has ``dx = 0`` (it is dropped) and ``db = sign * exp(x - out)``;
        a slice whose value is nan (a negative sum without ``return_sign``) has nan gradients.

    Derivation:
        ``d/dx_j log(sum_k exp(x_k)) = exp(x_j) / sum_k exp(x_k) = softmax(x)_j`` -- the gradient of
        logsumexp is softmax (the max shift cancels: it is a constant in the quotient). Each output
        element broadcasts back over its reduced slice, so ``dx = dout[R] * probs``.

        With weights, ``out = log|S|``, ``S = sum_k b_k exp(x_k)``, and ``d log|S| = dS / S``:
        ``d out / d x_j = b_j exp(x_j) / S = sign * b_j * exp(x_j - out)`` and
        ``d out / d b_j = exp(x_j) / S = sign * exp(x_j - out)``, so ``dx = dout[R] * probs`` and
        ``db = dout[R] * dweights``, each summed back over the axes that broadcasting stretched.
    """
    check_cache(cache, LogsumexpCache, "logsumexp_forward")
    probs, axes, _, out_shape = cache[:4]
    dout = check_dout(dout, out_shape, probs.dtype if cache.dtype is None else cache.dtype)
    r_shape = tuple(1 if i in axes else n for i, n in enumerate(probs.shape))  # R
    if cache.dweights is None:
        dx: Array = dout.reshape(r_shape) * probs  # x.shape
        return np.asarray(dx)  # a 0-D x: a 0-D array, not a NumPy scalar
    assert cache.x_shape is not None and cache.b_shape is not None
    g = dout.astype(np.float64).reshape(r_shape)  # the products in float64, each sum rounded once to x's dtype
    with np.errstate(invalid="ignore", over="ignore"):  # a sum of 0 (sign 0): infinite gradients, nan sums
        dx = _sum_to(g * probs, cache.x_shape).astype(dout.dtype)
        db = _sum_to(g * cache.dweights, cache.b_shape).astype(dout.dtype)
    return np.asarray(dx), np.asarray(db)


def logsumexp(
    x: npt.ArrayLike,
    axis: Axis = -1,
    *,
    keepdims: bool = False,
    b: npt.ArrayLike | None = None,
    return_sign: bool = False,
    backend: Backend = "compiled",
    threads: int | None = None,
) -> Any:
    """``log(sum(exp(x), axis))`` without overflow, or ``log|sum(b * exp(x), axis)|`` with weights (and
    its sign with ``return_sign``); see :func:`logsumexp_forward` (the compiled backend here skips the
    softmax that the forward keeps for the backward)."""
    if b is not None or return_sign is not False:
        return logsumexp_forward(x, axis, keepdims=keepdims, b=b, return_sign=return_sign, backend=backend,
                                 threads=threads)[0]
    p = _prepare(x, axis, backend, threads)
    if not p.compiled:
        return logsumexp_forward(x, axis, keepdims=keepdims, backend=backend, threads=threads)[0]
    from ..kernels import softmax as kernels

    lse, _ = kernels.forward(p.rows, kernels.LSE, p.threads)  # (R,)
    out_shape = () if len(p.shape) == 0 else _reduced_shape(p.x.shape, p.axes, keepdims)
    out: Array = lse.reshape(out_shape)
    return out


# ----------------------------------------------------------------------------- softmax


class SoftmaxCache(NamedTuple):
    out: Array  # x.shape: the softmax itself, all its backward needs
    axes: tuple[int, ...]
    backend: Backend = "reference"  # the layer of the forward, and so of the backward
    threads: int = 1


def softmax_forward(
    x: npt.ArrayLike, axis: Axis = -1, *, backend: Backend = "compiled", threads: int | None = None
) -> tuple[Array, SoftmaxCache]:
    """``out = exp(x - m) / sum(exp(x - m), axis)``, the max-subtracted (stable) softmax.

    Computed as ``exp(x_j - m) / (1 + r)`` in float64 for float32 inputs (see the module docstring):
    correctly rounded.

    Args:
        x: float array of any shape (0-D counts as one element).
        axis: int, tuple of ints, or None. Default -1.
        backend, threads: as :func:`logsumexp_forward`; kept in the cache for the backward.

    Returns:
        ``(out, cache)``: out has x's shape and dtype, each slice sums to 1. A slice of all ``-inf``,
        or with a ``+inf``, gives nan (as torch).

    Raises:
        TypeError, ValueError: as :func:`logsumexp_forward`.
    """
    p = _prepare(x, axis, backend, threads)
    x, rows = p.x, p.rows  # rows: (R, n)
    if p.compiled:
        from ..kernels import softmax as kernels

        _, y = kernels.forward(rows, kernels.SOFTMAX, p.threads)  # (R, n)
    elif rows.shape[1] == 0:
        y = rows.copy()  # (R, 0)
    else:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite rows: nan
            sr = shifted_rows(rows)
            y = softmax_rows(sr, out=np.empty_like(sr.e, dtype=x.dtype))  # (R, n)
    out = _from_rows(y, p.moved, p.axes, x.ndim).reshape(p.shape)
    return out, SoftmaxCache(out, p.axes if len(p.shape) else (), backend, p.threads)


def softmax_backward(dout: npt.ArrayLike, cache: SoftmaxCache) -> Array:
    """Gradient of ``y = softmax(x, axis)`` with respect to x.

    Args:
        dout: x's shape and dtype (the upstream gradient ``dy``).
        cache: from :func:`softmax_forward` or :func:`softmax_naive_forward`.

    Returns:
        dx: x's shape (nan on the slices whose softmax is nan, as torch).

    Derivation:
        ``dy_i/dx_j = y_i ([i == j] - y_j)``. The vector-Jacobian product, without forming the
        Jacobian: ``dx_j = sum_i dy_i y_i ([i == j] - y_j) = y_j (dy_j - sum_i dy_i y_i)``, so
        ``dx = y * (dy - sum(dy * y, axis))``.
    """
    check_cache(cache, SoftmaxCache, "softmax_forward or softmax_naive_forward")
    y, axes, backend, threads = cache
    dy = check_dout(dout, y.shape, y.dtype)
    if backend == "compiled" and y.dtype in (np.float32, np.float64):
        from ..kernels import softmax as kernels

        return _backward_compiled(y, dy, axes, kernels.SOFTMAX, threads)
    dx: Array = y * (dy - (dy * y).sum(axis=axes, keepdims=True))  # x.shape
    dx = np.asarray(dx)  # a 0-D x: a 0-D array, not a NumPy scalar
    return dx


def _backward_compiled(y: Array, dy: Array, axes: tuple[int, ...], op: int, threads: int) -> Array:
    """The compiled backward on the (R, n) rows of y and dy, back to y's shape."""
    from ..kernels import softmax as kernels

    y_rows, moved = _to_rows(y, axes)  # (R, n)
    dy_rows, _ = _to_rows(dy, axes)  # (R, n)
    dx = kernels.backward(np.ascontiguousarray(y_rows), np.ascontiguousarray(dy_rows), op, threads)  # (R, n)
    return _from_rows(dx, moved, axes, y.ndim)


def softmax(x: npt.ArrayLike, axis: Axis = -1, *, backend: Backend = "compiled", threads: int | None = None) -> Array:
    """Stable softmax; see :func:`softmax_forward`."""
    return softmax_forward(x, axis, backend=backend, threads=threads)[0]


def softmax_naive_forward(x: npt.ArrayLike, axis: Axis = -1) -> tuple[Array, SoftmaxCache]:
    """The seed's softmax, ``counts = exp(x); out = counts / counts.sum(axis)``, with no max shift.

    It is here to be compared with :func:`softmax_forward`: equal wherever it is finite, it breaks
    exactly as the seed shows once an ``exp`` overflows (x > 88.72 in float32, > 709.78 in float64):
    the overflowing entry becomes ``inf / inf = nan`` and the others ``finite / inf = 0``. NumPy's
    RuntimeWarnings are left on: they say what happened. Same cache as the stable one, so the backward
    is :func:`softmax_backward` (it depends only on the output); it has no compiled kernel.
    """
    x = as_float_array("x", x)
    axes = normalize_axis(axis, x.ndim)
    counts = np.exp(x)  # x.shape; overflows to inf past the threshold
    out = counts / counts.sum(axis=axes, keepdims=True)  # x.shape
    return out, SoftmaxCache(out, axes)


softmax_naive_backward = softmax_backward  # the softmax gradient depends only on y = softmax(x)


def softmax_naive(x: npt.ArrayLike, axis: Axis = -1) -> Array:
    """The seed's overflowing softmax; see :func:`softmax_naive_forward`."""
    return softmax_naive_forward(x, axis)[0]


# ----------------------------------------------------------------------------- log_softmax


class LogSoftmaxCache(NamedTuple):
    out: Array  # x.shape: log_softmax(x); exp(out) is the softmax the backward needs
    axes: tuple[int, ...]
    backend: Backend = "reference"  # the layer of the forward, and so of the backward
    threads: int = 1


def log_softmax_forward(
    x: npt.ArrayLike, axis: Axis = -1, *, backend: Backend = "compiled", threads: int | None = None
) -> tuple[Array, LogSoftmaxCache]:
    """``out = (x - m) - log1p(r)`` = ``x - logsumexp(x, axis)``, never ``log(softmax)`` (which is
    ``-inf`` once softmax underflows).

    Both terms are <= 0, so nothing cancels: correctly rounded for float32 inputs (see the module
    docstring).

    Args:
        x: float array of any shape (0-D counts as one element).
        axis: int, tuple of ints, or None. Default -1.
        backend, threads: as :func:`logsumexp_forward`; kept in the cache for the backward.

    Returns:
        ``(out, cache)``: out has x's shape and dtype, every entry <= 0. A slice of all ``-inf``, or
        with a ``+inf``, gives nan (as torch); a ``-inf`` entry elsewhere gives ``-inf``.

    Raises:
        TypeError, ValueError: as :func:`logsumexp_forward`.
    """
    p = _prepare(x, axis, backend, threads)
    x, rows = p.x, p.rows  # rows: (R, n)
    if p.compiled:
        from ..kernels import softmax as kernels

        _, y = kernels.forward(rows, kernels.LOG_SOFTMAX, p.threads)  # (R, n)
    elif rows.shape[1] == 0:
        y = rows.copy()  # (R, 0)
    else:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite rows: nan
            s = shifted_rows(rows, keep_d=True)
            y = log_softmax_rows(s)[0]  # (R, n) (x - m) - log1p(r), in x's dtype; nan on bad rows
    out = _from_rows(y, p.moved, p.axes, x.ndim).reshape(p.shape)
    return out, LogSoftmaxCache(out, p.axes if len(p.shape) else (), backend, p.threads)


def log_softmax_backward(dout: npt.ArrayLike, cache: LogSoftmaxCache) -> Array:
    """Gradient of ``y = log_softmax(x, axis)`` with respect to x.

    Args:
        dout: x's shape and dtype.
        cache: from :func:`log_softmax_forward`.

    Returns:
        dx: x's shape (nan on the slices whose log_softmax is nan, as torch).

    Derivation:
        ``y_i = x_i - logsumexp(x)``, and the gradient of logsumexp is softmax, so
        ``dy_i/dx_j = [i == j] - softmax(x)_j``. The vector-Jacobian product:
        ``dx_j = dy_j - softmax(x)_j sum_i dy_i``, with ``softmax = exp(y)``:
        ``dx = dy - exp(y) * sum(dy, axis)``.
    """
    check_cache(cache, LogSoftmaxCache, "log_softmax_forward")
    y, axes, backend, threads = cache
    dy = check_dout(dout, y.shape, y.dtype)
    if backend == "compiled" and y.dtype in (np.float32, np.float64):
        from ..kernels import softmax as kernels

        return _backward_compiled(y, dy, axes, kernels.LOG_SOFTMAX, threads)
    dx: Array = dy - np.exp(y) * dy.sum(axis=axes, keepdims=True)  # x.shape
    dx = np.asarray(dx)  # a 0-D x: a 0-D array, not a NumPy scalar
    return dx


def log_softmax(
    x: npt.ArrayLike, axis: Axis = -1, *, backend: Backend = "compiled", threads: int | None = None
) -> Array:
    """``x - logsumexp(x, axis)``; see :func:`log_softmax_forward`."""
    return log_softmax_forward(x, axis, backend=backend, threads=threads)[0]


