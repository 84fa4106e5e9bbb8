"""Fused linear + cross-entropy against torch's ``F.linear_cross_entropy`` and the unfused tinyops chain.

Every chunk path is drawn or pinned: one chunk (``chunk_size >= N``, the weight gradient written
directly), chunks that divide N, a remainder chunk, chunks of one row; for each reduction (the 'none'
backward recomputes the chunks, 'mean'/'sum' scale the forward's gradients), with and without a bias,
float32 and float64.
"""

from __future__ import annotations

import tracemalloc
from functools import partial
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

import tinyops
from tinyops._checks import BACKENDS
from tinyops.ops.linear_cross_entropy import (
    TILE,
    default_chunk_size,
    linear_cross_entropy,
    linear_cross_entropy_backward,
    linear_cross_entropy_forward,
)

from .oracle import Array, Case, OpSpec, Reference, check_op
from .test_loss_options import option_cases, torch_loss

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)

# ----------------------------------------------------------------------------- the oracle


def torch_linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """torch's op on our layout: it takes the weight as (V, D). With a chunk size, torch's own chunked
    path runs with the same number of rows per chunk."""
    options = None
    if chunk_size is not None:
        options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk_size, chunking_method=None)
    return F.linear_cross_entropy(x, weight.T, target, linear_bias=bias, reduction=reduction, options=options)


def _numpy_reference(r: Reference) -> tuple[Array, Array, Array]:
    """For the error scales: the logits' dot-product bound S (N, V), the per-row factor |g| (N,) of
    dlogits, and |dlogits| (N, V), in float64."""
    x, w, t, *b = r.args64
    bias = b[0] if b and b[0] is not None else np.zeros(w.shape[1])
    S = np.abs(x) @ np.abs(w) + np.abs(bias)  # (N, V)
    z = x @ w + bias
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    N = x.shape[0]
    red = r.kwargs.get("reduction", "mean")
    g = np.abs(r.dout) if red == "none" else np.full(N, float(np.abs(r.dout)) / (N if red == "mean" else 1))
    onehot = np.zeros_like(p)
    onehot[np.arange(N), t] = 1
    return S, g, g[:, None] * np.abs(p - onehot)


def lce_fwd_scale(r: Reference) -> Any:
    """The logits are off by the dot-product bound ``K * S`` (K = D + 1 terms); the loss
    ``lse(z) - z[t]`` moves by at most twice the largest logit error; plus the cross-entropy's own
    rounding (``1 + max|z| + V``, as the fused loss's scale)."""
    x, w = r.args64[0], r.args64[1]
    S = _numpy_reference(r)[0]
    K, V = w.shape[0] + 1, w.shape[1]
    zmax = float(np.max(np.abs(x @ w), initial=0.0)) + float(np.max(S, initial=0.0))
    return 2 * K * float(np.max(S, initial=0.0)) + 1 + zmax + V + np.abs(r.out)


def lce_bwd_scale(r: Reference) -> tuple[Any, ...]:
    """dlogits is off by ``|g| * E`` with ``E = 2 K max S + 1 + V`` (in eps: the logits' error moves the
    softmax by at most ``2 p max|dz|``) plus its own rounding; each gradient then sums V (dx) or N
    (dweight, dbias) such terms: the same bound pushed through ``|.| @ |.|``, plus the sums' length."""
    x, w, _, *b = r.args64
    S, g, dl = _numpy_reference(r)
    N, D = x.shape
    V = w.shape[1]
    K = D + 1
    E = g * (2 * K * np.max(S, axis=1, initial=0.0) + 1 + V)  # (N,)  per-row error of dlogits, in eps
    dx = E[:, None] * np.abs(w).sum(axis=1)[None, :] + (V + 1) * (dl @ np.abs(w).T)  # (N, D)
    dw = np.abs(x).T @ np.broadcast_to(E[:, None], (N, V)) + (N + 1) * (np.abs(x).T @ dl)  # (D, V)
    scales: list[Any] = [dx, dw]
    if b and b[0] is not None:
        scales.append(np.full(V, E.sum()) + (N + 1) * dl.sum(axis=0))  # (V,)
    return tuple(scales)


