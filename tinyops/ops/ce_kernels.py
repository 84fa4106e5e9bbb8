"""Row kernels of the fused cross-entropy: the per-row loss and gradient of (M, C) logits.

The public op (:mod:`tinyops.ops.cross_entropy`) validates its inputs, moves the class axis last and
flattens every option (class weights, ignored rows, reductions) into a per-row upstream gradient ``g``;
what is left, and hot, is this:

    loss[m] = logsumexp(x[m]) - x[m, t[m]]                         forward,  (M,)
    dx[m]   = g[m] * (softmax(x[m]) - onehot(t[m]))                backward, (M, C)

Shapes: M = rows, C = classes. ``x`` is a C-contiguous (M, C) float32/float64 array, ``t`` an (M,)
integer array already checked to lie in [0, C). Both functions return arrays of x's dtype and never
write into their inputs. The contract:

    ce_rows_forward(x, t, *, precision, threads) -> (loss (M,), lse (M,), state)
    ce_rows_backward(g (M,), state, *, out=None) -> dx (M, C)   (out: a buffer to reuse)

``state`` (:class:`RowsState`) holds what the backward needs: the softmax, and the target entry of the
gradient, ``softmax_t - 1``, formed without cancellation. How it holds the softmax depends on the size:

- **one block** (below :data:`SERIAL_ELEMENTS` elements: a training batch): the (M, C) softmax itself,
  as ``exps / sums[:, None]`` (the fast path leaves the division to the backward's one pass,
  ``dx = exps * (g / sums)[:, None]``); the fewest NumPy calls.
- **blocked** (larger problems): no (M, C) array at all. The forward reduces each block of rows in a
  small cache-resident buffer and keeps only per-row results (the shift ``m``, the divisor ``sums``, the
  target entry) and a reference to the caller's logits ``x``; the backward recomputes
  ``softmax = exp(x - m) / sums`` block by block straight into the dx it returns. Two exp passes, but one
  (M, C) array written (dx) instead of two: half the peak memory, and for 'fast' about the same time (a
  fresh (M, C) array's page faults and writes cost about what the second exp pass over a block in
  cache does); 'accurate' pays more for its second float64 exp. **The backward assumes x
  unchanged since the forward** (as torch's saved tensors); nothing here writes into it, and ``out``
  may not overlap it.

Either way the backward ends with the M target entries, ``dx[m, t[m]] = g[m] * (softmax_t - 1)``.

**precision='accurate'** (the default of the public op). Each row is computed as in
:mod:`tinyops.ops.softmax`, in float64 for float32 input: with ``m = x[a]`` the row max and
``r = sum_{j != a} exp(x_j - m)`` (the largest term kept out of the sum),

    loss = (m - x[t]) + log1p(r)       two terms >= 0: nothing cancels, even for a confident row
    lse  = m + log1p(r)
    softmax_t - 1 = expm1(-loss)       the gradient's target entry: ``p - 1`` cancels when p is near 1

and the softmax (blocked: the backward's ``g * softmax``) is rounded once to x's dtype. Rows go in
blocks of :data:`ACCURATE_BLOCK_ELEMENTS`, so the float64 temporaries are one block's. Bounds held by
tests/test_kernels.py and tests/test_accuracy.py against the exact (mpmath) values: float32 inputs,
2 ULP for the loss and lse, 4 ULP for the softmax and every gradient entry whose exact value is
normal; float64 inputs, 8 ULP (``benchmarks/bench_accuracy.py`` prints the measured worst cases).
One known exception: ``lse`` itself when it is close to 0 against the max (``m < 0`` and
``log1p(r)`` close to ``-m``, e.g. log-normalized rows): ``m + log1p(r)`` then cancels and keeps an
absolute error of about ``eps64 * |m|`` (float32 inputs) or ``eps * |m|`` (float64). The loss never
cancels.

**precision='fast'**: the classic kernel in x's dtype (float32 internals for float32), in place in
one buffer: ``m = max(x)``, ``exps = exp2((x - m) * log2(e))`` (NumPy's float32 ``exp2`` runs twice as
fast as its ``exp``), ``s = sum(exps)``, ``lse = log(s) + m``, ``loss = lse - x[t]``, target entry
``expm1(-loss)``. Its errors are absolute where the classic formula cancels (``lse - x[t]``, as torch's):

    |lse - exact|  <= FAST_ABS_K * eps * (1 + |lse|)
    |loss - exact| <= FAST_ABS_K * eps * (1 + |lse| + |loss|)
    |softmax_j - exact| <= FAST_REL_K * eps * (1 + |x_j - max|) * softmax_j + tiny

(tests/test_kernels.py holds these on the hard regions; the largest ratios seen are about half of
the constants), so a loss of 1e-6 can be off by 100% (as torch's) while a softmax entry is good to a
few ULP near the max. The edge rows below give the same loss and gradient as 'accurate'; lse is nan on a row with a
``+inf`` or of all ``-inf`` (the accurate path gives torch's ``+inf``/``-inf``). Rows of at most
:data:`NARROW_C` classes are reduced column-major (in a Fortran-ordered copy of the rows or the block):
NumPy reduces short rows one at a time, slowly, but a column-major block elementwise, fast.

**Blocks and threads.** Rows are processed in blocks of about :data:`BLOCK_ELEMENTS` elements, so that
the passes over a block (max, subtract, scale, exp2, sum) run in the core's L2 cache. With
``threads=k`` the blocks are split into k contiguous runs, one per thread, on a small persistent pool
(NumPy's ufuncs release the GIL); the blocks do not depend on k and each row is computed by the same
calls whatever the split, so the results are bit-for-bit identical for every thread count.
``threads=None`` means 1. Problems below :data:`SERIAL_ELEMENTS` elements always run on the calling
thread, as one block (NumPy then allocates the results as it goes: the fewest calls for a small batch);
problems of at most :data:`SMALL_ELEMENTS` (a training batch, 32 x 27) take :func:`_small_rows`, the
same formulas in about half the NumPy calls (argmax and flat ``take`` for the max, one matrix-vector
product for the row sums: at that size a call costs more than its arithmetic).
The one-block backward splits its one pass into ``threads`` row ranges; the blocked backward runs
the forward's blocks on the same threads (a row's values never depend on the blocks or the split).

Infinities, row by row, as torch: a ``+inf`` logit gives a nan loss (and nan gradient); ``-inf`` at the
target gives ``+inf``; ``-inf`` elsewhere contributes exp(-inf) = 0 (finite loss, zero probability there);
a row of all ``-inf`` gives nan; nan propagates. A row with ``g[m] == 0`` gets a zero gradient when the row
is finite (and nan otherwise, as torch's ``0 * nan``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from .softmax import NARROW_N, shifted_rows, softmax_rows

Array = npt.NDArray[Any]
Precision = Literal["accurate", "fast"]
PRECISIONS: tuple[Precision, ...] = ("accurate", "fast")

BLOCK_ELEMENTS = 1 << 18  # elements per row block (fast): 1 MiB of float32 logits and 1 MiB of exps, ~L2
ACCURATE_BLOCK_ELEMENTS = 1 << 15  # elements per row block (accurate): its float64 temporaries, ~L2
FAST_ABS_K = 8.0  # 'fast': |lse - exact| <= K eps (1 + |lse|), |loss - exact| <= K eps (1 + |lse| + |loss|)
FAST_REL_K = 16.0  # 'fast': |softmax_j - exact| <= FAST_REL_K * eps * (1 + |x_j - max|) * softmax_j + tiny
NARROW_C = NARROW_N  # rows this short are reduced column-major: NumPy reduces short rows slowly
SERIAL_ELEMENTS = 1 << 17  # below this, threads cost more than they save
SMALL_ELEMENTS = 1 << 13  # up to this many elements (a training batch: 32 x 27), one (M, C) array, no blocks
LOG2E = 1.4426950408889634  # log2(e)


class RowsState(NamedTuple):
    """What the backward needs: the softmax of every row (stored, or recomputed from x), and the target entries.

    One block (small problems): ``exps`` is set and ``softmax = exps / sums[:, None]``. Blocked (larger
    problems): ``exps`` is None and ``x`` is the caller's logits, not copied: the backward recomputes
    ``softmax = exp(x - shift) / sums`` block by block and assumes x unchanged since the forward (as
    torch's saved tensors); nothing here writes into it.
    """

    exps: Array | None  # (M, C) x's dtype: exp(x - max) (fast) or the softmax itself (accurate); None if blocked
    sums: Array  # (M,) the softmax's row divisor: sum(exps) (fast, x's dtype); ones (accurate, one block);
    # 1 + r (accurate, blocked: float64, nan on a row with a non-finite max)
    target: npt.NDArray[np.intp]  # (M,)
    dtarget: Array  # (M,) softmax(x)[t] - 1 = expm1(-loss): float64 if accurate, x's dtype if fast
    threads: int  # the forward's thread count, reused by the backward
    x: Array | None = None  # (M, C) the caller's logits when blocked (a reference), else None
    shift: Array | None = None  # (M,) when blocked: the row max (fast, x's dtype; accurate, float64, 0 on bad rows)
    fast: bool = True  # precision == 'fast'

    def softmax(self) -> Array:
        """The (M, C) softmax, a new array."""
        if self.exps is not None:
            out: Array = self.exps / self.sums[:, None]
            return out
        assert self.x is not None
        out = np.empty_like(self.x)  # (M, C)
        _recompute(self, np.ones(self.x.shape[0], self.x.dtype), out)
        return out


def check_precision(precision: object) -> None:
    """Raise ValueError unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")


def check_threads(threads: object) -> int:
    """``None`` -> 1; an int >= 1 as is; anything else raises ValueError."""
    if threads is None:
        return 1
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be None or an int >= 1, got {threads!r}")
    return int(threads)


# ----------------------------------------------------------------------------- the thread pool

_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()


def _get_pool(workers: int) -> ThreadPoolExecutor:
    """The module's persistent pool, grown to at least ``workers`` threads."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers < workers:  # a smaller pool is dropped, not shut down: a caller
            # may still be submitting to it; its threads exit once it is unreferenced and idle
            _pool, _pool_workers = ThreadPoolExecutor(workers, thread_name_prefix="tinyops-ce"), workers
        return _pool


def _run(block: Callable[[int, int], None], M: int, rows_per_block: int, threads: int) -> None:
    """Call ``block(i0, i1)`` for every row block ``[i0, i1)`` of ``[0, M)``, on ``threads`` threads.

    The blocks do not depend on ``threads``; a thread runs a contiguous run of them. Floating-point
    warnings are silenced in every thread (the kernels handle infinities and nan row by row).
    """
    starts = range(0, M, rows_per_block)

    def run(chunk: range) -> None:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i0 in chunk:
                block(i0, min(i0 + rows_per_block, M))

    k = min(threads, len(starts))
    if k <= 1:
        run(starts)
        return
    n = len(starts)
    runs = [starts[j * n // k : (j + 1) * n // k] for j in range(k)]
    pool = _get_pool(k - 1)
    futures: list[Future[None]] = [pool.submit(run, chunk) for chunk in runs[1:]]
    try:
        run(runs[0])
    finally:
        for f in futures:
            f.result()


def _rows_per_block(M: int, C: int, threads: int, block_elements: int) -> tuple[int, int]:
    """``(rows_per_block, threads)``: blocks of about ``block_elements``; one thread for small problems."""
    if M * C < SERIAL_ELEMENTS:
        return max(M, 1), 1
    return max(1, block_elements // max(C, 1)), threads


# ----------------------------------------------------------------------------- forward


def ce_rows_forward(
    x: Array, t: npt.NDArray[np.intp], *, precision: Precision = "accurate", threads: int | None = None
) -> tuple[Array, Array, RowsState]:
    """Per-row cross-entropy of (M, C) logits against (M,) class indices.

    Args:
        x: (M, C) float32/float64, C-contiguous.
        t: (M,) intp, values in [0, C).
        precision: 'accurate' (the default of the public op) or 'fast' (see the module docstring).
        threads: worker threads for the row blocks: None (one) or an int >= 1.

    Returns:
        ``(loss, lse, state)``: loss (M,) and lse (M,) in x's dtype; state for :func:`ce_rows_backward`.

    Raises:
        ValueError: unknown precision; threads not None or an int >= 1.
    """
    check_precision(precision)
    M, C = x.shape
    fast = precision == "fast"
    block_elements = BLOCK_ELEMENTS if fast else ACCURATE_BLOCK_ELEMENTS
    rows_per_block, threads_used = _rows_per_block(M, C, check_threads(threads), block_elements)
    rows = _fast_rows if fast else _accurate_rows
    if M == 0:  # no rows (maybe no classes either): nothing to reduce
        e = np.empty_like(x)
        res = _Rows(e, np.ones(0, x.dtype), np.empty(0, x.dtype), np.empty(0, x.dtype), np.empty(0, x.dtype))
    elif rows_per_block >= M:  # one block: NumPy allocates the results as it goes (fewest calls)
        small = _small_rows(x, t, fast) if M * C <= SMALL_ELEMENTS else None  # raises no FP warning
        if small is not None:
            res = small
        else:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                res = rows(x, t, None)
    else:  # blocked: the per-row results, written block by block; no (M, C) array (the backward recomputes)
        order: Literal["C", "F"] = "F" if C <= NARROW_C else "C"
        row_dtype = x.dtype if fast else np.dtype(np.float64)
        sums, shift, dtarget = np.empty(M, row_dtype), np.empty(M, row_dtype), np.empty(M, row_dtype)
        res = _Rows(None, sums, np.empty(M, x.dtype), np.empty(M, x.dtype), dtarget, shift)
        scratch = threading.local()  # one block's exps per thread (fast), reused from block to block

        def block(i0: int, i1: int) -> None:
            e = None
            if fast:
                buf = getattr(scratch, "e", None)
                if buf is None:
                    buf = scratch.e = np.empty((rows_per_block, C), x.dtype, order=order)  # (B, C)
                e = buf[: i1 - i0]
            rows(x[i0:i1], t[i0:i1], _Rows(e, sums[i0:i1], res.lse[i0:i1], res.loss[i0:i1], dtarget[i0:i1],
                                           shift[i0:i1]))  # fmt: skip

        _run(block, M, rows_per_block, threads_used)
        state = RowsState(None, sums, t, dtarget, threads_used, x, shift, fast)
        return res.loss, res.lse, state
    return res.loss, res.lse, RowsState(res.exps, res.sums, t, res.dtarget, threads_used, None, None, fast)


class _Rows(NamedTuple):
    """A block's results: (B, C) exps and (B,) sums, lse, loss, dtarget, shift (see :class:`RowsState`).

    Blocked, ``exps`` is a scratch buffer (fast) or None (accurate: no softmax is formed) and ``shift``
    receives the rows' shift; in one block, ``shift`` is None.
    """

    exps: Array | None
    sums: Array
    lse: Array
    loss: Array
    dtarget: Array
    shift: Array | None = None


def _fast_rows(x: Array, t: npt.NDArray[np.intp], out: _Rows | None) -> _Rows:
    """'fast' on rows ``x`` (B, C) with targets ``t`` (B,), into ``out`` (slices of the results) if given."""
    o = (None,) * 6 if out is None else out
    e: Array | None = o[0]
    src = x
    if x.shape[1] <= NARROW_C:  # column-major: the row reductions below become vector ops across rows
        if e is None:
            e = np.array(x, order="F")
        else:
            np.copyto(e, x)
        src = e
    m = src.max(axis=1, out=o[5])  # (B,); a nan, +inf or all -inf row turns nan below
    e = np.subtract(src, m[:, None], out=e)  # (B, C), <= 0
    np.multiply(e, x.dtype.type(LOG2E), out=e)  # exp(d) = exp2(d * log2(e)): NumPy's float32 exp2 is 2x faster
    np.exp2(e, out=e)  # (B, C) in (0, 1]
    s = np.sum(e, axis=1, out=o[1])  # (B,) >= 1; the softmax is exps / s, the backward divides
    lse = np.log(s, out=o[2])  # (B,)
    lse += m  # lse = log(sum(exp(x - m))) + m
    loss = np.subtract(lse, x[np.arange(x.shape[0]), t], out=o[3])  # loss = lse - x[t]
    dtarget = np.expm1(np.negative(loss), out=o[4])  # softmax_t - 1 = exp(-loss) - 1
    return _Rows(e, s, lse, loss, dtarget, None if out is None else m)


def _accurate_rows(x: Array, t: npt.NDArray[np.intp], out: _Rows | None) -> _Rows:
    """'accurate' on rows ``x`` (B, C) with targets ``t`` (B,), into ``out`` (slices of the results) if given."""
    s = shifted_rows(x)  # float64 pieces: m, r = sum_{j != argmax} exp(x_j - m), log1p(r)
    exps = np.empty_like(s.e, dtype=x.dtype) if out is None else out.exps
    if exps is not None:  # one block: the softmax kept; blocked: its shift and divisor, below
        softmax_rows(s, out=exps)  # (B, C), the softmax rounded once to x's dtype; nan on bad rows
    loss = (s.m - x[np.arange(x.shape[0]), t]) + s.log1p_r  # (B,) float64, two terms >= 0
    lse = s.m + s.log1p_r  # (B,)
    dtarget = np.expm1(-loss)  # (B,) softmax_t - 1 = exp(-loss) - 1
    if s.bad is not None:  # a nan, a +inf, or all -inf: as torch (see the module docstring)
        loss[s.bad] = np.nan
        lse[s.bad] = s.m[s.bad]
        dtarget[s.bad] = np.nan
    if out is None:
        return _Rows(exps, np.ones(x.shape[0], x.dtype), lse.astype(x.dtype), loss.astype(x.dtype), dtarget)
    out.lse[...], out.loss[...], out.dtarget[...] = lse, loss, dtarget
    if out.shift is not None:  # blocked: softmax = exp(x - shift) / (1 + r), nan on bad rows
        np.add(s.r, 1.0, out=out.sums)
        np.copyto(out.shift, s.m)
        if s.bad is not None:
            out.shift[s.bad], out.sums[s.bad] = 0.0, np.nan  # not shifted (as shifted_rows); a nan divisor
    return out


@functools.lru_cache(maxsize=64)
def _row_starts(M: int, C: int) -> npt.NDArray[np.intp]:
    """``[0, C, 2C, ...]`` (M,): the flat index of each row's first entry (read-only, shared)."""
    a = np.arange(M, dtype=np.intp) * C
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=64)
def _ones(n: int, dtype: np.dtype[Any]) -> Array:
    """(n,) ones (read-only, shared): row sums as one matrix-vector product."""
    a = np.ones(n, dtype)
    a.flags.writeable = False
    return a


