"""torch's edge cases, one table row each: every row runs tinyops and torch (float64 autograd) on the same
input and requires the same value and gradient, with the same infinities and nans in the same places.

The drawn comparisons (tests/test_oracle.py) cover the bulk of each option; this table pins the corners:
ignored rows, empty batches, infinities, nan, zero-size shapes, 0-D inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
import torch.nn.functional as F

import tinyops

from .oracle import assert_close

Array = npt.NDArray[Any]
inf, nan = np.inf, np.nan


def _t(a: Any) -> Any:
    return torch.from_numpy(np.asarray(a, dtype=np.float64)) if isinstance(a, np.ndarray) else a


def _compare(
    ours_fwd: Callable[..., Any],
    ours_bwd: Callable[..., Any],
    theirs: Callable[..., torch.Tensor],
    x: Array,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    torch_kwargs: dict[str, Any] | None = None,
) -> tuple[Array, Array]:
    """Run both; compare value and gradient (a fixed non-trivial upstream gradient); return ours."""
    kwargs = kwargs or {}
    with np.errstate(all="ignore"):
        out, cache = ours_fwd(x, *args, **kwargs)
        dout = np.asarray(np.linspace(0.5, 1.5, max(np.size(out), 1))[: np.size(out)].reshape(np.shape(out)), x.dtype)
        dx = ours_bwd(dout, cache)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    ref = theirs(xt, *[_t(a) if not (isinstance(a, np.ndarray) and a.dtype.kind in "iu") else torch.from_numpy(a)
                       for a in args], **(torch_kwargs if torch_kwargs is not None else kwargs))
    if ref.numel():
        (g,) = torch.autograd.grad(ref, xt, torch.from_numpy(dout.astype(np.float64)), allow_unused=True)
        g = torch.zeros_like(xt) if g is None else g
    else:
        g = torch.zeros_like(xt)
    tol = 1e-6 * (1 + np.abs(np.where(np.isfinite(x), x, 0)).max(initial=0))
    assert_close("value", out, ref.detach().numpy(), tol)
    assert_close("gradient", dx, g.numpy(), tol)
    return np.asarray(out), dx


# ============================================================================ cross-entropy

ROWS3 = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]])

CE_CASES: list[Any] = [
    # name, logits, target, kwargs
    ("all-ignored-mean", ROWS3, np.array([-100, -100, -100]), {}),  # nan, zero gradient
    ("all-ignored-sum", ROWS3, np.array([-100, -100, -100]), {"reduction": "sum"}),  # 0
    ("all-ignored-none", ROWS3, np.array([-100, -100, -100]), {"reduction": "none"}),  # zeros
    ("all-ignored-smoothing", ROWS3, np.array([-100, -100, -100]), {"label_smoothing": 0.2}),
    ("all-ignored-weighted", ROWS3, np.array([-100, -100, -100]), {"weight": np.array([0.5, 2.0, 1.0])}),
    ("ignore-a-class", ROWS3, np.array([1, 2, 1]), {"ignore_index": 1}),
    ("ignore-a-class-smoothing-weighted", ROWS3, np.array([1, 2, 1]),
     {"ignore_index": 1, "label_smoothing": 0.3, "weight": np.array([0.5, 2.0, 1.0])}),
    ("empty-mean", np.zeros((0, 3)), np.zeros(0, np.int64), {}),  # nan
    ("empty-sum", np.zeros((0, 3)), np.zeros(0, np.int64), {"reduction": "sum"}),  # 0
    ("empty-none", np.zeros((0, 3)), np.zeros(0, np.int64), {"reduction": "none"}),
    ("empty-probs", np.zeros((0, 3)), np.zeros((0, 3)), {}),
    ("no-rows-no-classes", np.zeros((0, 0)), np.zeros(0, np.int64), {"reduction": "none"}),
    ("kdim-no-rows", np.zeros((0, 4, 3)), np.zeros((0, 3), np.int64), {}),
    ("plus-inf-logit", np.array([[inf, 0.0, 1.0], [0.0, 1.0, 2.0]]), np.array([1, 2]), {"reduction": "none"}),
    ("plus-inf-at-target", np.array([[inf, 0.0, 1.0]]), np.array([0]), {"reduction": "none"}),
    ("minus-inf-at-target", np.array([[-inf, 0.0, 1.0], [0.0, 1.0, 2.0]]), np.array([0, 2]), {"reduction": "none"}),
    ("minus-inf-elsewhere", np.array([[-inf, 0.0, 1.0], [0.0, -inf, 2.0]]), np.array([1, 2]), {}),
    ("minus-inf-elsewhere-smoothing", np.array([[-inf, 0.0, 1.0]]), np.array([1]), {"label_smoothing": 0.1}),
    ("minus-inf-elsewhere-probs", np.array([[-inf, 0.0, 1.0]]), np.array([[0.0, 0.5, 0.5]]), {}),
    ("all-minus-inf-row", np.array([[-inf, -inf, -inf], [0.0, 1.0, 2.0]]), np.array([1, 2]), {"reduction": "none"}),
    ("nan-logit", np.array([[nan, 0.0, 1.0], [0.0, 1.0, 2.0]]), np.array([1, 2]), {"reduction": "none"}),
    ("nan-logit-ignored", np.array([[nan, 0.0, 1.0], [0.0, 1.0, 2.0]]), np.array([-100, 2]), {"reduction": "none"}),
    ("zero-weight-on-minus-inf-target", np.array([[-inf, 0.0, 1.0]]), np.array([0]),
     {"weight": np.array([0.0, 1.0, 1.0]), "reduction": "sum"}),  # 0 * inf = nan
    ("weights-sum-to-zero", ROWS3, np.array([0, 0, 0]), {"weight": np.array([0.0, 1.0, 1.0])}),
    ("weights-sum-to-zero-smoothing", ROWS3, np.array([0, -100, 0]),
     {"weight": np.array([0.0, 1.0, 1.0]), "label_smoothing": 0.2}),
    ("smoothing-one", ROWS3, np.array([0, 1, 2]), {"label_smoothing": 1.0}),
    # torch adds the target term (1 - eps) * -log p_t even when eps = 1: 0 * inf = nan, not the smoothing's inf
    ("smoothing-one-minus-inf-at-target-unbatched", np.array([-inf, 0.0]), np.array(0), {"label_smoothing": 1.0}),
    ("smoothing-one-minus-inf-at-target", np.array([[-inf, 0.0], [1.0, 2.0]]), np.array([0, 1]),
     {"label_smoothing": 1.0, "reduction": "none", "weight": np.array([2.0, 0.5])}),
    ("smoothing-one-minus-inf-at-ignored-target", np.array([[-inf, 0.0], [1.0, 2.0]]), np.array([0, 1]),
     {"label_smoothing": 1.0, "ignore_index": 0}),
    ("unbatched", np.array([0.5, -1.0, 2.0]), np.array(2), {}),
    ("unbatched-ignored", np.array([0.5, -1.0, 2.0]), np.array(-100), {}),
    ("unbatched-probs", np.array([0.5, -1.0, 2.0]), np.array([0.2, 0.3, 0.5]), {"label_smoothing": 0.1}),
    ("kdim", np.arange(24.0).reshape(2, 3, 4) / 7, np.array([[0, 1, 2, -100], [2, 2, 0, 1]]),
     {"weight": np.array([0.5, 2.0, 1.0])}),
    ("kdim-probs-sum", np.arange(24.0).reshape(2, 3, 2, 2) / 5, np.full((2, 3, 2, 2), 1 / 3), {"reduction": "sum"}),
    ("one-class", np.array([[3.0], [-2.0]]), np.array([0, 0]), {}),  # loss 0, gradient 0
]


def _torch_ce(x: torch.Tensor, target: Any, **kwargs: Any) -> torch.Tensor:
    opts = {k: torch.from_numpy(v.astype(np.float64)) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    return F.cross_entropy(x, target, **opts)


@pytest.mark.parametrize("backend", ["reference", "compiled"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "logits", "target", "kwargs"), CE_CASES, ids=[c[0] for c in CE_CASES])
def test_cross_entropy_edge_case_matches_torch(
    name: str, logits: Array, target: Array, kwargs: dict[str, Any], dtype: type, backend: str
) -> None:
    x = logits.astype(dtype)
    t = target.astype(dtype) if target.dtype.kind == "f" else target
    kw = {k: v.astype(dtype) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    ours = {**kw, "backend": backend}
    _compare(tinyops.cross_entropy_forward, tinyops.cross_entropy_backward, _torch_ce, x, (t,), ours, kw)


def test_all_ignored_conventions() -> None:
    """Spelled out: all rows ignored -> mean nan with a zero gradient, sum 0 (torch's convention)."""
    t = np.array([-100, -100, -100])
    mean, cache = tinyops.cross_entropy_forward(ROWS3, t)
    assert np.isnan(mean)
    assert np.array_equal(tinyops.cross_entropy_backward(1.0, cache), np.zeros_like(ROWS3))
    assert tinyops.cross_entropy(ROWS3, t, reduction="sum") == 0.0


def test_infinity_conventions() -> None:
    """Spelled out: +inf -> nan; -inf at the target -> inf; -inf elsewhere -> finite, zero gradient there."""
    x = np.array([[inf, 0.0, 1.0], [-inf, 0.0, 1.0], [-inf, 0.0, 1.0]])
    with np.errstate(all="ignore"):
        loss, cache = tinyops.cross_entropy_forward(x, np.array([1, 0, 2]), reduction="none")
        dx = tinyops.cross_entropy_backward(np.ones(3), cache)
    assert np.isnan(loss[0]) and loss[1] == inf and np.isfinite(loss[2])
    assert dx[2, 0] == 0 and np.all(np.isfinite(dx[1:]))


@pytest.mark.parametrize("backend", ["reference", "compiled"])
def test_label_smoothing_that_underflows_in_float32_as_torch_float32(backend: str) -> None:
    """eps / C below float32's smallest number is 0 in float32, for torch as for tinyops: its 0 * inf is nan
    where a logit is -inf (float64 keeps eps and gives inf)."""
    for eps in (2.9e-112, 1e-30):
        for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
            x = np.array([0.0, -inf], dtype)
            ours = tinyops.cross_entropy(x, np.array(0), label_smoothing=eps, backend=backend)
            theirs = F.cross_entropy(torch.tensor(x, dtype=tdtype), torch.tensor(0), label_smoothing=eps)
            assert np.array_equal(ours, theirs.numpy(), equal_nan=True), (eps, dtype, ours, theirs)


def test_negative_label_smoothing_is_rejected_where_torch_ignores_it() -> None:
    """A documented difference: torch treats label_smoothing < 0 as 0; tinyops raises."""
    assert torch.isfinite(F.cross_entropy(torch.tensor(ROWS3), torch.tensor([0, 1, 2]), label_smoothing=-0.5))
    with pytest.raises(ValueError, match=r"^label_smoothing\b"):
        tinyops.cross_entropy(ROWS3, np.array([0, 1, 2]), label_smoothing=-0.5)


def test_float16_logits_are_computed_in_float32() -> None:
    """float16 in, float16 out, computed wider: within one float16 ulp of torch's float64 answer on the
    float16 values (a float16 computation would be off by several: ``lse - x_t`` rounds at |x| ~ 9)."""
    x = (ROWS3 * 3).astype(np.float16)
    w = np.array([1, 2, 3], np.float16)
    t = np.array([0, 1, 2])
    loss, cache = tinyops.cross_entropy_forward(x, t, weight=w, reduction="none")
    dx = tinyops.cross_entropy_backward(np.ones(3, np.float16), cache)
    assert loss.dtype == dx.dtype == np.float16
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    ref = F.cross_entropy(xt, torch.from_numpy(t), weight=torch.tensor(w.astype(np.float64)), reduction="none")
    (g,) = torch.autograd.grad(ref, xt, torch.ones(3, dtype=torch.float64))
    for ours, theirs in [(loss, ref.detach().numpy()), (dx, g.numpy())]:
        ulp = np.spacing(np.abs(theirs).astype(np.float16)).astype(np.float64)
        assert np.all(np.abs(ours.astype(np.float64) - theirs) <= ulp)


# ============================================================================ embedding

EMB_W = np.array([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5], [1.0, 1.0]])
EMB_CASES: list[Any] = [
    ("padding-idx", np.array([[0, 2, 2], [3, 2, 0]]), {"padding_idx": 2}),
    ("padding-idx-negative", np.array([[0, 3, 1]]), {"padding_idx": -1}),  # row 3
    ("padding-idx-not-looked-up", np.array([0, 1]), {"padding_idx": 3}),
    ("scale-grad-by-freq", np.array([[0, 2, 2], [2, 1, 0]]), {"scale_grad_by_freq": True}),
    ("both", np.array([[0, 2, 2], [2, 1, 0]]), {"scale_grad_by_freq": True, "padding_idx": 0}),
    ("empty-idx", np.zeros((0, 3), np.int64), {"scale_grad_by_freq": True, "padding_idx": 1}),
    ("0-d-idx", np.array(2), {}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "idx", "kwargs"), EMB_CASES, ids=[c[0] for c in EMB_CASES])