@st.composite
def lce_cases(draw: st.DrawFn, smooth: bool = False) -> Case:
    dtype = F64 if smooth else draw(st.sampled_from([F32, F64]))
    N, D, V = draw(st.integers(1, 12)), draw(st.integers(1, 6)), draw(st.integers(1, 12))
    bound = 2.0 if smooth else draw(st.sampled_from([1.0, 4.0]))
    el = st.floats(-bound, bound, width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False)
    x = draw(hnp.arrays(dtype, (N, D), elements=el))
    weight = draw(hnp.arrays(dtype, (D, V), elements=el))
    target = draw(hnp.arrays(draw(st.sampled_from([np.int64, np.int32])), (N,), elements=st.integers(0, V - 1)))
    args: tuple[Any, ...] = (x, weight, target)
    if draw(st.booleans()):
        args = (*args, draw(hnp.arrays(dtype, (V,), elements=el)))
    chunk = draw(st.one_of(st.none(), st.integers(1, N + 2)))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    return Case(args, {"chunk_size": chunk, "reduction": reduction}, draw(st.integers(0, 2**32 - 1)))


def _pinned() -> list[Case]:
    """Every chunk path at N = 10 rows, both dtypes, every reduction, with a bias."""
    rng = np.random.default_rng(5)
    cases = []
    for dtype in (F32, F64):
        x = rng.normal(0.0, 1.5, (10, 4)).astype(dtype)
        w = rng.normal(0.0, 1.5, (4, 9)).astype(dtype)
        b = rng.normal(0.0, 1.0, 9).astype(dtype)
        t = rng.integers(0, 9, 10)
        for chunk in (1, 3, 5, 10, 11):  # rows, remainder of 1, divides, exactly one, more than N
            for red in ("mean", "sum", "none"):
                cases.append(Case((x, w, t, b), {"chunk_size": chunk, "reduction": red}, chunk))
    return cases


K4 = {"float32": 4, "float64": 4}
SPEC = OpSpec(
    "linear_cross_entropy", linear_cross_entropy_forward, linear_cross_entropy_backward,
    torch_linear_cross_entropy, lce_cases(), lce_cases(smooth=True), fwd_k=K4, bwd_k=K4,
    fwd_scale=lce_fwd_scale, bwd_scale=lce_bwd_scale,
)


LAYERS = [{"backend": "reference"}, {"backend": "compiled"}, {"backend": "compiled", "threads": 2}]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: "-".join(map(str, layer.values())))
@given(case=SPEC.cases)
def test_oracle_linear_cross_entropy(layer: dict[str, Any], case: Case) -> None:
    check_op(SPEC, case, layer)


for _case in _pinned():
    test_oracle_linear_cross_entropy = example(case=_case)(test_oracle_linear_cross_entropy)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=SPEC.grad_cases)
def test_gradcheck_linear_cross_entropy(backend: str, case: Case) -> None:
    kwargs = {**case.kwargs, "backend": backend}
    result = tinyops.gradcheck(SPEC.forward, case.args, SPEC.backward, kwargs=kwargs, seed=case.dout_seed)
    assert result.passed, f"linear_cross_entropy gradcheck failed:\n{result}"


# ----------------------------------------------------------------------------- against the unfused chain


def _unfused(x: Array, w: Array, t: Array, b: Array | None, red: Any, dloss: Any) -> tuple[Any, ...]:
    logits, lin_cache = tinyops.linear_forward(x, w, b)
    loss, ce_cache = tinyops.cross_entropy_forward(logits, t, reduction=red)
    dlogits = tinyops.cross_entropy_backward(dloss, ce_cache)
    return (loss, *tinyops.linear_backward(dlogits, lin_cache))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [1, 7, 16, 64, 100, None])
