"""Every op against torch (float64 forward + autograd), float32 and float64, plus float64 gradcheck.

One table, ``SPECS``: adding an op adds one entry. For each entry, two hypothesis tests are generated:
``test_oracle_<op>`` (values, gradients, dtypes, no writes into inputs, dout or cache, no aliasing;
pinned ``@example``s for ties, -inf entries and the exp overflow thresholds) and
``test_gradcheck_<op>`` (float64 central differences on smooth, small inputs).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tinyops
from tinyops._checks import normalize_axis

from .oracle import Array, Case, OpSpec, Reference, arrays_in, assert_close, budget, check_op, torch_reference, upstream

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
TH32 = float(np.log(np.finfo(np.float32).max))  # 88.72: exp overflows in float32 just above
TH64 = float(np.log(np.finfo(np.float64).max))  # 709.78: likewise in float64

# ----------------------------------------------------------------------------- strategies


def _floats(dtype: np.dtype[Any], bound: float) -> st.SearchStrategy[float]:
    return st.floats(-bound, bound, width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False)


@st.composite
def float_arrays(
    draw: st.DrawFn, dtype: np.dtype[Any], shape: tuple[int, ...], bounds: tuple[float, ...], neg_inf: bool
) -> Array:
    """Values within a drawn bound (so small and wide scales both occur); optionally some -inf entries."""
    bound = draw(st.sampled_from(bounds))
    arr: Array = draw(hnp.arrays(dtype, shape, elements=_floats(dtype, bound)))
    if neg_inf and arr.size and draw(st.integers(0, 3)) == 0:  # a quarter of the cases carry a -inf mask
        mask = draw(hnp.arrays(np.bool_, shape))
        arr = np.where(mask, -np.inf, arr).astype(dtype)
    return arr


dtypes = st.sampled_from([F32, F64])
seeds = st.integers(0, 2**32 - 1)


@st.composite
def embedding_cases(draw: st.DrawFn, smooth: bool = False) -> Case:
    dtype = F64 if smooth else draw(dtypes)
    V, D = draw(st.integers(1, 12)), draw(st.integers(1, 6))
    weight = draw(float_arrays(dtype, (V, D), (1.0, 10.0), neg_inf=False))
    idx_shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    idx_dtype = draw(st.sampled_from([np.int64, np.int32, np.uint8]))
    idx = draw(hnp.arrays(idx_dtype, idx_shape, elements=st.integers(0, V - 1)))
    kwargs: dict[str, Any] = {}
    if not smooth:  # both options change the gradient on purpose (it is no longer the forward's)
        if draw(st.booleans()):
            kwargs["padding_idx"] = draw(st.integers(-V, V - 1))
        if draw(st.booleans()):
            kwargs["scale_grad_by_freq"] = True
    return Case((weight, idx), kwargs, draw(seeds))


@st.composite
def linear_cases(draw: st.DrawFn, smooth: bool = False) -> Case:
    dtype = F64 if smooth else draw(dtypes)
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4))
    I, O = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    x = draw(float_arrays(dtype, (*lead, I), (1.0, 10.0), neg_inf=False))
    weight = draw(float_arrays(dtype, (I, O), (1.0, 10.0), neg_inf=False))
    args: tuple[Any, ...] = (x, weight)
    if draw(st.booleans()):
        args = (*args, draw(float_arrays(dtype, (O,), (1.0, 10.0), neg_inf=False)))
    return Case(args, {}, draw(seeds))


@st.composite
def elementwise_cases(draw: st.DrawFn, smooth: bool = False) -> Case:
    dtype = F64 if smooth else draw(dtypes)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    x = draw(float_arrays(dtype, shape, (3.0,) if smooth else (1.0, 5.0, 20.0), neg_inf=False))
    return Case((x,), {}, draw(seeds))


@st.composite
def axis_cases(draw: st.DrawFn, smooth: bool = False, keepdims: bool = False, naive: bool = False) -> Case:
    """Softmax-family inputs: 1-3 dims, a drawn axis (int, tuple or None); wide scales and -inf masks."""
    dtype = F64 if smooth else draw(dtypes)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5 if smooth else 8))
    ndim = len(shape)
    axis = draw(
        st.one_of(
            st.integers(-ndim, ndim - 1),
            st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple),
            st.none(),
        )
    )
    bounds = (3.0,) if smooth else (20.0,) if naive else (1.0, 30.0, 1e3, 1e4)
    x = draw(float_arrays(dtype, shape, bounds, neg_inf=not (smooth or naive)))
    kwargs: dict[str, Any] = {"axis": axis}
    if keepdims:
        kwargs["keepdims"] = draw(st.booleans())
    return Case((x,), kwargs, draw(seeds))


@st.composite
def loss_cases(draw: st.DrawFn, smooth: bool = False, naive: bool = False) -> Case:
    dtype = F64 if smooth else draw(dtypes)
    N, C = draw(st.integers(1, 8)), draw(st.integers(1, 12))
    bounds = (3.0,) if smooth else (20.0,) if naive else (1.0, 30.0, 1e3, 1e4)
    logits = draw(float_arrays(dtype, (N, C), bounds, neg_inf=not (smooth or naive)))
    target = draw(hnp.arrays(draw(st.sampled_from([np.int64, np.int32])), (N,), elements=st.integers(0, C - 1)))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    return Case((logits, target), {"reduction": reduction}, draw(seeds))


@st.composite
def ce_cases(draw: st.DrawFn, smooth: bool = False) -> Case:
    """The fused loss with every torch option: (C,), (N, C) or (N, C, d1[, d2]) logits; class-index targets
    (some rows ignored) or probability targets (passed as the ``target`` keyword, so that the harness does
    not differentiate them); class weights; label smoothing; the three reductions."""
    dtype = F64 if smooth else draw(dtypes)
    C = draw(st.integers(1, 8))
    layout = draw(st.sampled_from(["unbatched", "batched", "kdim"]))
    if layout == "unbatched":
        shape: tuple[int, ...] = (C,)
    elif layout == "batched":
        shape = (draw(st.integers(1 if smooth else 0, 6)), C)
    else:
        shape = (draw(st.integers(1, 3)), C, *draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    loss_shape = () if layout == "unbatched" else shape[:1] + shape[2:]
    bounds = (3.0,) if smooth else (1.0, 30.0, 1e3)
    logits = draw(float_arrays(dtype, shape, bounds, neg_inf=not smooth))
    kwargs: dict[str, Any] = {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    if draw(st.booleans()):
        kwargs["weight"] = draw(hnp.arrays(dtype, (C,), elements=st.floats(0.125, 4.0, width=dtype.itemsize * 8)))
    if draw(st.booleans()):
        eps = draw(st.sampled_from([0.1, 0.5, 1.0]) | st.floats(0.0, 1.0))
        # eps / C below the dtype's smallest normal is 0 in that dtype (in torch's too: 0 * inf = nan where a
        # logit is -inf), but not in the float64 reference: test_parity pins that corner against torch float32
        kwargs["label_smoothing"] = eps if eps == 0 or eps / C >= np.finfo(dtype).smallest_normal else 0.0
    if draw(st.booleans()):  # probability targets: positive entries normalized over the class axis
        raw = draw(hnp.arrays(np.float64, shape, elements=st.floats(0.01, 1.0)))
        kwargs["target"] = (raw / raw.sum(axis=0 if layout == "unbatched" else 1, keepdims=True)).astype(dtype)
        return Case((logits,), kwargs, draw(seeds))
    target = draw(hnp.arrays(np.int64, loss_shape, elements=st.integers(0, C - 1)))
    if draw(st.booleans()):
        ignore = draw(st.sampled_from([-100, 0, C - 1]))
        if ignore != -100:
            kwargs["ignore_index"] = ignore
        mask = draw(hnp.arrays(np.bool_, loss_shape))
        ignored = np.where(mask, ignore, target)
        if not (smooth and np.all(ignored == ignore)):  # all rows ignored: a nan mean, nothing to gradcheck
            target = ignored
        elif ignore != -100:
            del kwargs["ignore_index"]
    return Case((logits, target), kwargs, draw(seeds))


# ----------------------------------------------------------------------------- torch references


def _dims(x: torch.Tensor, axis: Any) -> tuple[int, ...]:
    return normalize_axis(axis, x.ndim)


def torch_logsumexp(x: torch.Tensor, axis: Any = -1, keepdims: bool = False) -> torch.Tensor:
    return torch.logsumexp(x, dim=_dims(x, axis), keepdim=keepdims)


def torch_softmax(x: torch.Tensor, axis: Any = -1) -> torch.Tensor:
    dims = _dims(x, axis)
    if len(dims) == 1:
        return torch.softmax(x, dim=dims[0])
    return torch.exp(x - torch.logsumexp(x, dim=dims, keepdim=True))  # torch.softmax takes one dim


def torch_log_softmax(x: torch.Tensor, axis: Any = -1) -> torch.Tensor:
    dims = _dims(x, axis)
    if len(dims) == 1:
        return torch.log_softmax(x, dim=dims[0])
    return x - torch.logsumexp(x, dim=dims, keepdim=True)


def torch_cross_entropy(logits: torch.Tensor, target: Any = None, **kwargs: Any) -> torch.Tensor:
    """F.cross_entropy with the numpy options (probability target, weight) as float64 tensors."""
    opts = {k: torch.from_numpy(v.astype(np.float64)) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    if isinstance(target, np.ndarray):
        target = torch.from_numpy(target.astype(np.float64))
    return F.cross_entropy(logits, target, **opts)


def torch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    out = x @ weight
    return out if bias is None else out + bias


# ----------------------------------------------------------------------------- error scales


def linear_fwd_scale(r: Reference) -> Array:
    """A sum of K products is off by at most ``K * eps/2 * sum |x_i w_i|`` (the classic dot-product
    bound): the op on absolute values, times the length of the sum (+1 for the bias)."""
    x, w, *b = r.args64
    K = w.shape[0] + 1
    return K * (np.abs(x) @ np.abs(w) + (np.abs(b[0]) if b else 0.0))


def linear_bwd_scale(r: Reference) -> tuple[Array, ...]:
    """The same bound for ``dout @ W.T`` (sums of O terms) and ``x.T @ dout``, ``dout.sum(0)`` (N terms)."""
    x, w, *b = r.args64
    g = np.abs(r.dout)
    g2, x2 = g.reshape(-1, w.shape[1]), np.abs(x).reshape(-1, w.shape[0])
    O, N = w.shape[1] + 1, g2.shape[0] + 1
    return (O * (g @ np.abs(w).T), N * (x2.T @ g2), *([N * g2.sum(axis=0)] if b else []))


def embedding_bwd_scale(r: Reference) -> tuple[Array, ...]:
    """A row's gradient is a sum of the upstream rows that picked it: the scatter of |dout|, times the
    number of terms in that sum (the dot-product bound again)."""
    weight, idx = r.args64
    s = np.zeros_like(weight)
    np.add.at(s, idx.reshape(-1), np.abs(r.dout).reshape(-1, weight.shape[1]))
    count = np.bincount(idx.reshape(-1), minlength=weight.shape[0])[:, None]
    return ((count + 1) * s,)


def tanh_fwd_scale(r: Reference) -> Array:
    """tanh is well conditioned (``|x tanh'(x) / tanh(x)| <= 1``): a few roundings of the result, ``|out|``."""
    return np.abs(r.out)


def tanh_bwd_scale(r: Reference) -> tuple[Array, ...]:
    """``(1 - out**2) * dout`` from the rounded ``out``: ``1 - out**2`` is off by about ``eps * (1 + out**2)``
    absolute (it cancels when |out| is near 1), so elementwise ``|dout| * (1 + out**2)``."""
    return (np.abs(r.dout) * (1 + r.out**2),)


def slice_size(r: Reference) -> int:
    """How many terms each sum over the reduced axes adds up (n)."""
    x = r.args64[0]
    axes = normalize_axis(r.kwargs.get("axis", -1), x.ndim)
    return int(np.prod([x.shape[a] for a in axes]))


def finite_abs(a: Any) -> Array:
    """``|a|`` where finite, 0 elsewhere (a tolerance must stay finite; non-finite results are compared exactly)."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a), np.abs(a), 0.0)


def lse_of(x: Array, axes: tuple[int, ...]) -> Array:
    """``logsumexp`` over ``axes`` with kept dims, float64, written plainly (0 on rows without a finite max)."""
    with np.errstate(all="ignore"):
        m = np.max(x, axis=axes, keepdims=True) if x.size else np.zeros([1 if i in axes else n for i, n in
                                                                            enumerate(x.shape)])
        m = np.where(np.isfinite(m), m, 0.0)
        lse = m + np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True))
    return finite_abs(lse)


def axis_cond(r: Reference) -> Array:
    """float64's error in the exponent ``x - lse`` of each element: ``1 + |x| + |lse| + n`` (torch forms
    ``x - logsumexp(x)`` in float64; the sum inside the log adds n roundings)."""
    x = r.args64[0]
    axes = normalize_axis(r.kwargs.get("axis", -1), x.ndim)
    return 1 + finite_abs(x) + lse_of(x, axes) + slice_size(r)


def out_scale(r: Reference) -> Array:
    """A float32 result computed in float64 and rounded once (or a float64 result within a few ulp): ``|out|``."""
    return finite_abs(r.out)


def lse_fwd_cond(r: Reference) -> Array:
    """``m + log(sum exp(x - m))`` in float64: off by ``eps64 * (|lse| + n)``."""
    return 1 + finite_abs(r.out) + slice_size(r)


def lse_bwd(r: Reference) -> tuple[Array, ...]:
    """``dx = dout * softmax``: a product of two roundings, ``|dx|`` (relative); the softmax's float64
    error is relative to it, times the exponent's magnitude."""
    return (finite_abs(r.grads[0]),)


