"""Accuracy in ULPs: the exact reference and the ULP measure themselves, then the ULP bounds of the ops.

The reference (``tinyops.testing.exact``) is checked against independent mpmath formulas, against float64
on benign inputs and against the identities it must satisfy; ``ulp_error`` against hand-worked cases
(powers of two, subnormals, infinities, nan, double rounding). The bounds below then pin the accuracy of
the default kernels on the hard regions of ``tinyops.testing.strategies``.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from typing import Any

import mpmath
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import tinyops
from tinyops.testing import bounds, exact, regions
from tinyops.testing import strategies as ts

from .oracle import budget

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
Array = Any


def mp(v: float) -> Any:
    return mpmath.mpf(float(v))


def naive_lse(row: Array) -> Any:
    """``log(sum(exp(x)))`` straight from the definition, at 300 digits (fine for benign rows)."""
    with mpmath.workdps(300):
        return mpmath.log(mpmath.fsum(mpmath.exp(mp(v)) for v in row))


def rel_diff(a: Any, b: Any) -> float:
    with mpmath.workdps(300):
        return float(abs(a - b) / abs(b)) if b != 0 else float(abs(a))


# ----------------------------------------------------------------------------- the reference


def test_reference_known_values() -> None:
    with mpmath.workdps(100):
        log2, log3 = mpmath.log(2), mpmath.log(3)
        ref = exact.reference(np.array([[0.0, 0.0], [5.5, -np.inf]], dtype=np.float32), np.array([1, 0]))
        assert rel_diff(ref.lse[0], log2) < 1e-70
        assert ref.lse[1] == 5.5 and ref.loss[1] == 0  # one finite class: probability 1 exactly
        assert rel_diff(ref.loss[0], log2) < 1e-70
        assert ref.softmax[0, 0] == mpmath.mpf(0.5) and ref.grad[0, 1] == -0.5 and ref.grad[0, 0] == 0.5
        assert ref.softmax[1, 1] == 0 and ref.log_softmax[1, 1] == -mpmath.inf and ref.grad[1, 1] == 0
        # softmax of (0, ln 3) is (1/4, 3/4) up to the rounding of ln 3 to float64
        x = np.array([0.0, float(log3)])
        sm = exact.softmax(x)
        expected = mpmath.exp(mp(x[1])) / (1 + mpmath.exp(mp(x[1])))
        assert rel_diff(sm[1], expected) < 1e-70


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("gap", [1.0, 20.0, 87.0, 103.0, 300.0, 700.0, 740.0])
def test_reference_confident_loss_keeps_every_digit(dtype: np.dtype[Any], gap: float) -> None:
    """loss and target gradient of ``(x_t, x_t - gap, x_t - gap - 1)``: log1p / expm1 of tiny sums."""
    x = np.array([[3.25, 3.25 - gap, 2.25 - gap]], dtype=dtype)
    ref = exact.reference(x, np.array([0]))
    with mpmath.workdps(150):
        a, b, c = (mp(v) for v in x[0])
        s = mpmath.exp(b - a) + mpmath.exp(c - a)
        loss = mpmath.log1p(s)
        assert rel_diff(ref.loss[0], loss) < 1e-70
        assert rel_diff(ref.grad[0, 0], -s / (1 + s)) < 1e-70
        assert rel_diff(ref.grad[0, 1], mpmath.exp(b - a) / (1 + s)) < 1e-70
        assert rel_diff(ref.log_softmax[0, 0], -loss) < 1e-70


def test_reference_target_not_the_max() -> None:
    x = np.array([[0.5, 40.0, -3.0], [2.0, 2.0, 1.0]])
    ref = exact.reference(x, np.array([0, 1]))  # second row: a tie at the max, target the second copy
    for n, t in enumerate([0, 1]):
        lse = naive_lse(x[n])
        assert rel_diff(ref.lse[n], lse) < 1e-70
        with mpmath.workdps(300):
            assert rel_diff(ref.loss[n], lse - mp(x[n, t])) < 1e-70
            p_t = mpmath.exp(mp(x[n, t]) - lse)
            assert rel_diff(ref.grad[n, t], p_t - 1) < 1e-70


@settings(max_examples=budget(0.15, 30))  # 300-digit references
@given(
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
    st.sampled_from([F32, F64]),
    st.sampled_from([1e-3, 1.0, 30.0]),
)
def test_reference_matches_definition_and_float64(V: int, seed: int, dtype: np.dtype[Any], scale: float) -> None:
    """Benign rows: the definition at 300 digits agrees to 1e-70, scipy's float64 to 1e-13."""
    import scipy.special as scipy_special
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal((2, V))).astype(dtype)
    target = rng.integers(0, V, size=2)
    ref = exact.reference(x, target)
    x64 = x.astype(np.float64)
    for n in range(2):
        assert rel_diff(ref.lse[n], naive_lse(x[n])) < 1e-70
    np.testing.assert_allclose(ref.lse.astype(np.float64), scipy_special.logsumexp(x64, axis=1), rtol=1e-13)
    np.testing.assert_allclose(ref.softmax.astype(np.float64), scipy_special.softmax(x64, axis=1), rtol=1e-12)
    np.testing.assert_allclose(
        ref.log_softmax.astype(np.float64), scipy_special.log_softmax(x64, axis=1), rtol=1e-12, atol=1e-12
    )
    loss64 = scipy_special.logsumexp(x64, axis=1) - x64[np.arange(2), target]
    np.testing.assert_allclose(ref.loss.astype(np.float64), loss64, rtol=1e-10, atol=1e-13)
    # identities, to far below float64: softmax sums to 1, gradient rows sum to 0, exp(log_softmax) = softmax
    with mpmath.workdps(80):
        for n in range(2):
            assert abs(mpmath.fsum(ref.softmax[n]) - 1) < 1e-70
            assert abs(mpmath.fsum(ref.grad[n])) < 1e-70
            pairs = zip(ref.log_softmax[n], ref.softmax[n], strict=True)
            assert all(rel_diff(mpmath.exp(a), b) < 1e-70 for a, b in pairs)
    # the single-quantity functions are the same numbers
    assert np.array_equal(exact.logsumexp(x), ref.lse)
    assert np.array_equal(exact.cross_entropy(x, target), ref.loss)
    assert np.array_equal(exact.cross_entropy_grad(x, target), ref.grad)