def test_equals_unfused_chain(backend: Any, dtype: np.dtype[Any], reduction: Any, chunk_size: int | None) -> None:
    """Every chunk path (N = 64: chunks of 1, 7 with a remainder of 1, 16 dividing N, exactly N, more
    than N, the default) gives the unfused linear + cross_entropy's loss and gradients."""
    rng = np.random.default_rng(11)
    N, D, V = 64, 12, 300
    x = rng.normal(0.0, 1.0, (N, D)).astype(dtype)
    w = rng.normal(0.0, 0.5, (D, V)).astype(dtype)
    b = rng.normal(0.0, 0.5, V).astype(dtype)
    t = rng.integers(0, V, N)
    loss, cache = linear_cross_entropy_forward(x, w, t, b, chunk_size=chunk_size, reduction=reduction, backend=backend)
    dloss = rng.normal(size=loss.shape).astype(dtype)
    got = (loss, *linear_cross_entropy_backward(dloss, cache))
    want = _unfused(x, w, t, b, reduction, dloss)
    tol = {F32: 2e-5, F64: 1e-12}[dtype]
    for name, g, r in zip(("loss", "dx", "dweight", "dbias"), got, want, strict=True):
        assert g.dtype == dtype and g.shape == r.shape, name
        scale = float(np.max(np.abs(r)))
        np.testing.assert_allclose(g, r, rtol=0, atol=tol * scale, err_msg=name)
    value = linear_cross_entropy(x, w, t, b, chunk_size=chunk_size, reduction=reduction, backend=backend)
    np.testing.assert_allclose(value, loss, rtol=0, atol=tol * float(np.max(np.abs(loss))))


