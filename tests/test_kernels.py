"""The row kernel of the fused cross-entropy, both layers, and the softmax family's edge cases.

``tinyops.ops.cross_entropy.ce_rows_forward`` / ``ce_rows_backward`` run on the NumPy reference or the
compiled kernels (``backend``); every test here runs both:

- the compiled kernels give the same bits for every thread count, and for concurrent callers;
- 'accurate' within its ULP bounds and 'fast' within its error bounds, against the exact (mpmath)
  reference, on the hard regions of ``tinyops.testing.strategies``;
- the edge rows (+inf, all -inf, nan, -inf at or beside the target, g = 0), empty inputs, one class;
- no writes into x, t, g or the state, no output sharing memory with them; the backward into ``out``;
- the compiled forward + backward allocate one (M, C) array, dx;
- logsumexp, softmax and log_softmax pinned against torch on axis/keepdims/0-D/empty/non-finite cases.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyops
from tinyops._checks import BACKENDS
from tinyops.ops.cross_entropy import ce_rows_backward, ce_rows_forward
from tinyops.testing import exact
from tinyops.testing import strategies as ts

from .oracle import budget

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
PRECISIONS = ("accurate", "fast")
Array = Any

# 'fast' (the classic formula in the input's dtype) is held to these bounds, as torch's own kernel would be:
#   |lse - exact|  <= FAST_ABS_K eps (1 + |lse|),  |loss - exact| <= FAST_ABS_K eps (1 + |lse| + |loss|)
#   |softmax_j - exact| <= FAST_REL_K eps (1 + |x_j - max|) softmax_j + tiny
FAST_ABS_K = 8.0
FAST_REL_K = 16.0


def run(x: Array, t: Array, g: Array, precision: str, backend: str, threads: int | None = None) -> tuple[Array, ...]:
    """loss, lse, dx of the row kernel."""
    loss, lse, state = ce_rows_forward(x, t.astype(np.intp), precision=precision, backend=backend, threads=threads)  # type: ignore[arg-type]
    return loss, lse, ce_rows_backward(g, state)


def rows(rng: np.random.Generator, M: int, C: int, dtype: np.dtype[Any]) -> tuple[Array, Array, Array]:
    """Logits with a spread of scales, some -inf entries and edge rows; targets; a random upstream gradient."""
    x = (rng.standard_normal((M, C)) * rng.choice([0.1, 3.0, 30.0], size=(M, 1))).astype(dtype)
    x[rng.random((M, C)) < 0.05] = -np.inf
    if M >= 8:
        x[1] = -np.inf  # all -inf
        x[3, 0] = np.inf
        x[5, -1] = np.nan
        x[7, :] = 1e4  # a tie at a large offset
    t = rng.integers(0, C, M) if C else np.zeros(M, np.intp)
    g = (rng.standard_normal(M) + 0.1).astype(dtype)
    if M >= 10:
        g[9] = 0
    return x, t, g


# ----------------------------------------------------------------------------- threads: bit for bit


def assert_same_bits(a: tuple[Array, ...], b: tuple[Array, ...], what: str) -> None:
    for name, u, v in zip(("loss", "lse", "dx"), a, b, strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape
        bits_u, bits_v = np.ascontiguousarray(u).view(np.uint8), np.ascontiguousarray(v).view(np.uint8)
        assert np.array_equal(bits_u, bits_v), f"{what}: {name} differs"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("M", "C"), [(37, 7), (23, 13), (11, 70), (300, 1000), (1, 3), (0, 4), (0, 0)])
def test_threads_give_the_same_bits(precision: str, dtype: np.dtype[Any], M: int, C: int) -> None:
    rng = np.random.default_rng(M * 1000 + C)
    x, t, g = rows(rng, M, C, dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # edge rows raise no warning
        one = run(x, t, g, precision, "compiled", None)
        for threads in (2, 3, 8):
            assert_same_bits(run(x, t, g, precision, "compiled", threads), one, f"threads={threads}")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_concurrent_callers_get_the_same_bits(precision: str) -> None:
    """Python threads calling the compiled kernel at once, each with another thread count."""
    x, t, g = rows(np.random.default_rng(3), 600, 90, F32)
    want = run(x, t, g, precision, "compiled", 1)
    failures: list[str] = []

    def caller(k: int) -> None:
        for i in range(6):
            threads = 1 + (i + k) % 3
            got = run(x, t, g, precision, "compiled", threads)
            if not all(np.array_equal(u, v, equal_nan=True) for u, v in zip(got, want, strict=True)):
                failures.append(f"caller {k}, threads={threads}")

    callers = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for c in callers:
        c.start()
    for c in callers:
        c.join()
    assert not failures, failures


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_the_layers_agree(precision: str, dtype: np.dtype[Any]) -> None:
    """Compiled against reference on rows of every kind: the same nan and inf, values within a few eps."""
    x, t, g = rows(np.random.default_rng(11), 64, 50, dtype)
    with np.errstate(all="ignore"):
        ref = run(x, t, g, precision, "reference")
    got = run(x, t, g, precision, "compiled", 2)
    eps = float(np.finfo(dtype).eps)
    for name, a, b in zip(("loss", "lse", "dx"), got, ref, strict=True):
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        assert np.array_equal(a[np.isinf(b)], b[np.isinf(b)]), name
        fin = np.isfinite(b)
        scale = 1 + np.abs(b[fin]) if name != "dx" else np.abs(b[fin]) + 1e-30
        k = 4 if precision == "accurate" else 4 * FAST_REL_K * (1 + np.abs(b[fin]))  # exp2 or exp: both 'fast'
        assert np.all(np.abs(a[fin] - b[fin]) <= k * eps * scale + (1e-37 if name == "dx" else 0)), name


# ----------------------------------------------------------------------------- accuracy against the exact values


def ulp_bounds(dtype: np.dtype[Any]) -> dict[str, float]:
    """'accurate': correctly rounded in float32 (half an ULP); float64 within 8 ULP."""
    if dtype == F32:
        return {"loss": 0.5, "lse": 0.5, "grad": 0.5}
    return dict.fromkeys(("loss", "lse", "grad"), 8.0)


def check_against_exact(
    x: Array, t: Array, g: Array, precision: str, backend: str, threads: int, lse_too: bool = True
) -> None:
    """'accurate': ULP bounds. 'fast': the error bounds FAST_ABS_K and FAST_REL_K above."""
    dtype = x.dtype
    eps, tiny = float(np.finfo(dtype).eps), float(np.finfo(dtype).smallest_normal)
    loss, lse, dx = run(x, t, g, precision, backend, threads)
    ref = exact.reference(x, t)
    assert ref.loss is not None
    G = exact.cross_entropy_grad(x, t, g)
    fin = np.isfinite(ref.loss.astype(np.float64))
    if precision == "accurate":
        b = ulp_bounds(dtype)
        checks = [("loss", loss, ref.loss), ("lse", lse, ref.lse), ("grad", dx, G)]
        for name, got, want in checks:
            if name == "lse" and not lse_too:
                continue
            err = exact.ulp_error(got, want, dtype)
            # where the exact value is subnormal, each of the sum's terms may already have lost bits: only
            # normal results are held to the ULP bound (a subnormal loss is a sum of subnormal exps)
            with np.errstate(invalid="ignore"):
                err = np.where(np.abs(exact.round_to(want, dtype)) >= tiny, err, 0.0)
            assert err.max(initial=0.0) <= b[name], f"{backend} {name}: {err.max():.3g} ULP > {b[name]}"
        return
    # fast: absolute errors for loss and lse, relative (growing with x_j - max) for the softmax
    L, S = ref.loss.astype(np.float64), ref.lse.astype(np.float64)
    P, G64 = ref.softmax.astype(np.float64), G.astype(np.float64)
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        d = np.where(np.isfinite(x64), np.abs(x64 - x64.max(axis=1, keepdims=True)), 0.0)  # |x_j - max|
    scale_rows = eps * (1 + np.abs(S))  # (M,)
    loss_tol = FAST_ABS_K * eps * (1 + np.abs(S) + np.abs(L))  # (M,)
    assert np.all(np.abs(loss - L)[fin] <= loss_tol[fin]), f"{backend}: fast loss out of bound"
    assert np.all(np.abs(lse - S)[fin] <= FAST_ABS_K * scale_rows[fin]), f"{backend}: fast lse out of bound"
    p_tol = FAST_REL_K * eps * (1 + d) * P + tiny
    onehot = np.zeros(P.shape)
    onehot[np.arange(len(t)), t] = 1
    g_tol = np.abs(g.astype(np.float64))[:, None] * (p_tol + onehot * FAST_ABS_K * scale_rows[:, None])
    assert np.all((np.abs(dx - G64) <= g_tol)[fin]), f"{backend}: fast gradient out of bound"


def upstream(data: st.DataObject, n: int, dtype: np.dtype[Any]) -> Array:
    seed = data.draw(st.integers(0, 2**16), label="g seed")
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n)).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [F32, F64])
@given(data=st.data())
def test_accuracy_on_the_hard_regions(backend: str, precision: str, dtype: np.dtype[Any], data: st.DataObject) -> None:
    x, t = data.draw(ts.hard_logits(dtype=dtype, n=st.integers(1, 8), v=st.integers(2, 160)), label="logits, target")
    threads = data.draw(st.sampled_from([1, 2]))
    check_against_exact(x, t, upstream(data, len(t), dtype), precision, backend, threads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F32, F64])
@given(data=st.data())
def test_accurate_loss_on_log_normalized_rows(backend: str, dtype: np.dtype[Any], data: st.DataObject) -> None:
    """Rows that are already log-probabilities: lse is near 0 and cancels (the documented exception),
    but the loss and the gradient keep their bounds."""
    x, t = data.draw(ts.log_normalized(dtype=dtype, n=st.integers(1, 8), v=st.integers(2, 160)), label="logits")
    check_against_exact(x, t, upstream(data, len(t), dtype), "accurate", backend, 1, lse_too=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("precision", PRECISIONS)
@settings(max_examples=budget(0.01, 2))  # a long row against mpmath takes about a second
@given(data=st.data())
def test_accuracy_on_long_rows(backend: str, precision: str, data: st.DataObject) -> None:
    x, t = data.draw(ts.long_row(dtype=F32, v=st.integers(1024, 8192)), label="logits, target")
    check_against_exact(x, t, upstream(data, len(t), F32), precision, backend, 1)


# ----------------------------------------------------------------------------- edge rows, options, no writes


INF, NAN = np.inf, np.nan
EDGE_ROWS = [
    # row, target, loss (as torch), gradient of that row for g = 1 (None: compare with softmax - onehot)
    ([1.0, INF, 2.0], 0, NAN, "nan"),
    ([-INF, -INF, -INF], 1, NAN, "nan"),
    ([1.0, NAN, 2.0], 2, NAN, "nan"),
    ([NAN, NAN, NAN], 0, NAN, "nan"),
    ([-INF, NAN, -INF], 0, NAN, "nan"),
    ([0.0, -INF, 1.0], 1, INF, "finite"),  # -inf at the target: infinite loss, gradient softmax - onehot
    ([0.0, -INF, 1.0], 2, None, "finite"),  # -inf elsewhere: probability 0 there
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_edge_rows_as_torch(backend: str, precision: str, dtype: np.dtype[Any]) -> None:
    x = np.array([r for r, *_ in EDGE_ROWS], dtype=dtype)
    t = np.array([tt for _, tt, *_ in EDGE_ROWS])
    g = np.array([0.5, -1.5, 2.0, 1.0, -1.0, 0.75, -0.25], dtype=dtype)
    loss, lse, dx = run(x, t, g, precision, backend)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(xt, torch.from_numpy(t), reduction="none")
    (t_dx,) = torch.autograd.grad(t_loss, xt, torch.from_numpy(g.astype(np.float64)))
    assert np.array_equal(np.isnan(loss), np.isnan(t_loss.detach().numpy()))
    assert np.array_equal(np.isposinf(loss), np.isposinf(t_loss.detach().numpy()))
    assert np.allclose(loss, t_loss.detach().numpy(), rtol=1e-6, equal_nan=True)
    assert np.array_equal(np.isnan(dx), np.isnan(t_dx.numpy()))
    assert np.allclose(dx, t_dx.numpy(), rtol=1e-6, atol=1e-7, equal_nan=True)
    t_lse = torch.logsumexp(torch.tensor(x.astype(np.float64)), dim=1).numpy()  # +inf, -inf, nan, nan, nan, ...
    assert np.allclose(lse, t_lse, rtol=1e-6, equal_nan=True)
    assert np.array_equal(lse[:5], t_lse[:5], equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_zero_upstream_gradient_one_class_and_no_rows(backend: str, precision: str) -> None:
    x = np.array([[3.0, -1.0, 2.0], [0.5, 0.25, -4.0]], dtype=np.float32)
    _, _, dx = run(x, np.array([0, 2]), np.array([0.0, 1.0], np.float32), precision, backend)
    assert np.all(dx[0] == 0) and np.all(dx[1] != 0)
    one = np.array([[5.0], [-2.0]], np.float32)  # one class: loss 0, gradient 0
    loss, lse, dx = run(one, np.array([0, 0]), np.array([1.5, -2.0], np.float32), precision, backend)
    assert np.array_equal(loss, [0, 0]) and np.array_equal(lse, one[:, 0]) and np.array_equal(dx, [[0], [0]])
    for C in (0, 4):
        loss, lse, dx = run(np.zeros((0, C), np.float32), np.zeros(0, np.intp), np.zeros(0, np.float32), precision,
                            backend)
        assert loss.shape == lse.shape == (0,) and dx.shape == (0, C) and dx.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("threads", [1, 3])
def test_no_writes_no_aliasing_and_backward_twice(backend: str, precision: str, threads: int) -> None:
    x, t, g = rows(np.random.default_rng(1), 17, 11, F32)
    t = t.astype(np.intp)
    before = (x.copy(), t.copy(), g.copy())
    with np.errstate(all="ignore"):
        loss, lse, state = ce_rows_forward(x, t, precision=precision, backend=backend, threads=threads)  # type: ignore[arg-type]
    state_arrays = [a for a in state if isinstance(a, np.ndarray)]
    state_before = [a.copy() for a in state_arrays]
    dx1 = ce_rows_backward(g, state)
    dx2 = ce_rows_backward(g, state)
    assert np.array_equal(dx1, dx2, equal_nan=True)
    for a, b in zip((x, t, g), before, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    for a, b in zip(state_arrays, state_before, strict=True):
        assert np.array_equal(a, b, equal_nan=True), "the backward wrote into the state"
    for out in (loss, lse, dx1):
        assert not any(np.shares_memory(out, a) for a in (x, t, g, *state_arrays))
    assert not np.shares_memory(loss, lse) and not np.shares_memory(dx1, dx2)
    assert loss.dtype == lse.dtype == dx1.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_backward_into_out(backend: str, precision: str) -> None:
    x, t, g = rows(np.random.default_rng(9), 33, 40, F32)
    t = t.astype(np.intp)
    with np.errstate(all="ignore"):
        _, _, state = ce_rows_forward(x, t, precision=precision, backend=backend)  # type: ignore[arg-type]
        want = ce_rows_backward(g, state)
        buf = np.full(want.shape, 7.0, dtype=np.float32)
        assert ce_rows_backward(g, state, out=buf) is buf
    assert np.array_equal(buf, want, equal_nan=True)
    if backend == "compiled":  # each element is read before it is written: dx may replace the logits
        logits = x.copy()
        _, _, state = ce_rows_forward(logits, t, precision=precision, backend=backend)  # type: ignore[arg-type]
        assert ce_rows_backward(g, state, out=logits) is logits
        assert np.array_equal(logits, want, equal_nan=True)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_compiled_path_holds_one_large_array(precision: str, dtype: np.dtype[Any]) -> None:
    """The compiled forward keeps three numbers a row; the backward allocates dx and nothing else large."""
    M, C = 1024, 2048
    x, t, g = rows(np.random.default_rng(7), M, C, dtype)
    t = t.astype(np.intp)
    big = M * C * dtype.itemsize
    run(x[:2], t[:2], g[:2], precision, "compiled")  # compiled (or loaded) before tracing
    tracemalloc.start()
    try:
        _, _, state = ce_rows_forward(x, t, precision=precision, threads=2)  # type: ignore[arg-type]
        _, fwd_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        ce_rows_backward(g, state)
        _, bwd_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fwd_peak < big / 16, f"forward peak {fwd_peak} B: an (M, C) array ({big} B) was made"
    assert bwd_peak < big * 1.1, f"backward peak {bwd_peak} B: more than dx ({big} B)"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", np.float64(2.0)])
def test_bad_threads(bad: Any) -> None:
    x, t = np.zeros((2, 3), np.float32), np.array([0, 1])
    with pytest.raises(ValueError, match=r"threads must be None or an int >= 1, got"):
        tinyops.cross_entropy(x, t, threads=bad)


def test_bad_precision_and_backend() -> None:
    x, t = np.ones((2, 3), np.float32), np.array([0, 1])
    with pytest.raises(ValueError, match=r"precision must be one of 'accurate', 'fast', got 'exact'"):
        tinyops.cross_entropy(x, t, precision="exact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"backend must be one of 'compiled', 'reference', got 'gpu'"):
        tinyops.cross_entropy(x, t, backend="gpu")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- softmax family: pinned against torch


def torch_family(x: Array, axis: Any, keepdims: bool) -> dict[str, Array]:
    xt = torch.tensor(x.astype(np.float64))
    if xt.ndim == 0:
        dims: Any = -1 if axis in (None, (), (0,), (-1,)) else axis
    else:
        dims = tuple(range(xt.ndim)) if axis is None else axis
    lse = torch.logsumexp(xt, dim=dims, keepdim=keepdims)
    lse_k = torch.logsumexp(xt, dim=dims, keepdim=True)
    out = {"lse": lse.numpy(), "log_softmax": (xt - lse_k).numpy(), "softmax": torch.exp(xt - lse_k).numpy()}
    finite_max = torch.isfinite(torch.amax(xt, dim=dims, keepdim=True)) if xt.numel() else None
    if finite_max is not None:  # torch's softmax and log_softmax: the whole slice is nan when its max is not finite
        for k in ("log_softmax", "softmax"):
            out[k] = np.where(finite_max.numpy(), out[k], np.nan)
    return out


FAMILY_CASES = [
    (np.array(2.5), -1, False),  # 0-D
    (np.array(2.5), None, True),
    (np.array(-np.inf), 0, False),
    (np.zeros((3, 0)), 1, False),  # empty reduction: lse -inf
    (np.zeros((3, 0)), 1, True),
    (np.zeros((0, 4)), 1, False),  # zero rows
    (np.zeros((2, 0, 3)), (0, 2), True),
    (np.array([[1, np.inf, 2], [1, np.inf, np.inf], [-np.inf] * 3, [1, np.nan, np.inf], [0, -np.inf, 1]]), 1, False),
    (np.array([[1.0, np.inf, 2.0], [-np.inf] * 3]), 1, True),
    (np.arange(24.0).reshape(2, 3, 4) - 11.5, (0, 2), True),
    (np.arange(24.0).reshape(2, 3, 4) - 11.5, None, False),
    (np.arange(24.0).reshape(2, 3, 4) - 11.5, -2, False),
    (np.array([[1e4, 1e4 - 1, -1e4], [88.0, 89.0, 90.0]]), 1, False),
]


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("x", "axis", "keepdims"), FAMILY_CASES)
def test_softmax_family_edge_cases_as_torch(x: Array, axis: Any, keepdims: bool, dtype: np.dtype[Any]) -> None:
    x = x.astype(dtype)
    before = x.copy()
    want = torch_family(x, axis, keepdims)
    got = {
        "lse": tinyops.logsumexp(x, axis=axis, keepdims=keepdims),
        "log_softmax": tinyops.log_softmax(x, axis=axis),
        "softmax": tinyops.softmax(x, axis=axis),
    }
    assert np.array_equal(x, before, equal_nan=True)
    for name, g in got.items():
        w = want[name]
        assert g.shape == w.shape, f"{name}: shape {g.shape} != torch's {w.shape}"
        assert g.dtype == dtype
        assert np.array_equal(np.isnan(g), np.isnan(w)), f"{name}: nan at other places than torch: {g} vs {w}"
        assert np.array_equal(g[np.isinf(w)], w[np.isinf(w)]), f"{name}: infinities differ: {g} vs {w}"
        # torch's float64 x - lse rounds at the magnitude of x: its own error grows with max |x|
        big = float(np.max(np.abs(x[np.isfinite(x)]), initial=1.0))
        rtol = 8 * float(np.finfo(dtype).eps) * (1 + big)
        assert np.allclose(g, w, rtol=rtol, atol=rtol, equal_nan=True), f"{name}: {g} vs {w}"


@pytest.mark.parametrize("dtype", [F32, F64])
def test_softmax_family_gradients_on_non_finite_rows_as_torch(dtype: np.dtype[Any]) -> None:
    """Where torch's gradient is nan (a slice of all -inf; a +inf entry for logsumexp), ours is too."""
    x = np.array([[1.0, np.inf, 2.0], [-np.inf] * 3, [0.0, -np.inf, 1.0]], dtype=dtype)
    dout2 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5], [1.0, 2.0, -3.0]], dtype=dtype)
    dout1 = np.array([0.5, -1.5, 2.0], dtype=dtype)
    ops: list[tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any], Array]] = [
        (tinyops.logsumexp_forward, tinyops.logsumexp_backward, lambda v: torch.logsumexp(v, 1), dout1),
        (tinyops.softmax_forward, tinyops.softmax_backward, lambda v: torch.softmax(v, 1), dout2),
        (tinyops.log_softmax_forward, tinyops.log_softmax_backward, lambda v: torch.log_softmax(v, 1), dout2),
    ]
    for fwd, bwd, tfn, dout in ops:
        _, cache = fwd(x, axis=1)
        dx = bwd(dout, cache)
        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        (t_dx,) = torch.autograd.grad(tfn(xt), xt, torch.tensor(dout.astype(np.float64)))
        assert np.array_equal(np.isnan(dx), np.isnan(t_dx.numpy())), f"{fwd.__name__}: {dx} vs {t_dx}"
        assert np.allclose(dx, t_dx.numpy(), rtol=1e-6, atol=1e-7, equal_nan=True)