def test_reference_nonfinite_rows() -> None:
    inf, nan = np.inf, np.nan
    x = np.array([[-inf, -inf], [1.0, inf], [nan, 1.0], [-inf, 2.0]])
    ref = exact.reference(x, np.array([0, 0, 1, 0]))
    assert ref.lse[0] == -mpmath.inf and ref.lse[1] == mpmath.inf and mpmath.isnan(ref.lse[2])
    assert ref.lse[3] == 2
    for n in range(3):
        assert mpmath.isnan(ref.loss[n])
        assert all(mpmath.isnan(v) for v in [*ref.softmax[n], *ref.log_softmax[n], *ref.grad[n]])
    assert ref.loss[3] == mpmath.inf and ref.grad[3, 0] == -1 and ref.grad[3, 1] == 1  # masked target
    assert ref.softmax[3, 0] == 0 and ref.log_softmax[3, 0] == -mpmath.inf and ref.log_softmax[3, 1] == 0


def test_reference_dloss_and_mean() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    target = rng.integers(0, 4, size=5)
    dloss = rng.uniform(-2, 2, size=5).astype(np.float32)
    g = exact.cross_entropy_grad(x, target)
    gw = exact.cross_entropy_grad(x, target, dloss)
    with mpmath.workdps(80):
        for n in range(5):
            for c in range(4):
                assert rel_diff(gw[n, c], g[n, c] * mp(dloss[n])) < 1e-70
        loss = exact.cross_entropy(x, target)
        assert rel_diff(exact.cross_entropy_mean(x, target), mpmath.fsum(loss) / 5) < 1e-70
    assert mpmath.isnan(exact.cross_entropy_mean(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)))