def test_no_bias_and_torch_at_float32() -> None:
    """No bias: dbias is None; torch's float32 chunked path agrees at float32 accuracy."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    w = rng.normal(0.0, 0.4, (8, 1000)).astype(np.float32)
    t = rng.integers(0, 1000, 50)
    loss, cache = linear_cross_entropy_forward(x, w, t, chunk_size=16)
    dx, dw, db = linear_cross_entropy_backward(np.float32(1.3), cache)
    assert db is None
    xt, wt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(w).requires_grad_(True)
    ref = torch_linear_cross_entropy(xt, wt, torch.from_numpy(t), chunk_size=16)
    (ref * 1.3).backward()
    assert xt.grad is not None and wt.grad is not None
    np.testing.assert_allclose(loss, ref.item(), rtol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-5 * float(np.abs(dx).max()))
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=0, atol=1e-5 * float(np.abs(dw).max()))


def test_empty_batch() -> None:
    """No rows: the mean is nan (as torch), the gradients are zero."""
    x, w = np.empty((0, 3)), np.full((3, 4), 0.25)
    loss, cache = linear_cross_entropy_forward(x, w, np.empty(0, np.int64))
    assert np.isnan(loss)
    dx, dw, _ = linear_cross_entropy_backward(1.0, cache)
    assert dx.shape == (0, 3) and not dw.any()


# ----------------------------------------------------------------------------- memory


def test_never_holds_the_logits() -> None:
    """Peak extra memory of forward + backward stays well below one (N, V) logits array, while the
    unfused chain holds several."""
    rng = np.random.default_rng(14)
    N, D, V = 2048, 16, 2048
    x = rng.normal(size=(N, D))
    w = rng.normal(0.0, 0.3, (D, V))
    t = rng.integers(0, V, N)
    logits_bytes = N * V * 8  # 32 MiB; a chunk of one tile, TILE rows, is 4 MiB

    def peak(f: Any) -> int:
        tracemalloc.start()
        tracemalloc.reset_peak()
        f()
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return p

    fused = peak(lambda: linear_cross_entropy_backward(1.0, linear_cross_entropy_forward(x, w, t, chunk_size=TILE)[1]))
    unfused = peak(lambda: _unfused(x, w, t, None, "mean", 1.0))
    assert fused < logits_bytes / 2, f"fused peak {fused / 2**20:.1f} MiB"
    assert unfused > 2 * logits_bytes, f"unfused peak {unfused / 2**20:.1f} MiB"


def test_default_chunk_size() -> None:
    assert default_chunk_size(32768, F32) >= 256
    assert default_chunk_size(27, F32) * 27 * 4 >= 2**20  # small V: few, large chunks


# ----------------------------------------------------------------------------- bad input

X, W, T = np.full((3, 4), 0.5), np.full((4, 5), 0.25), np.array([0, 4, 2])
_, CACHE = linear_cross_entropy_forward(X, W, T)

BAD = [
    (partial(linear_cross_entropy, X, W[:3], T), ValueError, r"^x has 4 features"),
    (partial(linear_cross_entropy, X[0], W, T[:1]), ValueError, r"^target must have shape \(\) "),
    (partial(linear_cross_entropy, X[None], W, T), ValueError, r"^x must be 1 or 2-D"),
    (partial(linear_cross_entropy, X, W.astype(np.float32), T), TypeError, r"^weight has dtype float32"),
    (partial(linear_cross_entropy, X.astype(np.int64), W, T), TypeError, r"^x\b.*int64"),
    (partial(linear_cross_entropy, X, W, T, np.full(4, 0.5)), ValueError, r"^bias must have shape \(5,\)"),
    (partial(linear_cross_entropy, X, W, np.array([0, 5, 1])), IndexError, r"^target.*got 5"),
    (partial(linear_cross_entropy, X, W, np.array([0, -1, 1])), IndexError, r"^target.*got -1"),
    (partial(linear_cross_entropy, X, W, T[:2]), ValueError, r"^target has 2 rows but x has 3"),
    (partial(linear_cross_entropy, X, W, T.astype(np.float64)), ValueError, r"^probability target must have"),
    (partial(linear_cross_entropy, X, W, T.astype(np.float32)), ValueError, r"^probability target must have"),
    (partial(linear_cross_entropy, X, W, np.ones((3, 5), np.float32)), TypeError, r"^target has dtype float32"),
    (partial(linear_cross_entropy, X, W, T, class_weight=np.ones(4)), ValueError, r"^class_weight must have one"),
    (partial(linear_cross_entropy, X, W, T, class_weight=np.ones(5, np.float32)), TypeError,
     r"^class_weight has dtype float32"),
    (partial(linear_cross_entropy, X, W, np.array([0, -100, 7]), ignore_index=-100), IndexError, r"^target.*got 7"),
    (partial(linear_cross_entropy, X, W, T, chunk_size=0), ValueError, r"^chunk_size.*got 0"),
    (partial(linear_cross_entropy, X, W, T, chunk_size=2.0), TypeError, r"^chunk_size.*float 2.0"),
    (partial(linear_cross_entropy, X, W, T, reduction="avg"), ValueError, r"^reduction.*'avg'"),
    (partial(linear_cross_entropy_backward, np.ones(3), CACHE), ValueError, r"^dloss must have.*shape \(\)"),
    (partial(linear_cross_entropy_backward, np.float32(1.0), CACHE), TypeError, r"^dloss.*float32"),
]


@pytest.mark.parametrize(("call", "exc", "pattern"), BAD)
def test_bad_input(call: Any, exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        call()


# ----------------------------------------------------------------------------- every option, against torch


def torch_lce(x: Array, w: Array, target: Array, b: Array | None, kw: dict[str, Any],
              dloss: Array) -> tuple[Array, Array, list[Array]]:
    """torch's float64 ``(loss, lse, [dx, dweight, dbias])``: ``F.linear_cross_entropy`` itself, or with
    z_loss / softcap the composed definition of test_loss_options.torch_loss on ``F.linear``'s logits."""
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    wt = torch.tensor(w.T.astype(np.float64), requires_grad=True)  # torch's (V, D) layout
    bt = None if b is None else torch.tensor(b.astype(np.float64), requires_grad=True)
    tt = torch.from_numpy(target.astype(np.float64) if target.dtype.kind == "f" else target.astype(np.int64))
    cw = kw.get("class_weight")
    tkw: dict[str, Any] = {"weight": None if cw is None else torch.from_numpy(cw.astype(np.float64)),
                           "reduction": kw.get("reduction", "mean"), "label_smoothing": kw.get("label_smoothing", 0.0)}
    if "ignore_index" in kw:
        tkw["ignore_index"] = kw["ignore_index"]
    logits = F.linear(xt, wt, bt)
    if kw.get("z_loss", 0.0) or kw.get("softcap") is not None:
        loss, lse = torch_loss(logits, tt, z_loss=kw.get("z_loss", 0.0), softcap=kw.get("softcap"), **tkw)
    else:
        loss = F.linear_cross_entropy(xt, wt, tt, linear_bias=bt, **tkw)
        lse = torch.logsumexp(logits, dim=-1)
    leaves = [xt, wt] + ([] if bt is None else [bt])
    grads = torch.autograd.grad(loss, leaves, torch.from_numpy(np.asarray(dloss, dtype=np.float64)))
    out = [g.numpy() for g in grads]
    out[1] = out[1].T  # back to our (D, V)
    return loss.detach().numpy(), lse.detach().numpy(), out


