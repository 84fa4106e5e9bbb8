"""The one oracle helper: run a tinyops forward/backward and torch's forward + autograd on the same inputs.

torch runs in float64 on the (upcast) inputs; ours runs in the input dtype. An element passes when

    |ours - torch| <= k * (eps(dtype) * scale + tiny(dtype) + eps64 * cond)

``scale`` is the magnitude our rounding in the input's dtype grows with (``|out|`` for an op that computes
float32 in float64 and rounds once), ``cond`` the magnitude a float64 computation's error grows with (torch's
own, and ours inside): the two are added, never multiplied, so a float64 tolerance grows linearly with the
inputs. The per-op terms and the measured headroom are derived in tests/ERROR_ANALYSIS.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

Array = npt.NDArray[Any]
F64 = np.dtype(np.float64)

torch.set_num_threads(1)


@dataclass(frozen=True)
class Case:
    """One drawn input: the forward's positional args (floating arrays in one dtype, or index arrays),
    its keyword options, and the seed of the random upstream gradient."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    dout_seed: int = 0

    @property
    def dtype(self) -> np.dtype[Any]:
        return next(a.dtype for a in self.args if isinstance(a, np.ndarray) and a.dtype.kind == "f")

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        args = ", ".join(
            f"np.array({a.tolist()!r}, dtype=np.{a.dtype})" if isinstance(a, np.ndarray) else repr(a) for a in self.args
        )
        return f"Case(args=({args},), kwargs={self.kwargs!r}, dout_seed={self.dout_seed})"


@dataclass(frozen=True)
class Reference:
    """torch's float64 answer for a case, and what the scale functions may read."""

    args64: tuple[Any, ...]  # float inputs upcast to float64 (numpy), others as given
    kwargs: dict[str, Any]
    out: Array  # torch forward, float64
    dout: Array  # the upstream gradient, float64 (the same values ours received)
    grads: tuple[Array, ...]  # autograd's gradients of the floating inputs, float64
    dtype: np.dtype[Any] = F64  # the dtype ours ran in
    options: dict[str, Any] = field(default_factory=dict)  # ours-only options (backend, threads, precision)


Scale = Callable[[Reference], Any]  # -> array broadcastable to the compared array, or a number


def rel(ref: Reference) -> Array:
    """The default forward scale: ``1 + |out|``."""
    return 1 + np.abs(ref.out)


@dataclass(frozen=True)
class OpSpec:
    """One op in the oracle suite.

    ``cases`` draw inputs for the comparison with torch, ``grad_cases`` smooth float64 inputs for gradcheck.
    ``fwd_k``/``bwd_k`` are per dtype: an element passes when
    ``|ours - torch| <= k * (eps(dtype) * scale + tiny(dtype))`` (tiny: the smallest normal number,
    the absolute error of a result that underflows). ``bwd_scale`` returns one scale per floating input.
    ``fwd_exact``: the forward only copies (embedding) and must match bit for bit.
    ``fwd_cond``/``bwd_cond``: the float64 conditioning terms (``cond`` above; default 0), added to the
    tolerance in units of eps64: torch's float64 answer (and a float64 computation of ours) is off by
    about that much, e.g. ``|x|`` where it forms ``x - logsumexp(x)``.
    """

    name: str
    forward: Callable[..., tuple[Any, Any]]
    backward: Callable[[Any, Any], Any]
    torch_fn: Callable[..., torch.Tensor]
    cases: Any  # a hypothesis strategy of Case, for the torch comparison
    grad_cases: Any  # a strategy of smooth, small float64 Cases, for gradcheck
    fwd_k: dict[str, float]
    bwd_k: dict[str, float]
    bwd_scale: Callable[[Reference], tuple[Any, ...]]
    fwd_scale: Scale = rel
    fwd_exact: bool = False
    fwd_cond: Scale | None = None
    bwd_cond: Callable[[Reference], tuple[Any, ...]] | None = None
    pinned: tuple[Case, ...] = ()


def budget(share: float, floor: int) -> int:
    """Examples for a property whose examples are slow: ``share`` of the loaded profile's budget, at least
    ``floor`` (e.g. 0.01: 2 under ci's 200, 20 under thorough's 2,000)."""
    from hypothesis import settings

    return max(floor, int(settings.default.max_examples * share))


def is_float(a: Any) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


def upstream(shape: tuple[int, ...], dtype: np.dtype[Any], seed: int) -> Array:
    """A random upstream gradient (never all ones, which hides wrong backwards)."""
    return np.asarray(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def arrays_in(obj: Any) -> list[Array]:
    """Every ndarray in a (nested) tuple such as a cache."""
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, tuple):
        return [a for item in obj for a in arrays_in(item)]
    return []


def torch_reference(spec: OpSpec, case: Case, dout: Array, options: dict[str, Any] | None = None) -> Reference:
    tensors = []
    for a in case.args:
        if is_float(a):
            tensors.append(torch.tensor(a.astype(np.float64), requires_grad=True))
        elif isinstance(a, np.ndarray):
            tensors.append(torch.from_numpy(a.astype(np.int64)))
        else:
            tensors.append(a)
    out = spec.torch_fn(*tensors, **case.kwargs)
    assert tuple(out.shape) == dout.shape, f"{spec.name}: output shape {dout.shape} != torch's {tuple(out.shape)}"
    leaves = [t for t in tensors if isinstance(t, torch.Tensor) and t.requires_grad]
    dout64 = dout.astype(np.float64)
    grads = torch.autograd.grad(out, leaves, torch.from_numpy(dout64), allow_unused=True)
    grads64 = tuple(np.zeros(t.shape) if g is None else g.detach().numpy() for t, g in zip(leaves, grads, strict=True))
    args64 = tuple(a.astype(np.float64) if is_float(a) else a for a in case.args)
    return Reference(args64, case.kwargs, out.detach().numpy(), dout64, grads64, case.dtype, dict(options or {}))


