"""cross_entropy's z_loss, softcap and return_lse, against the same formula composed in float64 torch.

The oracle (:func:`torch_loss`) is written from the definitions, not from tinyops' code: torch's own
``F.cross_entropy`` (class weights, ignore_index, label smoothing, probability targets) of the capped
logits ``c * tanh(z / c)``, plus ``z_loss * logsumexp**2`` on every row not ignored, reduced with torch's
divisor of the mean; autograd gives the gradients. ``test_linear_cross_entropy.py`` uses it too.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import tinyops

Array = Any
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


def torch_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, lse)`` of (N, C) or (C,) logits in float64 with autograd: the composed definition."""
    z = logits if softcap is None else softcap * torch.tanh(logits / softcap)
    ce = F.cross_entropy(z, target, weight=weight, ignore_index=ignore_index, reduction="none",
                         label_smoothing=label_smoothing)
    lse = torch.logsumexp(z, dim=-1)
    if target.dtype.is_floating_point:
        kept = torch.ones_like(lse, dtype=torch.bool)
        denom = torch.tensor(float(lse.numel()), dtype=lse.dtype)
    else:
        kept = target != ignore_index
        safe = torch.where(kept, target, 0)
        w = torch.ones_like(lse) if weight is None else weight[safe]
        denom = torch.where(kept, w, 0).sum()
    per_row = ce + torch.where(kept, z_loss * lse * lse, 0)
    if reduction == "none":
        return per_row, lse
    if reduction == "sum":
        return per_row.sum(), lse
    return per_row.sum() / denom, lse


@st.composite
def option_cases(draw: st.DrawFn, batched_only: bool = False) -> dict[str, Any]:
    """Logits (N, C) or (C,), targets (indices with ignored rows, or probabilities) and every option."""
    dtype = draw(st.sampled_from([F32, F64]))
    unbatched = not batched_only and draw(st.integers(0, 4)) == 0
    N, C = draw(st.integers(1, 8)), draw(st.integers(1, 9))
    bound = draw(st.sampled_from([1.0, 4.0, 30.0]))
    el = st.floats(-bound, bound, width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False)
    shape = (C,) if unbatched else (N, C)
    logits = draw(hnp.arrays(dtype, shape, elements=el))
    kw: dict[str, Any] = {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    if draw(st.booleans()):  # probability targets
        target = draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=dtype.itemsize * 8)))
    else:
        target = draw(hnp.arrays(np.int64, shape[:-1], elements=st.integers(0, C - 1)))
        if draw(st.booleans()):
            kw["ignore_index"] = draw(st.sampled_from([-100, 0, C - 1]))
            mask = draw(hnp.arrays(np.bool_, target.shape))
            target = np.where(mask, kw["ignore_index"], target)
            if kw["reduction"] == "mean" and np.all(target == kw["ignore_index"]):
                kw["reduction"] = "sum"  # a mean of no rows is nan (pinned elsewhere)
    if draw(st.booleans()):
        kw["weight"] = draw(hnp.arrays(dtype, (C,), elements=st.floats(0.5, 2, width=dtype.itemsize * 8)))
    if draw(st.booleans()):
        kw["label_smoothing"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        kw["z_loss"] = draw(st.sampled_from([1e-4, 0.05, 1.0]))
    if draw(st.booleans()):
        kw["softcap"] = draw(st.floats(0.5, 30))
    return {"logits": logits, "target": target, "kw": kw, "seed": draw(st.integers(0, 2**32 - 1))}


def torch_of(a: Array, *, grad: bool = False) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a))
    return t.requires_grad_(grad)


def tol_of(dtype: np.dtype[Any], scale: float) -> float:
    return {F32: 3e-5, F64: 1e-12}[dtype] * (1 + scale)


