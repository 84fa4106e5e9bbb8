"""``tinyops audit`` and the atlas: every built-in adapter against the exact reference, the regions runner,
the worst-case search (torch's cross-entropy cancellation, a softmax without the max shift, tinyops' own
bounds), the metamorphic checks on targets built to break them, the special-value table against torch,
kappa against a numerical derivative, the CLI's errors, the outputs, and the testing API users copy."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mpmath
import numpy as np
import pytest

import tinyops
from tests.oracle import budget
from tinyops import audit
from tinyops.audit import measure
from tinyops.cli import main as cli_main
from tinyops.testing import assert_ulp_close, exact, regions

ROOT = Path(__file__).resolve().parent.parent
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
SMALL = {"rows": 3, "classes": 6, "long_rows": 0}  # a small corpus: every region but long_row


# ----------------------------------------------------------------------------- targets for the tests


def broken_softmax(x: Any) -> Any:
    """The textbook softmax with no max subtraction: exp overflows past 88.7 in float32."""
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def batch_dependent_softmax(x: Any) -> Any:
    """Shifts by the whole batch's max, not each row's: a row's result depends on the other rows."""
    e = np.exp((x - x.max()).astype(np.float32))
    return (e / e.sum(axis=-1, keepdims=True)).astype(x.dtype)


def order_dependent_logsumexp(x: Any) -> Any:
    """Sums in float16 in the order given: permuting the classes changes the result."""
    m = x.max(axis=-1, keepdims=True)
    acc = np.zeros(x.shape[0], dtype=np.float16)
    for j in range(x.shape[1]):
        acc = (acc + np.exp(x[:, j] - m[:, 0]).astype(np.float16)).astype(np.float16)
    return (m[:, 0] + np.log(acc.astype(np.float64))).astype(x.dtype)


def float16_inside_for_float32(x: Any) -> Any:
    """float32 input computed in float16 (float64 input in float64): the two dtypes disagree."""
    inside = np.float16 if x.dtype == np.float32 else x.dtype
    z = (x - x.max(axis=-1, keepdims=True)).astype(inside)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(x.dtype)


def wrong_shape(x: Any) -> Any:
    return x.sum(axis=0)


def wrong_dtype(x: Any) -> Any:
    return x.astype(np.float64)


NOT_CALLABLE = 3


# ----------------------------------------------------------------------------- the built-in adapters


def benign_batch(dtype: np.dtype[Any]) -> tuple[Any, Any]:
    return regions.benign(np.random.default_rng(5), dtype, 4, 7)


def exact_of(op: str, x: Any, t: Any, dout: Any) -> tuple[Any, Any]:
    """The exact forward and gradient of sum(out * dout), from the mpmath reference (not the audit's code)."""
    ref = exact.reference(x, t)
    g = np.array([mpmath.mpf(float(v)) for v in dout.ravel()], dtype=object).reshape(dout.shape)
    with mpmath.workprec(exact.PREC):
        p = ref.softmax
        if op == "logsumexp":
            return ref.lse, p * g[:, None]
        if op == "softmax":
            return p, np.array([[p[n, i] * (g[n, i] - sum(g[n] * p[n])) for i in range(p.shape[1])]
                                for n in range(p.shape[0])], dtype=object)
        if op == "log_softmax":
            return ref.log_softmax, np.array([[g[n, i] - p[n, i] * sum(g[n]) for i in range(p.shape[1])]
                                              for n in range(p.shape[0])], dtype=object)
        return ref.loss, ref.grad * g[:, None]


