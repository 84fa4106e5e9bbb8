"""Correct rounding of the 'accurate' softmax family and cross-entropy: the rounding decision, the
double-double fallback, and the results against the exact (mpmath) reference.

- the double-double exp, expm1 and log1p of both layers against mpmath, and the error constants the
  decision relies on (exp64, NumPy's exp, libm's log1p) against mpmath;
- float32: every quantity (loss, lse, log_softmax, softmax, gradient, mean, sum) within half an ULP
  (correctly rounded) on every region of tinyops.testing.regions, in both layers, which then agree bit
  for bit, and for every thread count; and a hypothesis search for a counterexample;
- float64: the bounds the library states, on the same regions;
- the fallback: no row redone on random logits, the cancelling logsumexp of log-normalized rows redone;
  the decision and the double-double rounding on values built next to float32 midpoints; the mean's
  own fallback.
"""

from __future__ import annotations

import fractions
import math
from typing import Any

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyops
from tests.oracle import budget
from tinyops.kernels import cross_entropy as kce
from tinyops.kernels import dd as kdd
from tinyops.kernels import exp as kexp
from tinyops.kernels import rounding
from tinyops.kernels import softmax as ksm
from tinyops.kernels import td as ktd
from tinyops.ops import _dd
from tinyops.ops import cross_entropy as oce
from tinyops.ops import softmax as osm
from tinyops.testing import exact, regions
from tinyops.testing import strategies as ts

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
BACKENDS = ("reference", "compiled")
Array = Any


def mp(v: float) -> Any:
    return mpmath.mpf(float(v))


def rel_err(hi: Array, lo: Array, exact_values: list[Any]) -> float:
    """The worst relative error of the double-doubles ``hi + lo`` against exact mpf values (256 bits)."""
    worst = mpmath.mpf(0)
    with mpmath.workprec(256):
        for h, l_, e in zip(hi.tolist(), lo.tolist(), exact_values, strict=True):
            if e != 0:
                worst = max(worst, abs((mp(h) + mp(l_)) - e) / abs(e))
    return float(worst)


# ----------------------------------------------------------------------------- double-double and the constants


def test_double_double_exp_expm1_log1p_against_mpmath() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-660, 0, 150), rng.uniform(-1, 1, 100), -rng.exponential(1e-3, 50)])
    xl = x * rng.uniform(-1, 1, x.size) * 2.0**-54
    r = np.concatenate([np.exp(rng.uniform(-90, 11, 250)), [2.0**-40, 2.0**-41]])
    rl = r * rng.uniform(-1, 1, r.size) * 2.0**-54
    with mpmath.workprec(256):
        exp_x = [mpmath.exp(mp(a) + mp(b)) for a, b in zip(x, xl, strict=True)]
        expm1_x = [mpmath.expm1(mp(a)) for a in x]
        log1p_r = [mpmath.log1p(mp(a) + mp(b)) for a, b in zip(r, rl, strict=True)]
    assert rel_err(*_dd.dd_exp(x, xl), exp_x) < 2.0**-96
    assert rel_err(*_dd.dd_expm1(x, 0 * x), expm1_x) < 2.0**-96
    assert rel_err(*_dd.dd_log1p(r, rl), log1p_r) < 2.0**-92
    oh, ol = np.empty_like(x), np.empty_like(x)
    kdd.dd_exp_array(x, xl, oh, ol)
    assert rel_err(oh, ol, exp_x) < 2.0**-96
    assert np.array_equal(oh, _dd.dd_exp(x, xl)[0]) and np.array_equal(ol, _dd.dd_exp(x, xl)[1])
    oh, ol = np.empty_like(r), np.empty_like(r)
    kdd.dd_log1p_array(r, rl, oh, ol)
    assert rel_err(oh, ol, log1p_r) < 2.0**-92
    # scaled: exp(x) 2^900 of arguments whose exp is below the normal range
    y = rng.uniform(-1300, -700, 50)
    with mpmath.workprec(256):
        scaled = [mpmath.exp(mp(a)) * mpmath.mpf(2) ** 900 for a in y]
    assert rel_err(*_dd.dd_exp(y, 0 * y, 900), scaled) < 2.0**-96


