"""The compiled tanh and batchnorm kernels: tanh's error against mpmath, both layers against each other, the
bits for every thread count, the rows' extra columns left alone, no writes into the inputs."""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np
import pytest

from tinyops._checks import BACKENDS
from tinyops.ops import batchnorm as bn
from tinyops.ops.tanh import tanh_backward, tanh_forward, tanh_rows_backward, tanh_rows_forward
from tinyops.testing import exact

Array = Any
DTYPES = [np.float32, np.float64]


def exact_tanh(x: Array) -> Array:
    with mpmath.workdps(60):
        return np.array([mpmath.tanh(mpmath.mpf(float(v))) for v in x.reshape(-1)], dtype=object).reshape(x.shape)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_within_2_ulp_of_mpmath(dtype: Any) -> None:
    """Every region: tiny, around the 0.55 switch, the exp formula, the clamp, huge; both signs."""
    rng = np.random.default_rng(0)
    parts = [
        rng.uniform(-1e-6, 1e-6, 200), rng.uniform(0.5, 0.6, 400), rng.uniform(-0.55, 0.55, 400),
        rng.uniform(-12, 12, 600), 10.0 ** rng.uniform(-30, 2, 400), np.array([0.55, np.nextafter(0.55, 0), 9.0,
        10.0, 19.0, 20.0, 21.0, 1e30]),
    ]
    x = np.concatenate(parts).astype(dtype)
    x = np.concatenate([x, -x])
    y = tanh_forward(x, backend="compiled")[0]
    err = exact.ulp_error(y, exact_tanh(x), dtype)
    assert err.max() <= 2.0, (float(err.max()), x[np.argmax(err)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_special_values(dtype: Any) -> None:
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-300], dtype)
    y = tanh_forward(x, backend="compiled")[0]
    assert np.isnan(y[0]) and y[1] == 1 and y[2] == -1
    assert y[3] == 0 and not np.signbit(y[3]) and y[4] == 0 and np.signbit(y[4])
    assert np.array_equal(y[5:], np.tanh(x[5:]))  # tanh(x) = x for tiny x (subnormals kept)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (3, 0), (), (7,), (4, 33), (2, 3, 5)])
def test_tanh_layers_agree(dtype: Any, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    x0, d0 = x.copy(), dout.copy()
    eps = float(np.finfo(dtype).eps)
    results = {}
    for backend in BACKENDS:
        for threads in (None, 2):
            y, cache = tanh_forward(x, backend=backend, threads=threads)
            dx = tanh_backward(dout, cache)
            assert y.shape == dx.shape == np.shape(x) and y.dtype == dx.dtype == dtype
            results[backend, threads] = (y, dx)
    assert np.array_equal(x, x0) and np.array_equal(dout, d0)
    for k in ("compiled", "reference"):  # threads never change a bit
        assert all(np.array_equal(a, b) for a, b in zip(results[k, None], results[k, 2], strict=True))
    (yc, dxc), (yr, dxr) = results["compiled", None], results["reference", None]
    np.testing.assert_allclose(yc, yr, rtol=4 * eps, atol=0)
    np.testing.assert_allclose(dxc, dxr, rtol=0, atol=8 * eps * (1 + np.abs(dout)).max(initial=0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_tanh_rows_use_the_first_columns_of_wider_buffers(backend: Any) -> None:
    """The trainer's [h, 1] buffer: tanh writes the first K columns and leaves the column of ones."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 6))
    h1 = np.ones((5, 7))
    assert tanh_rows_forward(x, out=h1, backend=backend) is h1
    assert np.array_equal(h1[:, 6], np.ones(5))
    np.testing.assert_allclose(h1[:, :6], np.tanh(x), rtol=1e-15)
    dh1 = rng.standard_normal((5, 7))
    dx = tanh_rows_backward(h1, dh1, out=np.empty((5, 6)), backend=backend)
    tol = 4e-16 * np.abs(dh1).max()  # 1 - y**2 cancels near |y| = 1: an absolute error
    np.testing.assert_allclose(dx, (1 - h1[:, :6] ** 2) * dh1[:, :6], rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(32, 20), (5, 3, 4), (2, 1)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("unbiased", [True, False])
def test_batchnorm_layers_agree(dtype: Any, shape: tuple[int, ...], training: bool, unbiased: bool) -> None:
    rng = np.random.default_rng(sum(shape))
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    w, b = (1 + 0.1 * rng.standard_normal(C)).astype(dtype), (0.1 * rng.standard_normal(C)).astype(dtype)
    running = bn.BatchNormStats((0.1 * rng.standard_normal(C)).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype), 3)
    dout = rng.standard_normal(shape).astype(dtype)
    copies = [a.copy() for a in (x, w, b, dout, running.mean, running.var)]
    got = {}
    for backend in BACKENDS:
        out, cache, new = bn.batchnorm1d_forward(x, w, b, running, training=training, unbiased=unbiased,
                                                 backend=backend)
        got[backend] = (out, *bn.batchnorm1d_backward(dout, cache), *(new or running)[:2])
    assert all(np.array_equal(a, c) for a, c in zip((x, w, b, dout, running.mean, running.var), copies, strict=True))
    eps = float(np.finfo(dtype).eps)
    for name, c, r in zip(("out", "dx", "dweight", "dbias", "mean", "var"), got["compiled"], got["reference"],
                          strict=True):
        assert c.dtype == dtype and c.shape == r.shape, name
        scale = 64 * eps * max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(c, r, rtol=0, atol=scale, err_msg=name)
