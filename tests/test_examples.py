"""Each example in examples/ runs as ``python examples/NAME.py`` and prints what it should.

The expected values are computed here, independently of the example (the seed walkthrough's printed
numbers are the seed's, the spec, shared with tests/test_seed.py). Examples that need the names file
run when TINYOPS_NAMES holds its path and are skipped otherwise.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_seed import DATASET_PRINTED, ITOS_PRINTED, SEED_LOSS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NAMES_ENV = "TINYOPS_NAMES"
needs_names = pytest.mark.skipif(not os.environ.get(NAMES_ENV), reason="set TINYOPS_NAMES to the path of names.txt")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python examples/<name>.py args...`` from the repository root, as a user would."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env if env is not None else dict(os.environ),
    )


def cells(stdout: str) -> list[tuple[list[str], list[str]]]:
    """Split the walkthrough's output into cells: (code lines without '>>> ', output lines)."""
    out = []
    for block in stdout.strip().split("\n\n"):
        lines = block.splitlines()
        code = [ln[4:] for ln in lines if ln.startswith(">>> ")]
        out.append((code, [ln for ln in lines if not ln.startswith(">>> ")]))
    return out


def output_of(parsed: list[tuple[list[str], list[str]]], last_code_line: str) -> list[str]:
    """The output of every cell whose code ends with ``last_code_line``, in order, joined per cell."""
    found = ["\n".join(o) for code, o in parsed if code and code[-1] == last_code_line]
    assert found, f"no cell ending in {last_code_line!r}"
    return found


def softmax64(x: list[float]) -> np.ndarray[Any, Any]:
    x64 = np.array(x, dtype=np.float64)
    e = np.exp(x64 - x64.max())
    out: np.ndarray[Any, Any] = e / e.sum()
    return out


# ----------------------------------------------------------------------------- seed_walkthrough.py


@needs_names
def test_seed_walkthrough_prints_the_seed() -> None:
    names = Path(os.environ[NAMES_ENV])
    proc = run_example("seed_walkthrough", "--data", str(names))
    assert proc.returncode == 0, proc.stderr
    parsed = cells(proc.stdout)
    words = names.read_text().splitlines()

    assert output_of(parsed, "words[:8]") == [repr(words[:8])]
    assert output_of(parsed, "len(words)") == [str(len(words))]
    assert output_of(parsed, "print(itos)") == [ITOS_PRINTED]
    listing = next(o for code, o in parsed if code and code[0].startswith("for w in words[:5]"))
    assert listing == DATASET_PRINTED
    assert output_of(parsed, "X.shape, X.dtype, Y.shape, Y.dtype") == [
        "((32, 3), dtype('int64'), (32,), dtype('int64'))"
    ]
    assert output_of(parsed, "sum(p.nelement() for p in parameters)") == [str(27 * 2 + 6 * 100 + 100 + 100 * 27 + 27)]
    assert output_of(parsed, "emb.shape") == ["(32, 3, 2)"]
    assert output_of(parsed, "h.shape") == ["(32, 100)"]
    assert output_of(parsed, "logits.shape") == ["(32, 27)"]
    assert output_of(parsed, "counts.shape") == ["(32, 27)"]
    assert output_of(parsed, "prob.shape") == ["(32, 27)"]
    assert output_of(parsed, "loss") == [f"{SEED_LOSS:.4f}"] * 2  # the naive chain, then the fused loss

    probs = output_of(parsed, "probs")
    assert len(probs) == 4
    # the seed printed tensor([4.5079e-05, 3.3309e-04, 6.6903e-03, 9.9293e-01]) for [-5, -3, 0, 5], shifted or not
    assert probs[0] == probs[1] == "[4.5079e-05, 3.3309e-04, 6.6903e-03, 9.9293e-01]"
    assert probs[2] == "[0.0000e+00, 0.0000e+00, 0.0000e+00, nan]"  # the seed's tensor([0., 0., 0., nan])
    stable = [float(v) for v in probs[3].strip("[]").split(", ")]
    expected = softmax64([-5, -3, 0, 100]).astype(np.float32)  # exp(-105) is below float32's subnormals
    np.testing.assert_allclose(stable, expected, rtol=1e-4, atol=1e-45)

    naive_losses, fused_losses = (
        output_of(parsed, "-(probs[[3, 0]]).log()"),
        next(o for code, o in parsed if code and code[-1].startswith("F.cross_entropy(logits[None]")),
    )
    assert naive_losses == [repr(["nan", "inf"])]
    lse = 100 + math.log1p(math.exp(-105) + math.exp(-103) + math.exp(-100))
    assert fused_losses == [repr([f"{lse - 100:.4f}", f"{lse + 5:.4f}"])]


