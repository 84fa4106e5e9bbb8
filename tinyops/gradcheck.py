"""Tools for checking a hand-derived backward: ``gradcheck`` and the makemore ``cmp`` report, ``compare``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ._checks import Array

# ----------------------------------------------------------------------------- compare


def _as_numpy(value: Any, name: str) -> Array:
    """An ndarray from an ndarray, a number, or anything tensor-like with ``.detach()`` (no torch import)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as exc:  # pragma: no cover - unusual objects
        raise TypeError(f"{name} must be array-like, got {type(value).__name__}") from exc


@dataclass(frozen=True)
class Comparison:
    """The makemore ``cmp`` report of one quantity: is ours exactly, or approximately, the reference?

    ``approximate`` is ``np.allclose(ours, reference)`` with torch.allclose's defaults
    (rtol=1e-5, atol=1e-8); ``maxdiff`` is ``max |ours - reference|``, nan if either holds a nan.
    Equal infinities differ by 0 (makemore's ``cmp`` would print ``inf - inf = nan`` there).
    """

    name: str
    exact: bool
    approximate: bool
    maxdiff: float

    def row(self, width: int = 20) -> str:
        return (
            f"{self.name:{width}s} | exact: {self.exact!s:5s} | approximate: {self.approximate!s:5s} "
            f"| maxdiff: {self.maxdiff:.3g}"
        )

    def __str__(self) -> str:
        return self.row()


def compare(name: str, ours: npt.ArrayLike, reference: Any) -> Comparison:
    """Compare a gradient (or any array) with a reference, as makemore part 4's ``cmp`` does.

    Args:
        name: the label printed in the row, e.g. ``"dlogits"``.
        ours: the array to check, any shape, any real dtype (float16/32/64, or integers).
        reference: the same shape, any real dtype; an ndarray, or a torch tensor (``t.grad``).

    Returns:
        A :class:`Comparison`; ``print`` shows one aligned row
        ``dlogits              | exact: False | approximate: True  | maxdiff: 5.59e-09``.
        ``exact`` compares the values as given (``np.array_equal``); ``approximate``
        (``allclose(rtol=1e-5, atol=1e-8)``) and ``maxdiff`` are computed in float64.

    Raises:
        ValueError: the shapes differ.
    """
    a = _as_numpy(ours, "ours")
    b = _as_numpy(reference, "reference")
    if a.shape != b.shape:
        raise ValueError(f"{name}: ours has shape {a.shape} but reference has shape {b.shape}")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore"):  # equal infinities differ by 0, not by inf - inf = nan
        diff = np.where(a64 == b64, 0.0, np.abs(a64 - b64))
    maxdiff = float(np.max(diff, initial=0.0)) if not np.isnan(diff).any() else float("nan")
    return Comparison(
        name=name,
        exact=bool(np.array_equal(a, b)),
        approximate=bool(np.allclose(a64, b64, rtol=1e-5, atol=1e-8)),
        maxdiff=maxdiff,
    )


def format_comparisons(rows: Iterable[Comparison]) -> str:
    """Several comparisons as one aligned table (names padded to the longest)."""
    rows = list(rows)
    width = max((len(r.name) for r in rows), default=0)
    return "\n".join(r.row(width) for r in rows)


# ----------------------------------------------------------------------------- gradcheck


@dataclass(frozen=True)
class InputCheck:
    """The gradcheck of one differentiable input."""

    name: str
    analytic: Array  # the backward's gradient, float64
    numeric: Array  # central differences, float64
    max_abs_err: float
    max_rel_err: float  # max of |analytic - numeric| / max(|analytic|, |numeric|) over nonzero entries
    passed: bool


@dataclass(frozen=True)
class GradcheckResult:
    """Per-input errors of :func:`gradcheck`; true when every input passed."""

    inputs: tuple[InputCheck, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.inputs)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return "\n".join(
            f"d{c.name:10s} max abs err {c.max_abs_err:9.2e}  max rel err {c.max_rel_err:9.2e}  "
            f"{'ok' if c.passed else 'FAIL'}"
            for c in self.inputs
        )