def test_embedding_edge_case_matches_torch(name: str, idx: Array, kwargs: dict[str, Any], dtype: type) -> None:
    w = EMB_W.astype(dtype)
    out, dw = _compare(tinyops.embedding_forward, tinyops.embedding_backward,
                       lambda wt, i, **kw: F.embedding(i, wt, **kw), w, (idx,), kwargs)
    assert out.shape == (*idx.shape, 2) and dw.shape == w.shape


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.5, float("inf")])
def test_embedding_renorm_matches_torch_max_norm(norm_type: float) -> None:
    w = (EMB_W * 3).astype(np.float32)
    idx = np.array([[0, 2], [2, 1]])
    wt = torch.from_numpy(w.copy())
    out_t = F.embedding(torch.from_numpy(idx), wt, max_norm=1.25, norm_type=norm_type)  # renormalizes wt in place
    new_w = tinyops.embedding_renorm(w, idx, 1.25, norm_type=norm_type)
    np.testing.assert_allclose(new_w, wt.numpy(), rtol=2e-7, atol=0)
    np.testing.assert_allclose(tinyops.embedding(new_w, idx), out_t.numpy(), rtol=2e-7, atol=0)
    assert np.array_equal(w, (EMB_W * 3).astype(np.float32)), "embedding_renorm wrote into its input"
    assert np.array_equal(new_w[3], w[3]), "a row not looked up was changed"