def lse_bwd_cond(r: Reference) -> tuple[Array, ...]:
    return (finite_abs(r.grads[0]) * axis_cond(r),)


def softmax_fwd_cond(r: Reference) -> Array:
    """A probability's float64 error is relative: ``p * (1 + |x| + |lse| + n)``."""
    return finite_abs(r.out) * axis_cond(r)


def softmax_bwd_terms(r: Reference) -> Array:
    """``dx = y * (dy - sum(dy * y))``: the difference cancels, so its error is relative to
    ``y * (|dy| + sum |dy| y)``, not to ``|dx|``."""
    x = r.args64[0]
    axes = normalize_axis(r.kwargs.get("axis", -1), x.ndim)
    y, dy = finite_abs(r.out), finite_abs(r.dout)
    return y * (dy + np.sum(dy * y, axis=axes, keepdims=True))


def softmax_bwd(r: Reference) -> tuple[Array, ...]:
    return (softmax_bwd_terms(r),)


def softmax_bwd_cond(r: Reference) -> tuple[Array, ...]:
    return (softmax_bwd_terms(r) * axis_cond(r),)


def naive_fwd_scale(r: Reference) -> Array:
    """The naive softmax works in the input's dtype: ``exp`` and the n-term sum, relative to ``p``."""
    return finite_abs(r.out) * (1 + slice_size(r))