def test_reference_bad_input() -> None:
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        exact.logsumexp(np.arange(3))
    with pytest.raises(ValueError, match="x must be 1 or 2-D"):
        exact.softmax(np.zeros((2, 2, 2)))
    with pytest.raises(IndexError, match=r"target must be in \[0, 3\)"):
        exact.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"target must have shape \(2,\)"):
        exact.cross_entropy(np.zeros((2, 3)), np.array([0]))
    with pytest.raises(ValueError, match="dloss must have shape"):
        exact.cross_entropy_grad(np.zeros((2, 3)), np.array([0, 1]), np.ones(3))
    with pytest.raises(TypeError, match="dtype must be a float dtype"):
        exact.ulp_error(np.ones(2), np.ones(2), np.int32)


# ----------------------------------------------------------------------------- ulp_error and round_to


def test_ulp_error_hand_worked() -> None:
    one = np.array([mpmath.mpf(1)], dtype=object)
    below_one = np.nextafter(np.float32(1), np.float32(0))
    assert exact.ulp_error(np.float32(1), one, F32)[0] == 0
    assert exact.ulp_error(np.nextafter(np.float32(1), np.float32(2)), one, F32)[0] == 1  # ulp(1) = 2**-23
    assert exact.ulp_error(below_one, one, F32)[0] == 0.5  # the gap below a power of two is half an ulp
    with mpmath.workprec(200):
        third = np.array([mpmath.mpf(1) / 3], dtype=object)
        quarter_ulp = np.array([1 + mpmath.mpf(2) ** -25], dtype=object)
        tiny = np.array([mpmath.mpf(2) ** -140 * mpmath.mpf(1.3)], dtype=object)  # float32 subnormal range
    # a correctly rounded third is within half an ulp, its neighbour within 1.5
    y = np.float32(1 / 3)
    err = exact.ulp_error(np.array([y, np.nextafter(y, np.float32(1))]), third, F32)
    assert 0 < err[0] <= 0.5 and 0.5 <= err[1] <= 1.5
    assert exact.ulp_error(np.float32(1), quarter_ulp, F32)[0] == 0.25
    assert exact.ulp_error(np.float64(1), quarter_ulp, F64)[0] == pytest.approx(2.0**-25 / 2.0**-52)
    # subnormals: the unit is the smallest subnormal, 2**-149 in float32
    sub = np.float32(2.0**-140 * 1.3)
    assert exact.ulp_error(sub, tiny, F32)[0] <= 0.5
    assert exact.ulp_error(np.float32(0), tiny, F32)[0] == pytest.approx(1.3 * 2.0**9)
    zero = np.array([mpmath.mpf(0)], dtype=object)
    assert exact.ulp_error(np.float32(0), zero, F32)[0] == 0
    assert exact.ulp_error(np.float32(2.0**-149), zero, F32)[0] == 1
    # plain float64 "exact" values are accepted too, and any float dtype is a unit (float16: ulp(1) = 2**-10)
    assert exact.ulp_error(np.float32(1), np.float64(1 + 2.0**-23), F32) == 1
    assert exact.ulp_error(np.float16(1), quarter_ulp, np.float16)[0] == pytest.approx(2.0**-25 / 2.0**-10)