def test_seed_walkthrough_without_data_says_what_is_missing() -> None:
    env = {k: v for k, v in os.environ.items() if k != NAMES_ENV}
    proc = run_example("seed_walkthrough", env=env)
    assert proc.returncode == 2
    assert "--data" in proc.stderr and NAMES_ENV in proc.stderr


def test_seed_walkthrough_unreadable_data(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-names.txt"
    proc = run_example("seed_walkthrough", "--data", str(missing))
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- overflow.py


def test_overflow_table_and_plot(tmp_path: Path) -> None:
    proc = run_example("overflow", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "overflow.json").read_text())
    assert (tmp_path / "overflow.png").read_bytes().startswith(PNG_MAGIC)
    md = (tmp_path / "overflow.md").read_text()
    assert md.strip() in proc.stdout
    assert len(md.strip().splitlines()) == 2 + len(data["rows"])

    for name in ("float16", "float32", "float64"):
        fi = np.finfo(name)
        overflow = float(np.log(fi.max))
        # the thresholds are printed, computed from finfo
        assert f"{name:8s} overflow {overflow:.6g}" in proc.stdout
        assert data["thresholds"][name]["underflow_zero"] == pytest.approx(float(np.log(fi.smallest_subnormal)))
        rows = [r for r in data["rows"] if r["dtype"] == name]
        assert len(rows) >= 10
        assert any(r["max_logit"] > overflow for r in rows) and any(r["max_logit"] < overflow for r in rows)
        for r in rows:
            cells_, errors = r["cells"], r["errors"]
            # the seed's softmax is nan exactly where exp(max logit) overflows the dtype
            assert (cells_["naive softmax"] == "nan") == (r["max_logit"] > overflow), r
            # the stable ops never overflow, and are right to a few eps
            assert errors["stable softmax"] is not None and errors["stable softmax"] <= 4 * fi.eps, r
            assert errors["fused CE t=0"] is not None and errors["fused CE t=0"] <= 4 * fi.eps, r
            # the accurate kernel keeps a confident prediction's small loss (log1p, no cancellation)
            assert errors["fused CE t=3"] is not None and errors["fused CE t=3"] <= 4 * fi.eps, r
            assert errors["fast CE t=3"] is not None, r  # finite; near 0 it may lose its digits to cancellation
            # a large loss computed naively is inf once p[0] = exp(x0 - lse) is below the dtype's subnormals
            x0_minus_lse = -2 * r["scale"]  # logits t * [-1, ..., 1]: x0 - lse is -2t up to a tiny log term
            if x0_minus_lse < data["thresholds"][name]["underflow_zero"] - 1:
                assert cells_["naive CE t=0"] == "inf", r


# ----------------------------------------------------------------------------- fused_vs_naive.py


def test_fused_vs_naive_checks_then_times(tmp_path: Path) -> None:
    N, vocab = 64, (27, 300)
    proc = run_example(
        "fused_vs_naive", "--rows", str(N), "--vocab", *map(str, vocab), "--budget", "0.02", "--out", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "fused_vs_naive.json").read_text())
    assert (tmp_path / "fused_vs_naive.png").read_bytes().startswith(PNG_MAGIC)
    assert sorted((r["variant"], r["V"]) for r in results) == sorted(
        (v, V) for v in ("naive", "fused", "fused fast") for V in vocab
    )
    eps32 = float(np.finfo(np.float32).eps)
    for r in results:
        assert r["N"] == N
        assert r["grad_err"] <= 64 * eps32 / N and r["loss_err"] <= 64 * eps32 * 20
        assert r["us"] > 0 and r["ns_per_elem"] == pytest.approx(r["us"] * 1e3 / (N * r["V"]))
        # the gradient alone is one (N, V) float32 array, allocated during the call
        assert r["peak_bytes"] >= N * r["V"] * 4
        assert r["peak_arrays"] == pytest.approx(r["peak_bytes"] / (N * r["V"] * 4))
        # every row of the printed table is the JSON's
        assert f"| {N} x {r['V']} | {r['variant']} | {r['us']:.1f} | {r['ns_per_elem']:.2f} |" in proc.stdout