def test_triple_double_exp_against_mpmath() -> None:
    """td_exp within 2^-145 of exp(x), relatively, wherever the result is far from the subnormal range."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-600, 700, 300), rng.uniform(-1, 1, 200), [0.0, -0.0, 2.0**-60, -2.0**-60]])
    out = np.empty((x.size, 3))
    ktd.td_exp_array(x, out)
    with mpmath.workprec(320):
        worst = max(abs(mpmath.fsum(mp(v) for v in o) / mpmath.exp(mp(a)) - 1) for a, o in zip(x, out, strict=True))
    assert worst < mpmath.mpf(2) ** -145, float(mpmath.log(worst, 2))


@pytest.mark.parametrize("V", [1, 2, 27, 300])
def test_triple_double_logsumexp_of_any_negative_row(V: int) -> None:
    """logsumexp_cancelling on rows with a negative max, cancelling or not (spread from 1e-3 to 30, ties,
    -inf entries): within half an ULP and a hair, against mpmath."""
    rng = np.random.default_rng(V)
    for spread in (1e-3, 0.3, 3.0, 30.0):
        x = rng.standard_normal((8, V)) * spread
        x -= x.max(axis=1, keepdims=True) + rng.exponential(1.0, (8, 1))
        x[0] = x[0, 0]  # a tie of V entries
        x[1, : V // 2] = -np.inf
        got = np.array([ktd.logsumexp_cancelling(row) for row in x])
        err = exact.ulp_error(got, exact.logsumexp(x), F64)
        assert err.max() <= 0.5 + 2.0**-20, (spread, err.max())


def test_error_constants_of_the_decision() -> None:
    """The float64 exp and log1p the decision bounds by EXP_ERR and LOG1P_ERR (2 u each)."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-700, 0, 1500), rng.uniform(-0.4, 0.4, 500)])
    r = np.exp(rng.uniform(-60, 11, 1500))
    got = np.empty_like(x)
    kexp.exp64_array(x, got)
    with mpmath.workprec(200):
        ex = [mpmath.exp(mp(v)) for v in x]
        lx = [mpmath.log1p(mp(v)) for v in r]
    zero = np.zeros_like(x)
    assert rel_err(got, zero, ex) <= rounding.EXP_ERR
    assert rel_err(np.exp(x), zero, ex) <= osm.EXP_ERR
    assert rel_err(np.log1p(r), np.zeros_like(r), lx) <= osm.LOG1P_ERR
    assert rel_err(np.array([math.log1p(v) for v in r]), np.zeros_like(r), lx) <= rounding.LOG1P_ERR


# ----------------------------------------------------------------------------- float32: correctly rounded


def all_quantities(x: Array, t: Array, dloss: Array, backend: str, threads: int = 1) -> dict[str, Array]:
    loss, cache = tinyops.cross_entropy_forward(x, t, reduction="none", backend=backend, threads=threads)
    return {
        "loss": loss,
        "grad": tinyops.cross_entropy_backward(dloss, cache),
        "lse": tinyops.logsumexp(x, backend=backend, threads=threads),
        "lse_forward": tinyops.logsumexp_forward(x, backend=backend, threads=threads)[0],
        "lse_probs": tinyops.logsumexp_forward(x, backend=backend, threads=threads)[1].probs,
        "log_softmax": tinyops.log_softmax(x, backend=backend, threads=threads),
        "softmax": tinyops.softmax(x, backend=backend, threads=threads),
        "mean": tinyops.cross_entropy(x, t, reduction="mean", backend=backend, threads=threads),
        "sum": tinyops.cross_entropy(x, t, reduction="sum", backend=backend, threads=threads),
    }


def exact_quantities(x: Array, t: Array, dloss: Array) -> dict[str, Array]:
    ref = exact.reference(x, t)
    assert ref.loss is not None and ref.grad is not None
    with mpmath.workprec(exact.PREC + 64):
        grad = ref.grad * np.array([mp(w) for w in dloss], dtype=object)[:, None]
        total = mpmath.fsum(ref.loss.tolist())
        mean = total / len(t)
    return {
        "loss": ref.loss,
        "grad": grad,
        "lse": ref.lse,
        "lse_forward": ref.lse,
        "lse_probs": ref.softmax,
        "log_softmax": ref.log_softmax,
        "softmax": ref.softmax,
        "mean": np.array(mean, dtype=object),
        "sum": np.array(total, dtype=object),
    }


