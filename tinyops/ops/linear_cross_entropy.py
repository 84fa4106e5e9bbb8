"""Fused linear + cross-entropy: ``loss = cross_entropy(x @ weight + bias, target)`` without the N x V logits.

Shapes: N = rows, D = features, V = classes (the vocabulary). ``x`` (N, D), ``weight`` (D, V) laid out
(in, out) as in :mod:`tinyops.ops.linear`, ``bias`` (V,) or None, ``target`` (N,) integers in [0, V).

The unfused path holds the (N, V) logits, their softmax and their gradient at once: 3 N V numbers, which
for a language-model head (N = 4096, V = 32768) is 1.5 GiB in float32. Here the rows are cut into chunks
of ``chunk_size``; each chunk's logits are made, turned into the chunk's loss *and* its gradient while
they are hot, pushed through the two gradient matmuls, and dropped. At most one chunk's (chunk_size, V)
logits, softmax and gradient live at a time, beside the (D, V) weight gradient that any backward holds.

Why the rows and not the vocabulary: a vocabulary chunk cannot finish its gradient until the online
log-sum-exp has seen the whole row, so it must either keep the row's logits (the memory it meant to
save) or recompute them (a fourth N x D x V matmul on an op whose three matmuls already are the time).
Row chunks need neither.

Each chunk goes through the cross-entropy's row kernel (:func:`~tinyops.ops.cross_entropy.ce_rows_forward`,
on the layer ``backend`` names) and its gradient is written over the chunk's logits, so a chunk costs one
(chunk, V) buffer and no copies (the reference layer keeps the chunk's softmax beside it). The logits come
out of a D-term matmul and already carry its rounding (about ``sqrt(D) eps |x| |w|``), so the kernel's
'fast' precision, a few eps, is as accurate as the result can be: 'accurate' would spend time on digits
the matmul has already lost.
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
    as_index_array,
    check_backend,
    check_cache,
    check_dout,
    check_reduction,
    check_same_dtype,
    check_threads,
)
from .cross_entropy import ce_rows_backward, ce_rows_forward, reduce_losses


class Layer(TypedDict):
    """Which layer runs the row kernel, and on how many threads (see ``ce_rows_forward``)."""

    backend: Backend
    threads: int

CHUNK_BYTES = 4 * 2**20  # default chunk: the rows whose (chunk, V) logits take about 4 MiB ...
MIN_CHUNK = 512  # ... but never fewer rows: each chunk is three BLAS calls and one pass over the (D, V) gradient


class LinearCrossEntropyCache(NamedTuple):
    """What the backward needs.

    For 'mean' and 'sum' the forward already computed the gradients for ``dloss = 1`` (``grads``), and the
    backward only scales them. For 'none' the upstream gradient differs per row and enters the weight
    gradient inside the sum over rows, so the backward recomputes each chunk from ``x``, ``weight`` and
    ``bias`` (``grads`` is None).
    """

    x: Array  # (N, D)
    weight: Array  # (D, V)
    bias: Array | None  # (V,)
    target: npt.NDArray[np.intp]  # (N,)
    reduction: Reduction
    chunk_size: int
    grads: tuple[Array, Array, Array | None] | None  # (dx (N, D), dweight (D, V), dbias (V,) | None)
    layer: Layer


def default_chunk_size(V: int, dtype: np.dtype[Any]) -> int:
    """Rows per chunk when none is given: about ``CHUNK_BYTES`` of logits, at least ``MIN_CHUNK`` rows."""
    return max(MIN_CHUNK, CHUNK_BYTES // max(1, V * dtype.itemsize))


def _check_inputs(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    target: npt.ArrayLike,
    bias: npt.ArrayLike | None,
    chunk_size: int | None,
    reduction: Reduction,
) -> tuple[Array, Array, npt.NDArray[np.intp], Array | None, int]:
    x = as_float_array("x", x, ndim=2)
    weight = as_float_array("weight", weight, ndim=2)
    check_same_dtype("weight", weight, "x", x)
    if x.dtype == np.float16:  # a float16 sum of exps overflows past 65,504 classes; no float16 kernel
        raise TypeError("x must be float32 or float64 (float16 is not supported: cast to float32), got dtype float16")
    N, D = x.shape
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
    check_reduction(reduction)
    t = as_index_array("target", target, V, size_name="number of classes V")
    if t.ndim != 1:
        raise ValueError(f"target must be 1-D (N,), got shape {t.shape}")
    if t.shape[0] != N:
        raise ValueError(f"target has {t.shape[0]} rows but x has {N} (shape {x.shape})")
    if chunk_size is None:
        chunk_size = default_chunk_size(V, x.dtype)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise TypeError(f"chunk_size must be a positive int or None, got {type(chunk_size).__name__} {chunk_size!r}")
    elif chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")
    return x, weight, t.astype(np.intp, copy=False), bias, int(chunk_size)


def _layer(backend: object, threads: object) -> Layer:
    check_backend(backend)
    return Layer(backend=backend, threads=check_threads(threads))  # type: ignore[typeddict-item]  # checked


def _chunk_logits(x_c: Array, weight: Array, bias: Array | None) -> Array:
    logits = x_c @ weight  # (c, V)  a fresh array: the bias is added in place
    if bias is not None:
        logits += bias
    return logits


def _chunk_losses(
    x: Array, weight: Array, bias: Array | None, target: npt.NDArray[np.intp], chunk_size: int, layer: Layer
) -> Array:
    """The (N,) per-row losses, one chunk of logits at a time, with no gradient."""
    N = x.shape[0]
    losses = np.empty(N, dtype=x.dtype)  # (N,)
    for r0 in range(0, N, chunk_size):
        r1 = min(r0 + chunk_size, N)
        logits = _chunk_logits(x[r0:r1], weight, bias)  # (c, V)
        losses[r0:r1] = ce_rows_forward(logits, target[r0:r1], precision="fast", **layer)[0]
    return losses


def _accumulate_grads(
    x: Array,
    weight: Array,
    bias: Array | None,
    target: npt.NDArray[np.intp],
    chunk_size: int,
    row_scale: Array,
    losses: Array | None,
    layer: Layer,
) -> tuple[Array, Array, Array | None]:
    """Walk the row chunks; for each, make its logits, its loss (into ``losses`` when given) and
    ``dlogits = row_scale * (softmax - onehot)`` in the logits' buffer, and push dlogits through the
    linear layer's backward."""
    N, D = x.shape
    V = weight.shape[1]
    dx = np.empty((N, D), dtype=x.dtype)  # (N, D)
    dweight = np.zeros((D, V), dtype=x.dtype)  # (D, V)
    dbias = np.zeros(V, dtype=x.dtype) if bias is not None else None  # (V,)
    dweight_c = np.empty((D, V), dtype=x.dtype) if N > chunk_size else dweight  # (D, V) one chunk's share
    weight_T = weight.T  # (V, D) a view
    for r0 in range(0, N, chunk_size):
        r1 = min(r0 + chunk_size, N)
        x_c, t_c, g_c = x[r0:r1], target[r0:r1], row_scale[r0:r1]  # (c, D), (c,), (c,)
        logits = _chunk_logits(x_c, weight, bias)  # (c, V)
        loss_c, _, state = ce_rows_forward(logits, t_c, precision="fast", **layer)  # (c,)
        if losses is not None:
            losses[r0:r1] = loss_c
        dlogits = ce_rows_backward(g_c, state, out=logits)  # (c, V) g * (softmax - onehot), over the logits
        np.matmul(dlogits, weight_T, out=dx[r0:r1])  # (c, D)  dx = dlogits @ weight.T
        if dweight_c is dweight:
            np.matmul(x_c.T, dlogits, out=dweight)  # (D, V)  the only chunk
        else:
            np.matmul(x_c.T, dlogits, out=dweight_c)  # (D, V)  dweight = sum over chunks of x_c.T @ dlogits
            dweight += dweight_c
        if dbias is not None:
            dbias += dlogits.sum(axis=0)  # (V,)
        del logits, dlogits, state  # before the next chunk's buffer is made: one (chunk, V) buffer at a time
    return dx, dweight, dbias