def test_ulp_error_special_values() -> None:
    with mpmath.workprec(100):
        ex = np.array([mpmath.inf, -mpmath.inf, mpmath.nan, mpmath.mpf("1e39"), mpmath.mpf("1e39"), 2], dtype=object)
    got = np.array([np.inf, np.inf, np.nan, np.inf, 3.0e38, np.nan], dtype=np.float32)
    err = exact.ulp_error(got, ex, F32)
    assert err[0] == 0 and err[1] == np.inf and err[2] == 0 and err[3] == 0 and err[5] == np.inf
    top_ulp = 2.0**104  # the gap below float32's max
    assert err[4] == pytest.approx((1e39 - float(np.float32(3.0e38))) / top_ulp)
    assert exact.ulp_error(np.float32(1), np.array([mpmath.nan], dtype=object), F32)[0] == np.inf
    assert exact.ulp_error(np.float32(np.inf), np.array([mpmath.mpf(1)], dtype=object), F32)[0] == np.inf


def test_round_to_double_rounding() -> None:
    """1 + 2**-24 + 2**-80 rounds up in float32, though its float64 value (1 + 2**-24) is a tie that rounds down."""
    with mpmath.workprec(200):
        v = np.array([1 + mpmath.mpf(2) ** -24 + mpmath.mpf(2) ** -80, 1 + mpmath.mpf(2) ** -24], dtype=object)
        w = np.array([-(1 + mpmath.mpf(2) ** -24 + mpmath.mpf(2) ** -80)], dtype=object)
    r = exact.round_to(v, F32)
    assert r.dtype == F32
    assert r[0] == np.float32(1 + 2.0**-23) and r[1] == np.float32(1)
    assert exact.round_to(w, F32)[0] == -np.float32(1 + 2.0**-23)
    assert exact.round_to(v, F64)[0] == 1 + 2.0**-24
