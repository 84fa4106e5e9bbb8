"""The scatter-add behind embedding_backward, on both layers: against a float64 loop over the indices,
repeated indices across the whole index array, narrow index dtypes, non-finite upstream rows, the options,
and the public op against torch at a large table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinyops
from tinyops._checks import BACKENDS


def loop_reference(idx: Any, dout: Any, V: int) -> Any:
    """The definition, one index at a time, in float64."""
    D = dout.shape[-1]
    out = np.zeros((V, D))
    for m, v in enumerate(idx.reshape(-1)):
        out[v] += dout.reshape(-1, D)[m]
    return out


def backward(weight: Any, idx: Any, dout: Any, backend: str, **kw: Any) -> Any:
    _, cache = tinyops.embedding_forward(weight, idx, backend=backend, **kw)  # type: ignore[arg-type]
    return tinyops.embedding_backward(dout, cache)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("V", "D", "shape"), [(27, 10, (32, 3)), (27, 10, (5000,)), (300, 7, (13, 10)),
                                               (1, 3, (40,)), (5, 4, (0,)), (5, 4, (3, 0))])
def test_scatter_add_against_the_loop(backend: str, dtype: Any, V: int, D: int, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(V * D + len(shape))
    idx = rng.integers(0, V, shape)
    dout = rng.standard_normal((*shape, D)).astype(dtype)
    got = backward(np.ones((V, D), dtype), idx, dout, backend)
    assert got.dtype == dtype and got.shape == (V, D)
    M = max(int(np.prod(shape)), 1)
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(got, loop_reference(idx, dout, V), rtol=0, atol=4 * eps * M**0.5 * 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeated_indices_are_summed_exactly(backend: str) -> None:
    """Small integers in float64: every sum is exact, so both layers give the loop's bits."""
    idx = np.array([[4, 0, 4], [4, 2, 0], [4, 1, 4]])
    dout = np.arange(27, dtype=np.float64).reshape(3, 3, 3) * 0.5 - 3.0
    got = backward(np.ones((5, 3)), idx, dout, backend)
    assert np.array_equal(got, loop_reference(idx, dout, 5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("idx_dtype", [np.uint8, np.int16, np.int32])
def test_narrow_index_dtypes(backend: str, idx_dtype: Any) -> None:
    V, D, M = 200, 300, 700
    rng = np.random.default_rng(2)
    idx = rng.integers(0, V, M).astype(idx_dtype)
    dout = rng.standard_normal((M, D))
    np.testing.assert_allclose(backward(np.ones((V, D)), idx, dout, backend), loop_reference(idx, dout, V),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("M", [10, 5000])
def test_non_finite_dout_stays_in_its_row(backend: str, M: int) -> None:
    """An inf or nan upstream row reaches only the row it looked up (as torch)."""
    V, D = 27, 4
    rng = np.random.default_rng(3)
    idx = rng.integers(1, V, M)
    idx[0] = 0
    dout = rng.standard_normal((M, D))
    dout[0, 1], dout[0, 2] = np.inf, np.nan
    got = backward(np.ones((V, D)), idx, dout, backend)
    assert np.isinf(got[0, 1]) and np.isnan(got[0, 2])
    assert np.isfinite(got[1:]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_and_frequency_scaling(backend: str) -> None:
    idx = np.array([1, 3, 1, 1, 2, 3])
    dout = np.random.default_rng(5).standard_normal((6, 2))
    want = loop_reference(idx, dout, 5) / np.maximum(np.bincount(idx, minlength=5), 1)[:, None]
    want[3] = 0
    got = backward(np.ones((5, 2)), idx, dout, backend, padding_idx=-2, scale_grad_by_freq=True)
    np.testing.assert_allclose(got, want, rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_against_torch_on_a_large_table(backend: str) -> None:
    V, D = 500, 16
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((V, D)).astype(np.float32)
    idx = rng.integers(0, V, (60, 3))
    dout = rng.standard_normal((60, 3, D)).astype(np.float32)
    got = backward(weight, idx, dout, backend)
    w = torch.tensor(weight.astype(np.float64), requires_grad=True)
    F.embedding(torch.from_numpy(idx), w).backward(torch.from_numpy(dout.astype(np.float64)))
    assert w.grad is not None
    np.testing.assert_allclose(got, w.grad.numpy(), rtol=0, atol=1e-5)