@st.composite
def lce_option_cases(draw: st.DrawFn) -> dict[str, Any]:
    """x (N, D) or (D,), weight (D, V), bias or not, and the targets and options of test_loss_options."""
    c = draw(option_cases())
    logits, kw = c["logits"], dict(c["kw"])
    dtype = logits.dtype
    V = logits.shape[-1]
    D = draw(st.integers(1, 6))
    el = st.floats(-2, 2, width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False)
    x = draw(hnp.arrays(dtype, (*logits.shape[:-1], D), elements=el))
    w = draw(hnp.arrays(dtype, (D, V), elements=el))
    b = draw(hnp.arrays(dtype, (V,), elements=el)) if draw(st.booleans()) else None
    if "weight" in kw:
        kw["class_weight"] = kw.pop("weight")
    kw["chunk_size"] = draw(st.one_of(st.none(), st.integers(1, 300)))
    kw["batch_invariant"] = draw(st.booleans())
    return {"x": x, "w": w, "b": b, "target": c["target"], "kw": kw, "seed": c["seed"]}


def _compare_lce(case: dict[str, Any], layer: dict[str, Any]) -> None:
    x, w, b, target, kw = case["x"], case["w"], case["b"], case["target"], case["kw"]
    dtype = x.dtype
    (loss, lse), cache = linear_cross_entropy_forward(x, w, target, b, return_lse=True, **kw, **layer)
    dloss = np.asarray(np.random.default_rng(case["seed"]).standard_normal(np.shape(loss)), dtype=dtype)
    grads = [g for g in linear_cross_entropy_backward(dloss, cache) if g is not None]
    ref, ref_lse, ref_grads = torch_lce(x, w, target, b, kw, dloss)
    assert loss.shape == ref.shape and lse.shape == ref_lse.shape
    big = float(x.shape[-1] * 4 + 2)  # |logits| <= D * 2 * 2 + 2
    z = kw.get("z_loss", 0.0)
    tol = {F32: 3e-5, F64: 1e-12}[dtype]
    np.testing.assert_allclose(loss, ref, rtol=0, atol=tol * (1 + big) ** 2 * (1 + z * big) * max(1, x.shape[0]))
    np.testing.assert_allclose(lse, ref_lse, rtol=0, atol=tol * (1 + big))
    gscale = float(np.max(np.abs(dloss), initial=0.0)) * (1 + big) ** 2 * (1 + z * big) * max(1, x.shape[0])
    assert len(grads) == len(ref_grads)
    for name, g, r in zip(("dx", "dweight", "dbias"), grads, ref_grads, strict=False):
        assert g.dtype == dtype and g.shape == r.shape, name
        np.testing.assert_allclose(g, r, rtol=0, atol=tol * gscale, err_msg=name)


