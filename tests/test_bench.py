"""The benchmark scripts, run on tiny shapes: every variant present, every check passed, every file written;
a variant with a wrong result is reported as FAILED and not timed; ``tinyops bench`` finds the scripts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinyops import cli

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
PNG = b"\x89PNG\r\n\x1a\n"


def load(name: str) -> Any:
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def results(out: Path, name: str, pngs: list[str]) -> dict[str, Any]:
    """The JSON payload, after checking that the markdown, JSON and PNG files were written."""
    md = (out / f"{name}.md").read_text()
    assert md.startswith("# ") and "| variant |" in md
    for png in pngs:
        assert (out / png).read_bytes()[:8] == PNG, png
    payload: dict[str, Any] = json.loads((out / f"{name}.json").read_text())
    assert payload["machine"]["numpy"] == np.__version__ and payload["machine"]["cpu"]
    return payload


def test_loss_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load("bench_loss")
    argv = ["--quick", "--shapes", "8x5,64x300", "--dtypes", "float32,float64", "--budget", "0.01",
            "--no-torch-memory", "--out", str(tmp_path)]  # fmt: skip
    assert bench.main(argv) == 0
    assert "| float64 | 64 x 300 | naive | ok |" in capsys.readouterr().out
    payload = results(tmp_path, "bench_loss", ["bench_loss_time.png", "bench_loss_memory.png"])
    names = {v.name for v in bench.variants(have_torch=True)} | {"floor (np.exp, 1 core)"}
    assert {"naive", "composed", "fused", "torch, 1 thread", "torch, 2 threads"} <= names
    rows = payload["rows"]
    for dtype in ("float32", "float64"):
        for N, V in ((8, 5), (64, 300)):
            got = {r["variant"]: r for r in rows if (r["dtype"], r["N"], r["V"]) == (dtype, N, V)}
            assert set(got) == names, (dtype, N, V)
            for r in got.values():
                assert r["status"] == "ok" and r["seconds"] > 0 and r["ns_per_elem"] > 0, r
                assert r["variant"].startswith("torch") or r["peak_bytes"] >= 0, r
            assert got["naive"]["peak_bytes"] > 0


def test_loss_targets_are_the_rows_ratios(tmp_path: Path) -> None:
    """The targets table at 32x27 and V = 8192 restates ratios of the measured rows."""
    bench = load("bench_loss")
    argv = ["--shapes", "32x27,16x8192", "--dtypes", "float32", "--budget", "0.01", "--no-torch-memory",
            "--no-plots", "--out", str(tmp_path)]  # fmt: skip
    assert bench.main(argv) == 0
    payload = json.loads((tmp_path / "bench_loss.json").read_text())
    rows = {(r["N"], r["variant"]): r for r in payload["rows"]}
    goals = {g[0]: g for g in payload["targets"]}
    naive = goals["float32 16x8192: naive / fastest fused (time)"]
    fastest = min((rows[16, n] for n in ("fused", "fused fast, 1 thread") if (16, n) in rows),
                  key=lambda r: r["seconds"])  # fmt: skip
    assert naive[2] == f"{rows[16, 'naive']['seconds'] / fastest['seconds']:.2f}x"
    assert any(k.startswith("float32 32x27: fastest fused fwd+bwd") for k in goals)
    assert "float32 16x8192: torch / fastest fused, 2 threads" in goals


def test_loss_benchmark_reports_a_wrong_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A variant whose gradient is off by 1% fails its check: FAILED in the JSON, no time, exit code 1."""
    bench = load("bench_loss")

    def wrong(logits: Any, target: Any) -> tuple[Any, Any]:
        loss, dlogits = bench.naive_step(logits, target)
        return loss, dlogits * 1.01

    real = bench.variants
    monkeypatch.setattr(bench, "variants", lambda have_torch: [*real(False), bench.Variant("wrong", wrong)])
    argv = ["--shapes", "16x40", "--dtypes", "float64", "--budget", "0.01", "--no-plots", "--out", str(tmp_path)]
    assert bench.main(argv) == 1
    rows = {r["variant"]: r for r in json.loads((tmp_path / "bench_loss.json").read_text())["rows"]}
    assert rows["wrong"]["status"] == "FAILED" and "seconds" not in rows["wrong"]
    assert rows["naive"]["status"] == "ok"


