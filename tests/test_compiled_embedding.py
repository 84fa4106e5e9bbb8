"""The compiled embedding kernels against the reference: random tables and indices (repeated ones, empty
ones, every index shape), float32/float64/float16, the same bits for 1 and 2 threads, no writes into the
inputs or dout, and the entry points' wider row buffers (the training step's [embcat, 1])."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tinyops
from tinyops.ops.embedding import embedding_gather, embedding_weight_grad, index_rows


def run(weight: Any, idx: Any, dout: Any, backend: str, threads: int | None, **kw: Any) -> tuple[Any, Any]:
    out, cache = tinyops.embedding_forward(weight, idx, backend=backend, threads=threads, **kw)  # type: ignore[arg-type]
    return out, tinyops.embedding_backward(dout, cache)


CASES = [(27, 10, (32, 3)), (7, 3, ()), (7, 3, (0,)), (7, 3, (4, 0)), (5, 130, (6, 2, 4)), (50, 1, (300,))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize(("V", "D", "shape"), CASES)
@pytest.mark.parametrize("options", [{}, {"padding_idx": 2, "scale_grad_by_freq": True}])
def test_compiled_equals_reference(dtype: Any, V: int, D: int, shape: tuple[int, ...], options: Any) -> None:
    rng = np.random.default_rng(V + D)
    weight = rng.standard_normal((V, D)).astype(dtype)
    idx = rng.integers(0, min(V, 4), shape)  # few distinct rows: many repeats
    dout = rng.standard_normal((*shape, D)).astype(dtype)
    copies = (weight.copy(), idx.copy(), dout.copy())
    got = {(b, t): run(weight, idx, dout, b, t, **options) for b in ("compiled", "reference") for t in (None, 2)}
    assert all(np.array_equal(a, c) for a, c in zip((weight, idx, dout), copies, strict=True)), "an input was written"
    for key, (out, dweight) in got.items():
        assert out.shape == (*shape, D) and out.dtype == dtype, key
        assert dweight.shape == (V, D) and dweight.dtype == dtype, key
        assert np.array_equal(out, weight[idx]), key  # the lookup is a copy: exact
        assert not np.shares_memory(out, weight)
    for b in ("compiled", "reference"):  # the thread count never changes a bit
        assert np.array_equal(got[b, None][1], got[b, 2][1])
    eps = float(np.finfo(dtype).eps)
    M = max(int(np.prod(shape)), 1)
    tol = (4 if dtype != np.float16 else 1) * eps * M * np.abs(dout).max(initial=0)  # float16: ours sums in float32
    np.testing.assert_allclose(got["compiled", None][1], got["reference", None][1], rtol=0, atol=tol)


def test_threads_are_bit_identical_on_a_wide_table() -> None:
    """More columns than one block of the parallel scatter-add, many repeats, float32 sums that round."""
    rng = np.random.default_rng(9)
    V, D = 40, 300
    idx = rng.integers(0, V, (400, 5))
    dout = (rng.standard_normal((400, 5, D)) * 10.0 ** rng.integers(-3, 4, (400, 5, 1))).astype(np.float32)
    weight = np.zeros((V, D), np.float32)
    ref = run(weight, idx, dout, "compiled", None)[1]
    for threads in (2, 3):
        assert np.array_equal(run(weight, idx, dout, "compiled", threads)[1], ref)


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_entry_points_use_the_first_columns_of_wider_rows(backend: Any) -> None:
    """The training step's [embcat, 1] buffer: the gather fills the first T*D columns and leaves the ones; the
    scatter-add reads the first T*D columns of its upstream rows; a given dweight is overwritten."""
    rng = np.random.default_rng(3)
    V, D, N, T = 9, 4, 6, 3
    weight = rng.standard_normal((V, D))
    idx = index_rows(rng.integers(0, V, (N, T)))
    buf = np.ones((N, T * D + 1))
    assert embedding_gather(weight, idx, out=buf, backend=backend) is buf
    assert np.array_equal(buf[:, :-1], weight[idx].reshape(N, T * D)) and np.all(buf[:, -1] == 1)
    dout = rng.standard_normal((N, T * D + 1))
    dweight = np.full((V, D), 7.0)
    got = embedding_weight_grad(idx, dout, V, D, out=dweight, backend=backend)
    want = np.zeros((V, D))
    np.add.at(want, idx.reshape(-1), dout[:, :-1].reshape(N * T, D))
    assert got is dweight
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