# ============================================================================ the softmax family

SM_CASES: list[Any] = [
    # name, x, axis, keepdims (logsumexp only)
    ("all-minus-inf-row", np.array([[-inf, -inf, -inf], [0.0, 1.0, 2.0]]), -1),
    ("plus-inf", np.array([[inf, 0.0, 1.0], [0.0, 1.0, 2.0]]), -1),
    ("two-plus-inf", np.array([[inf, inf, 1.0]]), -1),
    ("plus-and-minus-inf", np.array([[inf, -inf, 1.0]]), -1),
    ("nan", np.array([[nan, 0.0, 1.0], [0.0, 1.0, 2.0]]), -1),
    ("empty-reduction", np.zeros((2, 0)), -1),
    ("zero-size-batch", np.zeros((0, 3)), -1),
    ("zero-d", np.array(1.5), None),
    ("zero-d-axis-0", np.array(-2.0), 0),
    ("axis-tuple", np.arange(24.0).reshape(2, 3, 4) / 3, (0, 2)),
    ("axis-none", np.arange(6.0).reshape(2, 3) - 2, None),
]


def _dims(x: torch.Tensor, axis: Any) -> Any:
    if x.ndim == 0:
        return ()
    return tuple(range(x.ndim)) if axis is None else axis


def _torch_logsumexp(x: torch.Tensor, axis: Any = -1, keepdims: bool = False) -> torch.Tensor:
    return torch.logsumexp(x, dim=_dims(x, axis), keepdim=keepdims)