def naive_bwd(r: Reference) -> tuple[Array, ...]:
    return (softmax_bwd_terms(r) * (1 + slice_size(r)),)


def log_softmax_fwd_cond(r: Reference) -> Array:
    """``x - lse`` in float64 rounds at the magnitude of x and lse."""
    return axis_cond(r)


def log_softmax_bwd_terms(r: Reference) -> Array:
    """``dx = dy - softmax * sum(dy)``: cancels, error relative to ``|dy| + p * sum|dy|``."""
    x = r.args64[0]
    axes = normalize_axis(r.kwargs.get("axis", -1), x.ndim)
    with np.errstate(all="ignore"):
        p = finite_abs(np.exp(r.out))
    dy = finite_abs(r.dout)
    return dy + p * np.sum(dy, axis=axes, keepdims=True)


def log_softmax_bwd(r: Reference) -> tuple[Array, ...]:
    return (log_softmax_bwd_terms(r),)


def log_softmax_bwd_cond(r: Reference) -> tuple[Array, ...]:
    return (log_softmax_bwd_terms(r) * axis_cond(r),)


def loss_fwd_scale(r: Reference) -> Array:
    """The naive loss works in the input's dtype: ``lse - logits[target]`` cancels, so its error grows with
    the logits' magnitude, not the loss's; plus the C-term sum inside lse."""
    logits = r.args64[0]
    return 1.0 + float(np.max(finite_abs(logits), initial=0.0)) + finite_abs(r.out) + logits.shape[1]