def test_testing_package_imports_lazily_and_explains_missing_extras() -> None:
    code = (
        "import sys\n"
        "import tinyops.testing\n"
        "assert 'mpmath' not in sys.modules and 'hypothesis' not in sys.modules, sorted(sys.modules)\n"
        "sys.modules['mpmath'] = None\n"
        "sys.modules['hypothesis'] = None\n"
        "for name, extra in [('exact', 'mpmath'), ('strategies', 'hypothesis')]:\n"
        "    try:\n"
        "        __import__('tinyops.testing.' + name)\n"
        "    except ImportError as e:\n"
        "        assert extra in str(e), str(e)\n"
        "    else:\n"
        "        raise AssertionError(name + ' imported without ' + extra)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------- ULP bounds of the ops
#
# Bounds for float32 (worst case, ULP of the exact value rounded to float32): half an ULP, correctly
# rounded, for the per-sample cross-entropy, its gradient on every entry whose exact value is a normal
# number, logsumexp, log_softmax, softmax and the mean (tests/test_rounding.py holds the decision behind
# it). float64 aims at <= 8, but has no wider type inside: a sum of
# V terms rounds about log2(V) times, so it is held to 8 + 2 log2(V) ULP, on exact values that are normal
# numbers (a float64 loss below 2.2e-308 is a sum of subnormal exps, each rounded to 4.9e-324).
# logsumexp, ``m + log1p(r)``, cancels when it is near 0 while the row max m is not: float64 gets, on
# top of the bound, the float64 rounding of its two terms (see lse_slack; float32 is decided exactly).

BOUNDS = bounds.FLOAT32  # the library's documented bounds, one table (tinyops/testing/bounds.py)


def assert_ulps(
    name: str, got: Array, ref: Array, dtype: np.dtype[Any], limit: Any, mask: Array | None = None
) -> None:
    """Every element of ``got`` (where ``mask``) within ``limit`` ULPs (a number or an array) of the exact ``ref``."""
    err = exact.ulp_error(got, ref, dtype)
    if mask is not None:
        err = np.where(mask, err, 0.0)
    over = err - np.broadcast_to(limit, err.shape)
    if err.size and over.max() > 0:
        i = np.unravel_index(int(np.argmax(over)), err.shape)
        raise AssertionError(
            f"{name} ({dtype}): {err[i]:.4g} ULP > {np.broadcast_to(limit, err.shape)[i]:.4g} at {i}: "
            f"got {np.asarray(got)[i]!r}, exact {float(np.broadcast_to(ref, err.shape)[i]):.17g}"
        )


def bound(quantity: str, dtype: np.dtype[Any], V: int = 1) -> float:
    b = bounds.ulp_bound(quantity, dtype, V)
    assert b is not None, quantity
    return b


def normal(ref: Array, dtype: np.dtype[Any]) -> Array:
    """Where the exact value, rounded to dtype, is a normal number (or an infinity, kept to be compared)."""
    y = np.abs(exact.round_to(ref, dtype))
    return np.isinf(y) | (y >= np.finfo(dtype).tiny)


lse_slack = bounds.lse_slack


@functools.lru_cache(maxsize=512)
def _cached_reference(dtype: str, shape: tuple[int, ...], data: bytes, target: bytes) -> exact.Reference:
    logits = np.frombuffer(data, dtype=dtype).reshape(shape)
    return exact.reference(logits, np.frombuffer(target, dtype=np.int64))


def cached_reference(logits: Array, target: Array) -> exact.Reference:
    """The exact reference, computed once per example: the parametrized tests below draw the same examples."""
    t = np.ascontiguousarray(target, dtype=np.int64)
    return _cached_reference(logits.dtype.str, logits.shape, np.ascontiguousarray(logits).tobytes(), t.tobytes())


def check_quantity(quantity: str, logits: Array, target: Array, seed: int) -> None:
    """Compute one quantity with tinyops' default kernels and hold it to its bound against the reference."""
    dtype = logits.dtype
    b = bound(quantity, dtype, logits.shape[0] if quantity == "mean" else logits.shape[-1])
    if quantity == "mean":
        loss, _ = tinyops.cross_entropy_forward(logits, target, reduction="mean")
        assert_ulps("mean loss", loss, np.array(exact.cross_entropy_mean(logits, target), dtype=object), dtype, b)
        return
    ref = cached_reference(logits, target)
    if quantity == "grad":  # for a random upstream gradient: exact dlogits = dloss[:, None] * (softmax - onehot)
        rng = np.random.default_rng(seed)
        dloss = (rng.uniform(0.5, 2.0, size=target.shape) * rng.choice([-1, 1], size=target.shape)).astype(dtype)
        _, cache = tinyops.cross_entropy_forward(logits, target, reduction="none")
        dlogits = tinyops.cross_entropy_backward(dloss, cache)
        assert ref.grad is not None
        with mpmath.workprec(exact.PREC):
            ref_grad = ref.grad * np.array([mp(w) for w in dloss], dtype=object)[:, None]
        assert_ulps("dlogits", dlogits, ref_grad, dtype, b, mask=normal(ref_grad, dtype))
        return
    got = {
        "lse": lambda: tinyops.logsumexp(logits, axis=-1),
        "log_softmax": lambda: tinyops.log_softmax(logits, axis=-1),
        "softmax": lambda: tinyops.softmax(logits, axis=-1),
        "loss": lambda: tinyops.cross_entropy_forward(logits, target, reduction="none")[0],
    }[quantity]()
    want = {"lse": ref.lse, "log_softmax": ref.log_softmax, "softmax": ref.softmax, "loss": ref.loss}[quantity]
    limit = b + lse_slack(logits, ref.lse, dtype) if quantity == "lse" else b
    assert_ulps(quantity, got, want, dtype, limit, mask=normal(want, dtype) if dtype == F64 else None)


QUANTITIES = ["loss", "grad", "lse", "log_softmax", "softmax"]
HARD = {dt: ts.hard_logits(dtype=dt) for dt in (F32, F64)}  # built once: building a strategy is not free
MANY_ROWS = {dt: ts.hard_logits(dtype=dt, n=st.integers(1, 100), v=st.integers(2, 6)) for dt in (F32, F64)}
LONG = ts.long_row(dtype=F32, v=50_257)
LOG_NORMALIZED = {dt: ts.log_normalized(dtype=dt) for dt in (F32, F64)}


def cases(quantities: list[str], dtypes: tuple[np.dtype[Any], ...] = (F32, F64)) -> list[Any]:
    return [pytest.param(q, dt, id=f"{q}-{dt.name}") for q in quantities for dt in dtypes]


@pytest.mark.parametrize(("quantity", "dtype"), cases(QUANTITIES))
@given(data=st.data())
def test_ulp_bounds_hard_regions(quantity: str, dtype: np.dtype[Any], data: st.DataObject) -> None:
    logits, target = data.draw(HARD[dtype], label="logits, target")
    check_quantity(quantity, logits, target, data.draw(st.integers(0, 2**16), label="dloss seed"))


@pytest.mark.parametrize(("quantity", "dtype"), cases(["mean"]))
@given(data=st.data())
def test_ulp_bound_mean_reduction(quantity: str, dtype: np.dtype[Any], data: st.DataObject) -> None:
    """Many short rows, so that the sum of the losses is what is tested."""
    logits, target = data.draw(MANY_ROWS[dtype])
    check_quantity(quantity, logits, target, 0)


@pytest.mark.parametrize(("quantity", "dtype"), cases(QUANTITIES, (F32,)))
@settings(max_examples=budget(0.01, 2), phases=[Phase.explicit, Phase.reuse, Phase.generate])  # ~1 s a row
@given(data=st.data())
def test_ulp_bounds_long_rows(quantity: str, dtype: np.dtype[Any], data: st.DataObject) -> None:
    """A row of GPT-2's vocabulary size (V = 50,257), confident or not; two examples, the reference is slow."""
    logits, target = data.draw(LONG)
    check_quantity(quantity, logits, target, data.draw(st.integers(0, 2**16)))


@pytest.mark.parametrize(("quantity", "dtype"), cases(QUANTITIES))
@given(data=st.data())
def test_ulp_bounds_log_normalized(quantity: str, dtype: np.dtype[Any], data: st.DataObject) -> None:
    """Rows whose logsumexp is within rounding of 0 (log-probabilities, ties at -log V): the bounds hold,
    logsumexp's with the float64 rounding of its two cancelling terms (lse_slack) on top."""
    logits, target = data.draw(LOG_NORMALIZED[dtype], label="logits, target")
    check_quantity(quantity, logits, target, data.draw(st.integers(0, 2**16), label="dloss seed"))


@pytest.mark.parametrize("V", [2, 3, 27, 1000, 2009])
def test_lse_near_zero_within_an_ulp(V: int) -> None:
    """A tie at ``-log V`` rounded: ``logsumexp = c + log V`` is the rounding error of c (-4.4e-16 in float64
    for V = 2009), close to the double-double's own rounding of the terms (2^-100 |c|). The compiled layer
    sums such a row in triple-double: within 1 ULP. (In float32 the same tie, V = 2331, 2.8e-11, is
    correctly rounded: tests/test_rounding.py.)"""
    x = np.full(V, -np.log(V), dtype=np.float64)
    assert_ulps("logsumexp", tinyops.logsumexp(x)[None], exact.logsumexp(x[None]), F64, 1.0)


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="logsumexp near 0 cancels in m + log1p(r): double-double is not enough"
)
def test_reference_lse_near_zero_misses_the_ulp_target() -> None:
    """The reference layer computes the same tie (V = 2009) in double-double, whose absolute error is
    tens of ULP of the result: over its float64 bound, ``8 + 2 log2 V`` ULP."""
    V = 2009
    x = np.full(V, -np.log(V), dtype=np.float64)
    got = tinyops.logsumexp(x, backend="reference")[None]
    assert_ulps("logsumexp", got, exact.logsumexp(x[None]), F64, bound("lse", F64, V))