def check_adapter(adapter: audit.Adapter, op: str, dtype: np.dtype[Any], limit: float) -> None:
    x, t = benign_batch(dtype)
    rng = np.random.default_rng(9)
    dout = rng.uniform(0.5, 2.0, size=x.shape[:1] if op in ("logsumexp", "cross_entropy") else x.shape).astype(dtype)
    want, want_grad = exact_of(op, x, t, dout)
    args = (x, t) if op == "cross_entropy" else (x,)
    got = adapter.forward(*args)
    assert got.dtype == dtype and got.shape == want.shape
    assert_ulp_close(got, want, limit, name=f"{adapter.name} {op}")
    assert adapter.backward is not None
    dx = adapter.backward(*args, dout)
    assert dx.dtype == dtype and dx.shape == x.shape
    # the gradients of softmax and log_softmax cancel in g - sum(g p): held to 64 eps of the row's scale (a
    # backward wired wrong is off by O(1))
    scale = np.abs(want_grad.astype(np.float64)).max(axis=-1, keepdims=True)
    with np.errstate(all="ignore"):
        rel = np.abs(dx.astype(np.float64) - want_grad.astype(np.float64)) / scale
    assert rel.max() <= 64 * np.finfo(dtype).eps, (adapter.name, op, rel.max())


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("op", audit.OPS)
@pytest.mark.parametrize("name", ["tinyops", "tinyops-fast", "torch", "scipy", "numpy-naive", "jax"])
def test_builtin_adapter_against_the_exact_reference(name: str, op: str, dtype: np.dtype[Any]) -> None:
    """Benign rows: every built-in within a few ULP (tinyops within its bound) of the exact values."""
    if name == "jax":
        pytest.importorskip("jax")
    if name == "tinyops-fast" and op != "cross_entropy":
        with pytest.raises(audit.Unavailable, match="cross_entropy option"):
            audit.builtin(name, op)
        return
    q = measure.QUANTITIES[op][0]
    bound = tinyops_bound(q, dtype) if name == "tinyops" else 64.0
    check_adapter(audit.builtin(name, op), op, dtype, bound)


def tinyops_bound(q: str, dtype: np.dtype[Any]) -> float:
    from tinyops.testing import bounds

    b = bounds.ulp_bound(q, dtype, 7)
    assert b is not None
    return b


@pytest.mark.skipif(
    os.environ.get("TINYOPS_HYPOTHESIS_PROFILE") != "thorough", reason="torch.compile compiles for ~30 s: thorough"
)
def test_builtin_torch_compile() -> None:
    try:
        adapter = audit.builtin("torch-compile", "logsumexp")
    except audit.Unavailable as exc:
        pytest.skip(str(exc))
    check_adapter(adapter, "logsumexp", F32, 64.0)


def test_missing_adapters_are_reported_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    adapters, missing = audit.available("softmax", ["tinyops", "tinyops-fast", "numpy-naive"])
    assert [a.name for a in adapters] == ["tinyops", "numpy-naive"]
    assert missing == ["tinyops-fast: precision='fast' is a cross_entropy option"]
    have_jax = importlib.util.find_spec("jax") is not None
    assert cli_main(["audit", "numpy-naive", "--op", "softmax", "--examples", "0", "--no-checks", *SMALL_ARGS]) == 1
    out = capsys.readouterr().out
    assert ("optional adapters not installed: jax" in out) != have_jax


SMALL_ARGS = ["--rows", "3", "--classes", "6", "--long-classes", "0"]


# ----------------------------------------------------------------------------- the regions runner


def test_regions_show_the_known_failures_and_tinyops_within_its_bounds() -> None:
    rep = {n: audit.audit(n, "cross_entropy", grad=True, examples=0, checks=False, **SMALL)
           for n in ("tinyops", "torch", "numpy-naive")}
    by = {n: {(s.region, s.quantity): s for s in r.regions} for n, r in rep.items()}
    assert {s.region for s in rep["torch"].regions} == set(regions.REGIONS) - {"long_row"}
    assert rep["tinyops"].within_bounds
    assert by["torch"]["confident", "loss"].worst > 1e6 and by["torch"]["confident", "grad"].worst > 1e6
    assert by["torch"]["confident", "loss"].over_bound > 0
    assert by["numpy-naive"]["exp_overflow", "loss"].worst == np.inf
    for s in rep["tinyops"].regions:
        assert s.count > 0 and 0 <= s.median <= s.p99 <= s.worst <= s.bound, s
    # an unstable algorithm on a well-conditioned input: the error is far above (kappa + 1) u
    assert by["torch"]["confident", "loss"].worst_kappa_u > 1e4
    assert by["tinyops"]["confident", "loss"].worst_kappa_u < 4


def test_a_target_that_raises_on_a_region_scores_inf_there() -> None:
    def no_masks(x: Any) -> Any:
        if np.isinf(x).any():
            raise ValueError("no -inf please")
        return tinyops.logsumexp(x)

    rep = audit.audit(no_masks, "logsumexp", examples=0, checks=False, **SMALL)
    masked = next(s for s in rep.regions if s.region == "masked")
    assert masked.worst == np.inf and masked.error is not None and "no -inf please" in masked.error
    assert next(s for s in rep.regions if s.region == "benign").worst <= 2