def _small_rows(x: Array, t: npt.NDArray[np.intp], fast: bool) -> _Rows | None:
    """Both precisions on a small problem (at most :data:`SMALL_ELEMENTS`), in the fewest NumPy calls.

    At this size each NumPy call costs more than its arithmetic, and NumPy's row reductions over short
    rows cost several calls' worth; so the max is found by ``argmax`` and picked by a flat ``take``, the
    row sums are one matrix-vector product with ones, and the whole (M, C) array is one block (no
    column-major copy). The formulas are those of :func:`_fast_rows` (x's dtype) and
    :func:`_accurate_rows` (float64; the largest term is kept out of ``r`` by zeroing it at the argmax:
    a tie elsewhere keeps its ``exp(0) = 1``, as it should). Accurate float64 inputs (whose ``x - m``
    needs the TwoSum of :func:`~tinyops.ops.softmax.shifted_rows`) and any row with a non-finite max
    return None: the caller falls back to the general kernels, which handle those rows by the rules.
    """
    M, C = x.shape
    if C == 0 or not (fast or x.dtype == np.float32):
        return None
    flat = _row_starts(M, C)  # (M,) the flat index of each row's first entry
    a = np.argmax(x, axis=1)  # (M,) one index of each row's max (the first nan, if any)
    ia = np.add(flat, a, out=a)  # (M,) flat index of the max
    it = flat + t  # (M,) flat index of the target
    xt = x.take(it)  # (M,) x[t]
    if fast:
        m = x.take(ia)  # (M,) the row max
        if not np.isfinite(m).all():  # +inf, all -inf, or nan: checked first, so nothing below warns
            return None
        e = np.subtract(x, m[:, None])  # (M, C) <= 0
        np.exp(e, out=e)  # (M, C) in (0, 1]
        s = np.dot(e, _ones(C, x.dtype))  # (M,) >= 1 row sums; the softmax is e / s (the backward divides)
        lse = np.log(s)  # (M,)
        lse += m  # lse = log(sum(exp(x - m))) + m
        loss = np.subtract(lse, xt)  # loss = lse - x[t]
        return _Rows(e, s, lse, loss, np.expm1(np.negative(loss)))  # softmax_t - 1 = exp(-loss) - 1
    m64 = x.take(ia).astype(np.float64)  # (M,) the row max, float64
    if not np.isfinite(m64).all():  # +inf, all -inf or nan: checked first, so nothing below warns
        return None
    e64 = np.subtract(x, m64[:, None], dtype=np.float64)  # (M, C) x - m, exact in float64
    np.exp(e64, out=e64)  # (M, C) in [0, 1], 1 at the max
    e64.put(ia, 0.0)  # the max's term kept out of r
    r = np.dot(e64, _ones(C, np.dtype(np.float64)))  # (M,) r = sum_{j != a} exp(x_j - m)
    log1p_r = np.log1p(r)  # (M,)
    p_max = np.divide(1.0, np.add(r, 1.0, out=r), out=r)  # (M,) softmax at the max, 1 / (1 + r)
    exps = np.empty((M, C), x.dtype)  # (M, C) the softmax, computed in float64 and rounded once:
    np.multiply(e64, p_max[:, None], out=exps, casting="same_kind")
    exps.put(ia, p_max)
    loss = np.subtract(m64, xt)  # (M,) float64: (m - x[t]) + log1p(r), two terms >= 0
    loss += log1p_r
    lse = np.add(m64, log1p_r, out=log1p_r)  # (M,) m + log1p(r)
    dtarget = np.expm1(np.negative(loss))  # (M,) softmax_t - 1 = exp(-loss) - 1
    return _Rows(exps, np.ones(M, x.dtype), lse.astype(x.dtype), loss.astype(x.dtype), dtarget)