def linear_cross_entropy_forward(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    target: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    *,
    chunk_size: int | None = None,
    reduction: Reduction = "mean",
    backend: Backend = "compiled",
    threads: int | None = None,
) -> tuple[Array, LinearCrossEntropyCache]:
    """``loss = cross_entropy(x @ weight + bias, target, reduction)``, chunked over rows.

    ``backend`` ('compiled' or 'reference') and ``threads`` (rows in parallel; None: one) choose how each
    chunk's cross-entropy runs; the matrix products are NumPy's (BLAS) either way.

    Fused: for 'mean' and 'sum' the gradients are computed here, chunk by chunk while each chunk's
    logits are hot (as torch's chunked ``F.linear_cross_entropy`` does); the backward only scales them.
    For 'none' the forward keeps no gradient and the backward recomputes the chunks.

    Args:
        x: (N, D) float32/float64.
        weight: (D, V), x's dtype; laid out (in, out) like :func:`tinyops.linear_forward`
            (torch's ``F.linear_cross_entropy`` takes the transpose, (V, D)).
        target: (N,) integers in [0, V).
        bias: (V,) in x's dtype, or None.
        chunk_size: rows per chunk; None picks about 4 MiB of logits per chunk (at least 512 rows).
            The result does not depend on it beyond rounding in the weight and bias gradient sums.
        reduction: 'mean' (nan for N == 0, as torch) | 'sum' | 'none'.
        backend: 'compiled' (default) or 'reference': the layer of each chunk's cross-entropy.
        threads: rows of a chunk in parallel on this many threads (None: one).

    Returns:
        ``(loss, cache)``: loss 0-D (mean, sum) or (N,) (none) in x's dtype.

    Raises:
        TypeError: non-floating or float16 x/weight/bias, dtypes that differ, non-integer target, non-int chunk_size.
        ValueError: wrong dimensions or sizes, chunk_size < 1, unknown reduction.
        IndexError: a target is negative or >= V.
    """
    x, weight, t, bias, chunk_size = _check_inputs(x, weight, target, bias, chunk_size, reduction)
    layer = _layer(backend, threads)
    N = x.shape[0]
    grads = None
    if reduction == "none":  # the loss only; the backward recomputes the chunks
        losses = _chunk_losses(x, weight, bias, t, chunk_size, layer)  # (N,)
    else:
        losses = np.empty(N, dtype=x.dtype)  # (N,)
        per_row = 1.0 / max(N, 1) if reduction == "mean" else 1.0
        row_scale = np.full(N, per_row, dtype=x.dtype)  # (N,)  d loss / d loss_n for dloss = 1
        grads = _accumulate_grads(x, weight, bias, t, chunk_size, row_scale, losses, layer)
    loss = reduce_losses(losses, reduction)
    return loss, LinearCrossEntropyCache(x, weight, bias, t, reduction, chunk_size, grads, layer)