# ----------------------------------------------------------------------------- the worst-case search


def run_reproduction(code: str) -> float:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(code, {})
    return float(buf.getvalue().split()[-1])


def test_search_finds_torch_cross_entropy_cancellation_and_shrinks_it() -> None:
    s = measure.search(audit.builtin("torch", "cross_entropy"), "torch", "cross_entropy", F32, True, max_examples=200)
    assert s.found and s.worst_ulp > 1e6 and s.quantity in ("loss", "grad")
    assert s.shape is not None and s.shape[0] <= 2 and s.shape[1] <= 4, s.shape  # a few rows of a few classes
    assert s.ulp >= s.worst_ulp / 10 and s.ulp > 1e5
    assert run_reproduction(s.reproduction) == pytest.approx(s.ulp, rel=1e-6)  # copy-pasteable, same error


def test_search_reproduction_of_a_gradient_runs() -> None:
    """A softmax gradient above a bound of 4 ULP: the printed Python recomputes the same error."""
    s = measure.search(audit.builtin("torch", "softmax"), "torch", "softmax", F32, True, max_examples=50, max_ulp=4)
    assert s.found and s.quantity == "softmax.grad" and "exact_gradient(\"softmax\", x, dout)" in s.reproduction
    assert run_reproduction(s.reproduction) == pytest.approx(s.ulp, rel=1e-6)


@pytest.mark.parametrize("op", audit.OPS)
def test_exact_gradient_matches_the_chain_rule_written_out(op: str) -> None:
    x, t = benign_batch(F64)
    shape = x.shape[:1] if op in ("logsumexp", "cross_entropy") else x.shape
    dout = np.random.default_rng(2).uniform(-2, 2, size=shape)
    got = measure.exact_gradient(op, x, dout, t)
    want = exact_of(op, x, t, dout)[1]
    assert got.shape == want.shape == x.shape
    with mpmath.workprec(exact.PREC):
        pairs = zip(got.ravel(), want.ravel(), strict=True)
        assert all(abs(a - b) <= mpmath.mpf(2) ** -200 * (1 + abs(b)) for a, b in pairs)


def test_search_finds_the_overflow_of_a_softmax_without_max_shift() -> None:
    s = measure.search(audit.load_target("tests.test_audit:broken_softmax", "softmax"),
                       "tests.test_audit:broken_softmax", "softmax", F32, False, max_examples=100)
    assert s.found and s.found_after is not None and s.found_after < 100 and s.worst_ulp == np.inf
    x = eval(s.reproduction.split("x = ", 1)[1].split("\n", 1)[0], {"np": np})  # the shrunk input
    with np.errstate(all="ignore"):
        assert not np.isfinite(broken_softmax(x)).all() and x.max() > np.log(np.finfo(F32).max)


@pytest.mark.parametrize("op", audit.OPS)
def test_search_finds_nothing_above_tinyops_bounds(op: str) -> None:
    s = measure.search(audit.builtin("tinyops", op), "tinyops", op, F32, True, max_examples=60)
    assert not s.found, s.reproduction


# ----------------------------------------------------------------------------- metamorphic checks


def test_metamorphic_checks_pass_for_tinyops_and_catch_broken_targets() -> None:
    for op in audit.OPS:
        for dt in (F32, F64):
            failed = [c.name for c in measure.metamorphic(audit.builtin("tinyops", op), op, dt) if not c.passed]
            assert failed == [], (op, dt, failed)
    checks = {c.name: c for c in measure.metamorphic(audit.Adapter("b", batch_dependent_softmax), "softmax", F32)}
    assert not checks["batch of one"].passed and not checks["chunk invariance"].passed
    assert checks["batch of one"].max_ulp > 0
    checks = {c.name: c for c in measure.metamorphic(audit.Adapter("o", order_dependent_logsumexp), "logsumexp", F32)}
    assert not checks["permutation equivariance"].passed and checks["batch of one"].passed
    checks = {c.name: c for c in measure.metamorphic(audit.Adapter("h", float16_inside_for_float32), "softmax", F32)}
    assert not checks["dtype consistency"].passed and checks["shift invariance"].passed


# ----------------------------------------------------------------------------- special values


