"""The compiled layer itself: its exp and log1p pieces against the exact values, lazy import, a read-only install,
first calls from several threads at once.

(How each compiled op agrees with its reference and with torch is tested with the op: test_kernels.py,
test_oracle.py and the test file of each op run every check on both layers.)
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import mpmath
import numba
import numpy as np
import pytest

from tinyops.kernels.exp import exp32_array, exp64_array, exp64_pair_array
from tinyops.kernels.rounding import log1p_pair

REPO = Path(__file__).resolve().parents[1]


def exact_exp(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """exp of each float64 value at 80 digits, as float64 (exact enough to grade a float64 result in ulps)."""
    with mpmath.workdps(80):
        return np.array([float(mpmath.exp(mpmath.mpf(float(v)))) for v in x])


def ulps(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any], dtype: Any) -> np.ndarray[Any, Any]:
    """|got - want| in units of the spacing of dtype at want (want: float64 of the exact value)."""
    spacing = np.spacing(np.abs(want.astype(dtype))).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


@pytest.mark.parametrize(
    ("dtype", "kernel", "lo", "hi", "bound"),
    [(np.float32, exp32_array, -103.9, 88.7, 2.0), (np.float64, exp64_array, -708.3, 709.7, 1.0)],
)
def test_exp_within_its_ulp_bound(dtype: Any, kernel: Any, lo: float, hi: float, bound: float) -> None:
    """Over the whole range where the result is normal: a uniform grid, random points near 0, and the
    neighbours of the multiples of ln(2) / 2 (where the range reduction switches n)."""
    rng = np.random.default_rng(0)
    k = np.arange(int(lo / 0.3466), int(hi / 0.3466)) * (np.log(2) / 2)
    x = np.concatenate([np.linspace(lo, hi, 3001), rng.uniform(-2, 2, 1000), np.nextafter(k, 0), k]).astype(dtype)
    x = x[(x >= lo) & (x <= hi)]
    out = np.empty_like(x)
    kernel(x, out)
    err = ulps(out, exact_exp(x.astype(np.float64)), dtype)
    assert err.max() <= bound, f"{err.max():.3f} ulp at x = {x[np.argmax(err)]!r}"


def test_exp_of_a_pair_within_half_an_ulp() -> None:
    """The float64 rows' exp of ``hi + lo`` (the TwoSum pair of ``x_j - m``), rounded once from its table pair:
    within 0.51 ulp of the exact exp of the pair, over the whole normal range and across the table's
    boundaries (``n ln(2) / 64``), with ``lo`` anywhere in half an ulp of ``hi``."""
    rng = np.random.default_rng(1)
    k = np.arange(-65_000, 65_000, 97) * (np.log(2) / 64)
    hi = np.concatenate([rng.uniform(-708.3, 709.7, 4000), rng.uniform(-1, 1, 1000), k, np.nextafter(k, 0)])
    hi = hi[(hi >= -708.3) & (hi <= 709.7)]
    lo = rng.uniform(-0.5, 0.5, hi.size) * np.spacing(np.abs(hi))
    out = np.empty_like(hi)
    exp64_pair_array(hi, lo, out)
    with mpmath.workdps(80):
        exact = [mpmath.exp(mpmath.mpf(float(h)) + mpmath.mpf(float(lw))) for h, lw in zip(hi, lo, strict=True)]
        err = np.array([float(abs(mpmath.mpf(float(o)) - e)) for o, e in zip(out, exact, strict=True)])
    err /= np.spacing(np.abs(np.array([float(e) for e in exact])))
    assert err.max() <= 0.51, f"{err.max():.4f} ulp at hi = {hi[np.argmax(err)]!r}, lo = {lo[np.argmax(err)]!r}"
    edges = np.array([np.inf, -np.inf, np.nan, 0.0, 710.0, -746.0, -1.0783978e68, 1.0783978e68])
    lo = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 6.2e51, -6.2e51])  # TwoSum errors of huge differences are huge
    exp64_pair_array(edges, lo, got := np.empty(edges.size))
    np.testing.assert_array_equal(got, [np.inf, 0.0, np.nan, 1.0, np.inf, 0.0, 0.0, np.inf])


@numba.njit
def _log1p_pairs(rh: Any, rl: Any, oh: Any, ol: Any) -> None:
    for i in range(rh.shape[0]):
        oh[i], ol[i] = log1p_pair(rh[i], rl[i])


def test_log1p_of_a_pair_as_a_pair() -> None:
    """The float64 rows' ``log1p(r)`` of the pair ``r = rh + rl``, as a pair: within 2^-56 of the exact value,
    relatively, from r = 0 to 1e6 (the Newton step's ``expm1`` pair is least accurate just above ln(2) / 128,
    where its table index first moves)."""
    rng = np.random.default_rng(2)
    rh = np.concatenate([10 ** rng.uniform(-300, 6, 1500), rng.uniform(0, 0.03, 500), [0.0, 5e-324, 1.0]])
    rl = rng.uniform(-0.5, 0.5, rh.size) * np.spacing(rh)
    oh, ol = np.empty_like(rh), np.empty_like(rh)
    _log1p_pairs(rh, rl, oh, ol)
    with mpmath.workdps(80):
        for h, lw, gh, gl in zip(rh, rl, oh, ol, strict=True):
            exact = mpmath.log1p(mpmath.mpf(float(h)) + mpmath.mpf(float(lw)))
            err = abs(mpmath.mpf(float(gh)) + mpmath.mpf(float(gl)) - exact)
            assert err <= 2.0**-56 * exact, f"r = {h!r} + {lw!r}: relative error {float(err / exact):.3g}"


@pytest.mark.parametrize(("dtype", "kernel"), [(np.float32, exp32_array), (np.float64, exp64_array)])
def test_exp_edges(dtype: Any, kernel: Any) -> None:
    """inf, -inf, nan, 0, overflow, and the subnormal range (one rounding: within one subnormal step)."""
    fi = np.finfo(dtype)
    top = float(np.log(fi.max))
    bottom = float(np.log(fi.smallest_subnormal))
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, top * 1.001, 1e5, -1e5, bottom - 1], dtype=dtype)
    out = np.empty_like(x)
    kernel(x, out)
    want = np.array([np.inf, 0.0, np.nan, 1.0, 1.0, np.inf, np.inf, 0.0, 0.0])
    np.testing.assert_array_equal(out, want.astype(dtype))
    sub = np.linspace(float(np.log(fi.smallest_normal)) - 0.01, bottom + 0.5, 200).astype(dtype)  # subnormal results
    got = np.empty_like(sub)
    kernel(sub, got)
    exact = exact_exp(sub.astype(np.float64))
    assert np.all(np.abs(got.astype(np.float64) - exact) <= float(fi.smallest_subnormal)), "subnormal results"


def test_import_tinyops_does_not_import_numba() -> None:
    code = "import sys, tinyops; assert 'numba' not in sys.modules, 'numba imported'; print('ok')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


FIRST_CALLS = textwrap.dedent(
    """
    import threading, numpy as np, tinyops
    assert tinyops.__file__.startswith(PKG), tinyops.__file__
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 50)) * 4).astype(np.float32)
    t = rng.integers(0, 50, 300)
    results = [None] * 4

    def call(k):  # four first calls at once: the compile (or cache load) happens under contention
        loss, cache = tinyops.cross_entropy_forward(x, t, threads=1 + k % 2)
        results[k] = (loss, tinyops.cross_entropy_backward(1.0, cache))

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    [th.start() for th in threads]
    [th.join() for th in threads]
    ref_loss, ref_cache = tinyops.cross_entropy_forward(x, t, backend="reference")
    ref_dx = tinyops.cross_entropy_backward(1.0, ref_cache)
    for loss, dx in results:
        assert loss.tobytes() == results[0][0].tobytes() and dx.tobytes() == results[0][1].tobytes()
    assert abs(float(results[0][0]) - float(ref_loss)) <= 1e-6 * abs(float(ref_loss))
    assert np.allclose(results[0][1], ref_dx, rtol=1e-5, atol=1e-9)
    print("ok")
    """
)


def test_a_read_only_install_compiles_into_the_user_cache(tmp_path: Path) -> None:
    """The package's folder read-only (a read-only bind mount in a mount namespace of its own): the kernels
    compile, cache in the per-user cache directory, and four threads' first calls agree bit for bit."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux's unshare to mount the package read-only")
    pkg = tmp_path / "site"
    shutil.copytree(REPO / "tinyops", pkg / "tinyops", ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro {pkg} {pkg}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.decode().strip()}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env |= {"PYTHONPATH": str(pkg), "XDG_CACHE_HOME": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}
    script = f"PKG = {str(pkg)!r}\n" + FIRST_CALLS
    cmd = f"mount --bind -o ro {pkg} {pkg} && exec {sys.executable} -c {shlex.quote(script)}"
    run = subprocess.run(
        ["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
    assert not list((pkg / "tinyops").rglob("*.nbi")), "wrote a cache into the read-only package"
    assert list(cache.rglob("*.nbi")), "no cache in the per-user cache directory"


SAME_BITS = textwrap.dedent(
    """
    import sys, numpy as np, tinyops
    threads, mode, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    rng = np.random.default_rng(0)
    out = {}
    for C in (27, 100, 1000, 5000):
        x = rng.standard_normal((16, C)) * 3
        dy = rng.standard_normal((16, C))
        t = rng.integers(0, C, 16)
        v, c = tinyops.logsumexp_forward(x, threads=threads)
        out[f"lse {C}"], out[f"dlse {C}"] = v, tinyops.logsumexp_backward(dy[:, 0], c)
        v, c = tinyops.softmax_forward(x, threads=threads)
        out[f"softmax {C}"], out[f"dsoftmax {C}"] = v, tinyops.softmax_backward(dy, c)
        v, c = tinyops.log_softmax_forward(x, threads=threads)
        out[f"log_softmax {C}"], out[f"dlog_softmax {C}"] = v, tinyops.log_softmax_backward(dy, c)
        for precision in ("accurate", "fast"):
            for xp in (x, x.astype(np.float32)):
                v, c = tinyops.cross_entropy_forward(xp, t, reduction="none", precision=precision, threads=threads)
                key = f"cross_entropy {precision} {xp.dtype} {C}"
                out[key], out["d" + key] = v, tinyops.cross_entropy_backward(dy[:, 0].astype(xp.dtype), c)
    if mode == "save":
        np.savez(path, **out)
    else:
        saved = np.load(path)
        differ = [k for k in out if not np.array_equal(out[k], saved[k], equal_nan=True)]
        print("differ:", differ)
    """
)


@pytest.mark.parametrize(
    "first, then",
    [
        (2, 1),
        pytest.param(1, 2, marks=pytest.mark.skipif(
            os.environ.get("TINYOPS_HYPOTHESIS_PROFILE") != "thorough",
            reason="the other order compiles every kernel again (a minute): make test-thorough runs it")),
    ],
)
def test_the_drivers_give_the_same_bits_whichever_compiles_first(tmp_path: Path, first: int, then: int) -> None:
    """float64 outputs (and 'fast' ones) are not decided by a rounding rule, so the serial and the parallel
    driver must compute each row in the same order. They are compiled apart, and in a new process one of
    them may be loaded from numba's cache while the other is compiled: a sum whose order the compiler may
    choose (``reassoc``) could then be ordered differently in each. Here the first process compiles and
    caches the ``first`` driver; a second one, with the same cache, runs ``then``'s and compares."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env |= {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    saved = tmp_path / "first.npz"
    for threads, mode in ((first, "save"), (then, "compare")):
        run = subprocess.run(
            [sys.executable, "-c", SAME_BITS, str(threads), mode, str(saved)],
            capture_output=True, text=True, env=env, timeout=600, cwd=REPO,
        )
        assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "differ: []", run.stdout
