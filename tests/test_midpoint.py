"""The integer rounding check of the compiled kernels (``near_midpoint32``) against the float one (``decided32``).

``near_midpoint32`` may flag more than it must (the kernels then run the float test), never less: every
value it passes must round, with every number within its bound, to one float32.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from tinyops.kernels.rounding import decided32, midpoint_reach, near_midpoint32


@numba.njit
def misses(v: Any, rel: float) -> Any:
    """Per value: passed by the integer check, yet not decided by the float one (must never happen)."""
    reach = midpoint_reach(rel)
    out = np.zeros(v.shape[0], np.bool_)
    for j in range(v.shape[0]):
        out[j] = not near_midpoint32(v[j], reach) and not decided32(v[j], rel * abs(v[j]))
    return out


@numba.njit
def flags(v: Any, rel: float) -> Any:
    reach = midpoint_reach(rel)
    out = np.zeros(v.shape[0], np.bool_)
    for j in range(v.shape[0]):
        out[j] = near_midpoint32(v[j], reach)
    return out


def near_boundaries(rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """float64 values a few float64 ULPs around float32 midpoints, powers of 2 and float32's subnormals."""
    f = rng.standard_normal(20_000).astype(np.float32)
    f = np.concatenate([f, np.ldexp(f[:2000], -130), np.ldexp(f[:2000], -145), np.float32([2.0**-126, 1.0])])
    lo, hi = f.astype(np.float64), np.nextafter(f, np.float32(np.inf)).astype(np.float64)
    mid = (lo + hi) / 2  # exact: a float32 midpoint
    steps = rng.integers(-300, 301, mid.shape[0])
    out = [mid + steps * np.spacing(mid), lo + steps * np.spacing(lo), -mid, 0.0 * mid]
    return np.concatenate([*out, np.array([np.inf, -np.inf, 2.0**-149 * 0.5, 2.0**-149 * 1.5])])


def test_the_integer_check_never_passes_an_undecided_value() -> None:
    v = near_boundaries(np.random.default_rng(0))
    for rel in (2.0**-52, 70 * 2.0**-53, 2.0**-40):
        assert not misses(v, rel).any(), rel


def test_the_integer_check_flags_midpoints_and_passes_far_values() -> None:
    rng = np.random.default_rng(1)
    f = rng.standard_normal(1000).astype(np.float32)
    lo, hi = f.astype(np.float64), np.nextafter(f, np.float32(np.inf)).astype(np.float64)
    assert flags((lo + hi) / 2, 70 * 2.0**-53).all()  # a midpoint is never decided
    assert not flags(lo + (hi - lo) / 4, 70 * 2.0**-53).any()  # a quarter ULP away is, with this bound