# ----------------------------------------------------------------------------- the strategies themselves

REGION_STRATEGIES = {
    "benign": ts.benign,
    "confident": ts.confident,
    "near_tie": ts.near_tie,
    "wide_scale": ts.wide_scale,
    "tiny_scale": ts.tiny_scale,
    "offset": ts.offset,
    "masked": ts.masked,
    "exp_overflow": ts.exp_overflow,
    "exp_underflow": ts.exp_underflow,
    "log_normalized": ts.log_normalized,
}


@pytest.mark.parametrize("region", list(REGION_STRATEGIES))
@settings(max_examples=budget(0.125, 25))
@given(data=st.data())
def test_strategies_draw_their_region(region: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from([F32, F64]))
    logits, target = data.draw(REGION_STRATEGIES[region](dtype=dtype, n=3, v=st.integers(2, 9)))
    assert logits.dtype == dtype and logits.ndim == 2 and logits.shape[0] == 3 and 2 <= logits.shape[1] <= 9
    assert target.dtype == np.int64 and target.shape == (3,) and np.all((target >= 0) & (target < logits.shape[1]))
    rows = np.arange(3)
    assert not np.isnan(logits).any() and not np.isposinf(logits).any()
    assert np.all(np.isfinite(logits[rows, target]))  # masks never hide the target
    finite = np.isfinite(logits).all()
    if region != "masked":
        assert finite
    others = np.where(np.eye(logits.shape[1], dtype=bool)[target], -np.inf, logits)
    if region == "confident":
        assert np.all(logits[rows, target] >= others.max(axis=1) + 0.99)
    elif region == "offset":
        assert np.all((np.abs(logits) > 1e4 - 100) & (np.abs(logits) < 1e4 + 100))
    elif region == "exp_overflow":
        top = np.log(np.finfo(dtype).max)
        assert np.all(np.abs(logits - top) < 30)
    elif region == "exp_underflow":
        assert np.all(others.max(axis=1) - logits[rows, target] < 0.5 * np.log(np.finfo(dtype).tiny))
    elif region == "log_normalized":
        lse = np.asarray(exact.logsumexp(logits).astype(np.float64))
        top_ulp = np.spacing(np.abs(logits).max(axis=1)).astype(np.float64)  # in the dtype
        assert np.all(np.abs(lse) <= 4 * top_ulp * logits.shape[1])  # only the rounding of x - lse(x) is left
    elif region == "near_tie":
        spread = logits.max(axis=1) - logits.min(axis=1)
        assert np.all(spread <= 16 * np.spacing(np.abs(logits).max(axis=1)))
    logits_only = data.draw(REGION_STRATEGIES[region](dtype=dtype, n=1, v=4, target=False))
    assert isinstance(logits_only, np.ndarray) and logits_only.shape == (1, 4)


def test_regions_reject_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="dtype must be float16, float32 or float64, got int32"):
        regions.benign(rng, np.int32, 2, 3)
    with pytest.raises(ValueError, match="v must be >= 1, got 0"):
        regions.confident(rng, F32, 2, 0)
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        regions.masked(rng, F32, -1, 3)


# ----------------------------------------------------------------------------- the bounds have teeth


def test_bounds_catch_the_textbook_kernel() -> None:
    """``lse - x[t]`` and ``softmax - onehot`` in float32, on a confident row: the check must fail."""
    x = np.array([[30.0, 10.5, 9.25, -3.0], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    t = np.array([0, 3])
    ref = exact.reference(x, t)
    m = x.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    with pytest.raises(AssertionError, match="per-sample loss"):
        assert_ulps("per-sample loss", lse - x[np.arange(2), t], ref.loss, F32, BOUNDS["loss"])
    grad = np.exp(x - m) / np.exp(x - m).sum(axis=1, keepdims=True)
    grad[np.arange(2), t] -= 1
    with pytest.raises(AssertionError, match="dlogits"):
        assert_ulps("dlogits", grad, ref.grad, F32, BOUNDS["grad"])