@pytest.mark.parametrize("layer", LAYERS[:2], ids=lambda layer: "-".join(map(str, layer.values())))
@given(case=lce_option_cases())
def test_every_option_against_torch(layer: dict[str, Any], case: dict[str, Any]) -> None:
    """Class weights, ignore_index, the three reductions, label smoothing, probability targets, unbatched
    input, z_loss, softcap and return_lse, float32 and float64, forward and backward."""
    _compare_lce(case, layer)


def _opinfo_samples() -> list[pytest.param]:
    """torch's OpInfo sample inputs for ``F.linear_cross_entropy``
    (torch/testing/_internal/common_methods_invocations.py, ``sample_inputs_linear_cross_entropy``), the
    ones with a 2-D linear weight: features (3, 4) and (8, 8), unbatched and batches of 8, index and
    probability targets, each unchunked and chunked kwargs set. (Its other samples swap input and weight
    to make an N-D linear weight, a K-dimensional loss this op does not take.)"""
    unchunked: list[dict[str, Any]] = [
        {}, {"reduction": "sum"}, {"reduction": "none"},
        *[{"class_weight": True, "reduction": r} for r in ("mean", "sum", "none")],
        {"ignore_index": 1}, {"bias": True}, {"bias": True, "class_weight": True, "reduction": "sum"},
    ]
    chunked: list[dict[str, Any]] = [
        *[{"reduction": r, "chunk_size": c} for c in (2, 3) for r in ("mean", "sum", "none")],
        *[{"class_weight": True, "reduction": r, "chunk_size": 2} for r in ("mean", "sum", "none")],
        {"bias": True, "reduction": "none", "chunk_size": 2},
        {"bias": True, "class_weight": True, "reduction": "none", "chunk_size": 2},
        {"bias": True, "ignore_index": 1, "reduction": "none", "chunk_size": 2},
        {"ignore_index": 1, "chunk_size": 2}, {"class_weight": True, "ignore_index": 1, "chunk_size": 2},
        {"bias": True, "chunk_size": 2}, {"bias": True, "class_weight": True, "reduction": "sum", "chunk_size": 2},
        {"bias": True, "ignore_index": 1, "chunk_size": 2},
    ]
    params = []
    for dtype in (F32, F64):
        for (D, V) in ((3, 4), (8, 8)):
            for batch in ((), (8,)):
                for probs in (False, True):
                    for i, spec in enumerate(unchunked + chunked):
                        if probs and "ignore_index" in spec:
                            continue  # torch: ignore_index is not for probability targets
                        params.append(pytest.param(dtype, D, V, batch, probs, spec,
                                                   id=f"{dtype}-{D}x{V}-b{batch}-{'probs' if probs else 'index'}-{i}"))
    return params


@pytest.mark.parametrize(("dtype", "D", "V", "batch", "probs", "spec"), _opinfo_samples())
def test_torch_opinfo_samples(dtype: np.dtype[Any], D: int, V: int, batch: tuple[int, ...], probs: bool,
                              spec: dict[str, Any]) -> None:
    rng = np.random.default_rng(D * 100 + V + len(batch))
    x = rng.uniform(-2, 2, (*batch, D)).astype(dtype)
    w = rng.uniform(-2, 2, (D, V)).astype(dtype)
    b = rng.uniform(-2, 2, V).astype(dtype) if spec.get("bias") else None
    kw = {k: v for k, v in spec.items() if k != "bias"}
    if kw.get("class_weight"):
        kw["class_weight"] = rng.uniform(0.5, 2, V).astype(dtype)
    if probs:
        target = rng.uniform(0, 1, (*batch, V)).astype(dtype)
    else:
        target = rng.integers(0, V, batch)
        if "ignore_index" in kw and np.all(target == kw["ignore_index"]):
            target[...] = 0
    for layer in LAYERS[:2]:
        _compare_lce({"x": x, "w": w, "b": b, "target": np.asarray(target), "kw": kw, "seed": 7}, layer)