def linear_cross_entropy_backward(
    dloss: npt.ArrayLike, cache: LinearCrossEntropyCache
) -> tuple[Array, Array, Array | None]:
    """Gradients of the fused loss with respect to x, weight and bias.

    Args:
        dloss: the loss's shape: 0-D (a Python float is fine) or (N,) for 'none'; x's dtype.
        cache: from :func:`linear_cross_entropy_forward`.

    Returns:
        ``(dx, dweight, dbias)``: (N, D), (D, V), and (V,) or None when the forward had no bias.

    Derivation:
        With ``logits = x @ weight + bias`` the cross-entropy's backward gives, row by row,
        ``dlogits[n] = g[n] * (softmax(logits[n]) - onehot(target[n]))`` with ``g[n] = dloss / N``
        (mean), ``dloss`` (sum) or ``dloss[n]`` (none). The linear layer's backward then gives
        ``dx = dlogits @ weight.T``, ``dweight = x.T @ dlogits`` and ``dbias = dlogits.sum(0)``.
        Row n of dlogits touches only row n of dx and adds one term to the sums over rows in dweight
        and dbias, so chunk by chunk of rows:
        ``dx[c] = dlogits[c] @ weight.T``, ``dweight = sum_c x[c].T @ dlogits[c]``,
        ``dbias = sum_c dlogits[c].sum(0)``. For 'mean' and 'sum', g is ``dloss`` times the forward's
        ``g`` for ``dloss = 1``, so each gradient is the forward's times ``dloss``.
    """
    check_cache(cache, LinearCrossEntropyCache, "linear_cross_entropy_forward")
    x, weight, bias, t, reduction, chunk_size, grads, layer = cache
    N = x.shape[0]
    dloss = check_dout(dloss, (N,) if reduction == "none" else (), x.dtype, name="dloss")
    if grads is not None:
        dx1, dweight1, dbias1 = grads
        return dx1 * dloss, dweight1 * dloss, None if dbias1 is None else dbias1 * dloss
    row_scale = np.ascontiguousarray(dloss)  # (N,)
    return _accumulate_grads(x, weight, bias, t, chunk_size, row_scale, None, layer)


def linear_cross_entropy(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    target: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    *,
    chunk_size: int | None = None,
    reduction: Reduction = "mean",
    backend: Backend = "compiled",
    threads: int | None = None,
) -> Array:
    """The loss of :func:`linear_cross_entropy_forward`, chunk by chunk, computing no gradient."""
    x, weight, t, bias, chunk_size = _check_inputs(x, weight, target, bias, chunk_size, reduction)
    return reduce_losses(_chunk_losses(x, weight, bias, t, chunk_size, _layer(backend, threads)), reduction)