@pytest.mark.parametrize("op", audit.OPS)
def test_special_value_table_is_torch_semantics(op: str) -> None:
    """The expected column is what torch computes (forward and gradient), case by case."""
    results = measure.special_values(audit.builtin("torch", op), op, F32, grad=True)
    assert len(results) == 2 * (len(measure.SPECIAL_CASES) - 1)
    assert all(r.verdict == "as torch" for r in results), [r for r in results if r.verdict != "as torch"]


def test_special_values_scipy_column_and_a_raising_target() -> None:
    results = measure.special_values(audit.builtin("scipy", "log_softmax"), "log_softmax", F64, grad=False)
    inf_row = next(r for r in results if r.case == "+inf entry")
    assert inf_row.scipy is not None and inf_row.verdict == "as scipy"

    def no_empty(x: Any) -> Any:
        if x.shape[1] == 0:
            raise ValueError("empty")
        return tinyops.softmax(x)

    results = measure.special_values(audit.Adapter("e", no_empty), "softmax", F32, grad=False)
    assert next(r for r in results if r.case.startswith("empty")).verdict == "raised ValueError"


# ----------------------------------------------------------------------------- kappa


def numerical_kappa(f: Any, x: Any) -> float:
    """sum_j |df/dx_j| |x_j| / |f| by central differences in mpmath at 60 digits."""
    with mpmath.workdps(60):
        xs = [mpmath.mpf(float(v)) for v in x]
        h = mpmath.mpf("1e-25")
        total = mpmath.mpf(0)
        for j in range(len(xs)):
            up, down = list(xs), list(xs)
            up[j] += h * abs(xs[j])
            down[j] -= h * abs(xs[j])
            total += abs(f(up) - f(down)) / (2 * h)
        return float(total / abs(f(xs)))