# ----------------------------------------------------------------------------- the same bits for every chunk size


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=lce_option_cases(), n=st.integers(1, 2 * TILE + 50), seed=st.integers(0, 2**16))
def test_chunk_size_changes_no_bit(backend: str, case: dict[str, Any], n: int, seed: int) -> None:
    """Loss, lse and the three gradients are identical for chunks of 1, TILE, TILE + 1 and 3 TILE rows and the
    default, with every option, on batches of up to three tiles (one tile: the weight gradient written
    directly; several: added tile by tile)."""
    x0, w, b, kw = case["x"], case["w"], case["b"], dict(case["kw"])
    if x0.ndim == 1:
        x0 = x0[None]
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, x0.shape[1])).astype(x0.dtype)
    V = w.shape[1]
    target = case["target"]
    if target.dtype.kind == "f":
        target = rng.uniform(0, 1, (n, V)).astype(x.dtype)
    else:
        ignore = kw.get("ignore_index", -100)
        target = np.where(rng.uniform(size=n) < 0.2, ignore, rng.integers(0, V, n))
    results = []
    for chunk in (1, TILE, TILE + 1, 3 * TILE, None):
        kw["chunk_size"] = chunk
        (loss, lse), cache = linear_cross_entropy_forward(x, w, target, b, return_lse=True, backend=backend, **kw)
        dloss = np.asarray(np.random.default_rng(seed).standard_normal(np.shape(loss)), dtype=x.dtype)
        results.append([loss, lse, *(g for g in linear_cross_entropy_backward(dloss, cache) if g is not None)])
    for other in results[1:]:
        assert len(other) == len(results[0])
        for name, a, r in zip(("loss", "lse", "dx", "dweight", "dbias"), other, results[0], strict=False):
            assert np.array_equal(a, r, equal_nan=True), name


# ----------------------------------------------------------------------------- the same bits alone or in a batch


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=lce_option_cases(), n=st.integers(2, 40), seed=st.integers(0, 2**16))
def test_batch_invariant_row_alone_equals_row_in_batch(backend: str, case: dict[str, Any], n: int, seed: int) -> None:
    """With batch_invariant, each row's loss (reduction 'none') and lse are the same bits computed alone
    (unbatched, and as a batch of one) and inside a batch of n rows, with every option."""
    x0, w, b, kw = case["x"], case["w"], case["b"], dict(case["kw"])
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, x0.shape[-1])).astype(x0.dtype)
    V = w.shape[1]
    if case["target"].dtype.kind == "f":
        target = rng.uniform(0, 1, (n, V)).astype(x.dtype)
    else:
        target = np.where(rng.uniform(size=n) < 0.2, kw.get("ignore_index", -100), rng.integers(0, V, n))
    kw.update(reduction="none", return_lse=True, batch_invariant=True, backend=backend)
    loss, lse = linear_cross_entropy(x, w, target, b, **kw)
    for i in rng.choice(n, size=min(n, 4), replace=False):
        alone, alone_lse = linear_cross_entropy(x[i], w, target[i], b, **kw)
        one, one_lse = linear_cross_entropy(x[i : i + 1], w, target[i : i + 1], b, **kw)
        assert np.array_equal(alone, loss[i], equal_nan=True) and np.array_equal(alone_lse, lse[i], equal_nan=True)
        assert np.array_equal(one[0], loss[i], equal_nan=True) and np.array_equal(one_lse[0], lse[i], equal_nan=True)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_rows_matmul_kernel_equals_its_reference(dtype: np.dtype[Any]) -> None:
    """The compiled fixed-order logits are the NumPy reference's bits (the same roundings in the same order),
    on a width that is not a multiple of the kernel's column block, and close to BLAS's product."""
    from tinyops.kernels.rows_matmul import COLS, rows_matmul

    rng = np.random.default_rng(9)
    x = rng.normal(size=(7, 33)).astype(dtype)
    w = rng.normal(size=(33, COLS + 5)).astype(dtype)
    ref = np.zeros((7, COLS + 5), dtype)
    for d in range(33):
        ref += x[:, d, None] * w[d]
    got = rows_matmul(x, w, np.empty_like(ref), 2)
    assert np.array_equal(got, ref)
    bound = float((np.abs(x) @ np.abs(w)).max())  # the dot products' error scale
    np.testing.assert_allclose(got, x @ w, rtol=0, atol=50 * float(np.finfo(dtype).eps) * bound)


