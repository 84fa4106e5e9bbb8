"""Hypothesis strategies for logits in the numerically hard regions (needs hypothesis).

One strategy per region of :mod:`tinyops.testing.regions` (see there for what each region is and why it
is hard): ``benign``, ``confident``, ``near_tie``, ``wide_scale``, ``tiny_scale``, ``offset``, ``masked``,
``exp_overflow``, ``exp_underflow``, ``long_row``, ``log_normalized``, and ``hard_logits``, any of them
but ``long_row`` (slow to check) and ``log_normalized`` (where tinyops' own logsumexp is held to a
weaker, absolute bound: see docs/accuracy.md).
Hypothesis draws each region's parameters (gap, scale, offset, mask fraction, ...) and a seed for the
bulk of the values, so a failure shrinks to the smallest shape and the simplest parameters.

Every strategy takes keyword arguments:

- ``dtype``: a float dtype (default float32) or a strategy of dtypes;
- ``n``, ``v``: the number of rows N and of classes V, each an int or a strategy of ints
  (default N in [1, 6], V in [2, 40]; ``long_row``: N = 1, V in [1,024, 50,257]);
- ``target``: True (default) to draw ``(logits (N, V), target (N,) int64)``, False for ``logits`` alone.

Example::

    from hypothesis import given
    from tinyops.testing import strategies as ts

    @given(ts.confident(dtype=np.float32))
    def test_my_loss(case):
        logits, target = case
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy
except ImportError as exc:  # pragma: no cover - exercised only without hypothesis
    raise ImportError(
        "tinyops.testing.strategies needs hypothesis (pip install 'hypothesis>=6.100', or the package's 'test' extra)"
    ) from exc

from . import regions

__all__ = [
    "benign",
    "confident",
    "exp_overflow",
    "exp_underflow",
    "hard_logits",
    "log_normalized",
    "long_row",
    "masked",
    "near_tie",
    "offset",
    "tiny_scale",
    "wide_scale",
]

IntLike = int | SearchStrategy[int]
DTypeArg = npt.DTypeLike | SearchStrategy[Any]
Params = Callable[[np.dtype[Any]], dict[str, SearchStrategy[Any]]]

_N = st.integers(1, 6)
_V = st.integers(2, 40)


def _floats(lo: float, hi: float) -> SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def _region_case(
    draw: st.DrawFn, name: str, params: Params, dtype: DTypeArg, n: IntLike, v: IntLike, target: bool
) -> Any:
    dt = np.dtype(draw(dtype) if isinstance(dtype, SearchStrategy) else dtype)
    N = draw(n) if isinstance(n, SearchStrategy) else n
    V = draw(v) if isinstance(v, SearchStrategy) else v
    kwargs = {key: draw(s) for key, s in params(dt).items()}
    seed = draw(st.integers(0, 2**32 - 1))
    x, t = regions.BUILDERS[name](np.random.default_rng(seed), dt, N, V, **kwargs)
    return (x, t) if target else x


def _region(name: str, params: Params, dtype: DTypeArg, n: IntLike, v: IntLike, target: bool) -> SearchStrategy[Any]:
    return _region_case(name, params, dtype, n, v, target)


def benign(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Normal logits, spread in [1, 3]."""
    return _region("benign", lambda dt: {"spread": _floats(1.0, 3.0)}, dtype, n, v, target)


def confident(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Target ``gap`` above the others: gap in [1, 110] (float16/32) or [1, 750] (float64), spread [0.1, 3]."""

    def params(dt: np.dtype[Any]) -> dict[str, SearchStrategy[Any]]:
        return {"gap": _floats(1.0, 750.0 if dt == np.float64 else 110.0), "spread": _floats(0.1, 3.0)}

    return _region("confident", params, dtype, n, v, target)


def near_tie(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """All logits within ``ulps`` (0 to 8) ulps of a center in [-100, 100]."""
    return _region(
        "near_tie", lambda dt: {"center": _floats(-100.0, 100.0), "ulps": st.integers(0, 8)}, dtype, n, v, target
    )


def wide_scale(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Normal logits with spread in [10, 3e4]."""
    return _region("wide_scale", lambda dt: {"spread": _floats(10.0, 3e4)}, dtype, n, v, target)


def tiny_scale(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Normal logits with spread in [1e-8, 1e-2]."""
    return _region("tiny_scale", lambda dt: {"spread": _floats(1e-8, 1e-2)}, dtype, n, v, target)


def offset(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """All logits near +1e4 or -1e4: the shift plus normal logits with spread in [1e-2, 10]."""

    def params(dt: np.dtype[Any]) -> dict[str, SearchStrategy[Any]]:
        return {"shift": st.sampled_from([-1e4, 1e4]), "spread": _floats(1e-2, 10.0)}

    return _region("offset", params, dtype, n, v, target)


def masked(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """A fraction in [0, 0.95] of the entries ``-inf`` (never the target); spread in [0.5, 5]."""
    return _region(
        "masked", lambda dt: {"fraction": _floats(0.0, 0.95), "spread": _floats(0.5, 5.0)}, dtype, n, v, target
    )


def exp_overflow(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Logits around ``log(max float)`` of the dtype, spread in [1e-3, 3]."""
    return _region("exp_overflow", lambda dt: {"spread": _floats(1e-3, 3.0)}, dtype, n, v, target)


def exp_underflow(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Non-target logits around the exp underflow thresholds of the dtype below the target (spread [1e-3, 3])."""
    return _region("exp_underflow", lambda dt: {"spread": _floats(1e-3, 3.0)}, dtype, n, v, target)


def long_row(
    *,
    dtype: DTypeArg = np.float32,
    n: IntLike = 1,
    v: IntLike = st.integers(1024, 50_257),  # noqa: B008 - an immutable strategy
    target: bool = True,
) -> SearchStrategy[Any]:
    """Long rows (V up to 50,257), spread in [0.5, 5]; all rows confident (gap 5 to 40) or none."""

    def params(dt: np.dtype[Any]) -> dict[str, SearchStrategy[Any]]:
        return {"spread": _floats(0.5, 5.0), "confident_fraction": st.sampled_from([0.0, 1.0])}

    return _region("long_row", params, dtype, n, v, target)


def log_normalized(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Log-probabilities: rows shifted by their own logsumexp (so it is within rounding of 0), or ties at -log V."""

    def params(dt: np.dtype[Any]) -> dict[str, SearchStrategy[Any]]:
        return {"spread": _floats(0.5, 5.0), "ulps": st.integers(0, 3)}

    return _region("log_normalized", params, dtype, n, v, target)


def hard_logits(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Any one region but ``long_row`` and ``log_normalized`` (see each strategy), with the same arguments."""
    return st.one_of(
        *(
            f(dtype=dtype, n=n, v=v, target=target)
            for f in (
                benign,
                confident,
                near_tie,
                wide_scale,
                tiny_scale,
                offset,
                masked,
                exp_overflow,
                exp_underflow,
            )
        )
    )