def _torch_softmax(x: torch.Tensor, axis: Any = -1) -> torch.Tensor:
    dims = _dims(x, axis)
    if isinstance(dims, int):
        return torch.softmax(x, dim=dims)
    return torch.exp(x - torch.logsumexp(x, dim=dims, keepdim=True))


def _torch_log_softmax(x: torch.Tensor, axis: Any = -1) -> torch.Tensor:
    dims = _dims(x, axis)
    if isinstance(dims, int):
        return torch.log_softmax(x, dim=dims)
    return x - torch.logsumexp(x, dim=dims, keepdim=True)


FAMILY = {
    "logsumexp": (tinyops.logsumexp_forward, tinyops.logsumexp_backward, _torch_logsumexp),
    "softmax": (tinyops.softmax_forward, tinyops.softmax_backward, _torch_softmax),
    "log_softmax": (tinyops.log_softmax_forward, tinyops.log_softmax_backward, _torch_log_softmax),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", list(FAMILY))
@pytest.mark.parametrize(("name", "x", "axis"), SM_CASES, ids=[c[0] for c in SM_CASES])
def test_softmax_family_edge_case_matches_torch(name: str, x: Array, axis: Any, op: str, dtype: type) -> None:
    fwd, bwd, theirs = FAMILY[op]
    kwargs: dict[str, Any] = {"axis": axis}
    _compare(fwd, bwd, theirs, x.astype(dtype), (), kwargs)
    if op == "logsumexp":
        _compare(fwd, bwd, theirs, x.astype(dtype), (), {"axis": axis, "keepdims": True})
