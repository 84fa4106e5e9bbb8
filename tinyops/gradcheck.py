"""Tools for checking a hand-derived backward: ``gradcheck`` and the makemore ``cmp`` report, ``compare``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ._checks import Array, as_plain_array

# ----------------------------------------------------------------------------- compare


def _as_numpy(value: Any, name: str) -> Array:
    """A plain numeric ndarray from an ndarray, a number, or anything tensor-like with ``.detach()`` (no torch
    import); a masked array, ragged, object or string data are refused naming ``name``."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = as_plain_array(name, value)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return arr


@dataclass(frozen=True)
class Comparison:
    """The makemore ``cmp`` report of one quantity: is ours exactly, or approximately, the reference?

    ``approximate`` is ``np.allclose(ours, reference)`` with torch.allclose's defaults
    (rtol=1e-5, atol=1e-8); ``maxdiff`` is ``max |ours - reference|``, nan if either holds a nan.
    Equal infinities differ by 0 (makemore's ``cmp`` would print ``inf - inf = nan`` there).
    Complex values are compared whole: ``|ours - reference|`` is the complex modulus.
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
        ours: the array to check, any shape, any numeric dtype (float16/32/64, integers, bool, complex).
        reference: the same shape, any numeric dtype; an ndarray, or a torch tensor (``t.grad``).

    Returns:
        A :class:`Comparison`; ``print`` shows one aligned row
        ``dlogits              | exact: False | approximate: True  | maxdiff: 5.59e-09``.
        ``exact`` compares the values as given (``np.array_equal``); ``approximate``
        (``allclose(rtol=1e-5, atol=1e-8)``) and ``maxdiff`` are computed in float64 (complex128 when
        either side is complex: real and imaginary parts both count).

    Raises:
        ValueError: the shapes differ.
        TypeError: ``ours`` or ``reference`` is a masked array, or holds no numbers (objects, strings).
    """
    a = _as_numpy(ours, "ours")
    b = _as_numpy(reference, "reference")
    if a.shape != b.shape:
        raise ValueError(f"{name}: ours has shape {a.shape} but reference has shape {b.shape}")
    wide = np.complex128 if "c" in (a.dtype.kind, b.dtype.kind) else np.float64  # complex: compared whole
    a64, b64 = a.astype(wide), b.astype(wide)
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
    """The gradcheck of one differentiable input.

    Per entry, the tolerance is ``tol = floor + rtol * |numeric|`` with ``floor = atol + noise`` (see
    :func:`gradcheck`); the entry passes when ``|analytic - numeric| <= tol``.
    """

    name: str
    analytic: Array  # the backward's gradient, float64
    numeric: Array  # central differences, float64
    max_abs_err: float  # max |analytic - numeric|
    max_rel_err: float  # max |analytic - numeric| / max(|analytic|, |numeric|, floor / rtol): <= 2 rtol when passed
    max_err_over_tol: float  # max |analytic - numeric| / tol: passed exactly when <= 1
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
        """One row per input; ``err/tol`` is the worst entry's error over its tolerance (ok when <= 1)."""
        return "\n".join(
            f"d{c.name:10s} max abs err {c.max_abs_err:9.2e}  max rel err {c.max_rel_err:9.2e}  "
            f"err/tol {c.max_err_over_tol:9.2e}  {'ok' if c.passed else 'FAIL'}"
            for c in self.inputs
        )


def _out_and_cache(result: Any) -> tuple[Any, Any]:
    """``(out, cache)`` from a forward's result ``(out, cache, *extra)`` (batchnorm adds its running stats)."""
    if not isinstance(result, (tuple, list)) or len(result) < 2:
        raise TypeError(
            "forward must return (out, cache) or (out, cache, *extra) such as batchnorm1d_forward's "
            f"(out, cache, new_running); got {type(result).__name__}"
            + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
        )
    return result[0], result[1]


