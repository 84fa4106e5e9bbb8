"""Fused linear + cross-entropy: ``loss = cross_entropy(x @ weight + bias, target)`` without the N x V logits.

Shapes: N = rows, D = features, V = classes (the vocabulary). ``x`` (N, D) or (D,) (one unbatched row),
``weight`` (D, V) laid out (in, out) as in :mod:`tinyops.ops.linear`, ``bias`` (V,) or None, ``target``
(N,) integers in [0, V) (or ``ignore_index``), or (N, V) probabilities.

Every option of :func:`~tinyops.ops.cross_entropy.cross_entropy_forward` is taken (class weights,
``ignore_index``, the three reductions, label smoothing, probability targets, unbatched input, ``z_loss``,
``softcap``, ``return_lse``): each chunk of logits goes through the same per-row loss,
:func:`~tinyops.ops.cross_entropy.loss_rows_forward` / ``loss_rows_backward``, so the fused and the
unfused results are one formula. The mean divides by the divisor of the whole batch (the total class
weight of the rows not ignored, as torch), computed from the targets before the first chunk.

The unfused path holds the (N, V) logits, their softmax and their gradient at once: 3 N V numbers, which
for a language-model head (N = 4096, V = 32768) is 1.5 GiB in float32. Here the rows are cut into chunks
of ``chunk_size``; each chunk's logits are made, turned into the chunk's loss *and* its gradient while
they are hot, pushed through the two gradient matmuls, and dropped. At most one chunk's (chunk_size, V)
logits, softmax and gradient live at a time, beside the (D, V) weight gradient that any backward holds.

Why the rows and not the vocabulary: a vocabulary chunk cannot finish its gradient until the online
log-sum-exp has seen the whole row, so it must either keep the row's logits (the memory it meant to
save) or recompute them (a fourth N x D x V matmul on an op whose three matmuls already are the time).
Row chunks need neither.

**The same bits for every chunk size.** A BLAS matrix product does not round a row the same way in
products of different heights (a one-row product takes another code path than a 64-row one), and a sum
over rows cut differently is added in another order. So every matrix product here is made on fixed
*tiles* of ``TILE`` rows, counted from row 0, and a chunk is a whole number of tiles: the same rows go
into the same products whatever the chunk size, and the weight and bias gradients add one term per tile,
in tile order. The loss, ``lse`` and all three gradients are therefore bit-for-bit the same for every
``chunk_size`` (tests/test_linear_cross_entropy.py checks it).

**The same bits alone or in a batch** (``batch_invariant=True``). Each row's loss depends only on its
logits, but a BLAS product rounds a row differently in products of different heights, so a row alone
(a one-row product) and the same row in a batch can differ in the last bits. With ``batch_invariant``
the logits are made row by row in a fixed order (:mod:`tinyops.kernels.rows_matmul`, or its NumPy
reference here), so a row's loss and lse are the same bits whatever the batch around it. The gradients'
products stay on tiles (a sum over the batch is a property of the batch). It costs time: those products
run about 10x slower than BLAS, and forward + backward took 3.2x as long (1.55 s against 0.46 s, medians
of 5, N = 1024, D = 128, V = 8192 float32, 2 threads, on a loaded 2-core machine).

Each chunk's gradient is written over the chunk's logits, so a chunk costs one (chunk, V) buffer and no
copies (the reference layer keeps the chunk's softmax beside it). The logits come out of a D-term matmul
and already carry its rounding (about ``sqrt(D) eps |x| |w|``), so the row kernel's 'fast' precision, a
few eps, is as accurate as the result can be: 'accurate' would spend time on digits the matmul has
already lost.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypedDict

import numpy as np
import numpy.typing as npt

from .._checks import (
    Array,
    Backend,
    Reduction,
    as_float_array,
    check_cache,
    check_dout,
    check_same_dtype,
)
from .cross_entropy import (
    LossOptions,
    RowTargets,
    _check_options,
    check_targets,
    loss_rows_backward,
    loss_rows_forward,
    mean_denominator,
    reduce_losses,
)


class Layer(TypedDict):
    """Which layer runs the row kernel, and on how many threads (see ``ce_rows_forward``)."""

    backend: Backend
    threads: int


# rows per matrix product (the grain of the chunks). Measured on N = 1024, D = 128, V = 8192 float32, 2 threads,
# forward + backward, medians of 7 runs against one product per 512-row chunk: 256-row tiles cost 0-10%,
# 128-row tiles 20-30% (OpenBLAS is slower per row on the shorter products), on a shared 2-core machine
# whose load moved single medians by up to 3x (rerun: benchmarks/bench_linear_ce.py --quick).
TILE = 256
CHUNK_BYTES = 4 * 2**20  # default chunk: the rows whose (chunk, V) logits take about 4 MiB ...
MIN_CHUNK = 512  # ... but never fewer rows: each chunk is one call of the row kernel


class LinearCrossEntropyCache(NamedTuple):
    """What the backward needs.

    For 'mean' and 'sum' the forward already computed the gradients for ``dloss = 1`` (``grads``), and the
    backward only scales them. For 'none' the upstream gradient differs per row and enters the weight
    gradient inside the sum over rows, so the backward recomputes each chunk from ``x``, ``weight`` and
    ``bias`` (``grads`` is None).
    """

    x: Array  # (N, D): an unbatched (D,) x viewed as one row
    weight: Array  # (D, V)
    bias: Array | None  # (V,)
    targets: RowTargets  # class indices (N,) (and the ignored rows) or probabilities (N, V)
    class_weight: Array | None  # (V,)
    opts: LossOptions
    denom: float  # the divisor of the mean, over the whole batch
    reduction: Reduction
    chunk_size: int  # rows per chunk, a multiple of TILE
    grads: tuple[Array, Array, Array | None] | None  # (dx (N, D), dweight (D, V), dbias (V,) | None)
    unbatched: bool  # x was (D,): dx is returned as (D,)
    batch_invariant: bool = False  # the logits row by row in a fixed order


def default_chunk_size(V: int, dtype: np.dtype[Any]) -> int:
    """Rows per chunk when none is given: about ``CHUNK_BYTES`` of logits, at least ``MIN_CHUNK`` rows."""
    return max(MIN_CHUNK, CHUNK_BYTES // max(1, V * dtype.itemsize))


class _Inputs(NamedTuple):
    x: Array  # (N, D)
    weight: Array  # (D, V)
    bias: Array | None  # (V,)
    targets: RowTargets
    class_weight: Array | None  # (V,)
    opts: LossOptions
    chunk_size: int  # a multiple of TILE
    unbatched: bool
    batch_invariant: bool = False


def _check_inputs(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    target: npt.ArrayLike,
    bias: npt.ArrayLike | None,
    class_weight: npt.ArrayLike | None,
    chunk_size: int | None,
    reduction: Reduction,
    opts: dict[str, Any],
    batch_invariant: object = False,
) -> _Inputs:
    x = as_float_array("x", x, ndim=(1, 2))
    weight = as_float_array("weight", weight, ndim=2)
    check_same_dtype("weight", weight, "x", x)
    if x.dtype == np.float16:  # a float16 sum of exps overflows past 65,504 classes; no float16 kernel
        raise TypeError("x must be float32 or float64 (float16 is not supported: cast to float32), got dtype float16")
    unbatched = x.ndim == 1
    D = x.shape[-1]
    if weight.shape[0] != D:
        raise ValueError(
            f"x has {D} features (shape {x.shape}) but weight expects {weight.shape[0]} "
            f"(shape {weight.shape}, laid out (in_features D, classes V))"
        )
    V = weight.shape[1]
    if bias is not None:
        bias = as_float_array("bias", bias, ndim=1)
        check_same_dtype("bias", bias, "x", x)
        if bias.shape[0] != V:
            raise ValueError(f"bias must have shape ({V},), got shape {bias.shape}")
    if class_weight is not None:
        class_weight = as_float_array("class_weight", class_weight, ndim=1)
        check_same_dtype("class_weight", class_weight, "x", x)
        if class_weight.shape[0] != V:
            raise ValueError(f"class_weight must have one entry per class (V = {V}), got shape {class_weight.shape}")
    loss_opts = _check_options(reduction=reduction, **opts)
    if isinstance(target, (np.ndarray, list, tuple)) and np.ndim(target) == 1 and not unbatched:
        t_len = len(target)
        if t_len != x.shape[0] and np.asarray(target).dtype.kind in "iu":
            raise ValueError(f"target has {t_len} rows but x has {x.shape[0]} (shape {x.shape})")
    logits_shape = (V,) if unbatched else (x.shape[0], V)
    targets = check_targets(target, logits_shape, x.dtype, opts["ignore_index"], loss_opts.backend,
                            name="logits x @ weight")
    if chunk_size is None:
        chunk_size = default_chunk_size(V, x.dtype)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise TypeError(f"chunk_size must be a positive int or None, got {type(chunk_size).__name__} {chunk_size!r}")
    elif chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")
    chunk = -(-int(chunk_size) // TILE) * TILE  # whole tiles
    x2 = x.reshape(1, D) if unbatched else x  # (N, D)
    if not isinstance(batch_invariant, (bool, np.bool_)):
        raise TypeError(f"batch_invariant must be a bool, got {type(batch_invariant).__name__} {batch_invariant!r}")
    if batch_invariant and loss_opts.backend == "compiled":
        x2, weight = np.ascontiguousarray(x2), np.ascontiguousarray(weight)  # the kernel's layout
    return _Inputs(x2, weight, bias, targets, class_weight, loss_opts, chunk, unbatched, bool(batch_invariant))


def _chunk_logits(x_c: Array, inp: _Inputs) -> Array:
    """The (c, V) logits of a chunk: one product per TILE rows (the chunk starts on a tile), or with
    ``batch_invariant`` row by row in a fixed order (d = 0, 1, ..., each product and sum rounded)."""
    weight, bias = inp.weight, inp.bias
    logits = np.empty((x_c.shape[0], weight.shape[1]), dtype=x_c.dtype)  # (c, V)
    if inp.batch_invariant and inp.opts.backend == "compiled":
        from ..kernels.rows_matmul import rows_matmul

        rows_matmul(x_c, weight, logits, inp.opts.threads)
    elif inp.batch_invariant:
        logits[...] = 0
        for d in range(x_c.shape[1]):
            logits += x_c[:, d, None] * weight[d]  # (c, V)  row n: sum_d x[n, d] w[d], in the order of d
    else:
        for k in range(0, x_c.shape[0], TILE):
            np.matmul(x_c[k : k + TILE], weight, out=logits[k : k + TILE])  # (TILE, V)
    if bias is not None:
        logits += bias
    return logits


def _walk(
    inp: _Inputs, row_scale: Array | None, losses: Array | None, lse: Array | None
) -> tuple[Array, Array, Array | None] | None:
    """Walk the row chunks; for each, make its logits and its per-row losses (into ``losses``) and lse
    (into ``lse``); with ``row_scale`` (N,), also ``dlogits`` for those per-row upstream gradients, in the
    logits' buffer, pushed through the linear layer's backward tile by tile."""
    x, weight, bias = inp.x, inp.weight, inp.bias
    N, D = x.shape
    V = weight.shape[1]
    grads = row_scale is not None
    if grads:
        dx = np.empty((N, D), dtype=x.dtype)  # (N, D)
        dweight = np.zeros((D, V), dtype=x.dtype)  # (D, V)
        dbias = np.zeros(V, dtype=x.dtype) if bias is not None else None  # (V,)
        dweight_t = np.empty((D, V), dtype=x.dtype) if N > TILE else dweight  # (D, V) one tile's share
        weight_T = weight.T  # (V, D) a view
    for r0 in range(0, N, inp.chunk_size):
        r1 = min(r0 + inp.chunk_size, N)
        logits = _chunk_logits(x[r0:r1], inp)  # (c, V)
        loss_c, state = loss_rows_forward(logits, inp.targets.rows(r0, r1), inp.class_weight, inp.opts,
                                          overwrite=True)  # (c,)
        if losses is not None:
            losses[r0:r1] = loss_c
        if lse is not None:
            lse[r0:r1] = state.lse
        if grads:
            assert row_scale is not None
            dlogits = loss_rows_backward(row_scale[r0:r1], state, out=logits)  # (c, V), over the logits
            for k0 in range(r0, r1, TILE):  # tile by tile, in row order: the same products for every chunk
                k1 = min(k0 + TILE, r1)
                dl_t, x_t = dlogits[k0 - r0 : k1 - r0], x[k0:k1]  # (t, V), (t, D)
                np.matmul(dl_t, weight_T, out=dx[k0:k1])  # (t, D)  dx = dlogits @ weight.T
                if dweight_t is dweight:
                    np.matmul(x_t.T, dl_t, out=dweight)  # (D, V)  the only tile
                else:
                    np.matmul(x_t.T, dl_t, out=dweight_t)  # (D, V)  dweight = sum over tiles of x_t.T @ dl_t
                    dweight += dweight_t
                if dbias is not None:
                    dbias += dl_t.sum(axis=0)  # (V,)
            del dlogits
        del logits, state  # before the next chunk's buffer is made: one (chunk, V) buffer at a time
    return (dx, dweight, dbias) if grads else None


def _opts(
    ignore_index: int, label_smoothing: float, z_loss: float, softcap: float | None, return_lse: bool,
    backend: Backend, threads: int | None,
) -> dict[str, Any]:
    return {"label_smoothing": label_smoothing, "ignore_index": ignore_index, "precision": "fast",
            "backend": backend, "threads": threads, "z_loss": z_loss, "softcap": softcap, "return_lse": return_lse}


def linear_cross_entropy_forward(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    target: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    *,
    class_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    chunk_size: int | None = None,
    batch_invariant: bool = False,
    backend: Backend = "compiled",
    threads: int | None = None,
) -> tuple[Any, LinearCrossEntropyCache]:
    """``loss = cross_entropy(x @ weight + bias, target, ...)``, chunked over rows, with every option of
    :func:`~tinyops.ops.cross_entropy.cross_entropy_forward`.

    ``backend`` ('compiled' or 'reference') and ``threads`` (rows in parallel; None: one) choose how each
    chunk's cross-entropy runs; the matrix products are NumPy's (BLAS) either way.

    Fused: for 'mean' and 'sum' the gradients are computed here, chunk by chunk while each chunk's
    logits are hot (as torch's chunked ``F.linear_cross_entropy`` does); the backward only scales them.
    For 'none' the forward keeps no gradient and the backward recomputes the chunks.

    Args:
        x: (N, D) float32/float64, or (D,) for one unbatched row (the loss is then 0-D for every reduction).
        weight: (D, V), x's dtype; laid out (in, out) like :func:`tinyops.linear_forward`
            (torch's ``F.linear_cross_entropy`` takes the transpose, (V, D), as ``linear_weight``).
        target: (N,) (or () when unbatched) integers in [0, V) or equal to ``ignore_index``; or (N, V)
            (or (V,)) probabilities in x's dtype.
        bias: (V,) in x's dtype, or None (torch's ``linear_bias``).
        class_weight: (V,) class weights in x's dtype, or None (torch's ``weight``).
        ignore_index, reduction, label_smoothing, z_loss, softcap, return_lse: as
            :func:`~tinyops.ops.cross_entropy.cross_entropy_forward` ('mean' is nan for N == 0, as torch).
        chunk_size: rows per chunk, rounded up to whole tiles of ``TILE`` (256) rows; None picks about
            4 MiB of logits per chunk (at least 512 rows). The results do not depend on it, to the bit.
        batch_invariant: make the logits row by row in a fixed order, so that a row's loss and lse are
            the same bits alone and in any batch (about 3x the time; see the module docstring).
        backend: 'compiled' (default) or 'reference': the layer of each chunk's cross-entropy.
        threads: rows of a chunk in parallel on this many threads (None: one).

    Returns:
        ``(loss, cache)``, or ``((loss, lse), cache)`` with ``return_lse`` (lse: (N,), or () unbatched):
        loss 0-D (mean, sum) or (N,) (none) in x's dtype.

    Raises:
        TypeError: non-floating or float16 x/weight/bias/class_weight, dtypes that differ, a target neither
            integer nor floating, non-int chunk_size, options of the wrong type (as cross_entropy_forward).
        ValueError: wrong dimensions or sizes, chunk_size < 1, unknown reduction, options out of range.
        IndexError: a target outside [0, V) that is not ``ignore_index``.
    """
    inp = _check_inputs(x, weight, target, bias, class_weight, chunk_size, reduction,
                        _opts(ignore_index, label_smoothing, z_loss, softcap, return_lse, backend, threads),
                        batch_invariant)
    N = inp.x.shape[0]
    denom = mean_denominator(inp.targets, inp.class_weight)
    losses = np.empty(N, dtype=inp.x.dtype)  # (N,)
    lse = np.empty(N, dtype=inp.x.dtype) if return_lse else None  # (N,)
    grads = None
    if reduction == "none":  # the loss only; the backward recomputes the chunks
        _walk(inp, None, losses, lse)
    else:  # d loss / d loss_n for dloss = 1; a divisor of 0 (the loss is nan) gives the kept rows nan, as torch
        per_row = 1.0 if reduction == "sum" else 1.0 / denom if denom != 0 else np.nan
        grads = _walk(inp, np.full(N, per_row, dtype=inp.x.dtype), losses, lse)
    out_shape = () if inp.unbatched else (N,)
    loss = reduce_losses(losses.reshape(out_shape), reduction, denom=denom)
    cache = LinearCrossEntropyCache(inp.x, inp.weight, inp.bias, inp.targets, inp.class_weight, inp.opts, denom,
                                    reduction, inp.chunk_size, grads, inp.unbatched, inp.batch_invariant)
    if lse is not None:
        return (loss, lse.reshape(out_shape)), cache
    return loss, cache


def linear_cross_entropy_backward(
    dloss: npt.ArrayLike, cache: LinearCrossEntropyCache
) -> tuple[Array, Array, Array | None]:
    """Gradients of the fused loss with respect to x, weight and bias.

    Args:
        dloss: the loss's shape: 0-D (a Python float is fine), or (N,) for 'none' (0-D when unbatched);
            x's dtype. With ``return_lse``, the gradient of the loss only (the lse is not differentiated).
        cache: from :func:`linear_cross_entropy_forward`.

    Returns:
        ``(dx, dweight, dbias)``: x's shape, (D, V), and (V,) or None when the forward had no bias.

    Derivation:
        With ``logits = x @ weight + bias`` the cross-entropy's backward gives, row by row,
        ``dlogits[n] = g[n] * (softmax(logits[n]) - onehot(target[n]))`` with ``g[n] = dloss / N``
        (mean), ``dloss`` (sum) or ``dloss[n]`` (none) -- and with every option, the per-row gradient of
        :func:`~tinyops.ops.cross_entropy.loss_rows_backward`. The linear layer's backward then gives
        ``dx = dlogits @ weight.T``, ``dweight = x.T @ dlogits`` and ``dbias = dlogits.sum(0)``.
        Row n of dlogits touches only row n of dx and adds one term to the sums over rows in dweight
        and dbias, so tile by tile of rows:
        ``dx[t] = dlogits[t] @ weight.T``, ``dweight = sum_t x[t].T @ dlogits[t]``,
        ``dbias = sum_t dlogits[t].sum(0)``. For 'mean' and 'sum', g is ``dloss`` times the forward's
        ``g`` for ``dloss = 1``, so each gradient is the forward's times ``dloss``.
    """
    check_cache(cache, LinearCrossEntropyCache, "linear_cross_entropy_forward")
    x, reduction, grads = cache.x, cache.reduction, cache.grads
    N = x.shape[0]
    dloss = check_dout(dloss, (N,) if reduction == "none" and not cache.unbatched else (), x.dtype, name="dloss")
    if grads is not None:
        dx1, dweight1, dbias1 = grads
        dx, dweight, dbias = dx1 * dloss, dweight1 * dloss, None if dbias1 is None else dbias1 * dloss
    else:
        inp = _Inputs(x, cache.weight, cache.bias, cache.targets, cache.class_weight, cache.opts, cache.chunk_size,
                      cache.unbatched, cache.batch_invariant)
        walked = _walk(inp, np.ascontiguousarray(dloss.reshape(N)), None, None)
        assert walked is not None
        dx, dweight, dbias = walked
    return (dx.reshape(x.shape[1]) if cache.unbatched else dx), dweight, dbias


def linear_cross_entropy(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    target: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    *,
    class_weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    chunk_size: int | None = None,
    batch_invariant: bool = False,
    backend: Backend = "compiled",
    threads: int | None = None,
) -> Any:
    """The loss (or ``(loss, lse)``) of :func:`linear_cross_entropy_forward`, chunk by chunk, computing no
    gradient."""
    inp = _check_inputs(x, weight, target, bias, class_weight, chunk_size, reduction,
                        _opts(ignore_index, label_smoothing, z_loss, softcap, return_lse, backend, threads),
                        batch_invariant)
    N = inp.x.shape[0]
    losses = np.empty(N, dtype=inp.x.dtype)  # (N,)
    lse = np.empty(N, dtype=inp.x.dtype) if return_lse else None  # (N,)
    _walk(inp, None, losses, lse)
    out_shape = () if inp.unbatched else (N,)
    loss = reduce_losses(losses.reshape(out_shape), reduction, denom=mean_denominator(inp.targets, inp.class_weight))
    return (loss, lse.reshape(out_shape)) if lse is not None else loss
