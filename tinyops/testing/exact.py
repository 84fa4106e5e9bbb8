"""Exact references for the softmax family and the cross-entropy, and the error of a result in ULPs.

Every float input is read as the exact binary number it stores (float32 ``0.1`` is
0.100000001490116119384765625), and each quantity is computed from it with mpmath at ``PREC`` = 256 bits
(77 significant digits), far below the last bit of any float64 result, then returned as an ``mpmath.mpf``.
This needs mpmath (the ``test`` and ``bench`` extras install it).

Shapes: ``x`` / ``logits`` is (N, V) or (V,), every reduction runs over the last axis (V); ``target`` is
(N,) (or a Python int for a 1-D row). Results are NumPy object arrays of ``mpmath.mpf``:
``exact.astype(np.float64)`` rounds them to float64, :func:`round_to` rounds them correctly to any float
dtype, and :func:`ulp_error` measures a computed array against them.

How the reference avoids the cancellations a float kernel suffers: with ``r`` the largest entry of the
row (the target itself when it is a largest entry), every term is ``e_i = exp(x_i - r)``, the reference
term is exactly 1 and ``s = sum_{i != r} e_i`` is summed on its own, so that

- ``log S = log1p(s)`` keeps every digit of a tiny ``s`` (``S = 1 + s`` would drop it);
- ``loss = (r - x_t) + log1p(s)`` never subtracts two nearly equal numbers (``r - x_t >= 0``);
- the target's gradient ``p_t - 1 = -(S - e_t) / S`` with ``S - e_t`` summed from the other terms.

Non-finite input, row by row:
- a ``-inf`` entry is a masked class: ``e_i = 0``, softmax 0, log_softmax ``-inf``; a ``-inf`` target
  gives loss ``+inf`` and target gradient ``-1``;
- a row of only ``-inf`` (or an empty row): logsumexp ``-inf``; everything else nan;
- a row holding ``+inf`` (and no nan): logsumexp ``+inf``; everything else nan;
- a row holding nan: everything nan.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

try:
    import mpmath  # type: ignore[import-untyped]
    from mpmath import libmp
except ImportError as exc:  # pragma: no cover - exercised only without mpmath
    raise ImportError(
        "tinyops.testing.exact needs mpmath (pip install 'mpmath>=1.3', or the package's 'test' or 'bench' extra)"
    ) from exc

from .._checks import Array, as_float_array, as_index_array

__all__ = [
    "PREC",
    "Reference",
    "Split",
    "assert_ulp_close",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_mean",
    "log_softmax",
    "logsumexp",
    "reference",
    "round_to",
    "softmax",
    "split",
    "ulp_error",
]

PREC = 256  # bits of every intermediate and result (77 significant digits)

_RND = libmp.round_nearest
_MPF = tuple[int, int, int, int]  # mpmath's raw (sign, mantissa, exponent, bitcount)
_ZERO: _MPF = libmp.fzero
_ONE: _MPF = libmp.fone
_NAN = mpmath.mpf("nan")
_POS_INF = mpmath.mpf("inf")
_NEG_INF = mpmath.mpf("-inf")


class Reference(NamedTuple):
    """Every exact quantity of a batch of rows (object arrays of ``mpmath.mpf``).

    ``lse`` (N,), ``log_softmax`` (N, V), ``softmax`` (N, V); with a target also ``loss`` (N,), the
    per-sample cross-entropy ``lse - x[target]``, and ``grad`` (N, V), its gradient with respect to the
    logits, ``softmax - onehot(target)`` (the gradient of ``reduction='none'`` for ``dloss = 1``).
    For a 1-D input the leading N axis is dropped.
    """

    lse: Array
    log_softmax: Array
    softmax: Array
    loss: Array | None
    grad: Array | None


def _mpf(raw: _MPF) -> Any:
    return mpmath.mp.make_mpf(raw)


def _log1p(s: _MPF) -> _MPF:
    """``log(1 + s)`` for ``s >= 0`` to PREC bits, keeping the digits of a tiny ``s`` (as mpmath.log1p)."""
    if s == _ZERO:
        return _ZERO
    if libmp.mpf_lt(s, libmp.from_man_exp(1, -PREC - 8)):  # log1p(s) = s - s^2/2 + ..., s^2/2 below PREC bits
        half_sq = libmp.mpf_shift(libmp.mpf_mul(s, s, PREC + 8, _RND), -1)
        out: _MPF = libmp.mpf_sub(s, half_sq, PREC, _RND)
        return out
    out = libmp.mpf_log(libmp.mpf_add(_ONE, s, 2 * PREC + 16, _RND), PREC, _RND)
    return out


def _row(
    row: list[float], target: int | None, full: bool = True
) -> tuple[Any, list[Any], list[Any], Any, list[Any] | None]:
    """Exact (lse, log_softmax, softmax, loss, grad) of one row of floats; loss/grad are None without target.

    ``full=False`` skips the per-entry outputs (log_softmax, softmax and grad come back empty / None).
    """
    V = len(row)
    has_target = target is not None
    arr = np.asarray(row, dtype=np.float64)
    if V == 0 or np.isnan(arr).any() or np.isposinf(arr).any() or not np.isfinite(arr).any():
        lse = _NAN if np.isnan(arr).any() else (_POS_INF if np.isposinf(arr).any() else _NEG_INF)
        nans = [_NAN] * V
        if not full:
            return lse, [], [], (_NAN if has_target else None), None
        return lse, nans, list(nans), (_NAN if has_target else None), (list(nans) if has_target else None)
    top = float(arr.max())
    k = target if target is not None and row[target] == top else int(np.argmax(arr))  # reference index
    r = libmp.from_float(top)
    d: list[_MPF | None] = []  # x_i - r (exact to PREC + 32 bits); None for a -inf entry
    e: list[_MPF] = []  # exp(x_i - r)
    for v in row:
        if v == -np.inf:
            d.append(None)
            e.append(_ZERO)
        else:
            di = libmp.mpf_sub(libmp.from_float(v), r, PREC + 32, _RND)
            d.append(di)
            e.append(libmp.mpf_exp(di, PREC + 8, _RND))
    e[k] = _ONE
    s = libmp.mpf_sum(e[:k] + e[k + 1 :], PREC + 8, _RND)  # sum of the non-reference terms, >= 0
    log_s = _log1p(s)  # log S, S = 1 + s
    S = libmp.mpf_add(_ONE, s, PREC + 8, _RND)
    lse = _mpf(libmp.mpf_add(r, log_s, PREC, _RND))
    lsm = [_NEG_INF if di is None else _mpf(libmp.mpf_sub(di, log_s, PREC, _RND)) for di in d] if full else []
    sm = [_mpf(libmp.mpf_div(ei, S, PREC, _RND)) for ei in e] if full else []
    if target is None:
        return lse, lsm, sm, None, None
    if row[target] == -np.inf:
        loss = _POS_INF
    else:
        gap = libmp.mpf_sub(r, libmp.from_float(row[target]), PREC + 32, _RND)  # r - x_t >= 0, 0 when k == t
        loss = _mpf(libmp.mpf_add(gap, log_s, PREC, _RND))
    if not full:
        return lse, lsm, sm, loss, None
    if k == target:
        rest = s  # S - e_t = the sum of the other terms
    else:
        rest = libmp.mpf_sub(S, e[target], PREC + 8, _RND)  # >= max(1, S/2): no cancellation
    grad = list(sm)
    grad[target] = _mpf(libmp.mpf_neg(libmp.mpf_div(rest, S, PREC, _RND)))
    return lse, lsm, sm, loss, grad


def _as_rows(name: str, x: npt.ArrayLike) -> tuple[Array, bool]:
    arr = as_float_array(name, x, ndim=(1, 2))
    return np.asarray(arr, dtype=np.float64), arr.ndim == 1  # float16/32 -> float64 is exact


def _targets(target: npt.ArrayLike, rows: Array, one_d: bool) -> list[int]:
    N, V = rows.shape
    if one_d:
        t = as_index_array("target", target, V, size_name="V")
        if t.ndim != 0:
            raise ValueError(f"target must be a single index for a 1-D row, got shape {t.shape}")
        return [int(t)]
    t = as_index_array("target", target, V, size_name="V")
    if t.shape != (N,):
        raise ValueError(f"target must have shape ({N},) to match logits of shape {rows.shape}, got shape {t.shape}")
    return [int(i) for i in t]


def _object_array(values: list[Any], shape: tuple[int, ...]) -> Array:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(shape)


def reference(x: npt.ArrayLike, target: npt.ArrayLike | None = None) -> Reference:
    """All exact quantities of ``x`` (N, V) or (V,) at once (one exp per entry), see :class:`Reference`.

    Args:
        x: float16/32/64 array (N, V) or (V,); each value is taken as the exact number it stores.
        target: int array (N,) in ``[0, V)`` (a Python int for a 1-D row), or None (no loss, no grad).

    Returns:
        :class:`Reference`; ``loss`` and ``grad`` are None when ``target`` is None.

    Raises:
        TypeError: x not floating, target not integer.
        ValueError: x not 1-D or 2-D; target of the wrong shape.
        IndexError: a target outside ``[0, V)``.

    Cost: 10 to 30 microseconds per entry (pure-Python mpmath), 0.5 to 1.5 s for a row of V = 50,257.
    """
    return _reference(x, target, full=True)


def _reference(x: npt.ArrayLike, target: npt.ArrayLike | None, *, full: bool) -> Reference:
    """:func:`reference`; ``full=False`` computes only lse and loss (the per-entry arrays come back empty)."""
    rows, one_d = _as_rows("x", x)
    rows2 = rows[None, :] if one_d else rows  # (N, V)
    N, V = rows2.shape
    ts: list[int | None] = [None] * N if target is None else list(_targets(target, rows2, one_d))
    lse, lsm, sm, loss, grad = [], [], [], [], []
    for row, t in zip(rows2.tolist(), ts, strict=True):
        a, b, c, d, g = _row(row, t, full)
        lse.append(a)
        lsm.extend(b)
        sm.extend(c)
        loss.append(d)
        grad.extend(g or [])
    lead: tuple[int, ...] = () if one_d else (N,)
    W = V if full else 0
    with_t = target is not None
    return Reference(
        lse=_object_array(lse, (N,)).reshape(lead),
        log_softmax=_object_array(lsm, (N, W)).reshape((*lead, W)),
        softmax=_object_array(sm, (N, W)).reshape((*lead, W)),
        loss=_object_array(loss, (N,)).reshape(lead) if with_t else None,
        grad=_object_array(grad, (N, W)).reshape((*lead, W)) if with_t and full else None,
    )


def logsumexp(x: npt.ArrayLike) -> Array:
    """Exact ``log(sum(exp(x)))`` over the last axis: object array of mpf, shape (N,) (0-D for a row)."""
    return _reference(x, None, full=False).lse


def log_softmax(x: npt.ArrayLike) -> Array:
    """Exact ``x - logsumexp(x)`` over the last axis: object array of mpf, x's shape."""
    return reference(x).log_softmax