@pytest.mark.parametrize("backend", ["compiled", "reference"])
@given(case=option_cases())
def test_cross_entropy_options_against_torch(backend: str, case: dict[str, Any]) -> None:
    logits, target, kw = case["logits"], case["target"], case["kw"]
    dtype = logits.dtype
    (loss, lse), cache = tinyops.cross_entropy_forward(logits, target, return_lse=True, backend=backend, **kw)
    dloss = np.asarray(np.random.default_rng(case["seed"]).standard_normal(np.shape(loss)), dtype=dtype)
    dlogits = tinyops.cross_entropy_backward(dloss, cache)
    zt = torch_of(logits, grad=True)
    tkw = {k: (torch_of(v) if k == "weight" else v) for k, v in kw.items()}
    ref, ref_lse = torch_loss(zt, torch_of(target), **tkw)
    (g,) = torch.autograd.grad(ref, zt, torch_of(dloss))
    assert loss.dtype == lse.dtype == dlogits.dtype == dtype
    assert loss.shape == tuple(ref.shape) and lse.shape == tuple(ref_lse.shape) and dlogits.shape == logits.shape
    big = float(np.max(np.abs(logits), initial=0.0))
    np.testing.assert_allclose(loss, ref.detach().numpy(), rtol=0, atol=tol_of(dtype, big * (1 + big)))
    np.testing.assert_allclose(lse, ref_lse.detach().numpy(), rtol=0, atol=tol_of(dtype, big))
    gscale = float(np.max(np.abs(dloss), initial=0.0)) * (1 + big) * (1 + kw.get("z_loss", 0.0) * big)
    np.testing.assert_allclose(dlogits, g.numpy(), rtol=0, atol=tol_of(dtype, gscale))
    # return_lse changes nothing else
    np.testing.assert_array_equal(tinyops.cross_entropy(logits, target, backend=backend, **kw), loss)


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_z_loss_and_softcap_gradcheck(backend: str) -> None:
    """Central differences on the options' own terms (float64), class indices and probabilities."""
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 2, (5, 6))
    for target in (np.array([0, 5, -100, 2, 2]), rng.uniform(0, 1, (5, 6))):
        kw: dict[str, Any] = {"z_loss": 0.3, "softcap": 2.5, "backend": backend, "reduction": "sum"}
        if target.dtype.kind == "i":
            kw["weight"] = rng.uniform(0.5, 2, 6)
        forward = partial(tinyops.cross_entropy_forward, target=target)  # the logits' gradient only
        res = tinyops.gradcheck(forward, (logits,), tinyops.cross_entropy_backward, kwargs=kw, seed=1)
        assert res.passed, str(res)


def test_z_loss_is_added_per_counted_row() -> None:
    """One row by hand: loss = lse - z_t + z_loss * lse**2 with lse from math.log(sum(exp)); an ignored
    row adds neither; the mean divides by the rows counted."""
    z = np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]])
    lse0 = float(np.log(np.exp(z[0]).sum()))
    loss = tinyops.cross_entropy(z, np.array([1, -100]), z_loss=0.1)
    np.testing.assert_allclose(loss, lse0 - 2.0 + 0.1 * lse0**2, rtol=1e-14)


def test_softcap_bounds_the_logits() -> None:
    """With softcap c the loss only sees c * tanh(z / c): huge logits behave as logits of +-c."""
    z = np.array([[1e6, -1e6, 0.0]])
    capped = np.array([[3.0, -3.0, 0.0]])
    np.testing.assert_allclose(tinyops.cross_entropy(z, np.array([2]), softcap=3.0),
                               tinyops.cross_entropy(capped, np.array([2])), rtol=1e-15)


BAD = [
    (dict(z_loss=-1.0), ValueError, r"^z_loss must be a finite float >= 0, got -1.0"),
    (dict(z_loss=float("nan")), ValueError, r"^z_loss must be a finite float >= 0, got nan"),
    (dict(z_loss="0.1"), TypeError, r"^z_loss must be a float >= 0, got str"),
    (dict(softcap=0.0), ValueError, r"^softcap must be None or a finite float > 0, got 0.0"),
    (dict(softcap=float("inf")), ValueError, r"^softcap must be None or a finite float > 0, got inf"),
    (dict(softcap=True), TypeError, r"^softcap must be None or a float > 0, got bool"),
    (dict(return_lse=1), TypeError, r"^return_lse must be a bool, got int 1"),
]


@pytest.mark.parametrize(("kw", "exc", "pattern"), BAD)
def test_bad_options(kw: dict[str, Any], exc: type[Exception], pattern: str) -> None:
    z, t = np.zeros((2, 3)), np.array([0, 1])
    for call in (partial(tinyops.cross_entropy, z, t), partial(tinyops.linear_cross_entropy, z, np.zeros((3, 4)), t)):
        with pytest.raises(exc, match=pattern):
            call(**kw)