def test_embedding_benchmark_through_the_cli(tmp_path: Path) -> None:
    argv = ["bench", "embedding", "--tiny", "--budget", "0.01", "--no-torch-memory", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    bench = sys.modules["bench_embedding"]
    payload = results(tmp_path, "bench_embedding", ["bench_embedding.png"])
    rows = payload["rows"]
    for V, D, M in ((27, 10, 96), (300, 16, 500)):
        got = {r["variant"]: r for r in rows if (r["V"], r["D"], r["rows"]) == (V, D, M)}
        want = set(bench.CANDIDATES) | {"tinyops embedding_backward", "torch, 1 thread", "torch, 2 threads"}
        assert set(got) == want
        assert all(r["status"] == "ok" and r["seconds"] > 0 for r in got.values())
        assert payload["best"][f"float32 {V}x{D}, {M} rows"] in bench.CANDIDATES


def test_embedding_candidates_sum_repeated_rows() -> None:
    """Every candidate against a hand-summed scatter-add with repeated and unused rows."""
    bench = load("bench_embedding")
    idx = np.array([2, 0, 2, 2, 3])
    dout = np.arange(10, dtype=np.float64).reshape(5, 2) * 0.5 + 0.25
    want = np.zeros((5, 2))
    for m, v in enumerate(idx):
        want[v] += dout[m]
    for name, method in bench.CANDIDATES.items():
        np.testing.assert_allclose(method(idx, dout, 5), want, rtol=1e-15, err_msg=name)


def test_linear_ce_benchmark(tmp_path: Path) -> None:
    bench = load("bench_linear_ce")
    assert bench.main(["--tiny", "--budget", "0.01", "--no-torch-memory", "--out", str(tmp_path)]) == 0
    rows = results(tmp_path, "bench_linear_ce", ["bench_linear_ce.png"])["rows"]
    names = [r["variant"] for r in rows]
    for prefix in ("tinyops fused", "tinyops unfused", "torch chunked (best chunk", "torch unfused"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert all(r["status"] == "ok" and r["seconds"] > 0 for r in rows)
    fused = next(r for r in rows if r["variant"].startswith("tinyops fused") and r["threads"] == 2)
    unfused = next(r for r in rows if r["variant"].startswith("tinyops unfused"))
    assert 0 < fused["peak_bytes"] and 0 < unfused["peak_bytes"]


def test_rss_peak_of_a_fresh_process() -> None:
    """The torch memory probe: a fresh process whose one call allocates a known 64 MiB array."""
    common = load("common")
    peak = common.rss_peak(Path(__file__), "_alloc_64mib", {})
    if peak is None:
        pytest.skip("peak RSS cannot be reset on this system (not Linux)")
    assert 60 * 2**20 <= peak <= 80 * 2**20


def test_torch_memory_child() -> None:
    """The loss benchmark's torch memory probe runs in a fresh process and sees torch's allocations:
    at 256 x 2048 float64 the logits' gradient alone is 4 MiB."""
    common = load("common")
    kw = {"N": 256, "V": 2048, "dtype": "float64", "threads": 1}
    peak = common.rss_peak(BENCH / "bench_loss.py", "torch_rss_step", kw)
    if peak is None:
        pytest.skip("peak RSS cannot be reset on this system (not Linux)")
    assert peak >= 4 * 2**20


def _alloc_64mib() -> Any:
    return lambda: np.ones(64 * 2**20 // 8).sum()


def test_cli_says_where_the_benchmarks_should_be(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setitem(cli.BENCHMARKS, "loss", "no_such_bench.py")
    assert cli.main(["bench", "loss", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "no_such_bench.py not found" in err and "source checkout" in err