def softmax(x: npt.ArrayLike) -> Array:
    """Exact ``exp(x) / sum(exp(x))`` over the last axis: object array of mpf, x's shape."""
    return reference(x).softmax


def cross_entropy(logits: npt.ArrayLike, target: npt.ArrayLike) -> Array:
    """Exact per-sample ``logsumexp(logits_n) - logits_n[target_n]``: object array of mpf, (N,)."""
    loss = _reference(logits, target, full=False).loss
    assert loss is not None
    return loss


def cross_entropy_grad(logits: npt.ArrayLike, target: npt.ArrayLike, dloss: npt.ArrayLike | None = None) -> Array:
    """Exact gradient of the per-sample losses with respect to the logits: ``dloss[:, None] * (p - onehot)``.

    Args:
        logits: (N, V) float array; target: (N,) int array.
        dloss: (N,) float array, the upstream gradient of ``reduction='none'`` (taken exactly), or None
            for all ones. For ``reduction='mean'`` the exact gradient is this one divided by N.

    Returns:
        object array of mpf, (N, V).
    """
    ref = reference(logits, target)
    grad = ref.grad
    assert grad is not None
    if dloss is None:
        return grad
    w = as_float_array("dloss", dloss)
    if w.shape != grad.shape[:-1]:
        raise ValueError(f"dloss must have shape {grad.shape[:-1]}, got shape {w.shape}")
    weights = _object_array([mpmath.mpf(float(v)) for v in w.astype(np.float64).ravel()], w.shape)
    with mpmath.workprec(PREC):
        weighted: Array = grad * weights[..., None]
    return weighted