def worst_ulps(got: dict[str, Array], want: dict[str, Array], dtype: np.dtype[Any]) -> dict[str, float]:
    """Worst ULP error per quantity; gradient entries only where their exact value is a normal number."""
    out = {}
    for q, w in want.items():
        err = exact.ulp_error(got[q], w, dtype)
        if q == "grad" or dtype == F64:
            y = np.abs(exact.round_to(w, dtype))
            err = np.where(np.isinf(y) | (y >= np.finfo(dtype).tiny), err, 0.0)
        out[q] = float(err.max()) if err.size else 0.0
    return out


def region_case(name: str, dtype: np.dtype[Any], seed: int) -> tuple[Array, Array, Array]:
    rng = np.random.default_rng(seed)
    n, v = (2, 3000) if name == "long_row" else (12, 24)
    x, t = regions.BUILDERS[name](rng, dtype, n, v)
    dloss = (rng.uniform(0.5, 2.0, n) * rng.choice([-1, 1], n)).astype(dtype)
    return x, t, dloss


@pytest.mark.parametrize("name", regions.REGIONS)
def test_float32_correctly_rounded_on_every_region(name: str) -> None:
    x, t, dloss = region_case(name, F32, 7)
    want = exact_quantities(x, t, dloss)
    got = {be: all_quantities(x, t, dloss, be) for be in BACKENDS}
    for be in BACKENDS:
        worst = worst_ulps(got[be], want, F32)
        assert max(worst.values()) <= 0.5, (be, worst)
    for q in want:  # both correctly rounded: the same bits, and the same for two threads
        assert np.array_equal(got["reference"][q], got["compiled"][q], equal_nan=True), q
    two = all_quantities(x, t, dloss, "compiled", threads=2)
    for q in want:
        assert np.array_equal(two[q], got["compiled"][q], equal_nan=True), q


HARD32 = ts.hard_logits(dtype=F32, n=st.integers(1, 6), v=st.integers(1, 40))
LOGNORM32 = ts.log_normalized(dtype=F32, n=st.integers(1, 6), v=st.integers(2, 200))


@settings(max_examples=budget(1.0, 20))
@given(case=st.one_of(HARD32, LOGNORM32), seed=st.integers(0, 2**16))
def test_float32_correctly_rounded_search(case: tuple[Array, Array], seed: int) -> None:
    """A worst-case search over the hard regions and log-normalized rows: no quantity off by more than half
    an ULP in either layer (the thorough profile runs 2,000 examples)."""
    x, t = case
    rng = np.random.default_rng(seed)
    dloss = (rng.uniform(0.5, 2.0, t.shape) * rng.choice([-1, 1], t.shape)).astype(F32)
    want = exact_quantities(x, t, dloss)
    for be in BACKENDS:
        worst = worst_ulps(all_quantities(x, t, dloss, be), want, F32)
        assert max(worst.values()) <= 0.5, (be, worst)


# ----------------------------------------------------------------------------- float64: the stated bounds

F64_BOUNDS = {
    "loss": 2.0,
    "lse": 2.0,
    "lse_forward": 2.0,
    "log_softmax": 2.0,
    "softmax": 3.0,
    "lse_probs": 3.0,
    "grad": 3.0,
    "mean": 2.0,
    "sum": 2.0,
}
# the compiled layer carries pairs through every float64 row (exps, the sum, log1p(r), each output rounded
# once; logsumexp near 0 in triple-double): the loss, logsumexp, log_softmax, softmax and the cross-entropy
# gradient within 1 ULP; logsumexp's gradient, dout * softmax, two roundings, within 2
F64_BOUNDS_COMPILED = F64_BOUNDS | dict.fromkeys(("loss", "lse", "lse_forward", "log_softmax", "softmax", "grad"), 1.0)
F64_BOUNDS_COMPILED |= {"lse_probs": 2.0}


@pytest.mark.parametrize("name", regions.REGIONS)
def test_float64_bounds_on_every_region(name: str) -> None:
    """float64 results within F64_BOUNDS ULP (F64_BOUNDS_COMPILED for the compiled layer; exact values that
    are normal numbers). The reference layer's logsumexp near 0 (the log-normalized rows) is held to the
    double-double's absolute error, 2^-100 (|m| + log1p(r)); the compiled layer's, in triple-double, to
    1 ULP as everywhere."""
    x, t, dloss = region_case(name, F64, 8)
    want = exact_quantities(x, t, dloss)
    for be in BACKENDS:
        bounds = F64_BOUNDS_COMPILED if be == "compiled" else F64_BOUNDS
        got = all_quantities(x, t, dloss, be)
        worst = worst_ulps(got, want, F64)
        if name == "log_normalized" and be == "reference":
            lse = want["lse"].astype(np.float64)
            slack = 2.0**-100 * (np.abs(x.max(axis=1)) + 2 * np.log(x.shape[1])) / np.spacing(np.abs(lse))
            for q in ("lse", "lse_forward"):
                err = exact.ulp_error(got[q], want[q], F64)
                assert (err <= bounds[q] + slack).all(), (be, q, err.max())
                worst[q] = 0.0
        assert all(worst[q] <= bounds[q] for q in worst), (be, worst)