# ----------------------------------------------------------------------------- the options: fused = unfused, gradcheck

OPTION_SETS: list[dict[str, Any]] = [
    {"class_weight": True, "ignore_index": 2, "label_smoothing": 0.1},
    {"z_loss": 0.01, "softcap": 3.0},
    {"probs": True, "class_weight": True, "z_loss": 0.2},
    {"ignore_index": 2, "z_loss": 0.5, "softcap": 1.5, "reduction": "none"},
    {"probs": True, "label_smoothing": 0.3, "softcap": 4.0, "reduction": "sum"},
]


def _option_inputs(spec: dict[str, Any], dtype: np.dtype[Any]) -> tuple[Array, Array, Array, Array, dict[str, Any]]:
    rng = np.random.default_rng(21)
    N, D, V = 40, 6, 11
    x = rng.normal(0, 1, (N, D)).astype(dtype)
    w = rng.normal(0, 0.7, (D, V)).astype(dtype)
    b = rng.normal(0, 0.5, V).astype(dtype)
    kw = {k: v for k, v in spec.items() if k != "probs"}
    if kw.get("class_weight"):
        kw["class_weight"] = rng.uniform(0.5, 2, V).astype(dtype)
    t = rng.uniform(0, 1, (N, V)).astype(dtype) if spec.get("probs") else rng.integers(0, V, N)
    return x, w, b, t, kw


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", OPTION_SETS)
def test_options_equal_the_unfused_chain(backend: Any, spec: dict[str, Any]) -> None:
    """With each set of options the fused op gives the unfused linear + cross_entropy's loss, lse and
    gradients (float64, to the matrix products' rounding)."""
    x, w, b, t, kw = _option_inputs(spec, F64)
    (loss, lse), cache = linear_cross_entropy_forward(x, w, t, b, return_lse=True, backend=backend, **kw)
    dloss = np.random.default_rng(2).standard_normal(np.shape(loss))
    got = (loss, lse, *linear_cross_entropy_backward(dloss, cache))
    logits, lin_cache = tinyops.linear_forward(x, w, b)
    ce_kw = {("weight" if k == "class_weight" else k): v for k, v in kw.items()}
    (ref_loss, ref_lse), ce_cache = tinyops.cross_entropy_forward(logits, t, return_lse=True, backend=backend, **ce_kw)
    want = (ref_loss, ref_lse, *tinyops.linear_backward(tinyops.cross_entropy_backward(dloss, ce_cache), lin_cache))
    for name, g, r in zip(("loss", "lse", "dx", "dweight", "dbias"), got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-12 * (1 + float(np.max(np.abs(r)))), err_msg=name)


@pytest.mark.parametrize("spec", OPTION_SETS)
def test_options_gradcheck(spec: dict[str, Any]) -> None:
    """Central differences (float64) through every option: x, weight and bias."""
    x, w, b, t, kw = _option_inputs(spec, F64)

    def forward(x: Array, weight: Array, bias: Array, **kwargs: Any) -> Any:  # the targets are not differentiated
        return linear_cross_entropy_forward(x, weight, t[:8], bias, **kwargs)

    res = tinyops.gradcheck(forward, (x[:8], w, b), linear_cross_entropy_backward, kwargs=kw, seed=3)
    assert res.passed, str(res)