def cross_entropy_mean(logits: npt.ArrayLike, target: npt.ArrayLike) -> Any:
    """Exact mean of the per-sample losses (``reduction='mean'``), an ``mpmath.mpf`` (nan for N == 0)."""
    loss = cross_entropy(logits, target)
    if loss.size == 0:
        return _NAN
    with mpmath.workprec(PREC + 64):
        total = mpmath.fsum(loss.ravel().tolist())
        return total / loss.size


# ----------------------------------------------------------------------------- rounding and ULPs


def _hi_lo(exact: npt.ArrayLike, dtype: np.dtype[Any]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Split exact values into ``hi`` (correctly rounded float64) + ``lo`` (float64 remainder).

    ``lo`` is formed only where it can matter: for a float64 ``dtype``, and where ``hi`` is a midpoint of
    a narrower ``dtype`` (the rounding direction); elsewhere it shifts a narrower dtype's ULP error by at
    most ``2**-29`` ULP and is left 0.
    """
    arr = np.asarray(exact)
    if arr.dtype != object:
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"exact must be float or an object array of mpmath.mpf, got dtype {arr.dtype}")
        hi = np.asarray(arr, dtype=np.float64)  # float64 or narrower: exact, lo = 0
        return hi, np.zeros_like(hi)
    raws = [v._mpf_ if isinstance(v, mpmath.mpf) else libmp.from_float(float(v)) for v in arr.ravel().tolist()]
    hi = np.asarray([libmp.to_float(m, rnd=_RND) for m in raws], dtype=np.float64)
    need = np.isfinite(hi) & ((dtype == np.float64) | _midpoint(hi, dtype)[0])
    lo = np.zeros_like(hi)
    for i in np.flatnonzero(need).tolist():
        lo[i] = libmp.to_float(libmp.mpf_sub(raws[i], libmp.from_float(float(hi[i])), 64, _RND), rnd=_RND)
    return hi.reshape(arr.shape), lo.reshape(arr.shape)


def _midpoint(hi: npt.NDArray[np.float64], dtype: np.dtype[Any]) -> tuple[Array, Array, Array, Array]:
    """``(midpoint, y, n, d)``: y = hi rounded to dtype, d = hi - y (exact), n = y's neighbour on hi's side,
    midpoint = hi lies exactly halfway between y and n."""
    with np.errstate(over="ignore", invalid="ignore"):
        y = hi.astype(dtype)
        d = hi - y.astype(np.float64)  # exact (hi and y are within a dtype ulp)
        n = np.nextafter(y, np.where(d > 0, np.inf, -np.inf).astype(dtype))
        midpoint = (d != 0) & np.isfinite(y) & np.isfinite(n) & (n.astype(np.float64) - hi == d)
    return midpoint, y, n, d


def _round(hi: npt.NDArray[np.float64], lo: npt.NDArray[np.float64], dtype: np.dtype[Any]) -> Array:
    """Round ``hi + lo`` to nearest in ``dtype``.

    ``hi.astype(dtype)`` rounds twice (exact -> float64 -> dtype). That is wrong only when ``hi`` is exactly
    a midpoint between two floats of ``dtype`` and ``lo`` pushes the true value past it, away from the
    float chosen (``|lo|`` is below half a float64 ulp of ``hi``, and any other ``hi`` is at least a float64
    ulp from every midpoint): then the neighbour on that side is the nearest.
    """
    if dtype == np.float64:
        return hi.copy()
    midpoint, y, n, d = _midpoint(hi, dtype)
    past = midpoint & (lo != 0) & (np.sign(lo) == np.sign(d))
    return np.where(past, n, y)


def round_to(exact: npt.ArrayLike, dtype: npt.DTypeLike) -> Array:
    """Exact values (object array of mpf, or floats) rounded to nearest in ``dtype`` (float16/32/64)."""
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"dtype must be a float dtype, got {dt}")
    hi, lo = _hi_lo(exact, dt)
    return _round(hi, lo, dt)


class Split(NamedTuple):
    """Exact values as ``hi`` (correctly rounded float64) + ``lo`` (float64 remainder), for a dtype:
    :func:`split` converts once what :func:`ulp_error` would otherwise convert at every call."""

    hi: npt.NDArray[np.float64]
    lo: npt.NDArray[np.float64]
    dtype: np.dtype[Any]


def split(exact: npt.ArrayLike, dtype: npt.DTypeLike) -> Split:
    """Exact values (object array of mpf, or floats) split for :func:`ulp_error` in ``dtype`` (same result,
    faster when one exact array is compared with many computed ones)."""
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"dtype must be a float dtype, got {dt}")
    hi, lo = _hi_lo(exact, dt)
    return Split(hi, lo, dt)


def ulp_error(
    got: npt.ArrayLike, exact: npt.ArrayLike | Split, dtype: npt.DTypeLike
) -> npt.NDArray[np.float64]:
    """Elementwise error of ``got`` in units in the last place of ``dtype``: ``|got - exact| / ulp(y)``.

    ``y`` is the exact value rounded to nearest in ``dtype`` and ``ulp(y) = np.spacing(|y|)`` in that
    dtype: the gap from ``|y|`` to the next float away from zero (``2**(e - p + 1)`` for ``|y|`` in
    ``[2**e, 2**(e+1))``, p = 24 for float32, 53 for float64). A correctly rounded result scores <= 0.5.
    The difference is formed from a double-float split of the exact value (``hi + lo``, 106 bits), so the
    measured error itself is good to about ``2**-50`` ULP in float64 (``2**-29`` in float32, where ``lo``
    is dropped unless it decides the rounding).

    Special values:
    - zero and subnormals: ``y`` subnormal or zero has the ulp of the smallest subnormal (1.4e-45 in
      float32, 4.9e-324 in float64), so an exact 0 scores 0 only for a computed +-0, and a result that
      underflows to 0 scores ``|exact| / smallest subnormal`` (<= 0.5 when it is correctly rounded);
      for an exact value in float64's own subnormal range the measure is good to about 0.5 ULP only
      (the split has no room for ``lo``);
    - an exact value beyond the largest finite float (``y`` = +-inf): 0 for the same infinity, else
      ``|got - exact|`` in ulps of the largest finite float;
    - an exact +-inf: 0 for the same infinity, else inf;
    - an exact nan: 0 for a nan, else inf; a computed nan (or inf) against a finite exact value: inf.

    Args:
        got: computed values (any float dtype, read exactly).
        exact: object array of ``mpmath.mpf`` (from this module) or floats, broadcastable to ``got``, or
            their :func:`split` for ``dtype``.
        dtype: float dtype whose ULP is the unit (usually ``got.dtype``).

    Returns:
        float64 array of ULP errors, the broadcast shape of ``got`` and ``exact``.
    """
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"dtype must be a float dtype, got {dt}")
    g = np.asarray(got)
    if g.dtype.kind not in "fiu":
        raise TypeError(f"got must be a float array, got dtype {g.dtype}")
    g64 = g.astype(np.float64)
    if isinstance(exact, Split):
        if exact.dtype != dt:
            raise ValueError(f"exact was split for {exact.dtype}, not for dtype {dt}")
        hi, lo = exact.hi, exact.lo
    else:
        hi, lo = _hi_lo(exact, dt)
    g64, hi, lo = np.broadcast_arrays(g64, hi, lo)
    y = _round(hi, lo, dt)
    finfo = np.finfo(dt)
    with np.errstate(invalid="ignore", over="ignore"):
        top_ulp = float(finfo.max) - float(np.nextafter(finfo.max, dt.type(0)))  # spacing(max) would be inf
        unit = np.where(np.isinf(y), top_ulp, np.spacing(np.abs(y)).astype(np.float64))
        err = np.abs((g64 - hi) - lo) / unit
        err = np.where(np.isnan(g64), np.inf, err)
        # exact nan: 0 for a nan; exact infinity: 0 for the same infinity; rounded-to-inf: 0 for that inf
        err = np.where(np.isnan(hi), np.where(np.isnan(g64), 0.0, np.inf), err)
        err = np.where(np.isinf(hi), np.where(g64 == hi, 0.0, np.inf), err)
        err = np.where(np.isfinite(hi) & np.isinf(y) & (g64 == y), 0.0, err)
    return np.asarray(err, dtype=np.float64)


def assert_ulp_close(
    got: npt.ArrayLike,
    exact_or_reference: npt.ArrayLike,
    max_ulp: npt.ArrayLike,
    *,
    dtype: npt.DTypeLike | None = None,
    mask: npt.ArrayLike | None = None,
    name: str = "result",
) -> None:
    """Assert every element of ``got`` is within ``max_ulp`` ULPs of ``exact_or_reference`` (for pytest).

    Args:
        got: the computed array (float16/32/64).
        exact_or_reference: the exact values (an object array of ``mpmath.mpf`` from this module) or a
            float reference of the same shape (read exactly; then the error is measured against it).
        max_ulp: a number, or an array broadcastable to ``got`` (one bound per element).
        dtype: whose ULP is the unit; default ``got``'s dtype.
        mask: bool array broadcastable to ``got``: only where True is checked (e.g. normal numbers).
        name: what ``got`` is, for the message.

    Raises:
        AssertionError: naming the worst element: its index, error, bound, computed and exact values,
        and how many elements exceed their bound. Also for shapes that differ.
    """
    g = np.asarray(got)
    ref = np.asarray(exact_or_reference)
    if g.shape != ref.shape:
        raise AssertionError(f"{name}: shape {g.shape} differs from the reference's {ref.shape}")
    dt = np.dtype(dtype) if dtype is not None else g.dtype
    err = ulp_error(g, ref, dt)
    if mask is not None:
        err = np.where(np.broadcast_to(np.asarray(mask, dtype=bool), err.shape), err, 0.0)
    limit = np.broadcast_to(np.asarray(max_ulp, dtype=np.float64), err.shape)
    over = err - limit
    if err.size == 0 or not (over > 0).any():
        return
    i = np.unravel_index(int(np.argmax(over)), err.shape)
    exact_i = ref[i]
    exact_txt = mpmath.nstr(exact_i, 17) if isinstance(exact_i, mpmath.mpf) else repr(float(exact_i))
    raise AssertionError(
        f"{name} ({dt}): {err[i]:.4g} ULP > {limit[i]:.4g} at index {tuple(int(k) for k in i)}: "
        f"got {g[i]!r}, exact {exact_txt}; {int((over > 0).sum())} of {err.size} elements over their bound"
    )