HARD64 = ts.hard_logits(dtype=F64, n=st.integers(1, 6), v=st.integers(1, 40))


@settings(max_examples=budget(0.25, 20))
@given(case=HARD64, seed=st.integers(0, 2**16))
def test_float64_compiled_bounds_search(case: tuple[Array, Array], seed: int) -> None:
    """A worst-case search over the hard regions in float64: the compiled layer's per-row quantities within
    F64_BOUNDS_COMPILED. The mean and the sum are left out: NumPy sums the rounded float64 losses, whose
    half-ULP errors add up to a few ULP of the total (they are held on the regions only)."""
    x, t = case
    rng = np.random.default_rng(seed)
    dloss = rng.uniform(0.5, 2.0, t.shape) * rng.choice([-1, 1], t.shape)
    want = exact_quantities(x, t, dloss)
    got = all_quantities(x, t, dloss, "compiled")
    worst = worst_ulps(got, want, F64)
    assert all(worst[q] <= F64_BOUNDS_COMPILED[q] for q in worst if q not in ("mean", "sum")), worst


LOGNORM64 = ts.log_normalized(dtype=F64, n=st.integers(1, 6), v=st.integers(1, 200))


@settings(max_examples=budget(0.25, 20))
@given(case=LOGNORM64, seed=st.integers(0, 2**16))
def test_float64_log_normalized_search(case: tuple[Array, Array], seed: int) -> None:
    """The same search on log-probabilities, where logsumexp cancels to about float64's own rounding of the
    row max (computed in triple-double): every per-row quantity within F64_BOUNDS_COMPILED, the lse that
    cross_entropy returns included."""
    x, t = case
    rng = np.random.default_rng(seed)
    dloss = rng.uniform(0.5, 2.0, t.shape) * rng.choice([-1, 1], t.shape)
    want = exact_quantities(x, t, dloss)
    got = all_quantities(x, t, dloss, "compiled")
    got["ce_lse"] = tinyops.cross_entropy(x, t, reduction="none", return_lse=True)[1]
    want["ce_lse"] = want["lse"]
    worst = worst_ulps(got, want, F64)
    bounds = F64_BOUNDS_COMPILED | {"ce_lse": F64_BOUNDS_COMPILED["lse"]}
    assert all(worst[q] <= bounds[q] for q in worst if q not in ("mean", "sum")), worst


# ----------------------------------------------------------------------------- the fallback fires where it must


def fell_counts(x: Array, t: Array) -> dict[str, int]:
    """Rows the first evaluation did not decide, per quantity and layer: redone in pairs (the compiled
    second tier) or in double-double."""
    out = {}
    for op, name in ((ksm.LSE, "lse"), (ksm.SOFTMAX, "softmax"), (ksm.LOG_SOFTMAX, "log_softmax")):
        out[f"compiled {name}"] = int((ksm.forward_counted(x, op, 1)[2] > 0).sum())
    with np.errstate(all="ignore"):
        s = osm.shifted_rows(x, keep_d=True)
        out["reference lse"] = int((osm.lse_rows(s)[1] > 0).sum())
        out["reference softmax"] = int((osm.softmax_rows_decided(s, np.empty(x.shape, x.dtype))[1] > 0).sum())
        out["reference log_softmax"] = int((osm.log_softmax_rows(s)[1] > 0).sum())
    g = np.ones(1, x.dtype)
    _, _, state = kce.ce_rows_forward(x, t)
    out["compiled loss"] = int((state.stats[kce.FELL] > 0).sum())
    out["compiled grad"] = int((kce.ce_rows_backward_counted(g, state)[1] > 0).sum())
    _, _, ref_state = oce.ce_rows_forward(x, t, backend="reference")
    assert isinstance(ref_state, oce.RowsCache) and ref_state.fell is not None
    out["reference loss"] = int((ref_state.fell > 0).sum())
    out["reference grad"] = int((oce.ce_rows_backward_decided(g, ref_state)[1] > 0).sum())
    return out