def _is_float_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def gradcheck(
    forward: Callable[..., tuple[Any, Any]],
    inputs: Sequence[Any],
    backward: Callable[[Any, Any], Any],
    *,
    kwargs: Mapping[str, Any] | None = None,
    eps: float = 1e-6,
    atol: float = 1e-7,
    rtol: float = 1e-5,
    seed: int = 0,
) -> GradcheckResult:
    """Check ``backward`` against central differences of ``forward``, in float64.

    The check is of the scalar ``f(inputs) = sum(u * forward(*inputs)[0])`` with a random upstream
    gradient ``u`` (never all ones, which would hide a wrong backward): its gradient is exactly what
    ``backward(u, cache)`` must return. Each floating ndarray in ``inputs`` is differentiable (upcast
    to a float64 copy: the caller's arrays are never touched); anything else (integer indices and
    targets, None) is passed through. Cost: two forwards per input element, so keep inputs small.

    Args:
        forward: ``forward(*inputs, **kwargs) -> (out, cache)``.
        inputs: the forward's positional inputs.
        backward: ``backward(dout, cache) -> grad`` or a tuple (or list) of grads, one per floating input in
            order (a trailing None, e.g. linear's dbias without a bias, is ignored).
        kwargs: keyword options for the forward, e.g. ``{"reduction": "sum"}``.
        eps: relative step, ``h = eps * max(1, |x|)`` per element.
        atol, rtol: an element passes when ``|analytic - numeric| <= atol + rtol * |numeric| + noise``,
            where ``noise = 8 * eps64 * sum(|u * out|) / h`` is the rounding error of the difference
            quotient itself (large when the function's terms are large and the step small).
        seed: seed of the random upstream gradient.

    Returns:
        A :class:`GradcheckResult` (truthy when all inputs pass), named by the forward's parameters.

    Raises:
        ValueError: no floating input, or the backward returned the wrong number or shape of gradients.
    """
    kwargs = dict(kwargs or {})
    args = [np.array(v, dtype=np.float64) if _is_float_array(v) else v for v in inputs]
    wrt = [i for i, v in enumerate(inputs) if _is_float_array(v)]
    if not wrt:
        raise ValueError("inputs has no floating ndarray to differentiate")
    try:
        params = list(inspect.signature(forward).parameters)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        params = []
    names = [params[i] if i < len(params) else f"input{i}" for i in range(len(inputs))]

    out, cache = forward(*args, **kwargs)
    out = np.asarray(out)
    rng = np.random.default_rng(seed)
    u = np.asarray(rng.standard_normal(out.shape))  # the random upstream gradient, out's shape
    grads = backward(u, cache)
    grads = list(grads) if isinstance(grads, (tuple, list)) else [grads]
    while grads and grads[-1] is None and len(grads) > len(wrt):
        grads.pop()
    if len(grads) != len(wrt):
        raise ValueError(f"backward returned {len(grads)} gradient(s) for {len(wrt)} floating input(s)")

    def f() -> float:
        return float(np.sum(u * forward(*args, **kwargs)[0]))

    magnitude = float(np.sum(np.abs(u * out)))  # f's terms: each evaluation of f rounds at this size

    checks = []
    for i, grad in zip(wrt, grads, strict=True):
        x = args[i]
        analytic = np.asarray(grad, dtype=np.float64)
        if analytic.shape != x.shape:
            raise ValueError(f"d{names[i]} has shape {analytic.shape}, expected {x.shape}")
        numeric = np.zeros_like(x)
        steps = eps * np.maximum(1.0, np.abs(x))  # h per element
        flat, nflat, hflat = x.reshape(-1), numeric.reshape(-1), steps.reshape(-1)  # views of our copies
        for j in range(flat.size):
            old, h = flat[j], hflat[j]
            flat[j] = old + h
            f_plus = f()
            flat[j] = old - h
            f_minus = f()
            flat[j] = old
            nflat[j] = (f_plus - f_minus) / (2 * h)
        err = np.abs(analytic - numeric)
        denom = np.maximum(np.abs(analytic), np.abs(numeric))
        rel = np.divide(err, denom, out=np.zeros_like(err), where=denom > 0)
        checks.append(
            InputCheck(
                name=names[i],
                analytic=analytic,
                numeric=numeric,
                max_abs_err=float(np.max(err, initial=0.0)),
                max_rel_err=float(np.max(rel, initial=0.0)),
                passed=bool(np.all(err <= atol + rtol * np.abs(numeric) + 8 * np.finfo(float).eps * magnitude / steps)),
            )
        )
    return GradcheckResult(tuple(checks))
