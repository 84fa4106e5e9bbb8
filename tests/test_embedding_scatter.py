"""The scatter-add behind embedding_backward, on each of its paths: the one-hot matmul (small M * V),
the blocked 1-D ``np.add.at`` (large M * V), blocks with a remainder, narrow index dtypes whose flat
indices need more bits than they have, and non-finite upstream gradients."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinyops
from tinyops.ops import embedding as emb


def reference(idx: Any, dout: Any, V: int) -> Any:
    D = dout.shape[-1]
    out = np.zeros((V, D))
    np.add.at(out, idx.reshape(-1), dout.reshape(-1, D).astype(np.float64))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("V", "D", "M"), [(27, 10, 96), (27, 10, 5000), (300, 7, 130), (1, 3, 40), (5, 4, 0)])
def test_paths_against_add_at(dtype: Any, V: int, D: int, M: int) -> None:
    rng = np.random.default_rng(V * M + D)
    idx = rng.integers(0, V, M)
    dout = rng.standard_normal((M, D)).astype(dtype)
    got = emb._scatter_add_rows(idx, dout, V)
    assert got.dtype == dtype and got.shape == (V, D)
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(got, reference(idx, dout, V), rtol=0, atol=4 * eps * max(M, 1) ** 0.5 * 4)


def test_one_hot_and_add_at_agree_across_the_threshold() -> None:
    """M * V just below and just above ONE_HOT_MAX takes the two paths; both equal the float64 sum."""
    V, D = 32, 5
    rng = np.random.default_rng(1)
    for M in (emb.ONE_HOT_MAX // V, emb.ONE_HOT_MAX // V + 1):
        idx = rng.integers(0, V, M)
        dout = rng.standard_normal((M, D))
        np.testing.assert_allclose(emb._scatter_add_rows(idx, dout, V), reference(idx, dout, V), rtol=1e-12)


def test_blocks_with_a_remainder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 2 rows (7 elements // D = 3) over 9 rows, repeated indices across blocks."""
    monkeypatch.setattr(emb, "SCATTER_BLOCK", 7)
    monkeypatch.setattr(emb, "ONE_HOT_MAX", 0)
    idx = np.array([4, 0, 4, 4, 2, 0, 4, 1, 4])
    dout = np.arange(27, dtype=np.float64).reshape(9, 3) * 0.5 - 3.0
    want = np.zeros((5, 3))
    for m, v in enumerate(idx):
        want[v] += dout[m]
    np.testing.assert_array_equal(emb._scatter_add_rows(idx, dout, 5), want)


@pytest.mark.parametrize("idx_dtype", [np.uint8, np.int16, np.int32])
def test_narrow_index_dtypes(idx_dtype: Any) -> None:
    """flat indices ``idx * D + j`` reach V * D = 60,000: more than uint8/int16 hold."""
    V, D, M = 200, 300, 700
    rng = np.random.default_rng(2)
    idx = rng.integers(0, V, M).astype(idx_dtype)
    dout = rng.standard_normal((M, D))
    np.testing.assert_allclose(emb._scatter_add_rows(idx, dout, V), reference(idx, dout, V), rtol=1e-12)


@pytest.mark.parametrize("M", [10, 5000])
def test_non_finite_dout_stays_in_its_row(M: int) -> None:
    """An inf or nan upstream row reaches only the row it looked up (as torch), on both paths."""
    V, D = 27, 4
    rng = np.random.default_rng(3)
    idx = rng.integers(1, V, M)
    idx[0] = 0
    dout = rng.standard_normal((M, D))
    dout[0, 1], dout[0, 2] = np.inf, np.nan
    idx[1:][idx[1:] == 0] = 1  # row 0 is looked up once, by the non-finite upstream row
    got = emb._scatter_add_rows(idx, dout, V)
    assert np.isinf(got[0, 1]) and np.isnan(got[0, 2])
    assert np.isfinite(got[1:]).all()


def test_backward_against_torch_on_the_add_at_path() -> None:
    """The public op at a shape of the add.at path (the oracle's small shapes take the one-hot one)."""
    V, D = 500, 16
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((V, D)).astype(np.float32)
    idx = rng.integers(0, V, (60, 3))
    _, cache = tinyops.embedding_forward(weight, idx)
    dout = rng.standard_normal((60, 3, D)).astype(np.float32)
    got = tinyops.embedding_backward(dout, cache)
    w = torch.tensor(weight.astype(np.float64), requires_grad=True)
    F.embedding(torch.from_numpy(idx), w).backward(torch.from_numpy(dout.astype(np.float64)))
    assert w.grad is not None
    np.testing.assert_allclose(got, w.grad.numpy(), rtol=0, atol=1e-5)