def loss_bwd_scale(r: Reference) -> tuple[Array, ...]:
    """``dlogits = (probs - onehot) * dloss / N``: error relative to the per-row factor ``|dloss| / N``,
    with the softmax's C-term sum."""
    N, C = r.args64[0].shape
    red = r.kwargs.get("reduction", "mean")
    per_row = np.abs(r.dout)[:, None] if red == "none" else np.abs(r.dout) / (N if red == "mean" else 1)
    return (np.broadcast_to(per_row, r.args64[0].shape) * (1 + np.abs(r.grads[0]) + C),)


def _ce_setting(r: Reference) -> tuple[Array, int, float, float, float]:
    """logits, C, the largest class weight W, the largest finite |logit|, and the mean's divisor."""
    logits = r.args64[0]
    C = logits.shape[0] if logits.ndim == 1 else logits.shape[1]
    weight = r.kwargs.get("weight")
    W = 1.0 if weight is None else float(np.max(weight))
    xmax = float(np.max(finite_abs(logits), initial=0.0))
    M = logits.size // max(C, 1)
    if "target" in r.kwargs or len(r.args64) < 2:  # probability targets: the mean divides by M
        denom = float(M)
    else:
        t = np.asarray(r.args64[1]).reshape(-1)
        keep = t != r.kwargs.get("ignore_index", -100)
        denom = float(np.sum(keep if weight is None else np.asarray(weight)[t[keep]]))
    return logits, C, W, xmax, denom


def ce_row_kernel_accurate(r: Reference) -> bool:
    """Index targets without smoothing at precision 'accurate': the row kernel, float64 inside, one rounding."""
    return (
        "target" not in r.kwargs
        and len(r.args64) == 2
        and not r.kwargs.get("label_smoothing", 0.0)
        and r.options.get("precision", "accurate") == "accurate"
    )