def assert_close(what: str, ours: Array, ref: Array, tol: Any) -> float:
    """``|ours - ref| <= tol`` elementwise where ref is finite; the same infinities and nans elsewhere.

    Returns the largest ``|ours - ref| / tol`` (the used fraction of the tolerance; 0 when nothing is finite)."""
    ours64 = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours64.shape == ref.shape, f"{what}: shape {ours64.shape} != torch's {ref.shape}"
    nan_o, nan_r = np.isnan(ours64), np.isnan(ref)
    assert np.array_equal(nan_o, nan_r), (
        f"{what}: nan at {np.argwhere(nan_o != nan_r)[:5].tolist()} differs from torch\nours={ours64}\ntorch={ref}"
    )
    inf_r = np.isinf(ref)
    assert np.array_equal(ours64[inf_r], ref[inf_r]), f"{what}: infinities differ: {ours64} vs torch {ref}"
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), ref.shape)
    fin = np.isfinite(ref)
    with np.errstate(invalid="ignore"):
        err = np.where(fin, np.abs(ours64 - ref), 0.0)
    bad = err > np.where(fin, tol, np.inf)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {bad.sum()} of {bad.size} elements out of tolerance; worst err "
            f"{err.max():.3e}; first at {i}: ours {ours64[i]!r}, torch {ref[i]!r}, tol {tol[i]:.3e}"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        used = np.where(fin & (err > 0), err / tol, 0.0)
    return float(np.max(used, initial=0.0))


def check_op(spec: OpSpec, case: Case, layer: dict[str, Any] | None = None) -> dict[str, float]:
    """The whole oracle check of one case: values, gradients and dtypes against torch; no writes into
    the inputs, ``dout`` or the cache; no output or gradient sharing memory with an array the caller holds.

    ``layer``: options for ours only, never passed to torch (``backend``, ``threads``, ``precision``).
    Returns the used fraction of each tolerance (``forward``, ``gradient i``), for measuring headroom."""
    dtype = case.dtype
    eps = float(np.finfo(dtype).eps)
    tiny = float(np.finfo(dtype).smallest_normal)  # below it, results underflow: an absolute floor
    eps64 = float(np.finfo(np.float64).eps)
    key = np.dtype(dtype).name
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in case.args]

    out, cache = spec.forward(*case.args, **case.kwargs, **(layer or {}))
    out = np.asarray(out)
    assert out.dtype == dtype, f"{spec.name}: output dtype {out.dtype} != input dtype {dtype}"
    dout = upstream(out.shape, dtype, case.dout_seed)
    dout_before = dout.copy()
    cache_arrays = arrays_in(cache)
    cache_before = [a.copy() for a in cache_arrays]
    grads = spec.backward(dout, cache)
    grads = [g for g in (grads if isinstance(grads, tuple) else (grads,)) if g is not None]

    inputs = [a for a in case.args if isinstance(a, np.ndarray)]
    for a, b in zip(case.args, before, strict=True):
        if isinstance(a, np.ndarray):
            assert np.array_equal(a, b, equal_nan=True), f"{spec.name} wrote into an input"
    assert np.array_equal(dout, dout_before), f"{spec.name}: backward wrote into dout"
    for a, b in zip(cache_arrays, cache_before, strict=True):
        assert np.array_equal(a, b, equal_nan=True), f"{spec.name}: backward wrote into the cache"
    assert not any(np.shares_memory(out, a) for a in inputs), f"{spec.name}: output aliases an input"
    held = [out, dout, *inputs, *cache_arrays]
    for i, g in enumerate(grads):
        others = held + grads[i + 1 :]
        assert not any(np.shares_memory(g, h) for h in others), f"{spec.name}: gradient {i} aliases an array"

    ref = torch_reference(spec, case, dout, layer)
    used: dict[str, float] = {}
    if spec.fwd_exact:
        assert np.array_equal(out, ref.out.astype(dtype)), f"{spec.name}: forward is not exact"
    else:
        cond = 0.0 if spec.fwd_cond is None else spec.fwd_cond(ref)
        tol = spec.fwd_k[key] * (eps * spec.fwd_scale(ref) + tiny + eps64 * cond)
        used["forward"] = assert_close(f"{spec.name} forward", out, ref.out, tol)

    assert len(grads) == len(ref.grads), f"{spec.name}: {len(grads)} gradients, torch has {len(ref.grads)}"
    conds = (0.0,) * len(grads) if spec.bwd_cond is None else spec.bwd_cond(ref)
    for i, (g, g_ref, scale, cond) in enumerate(zip(grads, ref.grads, spec.bwd_scale(ref), conds, strict=True)):
        g = np.asarray(g)
        assert g.dtype == dtype, f"{spec.name}: gradient {i} has dtype {g.dtype}, input dtype {dtype}"
        tol = spec.bwd_k[key] * (eps * scale + tiny + eps64 * cond)
        used[f"gradient {i}"] = assert_close(f"{spec.name} gradient {i}", g, g_ref, tol)
    return used
