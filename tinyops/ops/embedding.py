"""Embedding lookup: ``out = weight[idx]``.

Shapes: V = vocabulary size, D = embedding size, ``...`` = any index shape (the seed's is N, T).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import as_float_array, as_index_array, check_dout


class EmbeddingCache(NamedTuple):
    idx: npt.NDArray[np.integer[Any]]  # (...)   the looked-up rows
    weight_shape: tuple[int, int]  # (V, D)
    dtype: np.dtype[Any]  # the weight's dtype


def embedding_forward(weight: npt.ArrayLike, idx: npt.ArrayLike) -> tuple[npt.NDArray[Any], EmbeddingCache]:
    """Look up rows of ``weight``: ``out[..., :] = weight[idx[...], :]``.

    Args:
        weight: (V, D) float array.
        idx: integer array of any shape ``...`` with values in ``[0, V)``.

    Returns:
        ``(out, cache)``: out is (..., D) with weight's dtype; the cache holds ``idx``, (V, D) and the dtype.

    Raises:
        TypeError: weight is not floating, or idx is not integer (floats and bools are rejected).
        ValueError: weight is not 2-D.
        IndexError: an index is negative or >= V (NumPy would wrap a negative index silently).
    """
    weight = as_float_array("weight", weight, ndim=2)
    V, D = weight.shape
    idx = as_index_array("idx", idx, V, size_name="num_embeddings")
    out = weight[idx]  # (..., D)  fancy indexing copies, so out never aliases weight
    return out, EmbeddingCache(idx, (V, D), weight.dtype)


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
        with the unbuffered ``np.add.at(dweight, idx, dout)``.
    """
    idx, (V, D), dtype = cache
    dout = check_dout(dout, (*idx.shape, D), dtype)  # (..., D)
    dweight = np.zeros((V, D), dtype=dtype)  # (V, D)
    np.add.at(dweight, idx.reshape(-1), dout.reshape(-1, D))  # scatter-add: repeated rows are summed
    return dweight


def embedding(weight: npt.ArrayLike, idx: npt.ArrayLike) -> npt.NDArray[Any]:
    """``weight[idx]`` with checked indices; see :func:`embedding_forward`."""
    return embedding_forward(weight, idx)[0]
