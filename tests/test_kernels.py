"""The row kernels of the fused cross-entropy (``tinyops.ops.ce_kernels``) and the softmax family's edge cases.

- every thread count gives the same bits as one thread, on every block path (wide rows, short rows
  reduced column-major, blocks that do not divide the rows, one-row blocks), in both precisions;
- 'accurate' within its ULP bounds and 'fast' within its documented error bounds, against the exact
  (mpmath) reference, on the hard regions of ``tinyops.testing.strategies``;
- the edge rows (+inf, all -inf, nan, -inf at or beside the target, g = 0), empty inputs, one class;
- no writes into x, t, g or the state, no output sharing memory with them, bad options rejected;
- logsumexp, softmax and log_softmax pinned against torch on axis/keepdims/0-D/empty/non-finite cases.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyops
from tinyops.ops import ce_kernels as K
from tinyops.testing import exact
from tinyops.testing import strategies as ts

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
PRECISIONS = ("accurate", "fast")
Array = Any


def run(x: Array, t: Array, g: Array, precision: str, threads: int | None) -> tuple[Array, ...]:
    loss, lse, state = K.ce_rows_forward(x, t.astype(np.intp), precision=precision, threads=threads)  # type: ignore[arg-type]
    dx = K.ce_rows_backward(g, state)
    return loss, lse, state.softmax(), dx


def rows(rng: np.random.Generator, M: int, C: int, dtype: np.dtype[Any]) -> tuple[Array, Array, Array]:
    """Logits with a spread of scales, some -inf entries and edge rows; targets; a random upstream gradient."""
    x = (rng.standard_normal((M, C)) * rng.choice([0.1, 3.0, 30.0], size=(M, 1))).astype(dtype)
    x[rng.random((M, C)) < 0.05] = -np.inf
    if M >= 8:
        x[1] = -np.inf  # all -inf
        x[3, 0] = np.inf
        x[5, -1] = np.nan
        x[7, :] = 1e4  # a tie at a large offset
    t = rng.integers(0, C, M)
    g = (rng.standard_normal(M) + 0.1).astype(dtype)
    if M >= 10:
        g[9] = 0
    return x, t, g


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Blocks of a few rows and threads from the first element on, so that small arrays take every path."""
    monkeypatch.setattr(K, "BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(K, "ACCURATE_BLOCK_ELEMENTS", 48)
    monkeypatch.setattr(K, "SERIAL_ELEMENTS", 0)
    yield


# ----------------------------------------------------------------------------- threads: bit for bit


def assert_same_bits(a: tuple[Array, ...], b: tuple[Array, ...], what: str) -> None:
    for name, u, v in zip(("loss", "lse", "softmax", "dx"), a, b, strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape
        bits_u, bits_v = np.ascontiguousarray(u).view(np.uint8), np.ascontiguousarray(v).view(np.uint8)
        assert np.array_equal(bits_u, bits_v), f"{what}: {name} differs"


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(
    ("M", "C"),
    [
        (37, 7),  # short rows (column-major in 'fast'), 64 // 7 = 9 rows a block: 4 full blocks + 1 row
        (23, 13),  # 4 rows a block, a remainder of 3
        (11, 70),  # wide rows: one row a block (70 > 64)
        (5, 200),  # one row a block, fewer blocks than threads for threads=8
        (1, 3),  # a single row
        (0, 4),  # no rows
        (0, 0),  # no rows, no classes
    ],
)
def test_threads_give_the_same_bits(precision: str, dtype: np.dtype[Any], M: int, C: int) -> None:
    rng = np.random.default_rng(M * 1000 + C)
    x, t, g = rows(rng, M, C, dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # edge rows raise no warning
        one = run(x, t, g, precision, None)
        for threads in (2, 3, 8):
            assert_same_bits(run(x, t, g, precision, threads), one, f"threads={threads}")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize(("M", "C"), [(700, 300), (9000, 27)])  # past SERIAL_ELEMENTS: the real block sizes
def test_threads_give_the_same_bits_at_real_block_sizes(precision: str, M: int, C: int) -> None:
    x, t, g = rows(np.random.default_rng(C), M, C, F32)
    one = run(x, t, g, precision, 1)
    assert_same_bits(run(x, t, g, precision, 2), one, "threads=2")
    loss64, lse64 = run(x.astype(np.float64), t, g.astype(np.float64), "accurate", 1)[:2]
    fin = np.isfinite(loss64)
    assert np.array_equal(fin, np.isfinite(one[0]))
    k = K.FAST_ABS_K if precision == "fast" else 1.0  # 'accurate': within 1 ULP, far below this
    tol = k * float(np.finfo(np.float32).eps) * (1 + np.abs(lse64[fin]) + np.abs(loss64[fin]))
    assert np.all(np.abs(one[0][fin] - loss64[fin]) <= tol)


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("precision", PRECISIONS)
def test_blocks_agree_with_one_block(precision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocked (many small blocks, remainders) against a single block: the same values, to rounding."""
    x, t, g = rows(np.random.default_rng(5), 41, 9, F32)
    blocked = run(x, t, g, precision, 2)
    monkeypatch.setattr(K, "SERIAL_ELEMENTS", 10**9)
    single = run(x, t, g, precision, 1)
    for u, v in zip(blocked, single, strict=True):
        assert np.array_equal(np.isnan(u), np.isnan(v))
        assert np.allclose(u, v, rtol=4e-7, atol=1e-7, equal_nan=True)


# ----------------------------------------------------------------------------- accuracy against the exact values


def ulp_bounds(dtype: np.dtype[Any]) -> dict[str, float]:
    """'accurate': the targets for float32; float64 aims at 8 ULP."""
    if dtype == F32:
        return {"loss": 2.0, "lse": 2.0, "softmax": 4.0, "grad": 4.0}
    return dict.fromkeys(("loss", "lse", "softmax", "grad"), 8.0)


def check_against_exact(x: Array, t: Array, g: Array, precision: str, threads: int, lse_too: bool = True) -> None:
    """'accurate': ULP bounds. 'fast': the error bounds stated in the ce_kernels module docstring."""
    dtype = x.dtype
    eps, tiny = float(np.finfo(dtype).eps), float(np.finfo(dtype).smallest_normal)
    loss, lse, probs, dx = run(x, t, g, precision, threads)
    ref = exact.reference(x, t)
    assert ref.loss is not None
    G = exact.cross_entropy_grad(x, t, g)
    fin = np.isfinite(ref.loss.astype(np.float64))
    if precision == "accurate":
        b = ulp_bounds(dtype)
        normal = np.abs(exact.round_to(G, dtype)) >= tiny
        for name, got, want, mask in [
            ("loss", loss, ref.loss, None),
            ("lse", lse, ref.lse, None),
            ("softmax", probs, ref.softmax, None),
            ("grad", dx, G, normal),
        ]:
            if name == "lse" and not lse_too:
                continue
            err = exact.ulp_error(got, want, dtype)
            if mask is not None:
                err = np.where(mask, err, 0.0)
            assert err.max(initial=0.0) <= b[name], f"{name}: {err.max():.3g} ULP > {b[name]}"
        return
    # fast: absolute errors for loss and lse, relative (growing with x_j - max) for the softmax
    L, S = ref.loss.astype(np.float64), ref.lse.astype(np.float64)
    P, G64 = ref.softmax.astype(np.float64), G.astype(np.float64)
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        d = np.where(np.isfinite(x64), np.abs(x64 - x64.max(axis=1, keepdims=True)), 0.0)  # |x_j - max|
    k_abs, k_rel = K.FAST_ABS_K, K.FAST_REL_K
    scale_rows = eps * (1 + np.abs(S))  # (M,)
    loss_tol = k_abs * eps * (1 + np.abs(S) + np.abs(L))  # (M,)
    assert np.all(np.abs(loss - L)[fin] <= loss_tol[fin]), "fast loss out of bound"
    assert np.all(np.abs(lse - S)[fin] <= k_abs * scale_rows[fin]), "fast lse out of bound"
    p_tol = k_rel * eps * (1 + d) * P + tiny
    assert np.all((np.abs(probs - P) <= p_tol)[fin]), "fast softmax out of bound"
    onehot = np.zeros(P.shape)
    onehot[np.arange(len(t)), t] = 1
    g_tol = np.abs(g.astype(np.float64))[:, None] * (p_tol + onehot * k_abs * scale_rows[:, None])
    assert np.all((np.abs(dx - G64) <= g_tol)[fin]), "fast gradient out of bound"


def upstream(data: st.DataObject, n: int, dtype: np.dtype[Any]) -> Array:
    seed = data.draw(st.integers(0, 2**16), label="g seed")
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n)).astype(dtype)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [F32, F64])
@settings(max_examples=100)
@given(data=st.data())
def test_accuracy_on_the_hard_regions(precision: str, dtype: np.dtype[Any], data: st.DataObject) -> None:
    v = st.integers(2, 160)  # short rows (column-major, <= NARROW_C) and wide ones
    x, t = data.draw(ts.hard_logits(dtype=dtype, n=st.integers(1, 8), v=v), label="logits, target")
    check_against_exact(x, t, upstream(data, len(t), dtype), precision, data.draw(st.sampled_from([1, 2])))


@pytest.mark.parametrize("dtype", [F32, F64])
@settings(max_examples=50)
@given(data=st.data())
def test_accurate_loss_on_log_normalized_rows(dtype: np.dtype[Any], data: st.DataObject) -> None:
    """Rows that are already log-probabilities: lse is near 0 and cancels (the documented exception),
    but the loss, the softmax and the gradient keep their bounds."""
    x, t = data.draw(ts.log_normalized(dtype=dtype, n=st.integers(1, 8), v=st.integers(2, 160)), label="logits")
    check_against_exact(x, t, upstream(data, len(t), dtype), "accurate", 1, lse_too=False)


@pytest.mark.parametrize("precision", PRECISIONS)
@settings(max_examples=2)
@given(data=st.data())
def test_accuracy_on_long_rows(precision: str, data: st.DataObject) -> None:
    x, t = data.draw(ts.long_row(dtype=F32, v=st.integers(1024, 8192)), label="logits, target")
    check_against_exact(x, t, upstream(data, len(t), F32), precision, 1)


# ----------------------------------------------------------------------------- edge rows, options, no writes


INF, NAN = np.inf, np.nan
EDGE_ROWS = [
    # row, target, loss (as torch), gradient of that row for g = 1 (None: compare with softmax - onehot)
    ([1.0, INF, 2.0], 0, NAN, "nan"),
    ([-INF, -INF, -INF], 1, NAN, "nan"),
    ([1.0, NAN, 2.0], 2, NAN, "nan"),
    ([0.0, -INF, 1.0], 1, INF, "finite"),  # -inf at the target: infinite loss, gradient softmax - onehot
    ([0.0, -INF, 1.0], 2, None, "finite"),  # -inf elsewhere: probability 0 there
]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_edge_rows_as_torch(precision: str, dtype: np.dtype[Any]) -> None:
    x = np.array([r for r, *_ in EDGE_ROWS], dtype=dtype)
    t = np.array([tt for _, tt, *_ in EDGE_ROWS])
    g = np.array([0.5, -1.5, 2.0, 0.75, -0.25], dtype=dtype)
    loss, lse, _, dx = run(x, t, g, precision, None)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(xt, torch.from_numpy(t), reduction="none")
    (t_dx,) = torch.autograd.grad(t_loss, xt, torch.from_numpy(g.astype(np.float64)))
    assert np.array_equal(np.isnan(loss), np.isnan(t_loss.detach().numpy()))
    assert np.array_equal(np.isposinf(loss), np.isposinf(t_loss.detach().numpy()))
    assert np.allclose(loss, t_loss.detach().numpy(), rtol=1e-6, equal_nan=True)
    assert np.array_equal(np.isnan(dx), np.isnan(t_dx.numpy()))
    assert np.allclose(dx, t_dx.numpy(), rtol=1e-6, atol=1e-7, equal_nan=True)
    if precision == "accurate":  # torch's logsumexp of each row: +inf, -inf, nan, then finite
        t_lse = torch.logsumexp(torch.tensor(x.astype(np.float64)), dim=1).numpy()
        assert np.allclose(lse, t_lse, rtol=1e-6, equal_nan=True)
        assert np.array_equal(lse[:3], t_lse[:3], equal_nan=True)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_zero_upstream_gradient_and_one_class(precision: str) -> None:
    x = np.array([[3.0, -1.0, 2.0], [0.5, 0.25, -4.0]], dtype=np.float32)
    _, _, _, dx = run(x, np.array([0, 2]), np.array([0.0, 1.0], np.float32), precision, None)
    assert np.all(dx[0] == 0) and np.all(dx[1] != 0)
    one = np.array([[5.0], [-2.0]], np.float32)  # one class: loss 0, gradient 0
    loss, lse, probs, dx = run(one, np.array([0, 0]), np.array([1.5, -2.0], np.float32), precision, None)
    assert np.array_equal(loss, [0, 0]) and np.array_equal(lse, one[:, 0])
    assert np.array_equal(probs, [[1], [1]]) and np.array_equal(dx, [[0], [0]])


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("threads", [1, 3])
def test_no_writes_no_aliasing_and_backward_twice(precision: str, threads: int) -> None:
    x, t, g = rows(np.random.default_rng(1), 17, 11, F32)
    t = t.astype(np.intp)
    before = (x.copy(), t.copy(), g.copy())
    loss, lse, state = K.ce_rows_forward(x, t, precision=precision, threads=threads)  # type: ignore[arg-type]
    state_before = [a.copy() for a in state if isinstance(a, np.ndarray)]
    dx1 = K.ce_rows_backward(g, state)
    dx2 = K.ce_rows_backward(g, state)
    assert np.array_equal(dx1, dx2, equal_nan=True)
    for a, b in zip((x, t, g), before, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    for a, b in zip([a for a in state if isinstance(a, np.ndarray)], state_before, strict=True):
        assert np.array_equal(a, b, equal_nan=True), "the backward wrote into the state"
    assert state.x is x and state.exps is None  # blocked: the state reads the caller's logits, keeps no copy
    for out in (loss, lse, dx1, state.sums, state.shift, state.dtarget):
        assert not any(np.shares_memory(out, a) for a in (x, t, g))
    assert not np.shares_memory(loss, lse) and not np.shares_memory(dx1, dx2)
    assert loss.dtype == lse.dtype == dx1.dtype == np.float32


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", np.float64(2.0)])
def test_bad_threads(bad: Any) -> None:
    x, t = np.zeros((2, 3), np.float32), np.array([0, 1], np.intp)
    with pytest.raises(ValueError, match=r"threads must be None or an int >= 1, got"):
        K.ce_rows_forward(x, t, threads=bad)


def test_bad_precision_and_good_threads() -> None:
    x, t = np.ones((2, 3), np.float32), np.array([0, 1], np.intp)
    with pytest.raises(ValueError, match=r"precision must be one of 'accurate', 'fast', got 'exact'"):
        K.ce_rows_forward(x, t, precision="exact")  # type: ignore[arg-type]
    assert K.check_threads(None) == 1 and K.check_threads(np.int64(4)) == 4


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
]  # fmt: skip


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


@pytest.mark.usefixtures("small_blocks")
def test_concurrent_callers_share_the_pool() -> None:
    """Callers on several threads, each asking for another thread count (the pool grows meanwhile)."""
    x, t, g = rows(np.random.default_rng(3), 60, 9, F32)
    want = run(x, t, g, "fast", 1)
    failures: list[str] = []

    def caller(k: int) -> None:
        for i in range(8):
            threads = 1 + (i + k) % 5
            got = run(x, t, g, "fast", threads)
            if not all(np.array_equal(u, v, equal_nan=True) for u, v in zip(got, want, strict=True)):
                failures.append(f"caller {k}, threads={threads}")

    callers = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for c in callers:
        c.start()
    for c in callers:
        c.join()
    assert not failures, failures


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("C", [9, 90])  # a column-major state and a row-major one
def test_backward_into_out_and_into_the_state(precision: str, C: int, monkeypatch: pytest.MonkeyPatch) -> None:
    x, t, g = rows(np.random.default_rng(C), 33, C, F32)
    t = t.astype(np.intp)
    x_before = x.copy()
    _, _, state = K.ce_rows_forward(x, t, precision=precision, threads=2)  # type: ignore[arg-type]
    assert state.exps is None and state.x is x  # blocked
    want = K.ce_rows_backward(g, state)
    buf = np.full(want.shape, 7.0, dtype=np.float32)
    assert K.ce_rows_backward(g, state, out=buf) is buf
    assert np.array_equal(buf, want, equal_nan=True)
    for view in (x, x[::-1]):  # the backward reads the logits: it refuses to write into them
        with pytest.raises(ValueError, match=r"out must not share memory with the logits"):
            K.ce_rows_backward(g, state, out=view)
    assert np.array_equal(x, x_before, equal_nan=True)
    for bad in (np.zeros((33, C), np.float64), np.zeros((32, C), np.float32), [[0.0] * C] * 33):
        with pytest.raises(ValueError, match=r"out must be an array of shape \(33, \d+\) and dtype float32, got"):
            K.ce_rows_backward(g, state, out=bad)  # type: ignore[arg-type]
    monkeypatch.setattr(K, "SERIAL_ELEMENTS", 10**9)  # one block: the state keeps its exps, out may be them
    _, _, state = K.ce_rows_forward(x, t, precision=precision, threads=2)  # type: ignore[arg-type]
    assert state.exps is not None and state.x is None
    one = K.ce_rows_backward(g, state)
    np.testing.assert_allclose(one, want, rtol=4e-7, atol=1e-7)
    spent = K.ce_rows_backward(g, state, out=state.exps)  # consumes the state
    assert spent is state.exps and np.array_equal(spent, one, equal_nan=True)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [F32, F64])
@settings(max_examples=50)
@given(data=st.data())
def test_accuracy_of_the_blocked_path(precision: str, dtype: np.dtype[Any], data: st.DataObject) -> None:
    """The blocked kernels (the softmax recomputed from the logits in the backward) keep the same bounds."""
    x, t = data.draw(ts.hard_logits(dtype=dtype, n=st.integers(2, 8), v=st.integers(2, 160)), label="logits, target")
    g = upstream(data, len(t), dtype)
    threads = data.draw(st.sampled_from([1, 2]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(K, "BLOCK_ELEMENTS", 2 * x.shape[1] - 1)  # one row a block ...
        mp.setattr(K, "ACCURATE_BLOCK_ELEMENTS", (x.shape[0] - 1) * x.shape[1])  # ... M - 1 rows, then 1
        mp.setattr(K, "SERIAL_ELEMENTS", 0)
        assert K.ce_rows_forward(x, t.astype(np.intp), precision=precision)[2].exps is None  # type: ignore[arg-type]
        check_against_exact(x, t, g, precision, threads)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_blocked_path_holds_one_large_array(precision: str, dtype: np.dtype[Any]) -> None:
    """Forward + backward past SERIAL_ELEMENTS allocate one (M, C) array (dx) plus O(M) and a few blocks."""
    M, C = 2048, 2048  # 4M elements: 16 or 32 MiB per (M, C) array; a block is 1 MiB
    x, t, g = rows(np.random.default_rng(7), M, C, dtype)
    t = t.astype(np.intp)
    big = M * C * dtype.itemsize
    tracemalloc.start()
    try:
        _, _, state = K.ce_rows_forward(x, t, precision=precision, threads=2)  # type: ignore[arg-type]
        _, fwd_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        dx = K.ce_rows_backward(g, state)
        _, bwd_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert state.exps is None
    assert fwd_peak < big / 4, f"forward peak {fwd_peak} B: an (M, C) array ({big} B) was made"
    assert bwd_peak < big * 1.25, f"backward peak {bwd_peak} B: more than dx ({big} B) and a few blocks"
    want = K.ce_rows_backward(g, K.ce_rows_forward(x, t, precision="accurate")[2])
    fin = np.isfinite(want)
    assert np.array_equal(fin, np.isfinite(dx))
    np.testing.assert_allclose(dx[fin], want[fin], rtol=1e-4 if dtype == F32 else 1e-12, atol=1e-30)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape", [(32, 27), (1, 5), (300, 27), (2, 4096)])
def test_small_path_agrees_with_the_blocked_path(precision: str, shape: tuple[int, int]) -> None:
    """Problems of at most SMALL_ELEMENTS take the few-call path (finite rows), rows with a non-finite max fall
    back to the general kernel; both agree with the general kernel forced on, to float32 rounding."""
    rng = np.random.default_rng(sum(shape))
    x, t, g = rows(rng, *shape, F32)
    finite = x.copy()
    finite[~np.isfinite(finite)] = -np.inf  # -inf entries stay (a finite max), +inf and nan go
    finite[:, 0] = np.where(np.isneginf(finite).all(axis=1), 0.0, finite[:, 0])
    taken: list[bool] = []
    small = K._small_rows

    def spy(*args: Any) -> Any:
        out = small(*args)
        taken.append(out is not None)
        return out

    for logits, expect_small in ((finite, True), (x, False)):
        taken.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(K, "_small_rows", spy)
            got = run(logits, t, g, precision, None)
        assert taken == [expect_small or not (shape[0] >= 8)], taken
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(K, "SMALL_ELEMENTS", 0)
            want = run(logits, t, g, precision, None)
        if not taken[0]:  # the general kernel both times: the same calls, the same bits
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)
            continue
        eps = float(np.finfo(np.float32).eps)
        d = np.abs(logits - logits.max(axis=1, keepdims=True))  # (M, C) the fast bound grows with |x - max|
        d[~np.isfinite(d)] = 0
        loss, lse = want[0], want[1]
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert a.dtype == b.dtype
            if precision == "accurate":  # both round once from float64
                np.testing.assert_allclose(a, b, rtol=4 * eps, atol=1e-40)
            else:  # fast: loss and lse absolute, K eps (1 + |lse| + |loss|); softmax and dx relative,
                # K eps (1 + |x - max|) (exp2 in one kernel, exp in the other); a loss of +inf (-inf at the
                # target) in both
                if i < 2:
                    tol = 2 * K.FAST_ABS_K * eps * (1 + np.abs(lse) + np.abs(loss))
                else:
                    tol = 2 * K.FAST_REL_K * eps * (1 + d) * np.abs(b) + 1e-40
                with np.errstate(invalid="ignore"):
                    assert ((a == b) | (np.abs(a - b) <= tol)).all(), i