def _is_float_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def gradcheck(
    forward: Callable[..., Sequence[Any]],
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

    The gradient checked is that of ``sum(u * out)``, ``out = forward(*inputs)[0]``, with a random upstream
    gradient ``u`` (never all ones, which would hide a wrong backward): exactly what ``backward(u, cache)``
    must return. Each floating ndarray in ``inputs`` is differentiable (upcast to a float64 copy: the
    caller's arrays are never touched); anything else (integer indices and targets, None) is passed through.

    The difference is taken per output element, before the contraction with ``u``:
    ``numeric[j] = sum(u * (out(x + h e_j) - out(x - h e_j))) / 2h``. Two nearby floats subtract exactly, and an
    output the step does not move contributes exactly 0, so the result carries only the rounding of the
    outputs that moved; differencing the contracted scalar ``sum(u * out)`` instead would carry the rounding
    of the whole sum, which for large outputs buries a wrong gradient. Cost: two forwards per input
    element, so keep inputs small.

    Args:
        forward: ``forward(*inputs, **kwargs) -> (out, cache)``; further results after the cache (as
            batchnorm1d_forward's new running statistics) are ignored.
        inputs: the forward's positional inputs.
        backward: ``backward(dout, cache) -> grad`` or a tuple (or list) of grads, one per floating input in
            order (a trailing None, e.g. linear's dbias without a bias, is ignored).
        kwargs: keyword options for the forward, e.g. ``{"reduction": "sum"}``.
        eps: relative step, ``h = eps * max(1, |x|)`` per element. A step too small to move an output at all
            shows as a numeric gradient of 0 (a failure, never a false pass): raise it then.
        atol, rtol: an element passes when ``|analytic - numeric| <= atol + noise + rtol * |numeric|``, where
            ``noise = 8 * eps64 * sum(|u| * |out|) / h``, the sum over the outputs the step moved, is the
            rounding error of the difference quotient itself.
        seed: seed of the random upstream gradient.

    Returns:
        A :class:`GradcheckResult` (truthy when all inputs pass), named by the forward's parameters.
        Its rows print the worst absolute and relative errors and ``err/tol``, the worst entry's error over
        its tolerance (<= 1 exactly when the input passed); the relative error counts an entry that is zero
        up to the noise against the tolerance, not against itself, so a passing row never reads 100%.

    Raises:
        ValueError: no floating input, or the backward returned the wrong number or shape of gradients.
        TypeError: the forward does not return ``(out, cache, ...)``; a masked array among the inputs.
    """
    kwargs = dict(kwargs or {})
    args = [  # float64 copies (a masked array is refused: its mask would be dropped silently)
        np.array(as_plain_array(f"inputs[{i}]", v), dtype=np.float64) if _is_float_array(v) else v
        for i, v in enumerate(inputs)
    ]
    wrt = [i for i, v in enumerate(inputs) if _is_float_array(v)]
    if not wrt:
        raise ValueError("inputs has no floating ndarray to differentiate")
    try:
        params = list(inspect.signature(forward).parameters)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        params = []
    names = [params[i] if i < len(params) else f"input{i}" for i in range(len(inputs))]

    out, cache = _out_and_cache(forward(*args, **kwargs))
    out = np.asarray(out)
    rng = np.random.default_rng(seed)
    u = np.asarray(rng.standard_normal(out.shape))  # the random upstream gradient, out's shape
    abs_u = np.abs(u)
    grads = backward(u, cache)
    grads = list(grads) if isinstance(grads, (tuple, list)) else [grads]
    while grads and grads[-1] is None and len(grads) > len(wrt):
        grads.pop()
    if len(grads) != len(wrt):
        raise ValueError(f"backward returned {len(grads)} gradient(s) for {len(wrt)} floating input(s)")

    def outputs() -> Array:
        return np.asarray(_out_and_cache(forward(*args, **kwargs))[0], dtype=np.float64)

    checks = []
    for i, grad in zip(wrt, grads, strict=True):
        x = args[i]
        analytic = np.asarray(grad, dtype=np.float64)
        if analytic.shape != x.shape:
            raise ValueError(f"d{names[i]} has shape {analytic.shape}, expected {x.shape}")
        numeric = np.zeros_like(x)
        floor = np.zeros_like(x)  # atol + the rounding noise of each entry's difference quotient
        steps = eps * np.maximum(1.0, np.abs(x))  # h per element
        flat, nflat, fflat, hflat = x.reshape(-1), numeric.reshape(-1), floor.reshape(-1), steps.reshape(-1)
        for j in range(flat.size):  # flat, nflat, fflat: views of our own copies
            old, h = flat[j], hflat[j]
            flat[j] = old + h
            out_plus = outputs()
            flat[j] = old - h
            out_minus = outputs()
            flat[j] = old
            with np.errstate(invalid="ignore"):  # inf - inf: nan, a failure
                diff = out_plus - out_minus  # per output element: exact for nearby values, 0 where nothing moved
            nflat[j] = float(np.sum(u * diff)) / (2 * h)
            moved = diff != 0
            size = np.maximum(np.abs(out_plus[moved]), np.abs(out_minus[moved]))  # the outputs' magnitude
            fflat[j] = atol + 8 * np.finfo(np.float64).eps * float(np.sum(abs_u[moved] * size)) / h
        err = np.abs(analytic - numeric)
        tol = floor + rtol * np.abs(numeric)
        scale = np.maximum(np.abs(analytic), np.abs(numeric))
        if rtol > 0:  # an entry zero up to the noise counts against the tolerance, not against itself
            scale = np.maximum(scale, floor / rtol)
        with np.errstate(invalid="ignore", divide="ignore"):  # nan errors make nan ratios: reported, and failed
            rel = np.where(err == 0, 0.0, err / scale)  # (a zero error is 0 even against a zero tolerance)
            over = np.where(err == 0, 0.0, err / tol)
        checks.append(
            InputCheck(
                name=names[i],
                analytic=analytic,
                numeric=numeric,
                max_abs_err=_worst(err),
                max_rel_err=_worst(rel),
                max_err_over_tol=_worst(over),
                passed=bool(np.all(err <= tol)),
            )
        )
    return GradcheckResult(tuple(checks))


def _worst(a: Array) -> float:
    """The largest entry, nan if any is nan (so a nan gradient never prints as a small error); 0 if empty."""
    return float("nan") if np.isnan(a).any() else float(np.max(a, initial=0.0))