def test_fused_vs_naive_rejects_bad_sizes(tmp_path: Path) -> None:
    proc = run_example("fused_vs_naive", "--rows", "0", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "--rows" in proc.stderr and "0" in proc.stderr


# ----------------------------------------------------------------------------- backprop_ninja.py

CMP_ROW = re.compile(r"^(\w+)\s*\| exact: (True|False)\s*\| approximate: (True|False)\s*\| maxdiff: (\S+)$")


@needs_names
def test_backprop_ninja_matches_torch_and_trains() -> None:
    proc = run_example("backprop_ninja", "--data", os.environ[NAMES_ENV], "--steps", "100")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    V, D, T, H = 27, 10, 3, 64
    assert lines[0] == f"parameters: {V * D + T * D * H + H + H * V + V + 2 * H}, batch 32, vocabulary {V}"

    rows = [m.groups() for m in map(CMP_ROW.match, lines) if m]
    names = [r[0] for r in rows]
    intermediates = {"logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits", "logit_maxes",
                     "logits", "h", "hpreact", "bnraw", "bnvar_inv", "bnvar", "bndiff2", "bndiff", "bnmeani",
                     "hprebn", "embcat", "emb"}
    parameters = {"C", "W1", "b1", "W2", "b2", "bngain", "bnbias"}
    assert intermediates | parameters <= set(names)
    # exercise 1 (26 rows), 2 (dlogits), 3 (hprebn, bngain, bnbias), 4 (the 7 parameters of one mlp step)
    assert len(rows) == 26 + 1 + 3 + 7
    for name, _, approximate, maxdiff in rows:
        if name == "b1":  # its exact gradient is 0 (batchnorm removes the shift): both sides are rounding noise
            assert float(maxdiff) < 1e-7
            continue
        assert approximate == "True", f"d{name} differs from torch's: maxdiff {maxdiff}"
        assert float(maxdiff) < 1e-6

    loss_fast = next(ln for ln in lines if ln.startswith("loss_fast"))
    assert float(loss_fast.rsplit("diff:", 1)[1]) < 1e-5
    first, last = map(float, re.findall(r"(\d+\.\d+)", next(ln for ln in lines if ln.startswith("mean batch loss"))))
    assert last < first
    train = float(next(ln for ln in lines if ln.startswith("train ")).split()[1])
    val = float(next(ln for ln in lines if ln.startswith("val ")).split()[1])
    assert 1.5 < train < first and 1.5 < val < first


def test_backprop_ninja_without_data_says_what_is_missing() -> None:
    env = {k: v for k, v in os.environ.items() if k != NAMES_ENV}
    proc = run_example("backprop_ninja", env=env)
    assert proc.returncode == 2
    assert "--data" in proc.stderr and NAMES_ENV in proc.stderr


# ----------------------------------------------------------------------------- train_makemore.py


@needs_names
def test_train_makemore_trains_evaluates_samples_plots(tmp_path: Path) -> None:
    steps = 300
    proc = run_example("train_makemore", "--data", os.environ[NAMES_ENV], "--steps", str(steps), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    V, D, T, H = 27, 10, 3, 200  # pt2
    assert f"config pt2: {V * D + T * D * H + H + H * V + V} parameters; {steps} steps" in lines[0]
    means = [float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith("steps ")]
    assert len(means) == 10
    assert means[-1] < means[0]  # the loss falls
    train = float(next(ln for ln in lines if ln.startswith("train ")).split()[1])
    dev = float(next(ln for ln in lines if ln.startswith("dev ")).split()[1])
    assert 1.5 < train < means[0] and 1.5 < dev < means[0]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("dev ")) + 1
    names = lines[start : start + 10]
    assert len(names) == 10 and all(re.fullmatch(r"[a-z]*", n) for n in names)
    assert (tmp_path / "loss.png").read_bytes().startswith(PNG_MAGIC)


def test_train_makemore_rejects_bad_steps(tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("emma\nolivia\n")
    proc = run_example("train_makemore", "--data", str(names), "--steps", "0", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "--steps" in proc.stderr


def test_train_makemore_rejects_characters_outside_the_vocabulary(tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("emma\nZoe\n")
    proc = run_example("train_makemore", "--data", str(names), "--steps", "1", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "'Z'" in proc.stderr and "Traceback" not in proc.stderr