@pytest.mark.parametrize("dtype", [F32, F64])
def test_no_fallback_on_random_logits(dtype: np.dtype[Any]) -> None:
    rng = np.random.default_rng(3)
    for N, V in ((256, 27), (16, 2048)):
        x = (rng.standard_normal((N, V)) * rng.uniform(1, 3, (N, 1))).astype(dtype)
        t = rng.integers(0, V, N)
        counts = fell_counts(x, t)
        assert all(c == 0 for c in counts.values()), counts


def test_fallback_on_log_normalized_rows() -> None:
    """float32 rows shifted by their logsumexp: m + log1p(r) cancels, the lse of nearly every row is redone."""
    x, t = regions.log_normalized(np.random.default_rng(4), F32, 32, 40)
    counts = fell_counts(x, t)
    assert counts["compiled lse"] >= 16 and counts["reference lse"] >= 16, counts


def test_float64_log_normalized_rows_take_the_triple_double_logsumexp() -> None:
    """float64 rows shifted by their logsumexp: the compiled logsumexp (its three drivers: logsumexp, its
    forward, cross_entropy's lse) takes the triple-double sum on every such row, and nothing else does."""
    x, t = regions.log_normalized(np.random.default_rng(4), F64, 32, 40)
    for op in (ksm.LSE, ksm.LSE_PROBS):
        assert (ksm.forward_counted(x, op, 1)[2] == rounding.FELL_TRIPLE).all()
    for op in (ksm.SOFTMAX, ksm.LOG_SOFTMAX):
        assert (ksm.forward_counted(x, op, 1)[2] == rounding.FELL_NONE).all()
    _, lse, state = kce.ce_rows_forward(x, t)
    assert (state.stats[kce.FELL] == rounding.FELL_TRIPLE).all()
    np.testing.assert_array_equal(lse, ksm.forward(x, ksm.LSE, 2)[0])


def test_the_second_tier_decides_most_log_normalized_rows() -> None:
    """The compiled layer's second tier (the row again in float64 pairs, within about 2^-55) decides the
    cancelling logsumexp of most float32 log-normalized rows, and the loss, without double-double; the
    results are the reference layer's (which redoes every such row in double-double)."""
    x, t = regions.log_normalized(np.random.default_rng(4), F32, 32, 40)
    lse, _, fell = ksm.forward_counted(x, ksm.LSE, 1)
    assert (fell == rounding.FELL_PAIRS).sum() >= 16, fell
    loss, lse_ce, state = kce.ce_rows_forward(x, t)
    assert (state.stats[kce.FELL] == rounding.FELL_PAIRS).sum() >= 16, state.stats[kce.FELL]
    ref_loss, ref_lse, _ = oce.ce_rows_forward(x, t, backend="reference")
    np.testing.assert_array_equal(loss, ref_loss)
    np.testing.assert_array_equal(lse_ce, ref_lse)
    np.testing.assert_array_equal(lse, ref_lse)


def test_a_pair_far_from_its_error_bound_is_not_decided() -> None:
    """A logsumexp that cancels to 2.6e-13 with an error bound of 1e-16: the bound spans thousands of float32
    numbers, so neither layer may call the pair decided (the ends are renormalized before rounding)."""
    h, lo, err = 2.609351793e-13, 1.3e-30, 1.1e-16
    assert not rounding.decided_dd32(h, lo, err)
    assert not osm.decided_dd32(np.array([h]), np.array([lo]), np.array([err]))[0]
    assert rounding.decided_dd32(h, lo, 1e-30) and osm.decided_dd32(np.array([h]), np.array([lo]), np.array([1e-30]))[0]


def midpoints(k: int) -> tuple[Array, Array]:
    """k float32 numbers y of all sizes and the float64 midpoints between each and the next float32 up."""
    rng = np.random.default_rng(5)
    y = (rng.uniform(1, 2, k) * 2.0 ** rng.integers(-140, 120, k)).astype(np.float32)
    up = np.nextafter(y, np.float32(np.inf))
    return y, (y.astype(np.float64) + up.astype(np.float64)) / 2  # exact: one more bit than float32


