"""Embedding lookup: ``out = weight[idx]``.

Shapes: V = vocabulary size (num_embeddings), D = embedding size, ``...`` = any index shape (the seed's
is N, T).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import (
    MAX_NDIM,
    Array,
    Backend,
    as_float_array,
    as_index_array,
    check_backend,
    check_bool,
    check_cache,
    check_dout,
    check_threads,
    is_int,
    is_number,
)


class EmbeddingCache(NamedTuple):
    idx: npt.NDArray[np.integer[Any]]  # (...)   the looked-up rows
    weight_shape: tuple[int, int]  # (V, D)
    dtype: np.dtype[Any]  # the weight's dtype
    padding_idx: int | None  # in [0, V): the row that gets no gradient
    scale_grad_by_freq: bool
    backend: Backend
    threads: int


def _check_padding_idx(padding_idx: object, V: int) -> int | None:
    """Return ``padding_idx`` in [0, V) (a negative one counts from the end, as torch), or raise."""
    if padding_idx is None:
        return None
    if not is_int(padding_idx):
        raise TypeError(f"padding_idx must be an int or None, got {type(padding_idx).__name__} {padding_idx!r}")
    if not -V <= padding_idx < V:
        raise ValueError(f"padding_idx must be in [-{V}, {V}) (num_embeddings = {V}), got {padding_idx}")
    return int(padding_idx) % V


def index_rows(idx: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.intp]:
    """Any index array as C-contiguous (R, T) intp rows: T its last axis (2-D and up), or 1 (0-D and 1-D)."""
    rows = np.ascontiguousarray(idx, dtype=np.intp)
    if rows.ndim == 2:
        return rows
    return rows.reshape(math.prod(rows.shape[:-1]), rows.shape[-1]) if rows.ndim > 2 else rows.reshape(rows.size, 1)


@functools.cache
def _kernels() -> Any:
    """:mod:`tinyops.kernels.embedding`, imported on first use: importing tinyops does not import numba."""
    from ..kernels import embedding

    return embedding


# ============================================================================ the entry points (no checks)


def embedding_gather(
    weight: Array, idx: npt.NDArray[np.intp], *, out: Array | None = None, backend: Backend = "compiled",
    threads: int = 1,
) -> Array:
    """The lookup ``out[r, t*D:(t+1)*D] = weight[idx[r, t]]``: (R, T) indices into (R, T*D) rows; checks nothing.

    The entry point of :func:`embedding_forward` and of :class:`tinyops.mlp.Trainer` (whose contexts are
    already checked).

    Args:
        weight: (V, D), C-contiguous.
        idx: (R, T) intp in [0, V), C-contiguous (:func:`index_rows`).
        out: None (a new (R, T*D) array) or a C-contiguous (R, W) array of weight's dtype with W >= T*D,
            whose first T*D columns receive the rows (the trainer's ``[embcat, 1]`` buffer).
        backend: 'compiled' (:mod:`tinyops.kernels.embedding`) or 'reference' (NumPy fancy indexing).
        threads: rows of idx in parallel on this many threads (compiled). Bit-identical results.

    Returns:
        ``out`` (or the new array).
    """
    (R, T), D = idx.shape, weight.shape[1]
    if out is None:
        out = np.empty((R, T * D), weight.dtype)
    if backend == "reference":
        out[:, : T * D].reshape(R, T, D)[...] = weight[idx]  # (R, T, D) a view of out's first T*D columns
        return out
    kernels = _kernels()
    if weight.dtype.char in "fd":  # float32, float64
        kernels.gather(weight, idx, out, threads)
    else:  # float16, which numba does not compute with: a copy of its bits
        kernels.gather(weight.view(np.uint16), idx, out.view(np.uint16), threads)
    return out


def embedding_weight_grad(
    idx: npt.NDArray[np.intp], dout: Array, V: int, D: int, *, padding_idx: int | None = None,
    scale_grad_by_freq: bool = False, out: Array | None = None, backend: Backend = "compiled", threads: int = 1,
) -> Array:
    """The scatter-add ``dweight[v] = sum_{(r, t): idx[r, t] == v} dout[r, t*D:(t+1)*D]``; checks nothing.

    The entry point of :func:`embedding_backward` and of :class:`tinyops.mlp.Trainer`; the derivation is
    :func:`embedding_backward`'s.

    Args:
        idx: (R, T) intp in [0, V), C-contiguous.
        dout: (R, W) C-contiguous upstream rows with W >= T*D: the first T*D columns are read.
        V, D: the table's shape.
        padding_idx, scale_grad_by_freq: as :func:`embedding_forward` (in [0, V) or None).
        out: None (a new array) or a (V, D) C-contiguous array of dout's dtype (overwritten).
        backend: 'compiled' (:mod:`tinyops.kernels.embedding`) or 'reference' (``np.add.at``).
        threads: blocks of columns of dweight in parallel (compiled). Bit-identical results.

    Returns:
        dweight (V, D): ``out`` if given.
    """
    R, T = idx.shape
    # float16, which numba does not compute with (and whose sums stall: 2048 + 1 rounds to 2048), is summed
    # and scaled in float32 and rounded once at the end
    acc_dtype = np.float32 if dout.dtype == np.float16 else dout.dtype
    # accumulate in out itself when it has the dtype to (zeros otherwise: lazily zeroed pages)
    dweight = out if out is not None and acc_dtype == dout.dtype else np.zeros((V, D), acc_dtype)
    given = dweight is out
    if backend == "reference":
        if given:
            dweight.fill(0)
        rows = dout[:, : T * D].reshape(R * T, D).astype(acc_dtype, copy=False)  # (M, D) the upstream row of each index
        np.add.at(dweight, idx.reshape(-1), rows)  # unbuffered: a row looked up k times gets k rows added
    else:
        _kernels().scatter_add(idx, dout.astype(acc_dtype, copy=False), dweight, threads, given)
    if scale_grad_by_freq:
        count = np.bincount(idx.reshape(-1), minlength=V)  # (V,)
        dweight /= np.maximum(count, 1)[:, None].astype(dweight.dtype)  # rows never looked up stay 0
    if padding_idx is not None:
        dweight[padding_idx] = 0
    if dweight.dtype == dout.dtype:
        return dweight
    rounded = np.empty((V, D), dout.dtype) if out is None else out  # float16: rounded once
    rounded[...] = dweight
    return rounded


# ============================================================================ the op


def embedding_forward(
    weight: npt.ArrayLike,
    idx: npt.ArrayLike,
    *,
    padding_idx: int | None = None,
    scale_grad_by_freq: bool = False,
    backend: Backend = "compiled",
    threads: int | None = None,
) -> tuple[npt.NDArray[Any], EmbeddingCache]:
    """Look up rows of ``weight``: ``out[..., :] = weight[idx[...], :]``.

    ``max_norm`` (torch's option) is left out on purpose: torch renormalizes the looked-up rows of
    ``weight`` *in place* during the forward, and no tinyops op writes into its inputs. Its effect is
    available as a separate step, :func:`embedding_renorm`, which returns the renormalized weight.

    Args:
        weight: (V, D) float array.
        idx: integer array of any shape ``...`` with values in ``[0, V)``.
        padding_idx: a row that receives no gradient (the forward still returns it as it is, as torch);
            negative values count from the end. None (default) for none.
        scale_grad_by_freq: divide each row's gradient by how many times it was looked up in ``idx``.
        backend: 'compiled' (default; :mod:`tinyops.kernels.embedding`) or 'reference' (plain NumPy).
            The backward uses the same.
        threads: the compiled layer's threads (None: one); the results do not depend on it.

    Returns:
        ``(out, cache)``: out is (..., D) with weight's dtype; the cache holds ``idx``, (V, D), the dtype,
        the two options, the backend and the thread count.

    Raises:
        TypeError: weight is not floating, idx is not integer (floats and bools are rejected), or
            padding_idx is not an int, scale_grad_by_freq is not a bool.
        ValueError: weight is not 2-D, idx has more than 63 dimensions (out would pass NumPy's 64),
            padding_idx is outside [-V, V), an unknown backend, bad threads.
        IndexError: an index is negative or >= V (NumPy would wrap a negative index silently).
    """
    check_backend(backend)
    n_threads = check_threads(threads)
    weight = as_float_array("weight", weight, ndim=2)
    V, D = weight.shape
    pad = _check_padding_idx(padding_idx, V)
    scale = check_bool("scale_grad_by_freq", scale_grad_by_freq)
    # out has one axis more than idx: idx may have at most NumPy's limit less one
    idx_arr = as_index_array("idx", idx, V, size_name="num_embeddings", max_ndim=MAX_NDIM - 1)
    rows = index_rows(idx_arr)  # (R, T)
    out = embedding_gather(np.ascontiguousarray(weight), rows, backend=backend, threads=n_threads)  # (R, T*D)
    cache = EmbeddingCache(idx_arr, (V, D), weight.dtype, pad, scale, backend, n_threads)
    return out.reshape(*idx_arr.shape, D), cache  # a new array: out never aliases weight


def embedding_backward(dout: npt.ArrayLike, cache: EmbeddingCache) -> npt.NDArray[Any]:
    """Gradient of the lookup with respect to ``weight``.

    Args:
        dout: (..., D) upstream gradient, same shape and dtype as the forward's ``out``.
        cache: from :func:`embedding_forward`.

    Returns:
        dweight: (V, D).

    Derivation:
        ``out[m, :] = weight[idx[m], :]`` for every index position m, so
        ``d out[m, j] / d weight[v, j] = [idx[m] == v]`` and, summing over every position m,
        ``dweight[v, :] = sum_{m : idx[m] == v} dout[m, :]`` -- a scatter-add: a row looked up
        k times receives the sum of its k upstream gradients. ``dweight[idx] += dout`` would be
        wrong (buffered fancy assignment keeps only one of the repeated rows), so the reference sums
        with the unbuffered ``np.add.at`` (the compiled kernel adds one index at a time, in order).
        With ``scale_grad_by_freq`` the row's sum is divided by its count k (torch's option: the
        forward is unchanged, so this is not the gradient of the forward but a rescaled one):
        ``dweight[v, :] /= count[v]``. With ``padding_idx`` that row is set to zero:
        ``dweight[padding_idx, :] = 0``.
    """
    check_cache(cache, EmbeddingCache, "embedding_forward")
    idx, (V, D), dtype, padding_idx, scale_grad_by_freq, backend, threads = cache
    dout = check_dout(dout, (*idx.shape, D), dtype)  # (..., D)
    rows = index_rows(idx)  # (R, T)
    R, T = rows.shape
    dout_rows = np.ascontiguousarray(dout).reshape(R, T * D)  # (R, T*D)
    return embedding_weight_grad(rows, dout_rows, V, D, padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq,
                                 backend=backend, threads=threads)


def embedding(
    weight: npt.ArrayLike,
    idx: npt.ArrayLike,
    *,
    padding_idx: int | None = None,
    scale_grad_by_freq: bool = False,
    backend: Backend = "compiled",
    threads: int | None = None,
) -> npt.NDArray[Any]:
    """``weight[idx]`` with checked indices; see :func:`embedding_forward`."""
    return embedding_forward(weight, idx, padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq,
                             backend=backend, threads=threads)[0]


def embedding_renorm(
    weight: npt.ArrayLike, idx: npt.ArrayLike, max_norm: float, *, norm_type: float = 2.0
) -> npt.NDArray[Any]:
    """torch's ``max_norm`` as a pure function: a copy of ``weight`` with every row looked up in ``idx``
    whose ``norm_type``-norm exceeds ``max_norm`` rescaled by ``max_norm / (norm + 1e-7)`` (torch's
    formula, ``embedding_renorm_``). Rows not in ``idx`` are left as they are.

    ``torch.nn.functional.embedding(idx, w, max_norm=m)`` equals
    ``embedding(embedding_renorm(w, idx, m), idx)``, and torch's in-place update of ``w`` is
    ``w = embedding_renorm(w, idx, m)``. No gradient flows through the renormalization (torch runs it
    under no_grad), so the backward of the lookup is unchanged.

    Args:
        weight: (V, D) float array.
        idx: integer array of any shape with values in [0, V).
        max_norm: a positive number.
        norm_type: the p of the p-norm (> 0, may be inf). Default 2.

    Returns:
        (V, D) new array of weight's dtype.

    Raises:
        TypeError, IndexError: as :func:`embedding_forward`.
        ValueError: weight not 2-D, max_norm not > 0, norm_type not > 0.
    """
    weight = as_float_array("weight", weight, ndim=2)
    V, _ = weight.shape
    idx = as_index_array("idx", idx, V, size_name="num_embeddings")
    for name, value in (("max_norm", max_norm), ("norm_type", norm_type)):
        if not is_number(value) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    rows = np.unique(idx)  # (K,)
    out = weight.copy()  # (V, D)
    norms = np.linalg.norm(weight[rows].astype(np.float64), ord=float(norm_type), axis=1)  # (K,)
    big = norms > max_norm
    scale = max_norm / (norms[big] + 1e-7)  # (K',)
    out[rows[big]] = (weight[rows[big]] * scale[:, None]).astype(weight.dtype)
    return out