def test_kappa_formulas_against_numerical_derivatives() -> None:
    x = np.array([[2.5, -1.25, 0.75, 3.0, -4.0]])
    t = np.array([1])
    ref = exact.reference(x, t)
    k = measure._kappas("cross_entropy", x, t, ref)

    def lse(v: list[Any]) -> Any:
        return mpmath.log(mpmath.fsum(mpmath.exp(a) for a in v))

    assert k["lse"][0] == pytest.approx(numerical_kappa(lse, x[0]), rel=1e-9)
    for i in range(5):
        assert k["softmax"][0, i] == pytest.approx(numerical_kappa(lambda v, i=i: mpmath.exp(v[i] - lse(v)), x[0]))
        assert k["log_softmax"][0, i] == pytest.approx(numerical_kappa(lambda v, i=i: v[i] - lse(v), x[0]))
    assert k["loss"][0] == pytest.approx(numerical_kappa(lambda v: lse(v) - v[1], x[0]), rel=1e-9)
    p_minus_1 = numerical_kappa(lambda v: mpmath.exp(v[1] - lse(v)) - 1, x[0])
    assert k["grad"][0, 1] == pytest.approx(p_minus_1, rel=1e-9)


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    ("target", "extra", "message"),
    [
        ("nosuch_module_xyz:f", [], "module 'nosuch_module_xyz' does not import (ModuleNotFoundError"),
        ("tests.test_audit:nothere", [], "'tests.test_audit' has no attribute 'nothere'"),
        ("tests.test_audit:NOT_CALLABLE", [], "is not callable (it is a int)"),
        ("tests.test_audit:wrong_shape", [], "returned shape (3,) for its softmax of a (2, 3) input, expected shape"),
        ("tests.test_audit:wrong_dtype", [], "returned dtype float64 for its softmax of a (2, 3) input, expected"),
        ("tests.test_audit:broken_softmax", ["--grad"], "has no gradient: wrap it as tinyops.audit.Adapter"),
        ("softmax", [], "TARGET must be a built-in"),
        ("jax", [], "jax is not installed"),
    ],
)
def test_cli_bad_target_is_one_line_and_exit_2(
    target: str, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if target == "jax" and importlib.util.find_spec("jax") is not None:
        pytest.skip("jax is installed")
    assert cli_main(["audit", target, "--op", "softmax", *extra, "--examples", "0", *SMALL_ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tinyops audit: ") and message in err, err


def test_cli_writes_text_markdown_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["audit", "torch", "--op", "cross_entropy", "--grad", "--examples", "30", *SMALL_ARGS,
            "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"), "--plot", str(tmp_path / "r.png")]
    assert cli_main(args) == 1  # torch is above tinyops' bounds
    out = capsys.readouterr().out
    assert "confident" in out and "Worst-case search" in out and "Special values" in out
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["op"] == "cross_entropy" and payload["search"]["found"]
    assert {r["quantity"] for r in payload["regions"]} == {"loss", "grad"}
    md = (tmp_path / "r.md").read_text()
    assert md.startswith("# tinyops audit torch") and "| region | quantity |" in md and "```python" in md
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- the testing API


def test_assert_ulp_close() -> None:
    x = np.array([[20.0, 0.0, -1.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    t = np.array([0, 2])
    ref = exact.cross_entropy(x, t)
    assert_ulp_close(tinyops.cross_entropy(x, t, reduction="none"), ref, 1)
    x64 = x.astype(np.float64)  # the textbook loss, even in float64 inside, cancels on the confident row 0
    textbook = x64.max(axis=1) + np.log(np.exp(x64 - x64.max(axis=1, keepdims=True)).sum(axis=1)) - x64[[0, 1], t]
    with pytest.raises(AssertionError, match=r"loss \(float32\): .* ULP > 2 at index \(0,\).* 1 of 2 elements"):
        assert_ulp_close(textbook.astype(np.float32), ref, 2, name="loss")
    with pytest.raises(AssertionError, match="shape"):
        assert_ulp_close(np.zeros(3, np.float32), ref, 2)
    assert_ulp_close(textbook.astype(np.float32), ref, 2, mask=np.array([False, True]))


def test_regions_and_strategies_draw_from_one_table() -> None:
    """The masked fraction and the near-tie centre (the two that had drifted): both sides in PARAMS' range."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tinyops.testing import strategies as ts

    lo, hi = regions.PARAMS["masked"]["fraction"].bounds(F32)
    c_lo, c_hi = regions.PARAMS["near_tie"]["center"].bounds(F32)
    rng = np.random.default_rng(0)
    frac = np.isinf(regions.masked(rng, F32, 200, 400)[0]).mean(axis=1)
    assert lo - 0.06 < frac.min() and frac.max() < hi + 0.06 and frac.min() < lo + 0.1 and frac.max() > hi - 0.1
    centers = regions.near_tie(rng, F32, 200, 3)[0][:, 0]
    assert c_lo - 1 < centers.min() < c_lo + 20 and c_hi - 20 < centers.max() < c_hi + 1

    @settings(max_examples=budget(0.15, 30), deadline=None)  # a check of ranges, not of the ops
    @given(st.data())
    def drawn(data: st.DataObject) -> None:
        x = data.draw(ts.masked(dtype=F32, n=1, v=400, target=False))
        assert lo - 0.1 < np.isinf(x).mean() < hi + 0.1
        y = data.draw(ts.near_tie(dtype=F32, n=1, v=3, target=False))
        assert c_lo - 1 < y[0, 0] < c_hi + 1

    drawn()


def test_the_example_test_file_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "examples/test_my_softmax.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed, 1 xfailed" in proc.stdout


# ----------------------------------------------------------------------------- the atlas


def test_accuracy_benchmark_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The atlas's tiny corpus: every contender measured, tinyops' bounds checked, every file written."""
    pytest.importorskip("matplotlib")
    bench = load_benchmark("bench_accuracy")
    status = bench.main(["--tiny", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    payload = json.loads((tmp_path / "bench_accuracy.json").read_text())
    assert status == (0 if payload["bounds_held"] else 1) and "float32 loss: held" in out
    assert payload["contenders"][:3] == ["tinyops", "tinyops-fast", "torch"] and "numpy-naive" in payload["contenders"]
    reports = payload["reports"]
    assert {(r["target"], r["op"], r["dtype"]) for r in reports if r["target"] == "torch"} == {
        ("torch", op, dt) for op in audit.OPS for dt in ("float32", "float64")
    }
    naive = next(r for r in reports if (r["target"], r["op"], r["dtype"]) == ("numpy-naive", "softmax", "float32"))
    assert max(s["worst"] for s in naive["regions"] if s["region"] == "exp_overflow") == float("inf")
    md = (tmp_path / "bench_accuracy.md").read_text()
    assert md.startswith("# Accuracy in ULPs") and "| quantity | tinyops | tinyops-fast | torch |" in md
    assert (tmp_path / "bench_accuracy_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def load_benchmark(name: str) -> Any:
    bench_dir = ROOT / "benchmarks"
    sys.path.insert(0, str(bench_dir))
    spec = importlib.util.spec_from_file_location(name, bench_dir / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