def test_decision_and_rounding_of_a_double_double_at_midpoints() -> None:
    """Values a hair off a float32 midpoint: decided only when the error bound is below the hair; a
    double-double on the midpoint rounds to the side its low part points to (ties to even at lo = 0)."""
    y, mid = midpoints(200)
    up = np.nextafter(y, np.float32(np.inf))
    hair = np.spacing(mid) * 4  # a few float64 ulps
    for v, side in ((mid + hair, up), (mid - hair, y)):
        assert osm.undecided32(v, 8 * hair).all() and not osm.undecided32(v, hair / 2).any()
        assert np.array_equal(v.astype(np.float32), side)
        for vi, hi in zip(v.tolist(), hair.tolist(), strict=True):
            assert not rounding.decided32(vi, 8 * hi) and rounding.decided32(vi, hi / 2)
    tiny = np.spacing(mid) / 8  # below the float64 ulp of the midpoint: only a double-double carries it
    even = np.where(y.view(np.int32) % 2 == 0, y, up)
    for lo, want in ((tiny, up), (-tiny, y), (0.0 * tiny, even)):
        assert np.array_equal(osm.round_dd32(mid, lo), want)
        got = np.array([rounding.round_dd32(h, l_) for h, l_ in zip(mid.tolist(), lo.tolist(), strict=True)])
        assert np.array_equal(got, want)
    assert not osm.decided_dd32(mid, tiny, 2 * tiny).any() and osm.decided_dd32(mid, tiny, tiny / 2).all()


def test_mean_fallback_is_correctly_rounded() -> None:
    """The mean's double-double path (forced by a huge error bound) gives the correctly rounded mean too."""
    x, t = regions.confident(np.random.default_rng(6), F32, 30, 20)
    w = np.random.default_rng(7).uniform(0.5, 2, 30).astype(F32)
    _, _, state = kce.ce_rows_forward(x, t)
    for weight in (None, w):
        exact64 = oce.ce_rows_losses64(state, weight)
        assert exact64 is not None
        forced = exact64._replace(err=exact64.err + 1.0)
        loss = exact.cross_entropy(x, t)
        with mpmath.workprec(exact.PREC + 64):
            wl = loss if weight is None else loss * np.array([mp(v) for v in weight], dtype=object)
            total = mpmath.fsum(wl.tolist())
        for reduction, value in (("sum", total), ("mean", total / 30)):
            got = oce.reduce_losses(np.zeros(30, F32), reduction, exact=forced)
            assert got == exact.round_to(np.array([value], dtype=object), F32)[0], (reduction, weight is None)


def test_sum_of_losses_is_decided_by_the_cheapest_try_that_can(monkeypatch: pytest.MonkeyPatch) -> None:
    """The float32 sum of the losses is decided by NumPy's sum when its bound allows, else by ``math.fsum``:
    both give the float32 nearest to the exact sum of the float64 losses."""
    tries: list[bool] = []
    decide = oce._decided_total

    def spy(*args: Any) -> Any:
        decided = decide(*args)
        tries.append(decided is not None)
        return decided

    monkeypatch.setattr(oce, "_decided_total", spy)
    x, t = regions.benign(np.random.default_rng(8), F32, 64, 27)
    _, _, state = kce.ce_rows_forward(x, t)
    exact64 = oce.ce_rows_losses64(state)
    assert exact64 is not None
    got = oce.reduce_losses(np.zeros(64, F32), "sum", exact=exact64)
    assert tries == [True]
    with mpmath.workprec(exact.PREC + 64):
        total = mpmath.fsum(exact.cross_entropy(x, t).tolist())
    assert got == exact.round_to(np.array([total], dtype=object), F32)[0]
    # 999 losses of 2^-10 and one that brings the exact sum 50 u above the midpoint between 1 and the next
    # float32: NumPy's bound, about 1000 u, cannot tell the side; math.fsum's, 2 u, can
    mid = 1.0 + 2.0**-24
    value = np.full(1000, 2.0**-10)
    value[-1] = mid - 999 * 2.0**-10 + 50 * 2.0**-53  # exact
    assert fractions.Fraction(mid) + 50 * fractions.Fraction(2) ** -53 == sum(map(fractions.Fraction, value.tolist()))
    tries.clear()
    got = oce.reduce_losses(np.zeros(1000, F32), "sum", exact=exact64._replace(value=value, err=np.zeros(1000)))
    assert tries == [False, True]
    assert got == np.nextafter(np.float32(1), np.float32(2))
