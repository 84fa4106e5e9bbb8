"""Embedding lookup: ``out = weight[idx]``.

Shapes: V = vocabulary size (num_embeddings), D = embedding size, ``...`` = any index shape (the seed's
is N, T).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import as_float_array, as_index_array, check_dout


class EmbeddingCache(NamedTuple):
    idx: npt.NDArray[np.integer[Any]]  # (...)   the looked-up rows
    weight_shape: tuple[int, int]  # (V, D)
    dtype: np.dtype[Any]  # the weight's dtype
    padding_idx: int | None  # in [0, V): the row that gets no gradient
    scale_grad_by_freq: bool


def _check_padding_idx(padding_idx: object, V: int) -> int | None:
    """Return ``padding_idx`` in [0, V) (a negative one counts from the end, as torch), or raise."""
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
        raise TypeError(f"padding_idx must be an int or None, got {type(padding_idx).__name__} {padding_idx!r}")
    if not -V <= padding_idx < V:
        raise ValueError(f"padding_idx must be in [-{V}, {V}) (num_embeddings = {V}), got {padding_idx}")
    return int(padding_idx) % V


def embedding_forward(
    weight: npt.ArrayLike,
    idx: npt.ArrayLike,
    *,
    padding_idx: int | None = None,
    scale_grad_by_freq: bool = False,
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

    Returns:
        ``(out, cache)``: out is (..., D) with weight's dtype; the cache holds ``idx``, (V, D), the dtype
        and the two options.

    Raises:
        TypeError: weight is not floating, idx is not integer (floats and bools are rejected), or
            padding_idx is not an int.
        ValueError: weight is not 2-D, or padding_idx is outside [-V, V).
        IndexError: an index is negative or >= V (NumPy would wrap a negative index silently).
    """
    weight = as_float_array("weight", weight, ndim=2)
    V, D = weight.shape
    pad = _check_padding_idx(padding_idx, V)
    idx = as_index_array("idx", idx, V, size_name="num_embeddings")
    out = weight[idx]  # (..., D)  fancy indexing copies, so out never aliases weight
    return out, EmbeddingCache(idx, (V, D), weight.dtype, pad, bool(scale_grad_by_freq))


SCATTER_BLOCK = 2**17  # elements of dout per np.add.at call in _scatter_add_rows
ONE_HOT_MAX = 2**15  # up to this many (M, V) entries, _scatter_add_rows is a one-hot matmul


def _scatter_add_rows(flat: npt.NDArray[np.integer[Any]], dout2: npt.NDArray[Any], V: int) -> npt.NDArray[Any]:
    """``dweight[v, :] = sum_{m : flat[m] == v} dout2[m, :]``: (M,) indices, (M, D) rows -> (V, D).

    Small M * V (one training batch: 96 rows of a 27-row table) and finite dout2: ``onehot.T @ dout2``
    with the (M, V) ``onehot[m, flat[m]] = 1``, one small matmul. Otherwise one unbuffered ``np.add.at`` on the
    flattened (V*D,) gradient with the flat indices ``flat*D + j``, a block of rows at a time: the 1-D
    form takes NumPy's fast add.at path (two to three times faster than ``np.add.at`` on (V, D) rows)
    and the blocks keep the flat indices in cache. ``benchmarks/bench_embedding.py`` measures both
    beside bincount, sort + reduceat and torch, on one batch (96 rows), the whole training split
    (547,875 rows) and a 50257 x 768 table.
    """
    M, D = dout2.shape
    # a finite sum means every entry is finite (an inf or nan makes it inf or nan): 0 * inf in the matmul
    # would spread a non-finite entry to every row, so those go to add.at
    if M * V <= ONE_HOT_MAX and math.isfinite(dout2.sum()):
        onehot = np.zeros((M, V), dtype=dout2.dtype)  # (M, V)
        onehot[np.arange(M), flat] = 1
        dweight: npt.NDArray[Any] = onehot.T @ dout2  # (V, D)  row v sums the dout rows whose index is v
        return dweight
    dweight_flat = np.zeros(V * D, dtype=dout2.dtype)  # (V*D,)
    cols = np.arange(D)  # (D,)
    rows_per_block = max(1, SCATTER_BLOCK // max(D, 1))
    for r0 in range(0, M, rows_per_block):
        block = slice(r0, r0 + rows_per_block)
        flat_block = (flat[block, None].astype(np.intp) * D + cols).reshape(-1)  # (B*D,) into dweight
        np.add.at(dweight_flat, flat_block, dout2[block].reshape(-1))  # scatter-add: repeated rows are summed
    return dweight_flat.reshape(V, D)


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
        wrong (buffered fancy assignment keeps only one of the repeated rows), so the sum is done
        with the unbuffered ``np.add.at`` (on the flattened gradient: :func:`_scatter_add_rows`).
        With ``scale_grad_by_freq`` the row's sum is divided by its count k (torch's option: the
        forward is unchanged, so this is not the gradient of the forward but a rescaled one):
        ``dweight[v, :] /= count[v]``. With ``padding_idx`` that row is set to zero:
        ``dweight[padding_idx, :] = 0``.
    """
    idx, (V, D), dtype, padding_idx, scale_grad_by_freq = cache
    dout = check_dout(dout, (*idx.shape, D), dtype)  # (..., D)
    flat = idx.reshape(-1)  # (M,)
    dweight = _scatter_add_rows(flat, dout.reshape(-1, D), V)  # (V, D) scatter-add: repeated rows are summed
    if scale_grad_by_freq:
        count = np.bincount(flat, minlength=V)  # (V,)
        dweight /= np.maximum(count, 1)[:, None].astype(dtype)  # rows never looked up stay 0
    if padding_idx is not None:
        dweight[padding_idx] = 0
    return dweight


def embedding(
    weight: npt.ArrayLike, idx: npt.ArrayLike, *, padding_idx: int | None = None, scale_grad_by_freq: bool = False
) -> npt.NDArray[Any]:
    """``weight[idx]`` with checked indices; see :func:`embedding_forward`."""
    return embedding_forward(weight, idx, padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq)[0]


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
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    rows = np.unique(idx)  # (K,)
    out = weight.copy()  # (V, D)
    norms = np.linalg.norm(weight[rows].astype(np.float64), ord=float(norm_type), axis=1)  # (K,)
    big = norms > max_norm
    scale = max_norm / (norms[big] + 1e-7)  # (K',)
    out[rows[big]] = (weight[rows[big]] * scale[:, None]).astype(weight.dtype)
    return out