# ----------------------------------------------------------------------------- backward


def ce_rows_backward(g: Array, state: RowsState, *, out: Array | None = None) -> Array:
    """``dx = g[:, None] * (softmax(x) - onehot(t))``, (M, C), from the forward's state.

    Args:
        g: (M,) per-row upstream gradient in x's dtype (0 for ignored rows).
        state: from :func:`ce_rows_forward`; a blocked state reads the forward's logits, which must be
            unchanged since (they are not written).
        out: None (a new array), or an (M, C) array of x's dtype to write dx into -- a buffer reused
            from call to call, or (one-block state) ``state.exps`` itself (the backward then consumes the
            state). Writing into fresh memory costs the operating system's page faults, about as much as
            the exp pass itself for large arrays.

    Returns:
        dx: (M, C), x's dtype; ``out`` if given, else a new array.

    Raises:
        ValueError: ``out`` has another shape or dtype than x, or shares memory with the logits.

    Derivation:
        ``loss = logsumexp(x) - x[t]``; the gradient of logsumexp is softmax and that of ``x[t]`` is
        ``onehot(t)``, so ``d loss / dx = softmax - onehot`` and ``dx = g * (softmax - onehot)``:
        ``g * softmax`` everywhere (blocked: ``softmax = exp(x - shift) / sums`` recomputed a block at
        a time straight into dx), then ``g * (softmax_t - 1)`` at the target, with ``softmax_t - 1``
        from the state (``expm1(-loss)`` in the accurate mode).
    """
    exps, sums, t, dtarget, threads, x, _, _ = state
    src: Array = exps if exps is not None else x  # type: ignore[assignment]  # one of them is set
    M, C = src.shape
    if out is None:
        dx = np.empty_like(src)  # (M, C)
    elif not isinstance(out, np.ndarray) or out.shape != src.shape or out.dtype != src.dtype:
        got = f"shape {out.shape} and dtype {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be an array of shape {src.shape} and dtype {src.dtype}, got {got}")
    elif x is not None and np.shares_memory(out, x):
        raise ValueError("out must not share memory with the logits (the backward reads them), got a view of them")
    else:
        dx = out  # elementwise below, so out may be exps itself
    if exps is None:
        _recompute(state, g, dx)  # g * softmax, a block at a time
    else:
        g_over_sum = g / sums  # (M,)

        def block(i0: int, i1: int) -> None:
            np.multiply(exps[i0:i1], g_over_sum[i0:i1, None], out=dx[i0:i1])  # g * softmax

        if threads == 1 or M * C < SERIAL_ELEMENTS:
            block(0, M)  # one pass; exps is finite or nan, so nothing here raises a floating-point warning
        else:
            _run(block, M, max(1, -(-M // threads)), threads)
    dx.put(_row_starts(M, C) + t, g * dtarget)  # g * (softmax_t - onehot_t) = g * (softmax_t - 1) at [m, t[m]]
    return dx


def _recompute(state: RowsState, g: Array, dx: Array) -> None:
    """``dx = g[:, None] * softmax(x)`` (M, C) for a blocked state, recomputing the softmax a block at a time.

    'fast': the forward's own formula, ``exp2((x - m) * log2(e)) * (g / s)``, written straight into dx
    (four passes over a block of dx while it is in cache). 'accurate': ``exp(x - m) * (g / (1 + r))`` in
    float64, ``exp(x - m)`` as :func:`~tinyops.ops.softmax.shifted_rows` forms it (the TwoSum
    correction for float64 rows), rounded once to x's dtype. A row's values do not depend on the blocks,
    so the thread count does not change a bit.
    """
    x, shift, sums = state.x, state.shift, state.sums
    assert x is not None and shift is not None
    M, C = x.shape
    block_elements = BLOCK_ELEMENTS if state.fast else ACCURATE_BLOCK_ELEMENTS
    rows_per_block, threads = _rows_per_block(M, C, state.threads, block_elements)
    scale = g / sums  # (M,) g / s (fast, x's dtype), g / (1 + r) (accurate, float64)
    log2e = x.dtype.type(LOG2E)

    def block(i0: int, i1: int) -> None:
        xb, d = x[i0:i1], dx[i0:i1]  # (B, C)
        m = shift[i0:i1, None]  # (B, 1)
        if state.fast:
            np.subtract(xb, m, out=d)  # (B, C) x - m
            np.multiply(d, log2e, out=d)
            np.exp2(d, out=d)  # exps = exp(x - m)
            np.multiply(d, scale[i0:i1, None], out=d)  # g * exps / s = g * softmax
            return
        e = np.subtract(xb, m, dtype=np.float64)  # (B, C) d_hi = x - m, exact for float32 rows
        lo = None
        if x.dtype == np.float64:  # TwoSum: d_hi + d_lo == x - m exactly (as shifted_rows)
            bb = e - xb
            lo = (xb - (e - bb)) + (-m - bb)  # (B, C)
            np.nan_to_num(lo, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.exp(e, out=e)  # (B, C) exp(d_hi)
        if lo is not None:
            e += e * lo  # exp(hi + lo) = exp(hi) * (1 + lo)
        np.multiply(e, scale[i0:i1, None], out=d, casting="same_kind")  # g * exp(x - m) / (1 + r) = g * softmax,
        # rounded once to x's dtype; nan on a bad row (its divisor is nan)

    _run(block, M, rows_per_block, threads)