def ce_fwd_scale(r: Reference) -> Any:
    """Accurate row kernel: ``|loss|`` (float64 inside, rounded once; the reduction sums in float64, a
    weight multiplies once). Otherwise (precision 'fast', label smoothing, probability targets: the
    input's dtype inside) per row ``lse - x_t`` or ``-sum_c a_c logp_c`` rounds at the logits' magnitude
    (``|x| + |lse| <= 2 max|x| + log C``) times the class weight, the C-term sum too; 'sum' adds M rows."""
    logits, C, W, xmax, _ = _ce_setting(r)
    if ce_row_kernel_accurate(r):
        return finite_abs(r.out)
    base = W * (1 + 2 * xmax + C) + finite_abs(r.out)
    return base * max(logits.size // max(C, 1), 1) if r.kwargs.get("reduction", "mean") == "sum" else base


def ce_fwd_cond(r: Reference) -> Any:
    """float64's error per row: ``W * (|m| + |x_t| + C)`` (torch's ``lse - x_t``); 'sum' adds M rows."""
    logits, C, W, xmax, _ = _ce_setting(r)
    base = W * (1 + 2 * xmax + C)
    return base * max(logits.size // max(C, 1), 1) if r.kwargs.get("reduction", "mean") == "sum" else base


def _ce_g(r: Reference) -> tuple[Array, Array]:
    """The per-row gradient factor ``|g| * W`` broadcast to the logits, and the logits."""
    logits, _, W, _, denom = _ce_setting(r)
    red = r.kwargs.get("reduction", "mean")
    g = np.abs(r.dout) / (max(denom, 1e-300) if red == "mean" else 1.0)  # () or the loss shape
    g = np.expand_dims(g, 0 if logits.ndim == 1 else 1) if red == "none" else g
    return np.broadcast_to(g * W, logits.shape), logits


def ce_bwd_scale(r: Reference) -> tuple[Array, ...]:
    """``dlogits = g * (p * sum(a) - a)`` with ``g = dloss / denom`` (mean), ``dloss`` (sum) or ``dloss_n``
    (none). Accurate row kernel: ``|dx|`` (p and ``p_t - 1 = expm1(-loss)`` in float64, times g: a few
    roundings). Otherwise relative to ``|g| * W`` with the softmax's C-term sum; at precision 'fast' the
    target entry ``expm1(-loss)`` also carries the loss's error, ``2 max|x|``."""
    gW, _ = _ce_g(r)
    if ce_row_kernel_accurate(r):
        return (finite_abs(r.grads[0]),)
    _, C, _, xmax, _ = _ce_setting(r)
    # 'fast' forms the target's p_t - 1 = expm1(-loss) from a loss that rounded at the logits' magnitude
    fast = 2 * xmax if r.options.get("precision") == "fast" else 0.0
    return (gW * (2 + finite_abs(r.grads[0]) + C + fast),)


def ce_bwd_cond(r: Reference) -> tuple[Array, ...]:
    """torch's float64 ``p_j = exp(x_j - lse)`` is off by ``p * (|x| + |lse|)`` relative, ``p_t - 1`` by as
    much absolute: ``|g| W (1 + C + |x| + |lse|)``."""
    gW, logits = _ce_g(r)
    axis = 0 if logits.ndim == 1 else 1
    return (gW * (1 + logits.shape[axis] + finite_abs(logits) + lse_of(logits, (axis,))),)


# ----------------------------------------------------------------------------- pinned examples


def _f(values: Any, dtype: np.dtype[Any]) -> Array:
    return np.array(values, dtype=dtype)


TIES = [[2.5, 2.5, 2.5, 2.5], [-1.0, -1.0, 7.0, 7.0]]
NEG_INF = [[0.0, -np.inf, 1.0, -np.inf], [-np.inf, -np.inf, -np.inf, 3.0]]
ALL_NEG_INF = [[-np.inf, -np.inf, -np.inf, -np.inf], [1.0, 2.0, 3.0, 4.0]]
SEED_CELLS = [[-5.0, -3.0, 0.0, 5.0], [-5.0, -3.0, 0.0, 100.0], [-15.0, -13.0, -10.0, -5.0]]


def threshold_rows(dtype: np.dtype[Any]) -> list[list[float]]:
    t = float(np.log(np.finfo(dtype).max).astype(dtype))  # the largest x with a finite exp, give or take an ulp
    return [[t, t - 1, 0.0, -t], [t + 1, t, t, 1.0]]


def pinned_axis(keepdims: bool = False) -> tuple[Case, ...]:
    kw: dict[str, Any] = {"axis": -1, **({"keepdims": False} if keepdims else {})}
    rows = [TIES, NEG_INF, ALL_NEG_INF, SEED_CELLS]
    cases = [Case((_f(r, d),), kw, 1) for r in rows for d in (F32, F64)]
    cases += [Case((_f(threshold_rows(d), d),), kw, 2) for d in (F32, F64)]
    return tuple(cases)


def pinned_loss() -> tuple[Case, ...]:
    cases = []
    for d in (F32, F64):
        for rows, target in [
            (SEED_CELLS, [3, 3, 0]),
            (TIES, [0, 3]),
            (NEG_INF, [0, 3]),  # -inf elsewhere: finite loss, zero gradient at the -inf entries
            (NEG_INF, [1, 3]),  # -inf at the target: loss inf
            (threshold_rows(d), [0, 3]),
        ]:
            for red in ("mean", "none"):
                cases.append(Case((_f(rows, d), np.array(target)), {"reduction": red}, 3))
        # found by the thorough profile: torch's target term is 0 * inf = nan when label_smoothing = 1
        cases.append(Case((_f([-np.inf, 0.0], d), np.array(0)), {"reduction": "mean", "label_smoothing": 1.0}, 3))
    return tuple(cases)


def pinned_naive() -> tuple[Case, ...]:
    # the seed's first cell (all finite) and ties; the overflowing cells are in test_naive_overflow
    return tuple(
        Case((_f(rows, d), np.array(t)), {"reduction": "mean"}, 4)
        for d in (F32, F64)
        for rows, t in [([[-5.0, -3.0, 0.0, 5.0]], [3]), (TIES, [0, 3])]
    )


# ----------------------------------------------------------------------------- the table

# The constants k: in units of the op's tolerance (oracle.py); each is the largest used fraction measured
# over the ci and thorough budgets (`python -m tests.headroom`), rounded up with a margin of 2 to 4:
# tests/ERROR_ANALYSIS.md has the analysis and the measurements.
K1 = {"float32": 1, "float64": 1}
K2 = {"float32": 2, "float64": 2}
K4 = {"float32": 4, "float64": 4}

SPECS: tuple[OpSpec, ...] = (
    OpSpec("embedding", tinyops.embedding_forward, tinyops.embedding_backward,
           lambda w, idx, **kw: F.embedding(idx, w, **kw), embedding_cases(), embedding_cases(smooth=True),
           fwd_k={}, bwd_k=K1, bwd_scale=embedding_bwd_scale, fwd_exact=True),
    OpSpec("linear", tinyops.linear_forward, tinyops.linear_backward, torch_linear, linear_cases(),
           linear_cases(smooth=True), fwd_k=K1, bwd_k=K1, fwd_scale=linear_fwd_scale, bwd_scale=linear_bwd_scale),
    OpSpec("tanh", tinyops.tanh_forward, tinyops.tanh_backward, torch.tanh, elementwise_cases(),
           elementwise_cases(smooth=True), fwd_k=K4, bwd_k=K4, fwd_scale=tanh_fwd_scale, bwd_scale=tanh_bwd_scale),
    OpSpec("logsumexp", tinyops.logsumexp_forward, tinyops.logsumexp_backward, torch_logsumexp,
           axis_cases(keepdims=True), axis_cases(smooth=True, keepdims=True), pinned=pinned_axis(keepdims=True),
           fwd_k=K2, bwd_k=K2, fwd_scale=out_scale, fwd_cond=lse_fwd_cond, bwd_scale=lse_bwd, bwd_cond=lse_bwd_cond),
    OpSpec("softmax", tinyops.softmax_forward, tinyops.softmax_backward, torch_softmax,
           axis_cases(), axis_cases(smooth=True), pinned=pinned_axis(),
           fwd_k=K2, bwd_k=K4, fwd_scale=out_scale, fwd_cond=softmax_fwd_cond, bwd_scale=softmax_bwd,
           bwd_cond=softmax_bwd_cond),
    OpSpec("softmax_naive", tinyops.softmax_naive_forward, tinyops.softmax_naive_backward, torch_softmax,
           axis_cases(naive=True), axis_cases(smooth=True), fwd_k=K2, bwd_k=K2, fwd_scale=naive_fwd_scale,
           fwd_cond=softmax_fwd_cond, bwd_scale=naive_bwd, bwd_cond=softmax_bwd_cond),
    OpSpec("log_softmax", tinyops.log_softmax_forward, tinyops.log_softmax_backward, torch_log_softmax,
           axis_cases(), axis_cases(smooth=True), pinned=pinned_axis(),
           fwd_k=K2, bwd_k=K4, fwd_scale=out_scale, fwd_cond=log_softmax_fwd_cond, bwd_scale=log_softmax_bwd,
           bwd_cond=log_softmax_bwd_cond),
    OpSpec("cross_entropy", tinyops.cross_entropy_forward, tinyops.cross_entropy_backward, torch_cross_entropy,
           ce_cases(), ce_cases(smooth=True), fwd_k=K2, bwd_k=K4, fwd_scale=ce_fwd_scale, fwd_cond=ce_fwd_cond,
           bwd_scale=ce_bwd_scale, bwd_cond=ce_bwd_cond, pinned=pinned_loss()),
    OpSpec("cross_entropy_naive", tinyops.cross_entropy_naive_forward, tinyops.cross_entropy_naive_backward,
           F.cross_entropy, loss_cases(naive=True), loss_cases(smooth=True), fwd_k=K2, bwd_k=K2,
           fwd_scale=loss_fwd_scale, bwd_scale=loss_bwd_scale, pinned=pinned_naive()),
)


def layers(forward: Callable[..., Any]) -> list[dict[str, Any]]:
    """Every backend an op runs on, or just the op as it is when it has one layer."""
    params = inspect.signature(forward).parameters
    return [{"backend": "reference"}, {"backend": "compiled"}] if "backend" in params else [{}]


def options(forward: Callable[..., Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The ours-only options an op takes, drawn with each case: ``threads`` (None, 1, 2, 3) and
    ``precision`` ('accurate', 'fast'). torch never sees them; the tolerance reads ``precision``."""
    params = inspect.signature(forward).parameters
    drawn: dict[str, st.SearchStrategy[Any]] = {}
    if "threads" in params:
        drawn["threads"] = st.sampled_from([None, 1, 2, 3])
    if "precision" in params:
        drawn["precision"] = st.sampled_from(["accurate", "fast"])
    return st.fixed_dictionaries(drawn)


def _layer_id(layer: dict[str, Any]) -> str:
    return "-".join(str(v) for v in layer.values()) or "numpy"


def _oracle_test(spec: OpSpec) -> Callable[..., None]:
    @pytest.mark.parametrize("layer", layers(spec.forward), ids=_layer_id)
    @given(case=spec.cases, opts=options(spec.forward))
    def test(layer: dict[str, Any], case: Case, opts: dict[str, Any]) -> None:
        with np.errstate(all="ignore"):  # the naive ops keep NumPy's warnings on purpose
            check_op(spec, case, {**layer, **opts})

    for pinned in spec.pinned:
        test = example(case=pinned, opts={})(test)
    test.__name__ = f"test_oracle_{spec.name}"
    return test


def _gradcheck_test(spec: OpSpec) -> Callable[..., None]:
    @pytest.mark.parametrize("layer", layers(spec.forward), ids=_layer_id)
    @given(case=spec.grad_cases)
    def test(layer: dict[str, Any], case: Case) -> None:
        kwargs = {**case.kwargs, **layer}
        result = tinyops.gradcheck(spec.forward, case.args, spec.backward, kwargs=kwargs, seed=case.dout_seed)
        assert result.passed, f"{spec.name} gradcheck failed:\n{result}"

    test.__name__ = f"test_gradcheck_{spec.name}"
    return test


for _spec in SPECS:
    globals()[f"test_oracle_{_spec.name}"] = _oracle_test(_spec)
    globals()[f"test_gradcheck_{_spec.name}"] = _gradcheck_test(_spec)


# ops whose options need a torch comparison of their own shape live in their own module (same harness)
OWN_MODULES = {"batchnorm1d": "test_batchnorm.py", "linear_cross_entropy": "test_linear_cross_entropy.py"}


def test_every_public_op_is_in_the_table() -> None:
    forwards = {name[: -len("_forward")] for name in tinyops.__all__ if name.endswith("_forward")}
    elsewhere = {op for op in forwards if op in OWN_MODULES}
    assert forwards - elsewhere == {s.name for s in SPECS}
    here = Path(__file__).parent
    for op in elsewhere:
        source = (here / OWN_MODULES[op]).read_text()
        assert f"{op}_forward" in source and "torch" in source, f"{OWN_MODULES[op]} does not test {op} against torch"


# ----------------------------------------------------------------------------- the ours-only options, pinned
# The drawn cases above run every precision and thread count against torch; these pin that each option
# reaches the computation (an option silently ignored would still agree with torch).

CONFIDENT = np.array([[1000.0, 988.0, 900.0], [200.0, 190.0, 150.0], [-500.0, -512.0, -530.0]])  # target 0


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("backend", ["reference", "compiled"])
def test_fast_precision_is_the_classic_float32_formula(backend: str, threads: int) -> None:
    """Confident float32 rows: the classic ``lse = m + log(sum exp(x - m))``, ``loss = lse - x_t`` in float32
    (written here) loses the small loss to the rounding of lse (ulp(1000) = 6e-5 > loss = 6e-6). 'fast' is
    documented as that formula and must land next to it, nearer to it than to the exact loss (torch,
    float64); 'accurate' must land on the exact loss."""
    x = CONFIDENT.astype(np.float32)
    t = np.zeros(3, np.int64)
    exact = F.cross_entropy(torch.tensor(x, dtype=torch.float64), torch.from_numpy(t), reduction="none").numpy()
    m = x.max(axis=1)
    lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1, dtype=np.float32))  # float32 throughout
    classic = (lse - x[:, 0]).astype(np.float64)
    assert np.all(np.abs(classic - exact) > 10 * np.spacing(exact.astype(np.float32)))  # the case is a real one
    fast = tinyops.cross_entropy(x, t, reduction="none", precision="fast", backend=backend, threads=threads)
    accurate = tinyops.cross_entropy(x, t, reduction="none", backend=backend, threads=threads)
    assert np.all(np.abs(fast - classic) < np.abs(fast - exact)), (fast, classic, exact)
    assert np.all(np.abs(accurate - exact) <= np.spacing(exact.astype(np.float32))), (accurate, exact)


def _threaded_ops() -> list[tuple[str, Callable[..., Any], Callable[..., Any], tuple[Any, ...], bool]]:
    """(name, forward, backward, args, whether the backward runs a kernel): logsumexp's backward is
    ``dout * softmax`` in NumPy; the fused linear + cross-entropy makes its gradients in the forward."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 33)).astype(np.float32)
    t = rng.integers(0, 33, 64)
    w = rng.standard_normal((33, 27)).astype(np.float32)
    return [
        ("cross_entropy", tinyops.cross_entropy_forward, tinyops.cross_entropy_backward, (x, t), True),
        ("softmax", tinyops.softmax_forward, tinyops.softmax_backward, (x,), True),
        ("log_softmax", tinyops.log_softmax_forward, tinyops.log_softmax_backward, (x,), True),
        ("logsumexp", tinyops.logsumexp_forward, tinyops.logsumexp_backward, (x,), False),
        ("tanh", tinyops.tanh_forward, tinyops.tanh_backward, (x,), True),
        ("embedding", tinyops.embedding_forward, tinyops.embedding_backward, (w, t.reshape(16, 4)), True),
        ("linear_cross_entropy", tinyops.linear_cross_entropy_forward, tinyops.linear_cross_entropy_backward,
         (x[:, :27], w.T.copy(), t % 27), False),
    ]


def test_every_threaded_op_is_in_the_threads_test() -> None:
    threaded = {n[: -len("_forward")] for n in tinyops.__all__
                if n.endswith("_forward") and "threads" in inspect.signature(getattr(tinyops, n)).parameters}
    assert threaded == {name for name, *_ in _threaded_ops()}


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("op", _threaded_ops(), ids=lambda op: op[0] if isinstance(op, tuple) else str(op))
def test_threads_reach_the_kernels(op: Any, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``threads=k`` makes the forward and the backward ask numba's pool for ``min(k, cores)`` threads
    (observed by wrapping numba.set_num_threads), and changes no bit of either."""
    import numba

    from tinyops.kernels._numba import threads_available

    _, forward, backward, args, backward_kernel = op
    calls: list[int] = []
    real = numba.set_num_threads

    def spy(n: int) -> None:
        calls.append(n)
        real(n)

    out1, cache1 = forward(*args, backend="compiled", threads=1)
    dout = upstream(np.shape(out1), out1.dtype, 0)
    grads1 = backward(dout, cache1)
    monkeypatch.setattr(numba, "set_num_threads", spy)
    out, cache = forward(*args, backend="compiled", threads=threads)
    assert calls and set(calls) == {min(threads, threads_available())}, f"forward asked for {calls}"
    calls.clear()
    grads = backward(dout, cache)
    if backward_kernel:
        assert calls and set(calls) == {min(threads, threads_available())}, f"backward asked for {calls}"
    assert np.array_equal(out, out1)
    for g, g1 in zip(arrays_in(grads), arrays_in(grads1), strict=True):
        assert np.array_equal(g, g1)


# ----------------------------------------------------------------------------- the value functions
# Every plain value function (``softmax(x)``, ``cross_entropy(logits, target)``, ...) against torch with
# the same cases, options and tolerance as its forward: a wrapper that dropped an option would fail here.


def _value_test(spec: OpSpec) -> Callable[..., None]:
    value = getattr(tinyops, spec.name)

    @pytest.mark.parametrize("layer", layers(spec.forward), ids=_layer_id)
    @settings(max_examples=budget(0.25, 10))
    @given(case=spec.cases, opts=options(spec.forward))
    def test(layer: dict[str, Any], case: Case, opts: dict[str, Any]) -> None:
        with np.errstate(all="ignore"):
            out = np.asarray(value(*case.args, **case.kwargs, **layer, **opts))
        assert out.dtype == case.dtype
        ref = torch_reference(spec, case, np.zeros(out.shape, out.dtype), {**layer, **opts})
        if spec.fwd_exact:
            assert np.array_equal(out, ref.out.astype(out.dtype))
            return
        eps, tiny = float(np.finfo(case.dtype).eps), float(np.finfo(case.dtype).smallest_normal)
        cond = 0.0 if spec.fwd_cond is None else spec.fwd_cond(ref)
        tol = spec.fwd_k[case.dtype.name] * (eps * spec.fwd_scale(ref) + tiny + float(np.finfo(F64).eps) * cond)
        assert_close(f"{spec.name} value", out, ref.out, tol)

    test.__name__ = f"test_value_{spec.name}"
    return test


for _spec in SPECS:
    globals()[f"test_value_{_spec.name}"] = _value_test(_spec)
