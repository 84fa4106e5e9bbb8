"""Hypothesis strategies for logits in the numerically hard regions (needs hypothesis).

One strategy per region of :mod:`tinyops.testing.regions` (see there for what each region is and why it
is hard): ``benign``, ``confident``, ``near_tie``, ``wide_scale``, ``tiny_scale``, ``offset``, ``masked``,
``exp_overflow``, ``exp_underflow``, ``long_row``, ``log_normalized``, and ``hard_logits``, any of them
but ``long_row`` (slow to check) and ``log_normalized`` (where tinyops' own logsumexp is held to a
weaker, absolute bound: see docs/accuracy.md).
Hypothesis draws each region's parameters (gap, scale, offset, mask fraction, ...) in the ranges of the one
table ``tinyops.testing.regions.PARAMS`` (which the fixed-seed builders read too) and a seed for the bulk
of the values, so a failure shrinks to the smallest shape and the simplest parameters.

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
    "region",
    "tiny_scale",
    "wide_scale",
]

IntLike = int | SearchStrategy[int]
DTypeArg = npt.DTypeLike | SearchStrategy[Any]

_N = st.integers(1, 6)
_V = st.integers(2, 40)


def _param(r: regions.Range, dt: np.dtype[Any]) -> SearchStrategy[Any]:
    lo, hi = r.bounds(dt)
    if r.integer:
        return st.integers(int(lo), int(hi))
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _params(name: str, dt: np.dtype[Any]) -> dict[str, SearchStrategy[Any]]:
    """A strategy per parameter of the region, over the range of ``regions.PARAMS`` (the one table)."""
    out = {key: _param(r, dt) for key, r in regions.PARAMS[name].items()}
    if name == "offset":
        size = regions.PARAMS["offset"]["shift"].hi
        out["shift"] = st.sampled_from([-size, size])
    if name == "long_row":  # its confident gap is drawn by the builder; the strategy picks all or none confident
        del out["gap"]
        out["confident_fraction"] = st.sampled_from([0.0, 1.0])
    return out


@st.composite
def _region_case(draw: st.DrawFn, name: str, dtype: DTypeArg, n: IntLike, v: IntLike, target: bool) -> Any:
    dt = np.dtype(draw(dtype) if isinstance(dtype, SearchStrategy) else dtype)
    N = draw(n) if isinstance(n, SearchStrategy) else n
    V = draw(v) if isinstance(v, SearchStrategy) else v
    kwargs = {key: draw(s) for key, s in _params(name, dt).items()}
    seed = draw(st.integers(0, 2**32 - 1))
    x, t = regions.BUILDERS[name](np.random.default_rng(seed), dt, N, V, **kwargs)
    return (x, t) if target else x


def region(
    name: str, *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """The strategy of the region called ``name`` (one of ``regions.REGIONS``), with the arguments above."""
    if name not in regions.BUILDERS:
        raise ValueError(f"name must be one of {', '.join(regions.REGIONS)}, got {name!r}")
    return _region_case(name, dtype, n, v, target)


def benign(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Normal logits, spread in [1, 3]."""
    return region("benign", dtype=dtype, n=n, v=v, target=target)


def confident(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Target ``gap`` above the others: gap in [1, 110] (float16/32) or [1, 750] (float64), spread [0.1, 3]."""
    return region("confident", dtype=dtype, n=n, v=v, target=target)


def near_tie(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """All logits within ``ulps`` (0 to 8) ulps of a center in [-100, 100]."""
    return region("near_tie", dtype=dtype, n=n, v=v, target=target)


def wide_scale(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Normal logits with spread in [10, 3e4]."""
    return region("wide_scale", dtype=dtype, n=n, v=v, target=target)


def tiny_scale(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Normal logits with spread in [1e-8, 1e-2]."""
    return region("tiny_scale", dtype=dtype, n=n, v=v, target=target)


def offset(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """All logits near +1e4 or -1e4: the shift plus normal logits with spread in [1e-2, 10]."""
    return region("offset", dtype=dtype, n=n, v=v, target=target)


def masked(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """A fraction in [0.1, 0.9] of the entries ``-inf`` (never the target); spread in [0.5, 5]."""
    return region("masked", dtype=dtype, n=n, v=v, target=target)


def exp_overflow(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Logits around ``log(max float)`` of the dtype, spread in [1e-3, 3]."""
    return region("exp_overflow", dtype=dtype, n=n, v=v, target=target)


def exp_underflow(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Non-target logits around the exp underflow thresholds of the dtype below the target (spread [1e-3, 3])."""
    return region("exp_underflow", dtype=dtype, n=n, v=v, target=target)


def long_row(
    *,
    dtype: DTypeArg = np.float32,
    n: IntLike = 1,
    v: IntLike = st.integers(1024, 50_257),  # noqa: B008 - an immutable strategy
    target: bool = True,
) -> SearchStrategy[Any]:
    """Long rows (V up to 50,257), spread in [0.5, 5]; all rows confident (gap 5 to 40) or none."""
    return region("long_row", dtype=dtype, n=n, v=v, target=target)


def log_normalized(
    *, dtype: DTypeArg = np.float32, n: IntLike = _N, v: IntLike = _V, target: bool = True
) -> SearchStrategy[Any]:
    """Log-probabilities: rows shifted by their own logsumexp (so it is within rounding of 0), or ties at -log V."""
    return region("log_normalized", dtype=dtype, n=n, v=v, target=target)


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
