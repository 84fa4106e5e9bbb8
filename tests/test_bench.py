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
            "--no-torch-memory", "--torch-compile-threads", "none", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "| float64 | 64 x 300 | naive | 1 | ok |" in out
    for column in ("first call ms", "vs floor", "vs fused", "torch eager / it", "of copy bandwidth"):
        assert f"\n  {column} " in out, column  # every column is explained in the printed output
    assert "torch.compile at 1, 2 thread(s) was left out" in out
    assert "target" not in out.lower() and "issue" not in out.lower()
    payload = results(tmp_path, "bench_loss", ["bench_loss_time.png", "bench_loss_bandwidth.png",
                                               "bench_loss_memory.png"])
    want = {(v.name, v.threads) for v in bench.variants(have_torch=True, compile_threads=())}
    assert {("naive", 1), ("fused, reference", 1), ("torch eager", 2)} <= want
    assert {("fused, compiled accurate", n) for n in (1, 2)} | {("fused, compiled fast", n) for n in (1, 2)} <= want
    want |= {("exp pass, np.exp", 1), ("exp pass, compiled", 1)}
    bandwidth = {int(k): b for k, b in payload["bandwidth_bytes_per_s"].items()}
    assert set(bandwidth) == {1, 2} and min(bandwidth.values()) > 1e8
    rows = payload["rows"]
    for dtype in ("float32", "float64"):
        for N, V in ((8, 5), (64, 300)):
            got = {(r["variant"], r["threads"]): r for r in rows if (r["dtype"], r["N"], r["V"]) == (dtype, N, V)}
            assert set(got) == want, (dtype, N, V)
            floors = [r for r in got.values() if r.get("is_floor")]
            assert len(floors) == 1 and floors[0]["seconds"] == min(
                r["seconds"] for r in got.values() if r["variant"].startswith("exp pass"))
            for r in got.values():
                assert r["status"] == "ok" and r["seconds"] > 0 and r["ns_per_elem"] > 0, r
                assert r["x_floor"] == pytest.approx(r["seconds"] / floors[0]["seconds"])
                # the roofline columns restate the traffic, the time and the bandwidth
                assert r["bytes"] == r["passes"] * N * V * np.dtype(dtype).itemsize
                assert r["bw_fraction"] == pytest.approx(r["bytes"] / r["seconds"] / bandwidth[r["threads"]])
                assert r["variant"].startswith("torch") or r["peak_bytes"] >= 0, r
            fused = got["fused, compiled accurate", 2]
            assert got["fused, compiled fast", 2]["vs_fused"] == pytest.approx(
                got["fused, compiled fast", 2]["seconds"] / fused["seconds"])
            assert fused["torch_over"] == pytest.approx(got["torch eager", 2]["seconds"] / fused["seconds"])
            assert got["naive", 1]["peak_bytes"] > 0


def test_loss_traffic_counts() -> None:
    """The least bytes each variant moves: a fused forward + backward reads the logits twice and writes
    dlogits once; the naive chain writes and reads every intermediate; the exp pass reads and writes once."""
    bench = load("bench_loss")
    passes = {k: r + w for k, (r, w, _) in bench.TRAFFIC.items()}
    assert passes == {"exp pass": 2, "fused": 3, "torch.compile": 3, "torch eager": 6, "naive": 21}
    r32, w32, _ = bench.reference_traffic(4)
    r64, w64, _ = bench.reference_traffic(8)
    assert 3 < r32 + w32 < r64 + w64 < passes["naive"] + 20
    used = {v.traffic for v in bench.variants(have_torch=True)}
    assert used <= set(bench.TRAFFIC) | {"reference"}
    text = bench.explain_traffic()
    assert all(name in text for name in bench.TRAFFIC)


def test_loss_side_by_side_restates_the_rows(tmp_path: Path) -> None:
    """The side-by-side table at V = 8192 divides the measured rows."""
    bench = load("bench_loss")
    argv = ["--shapes", "32x27,16x8192", "--dtypes", "float32", "--budget", "0.01", "--no-torch-memory",
            "--torch-compile-threads", "none", "--no-cold-compile", "--no-plots", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    payload = json.loads((tmp_path / "bench_loss.json").read_text())
    rows = {(r["N"], r["variant"], r["threads"]): r for r in payload["rows"]}
    table = {(s[0], s[1]): s for s in payload["side_by_side"]}
    assert {k[0] for k in table} == {"float32 16 x 8192"}
    fast2 = rows[16, "fused, compiled fast", 2]
    line = table["float32 16 x 8192", "compiled fast, 2 threads"]
    assert line[3] == f"{fast2['x_floor']:.2f}x"
    assert line[4] == f"{rows[16, 'torch eager', 2]['seconds'] / fast2['seconds']:.2f}x"
    assert line[6] == f"{rows[16, 'naive', 1]['seconds'] / fast2['seconds']:.2f}x"
    assert line[5] == "-"  # torch.compile left out


def test_loss_benchmark_torch_compile(tmp_path: Path) -> None:
    """torch.compile is checked like every variant; its first call (the compilation) is reported apart."""
    bench = load("bench_loss")
    argv = ["--shapes", "8x5", "--dtypes", "float32", "--budget", "0.01", "--no-torch-memory",
            "--torch-compile-threads", "1", "--no-cold-compile", "--no-plots", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    payload = json.loads((tmp_path / "bench_loss.json").read_text())
    row = next(r for r in payload["rows"] if r["variant"] == "torch.compile")
    assert row["status"] == "ok" and row["threads"] == 1 and row["passes"] == 3
    first = next(f for f in payload["first_calls"] if f["kind"] == "torch.compile")
    assert first["first_call_s"] == row["first_call_s"] > row["seconds"] > 0
    assert not any(r["variant"] == "torch.compile" and r["threads"] == 2 for r in payload["rows"])


def test_loss_benchmark_reports_a_wrong_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A variant whose gradient is off by 1% fails its check: FAILED in the JSON, no time, exit code 1."""
    bench = load("bench_loss")

    def wrong(logits: Any, target: Any) -> tuple[Any, Any]:
        loss, dlogits = bench.naive_step(logits, target)
        return loss, dlogits * 1.01

    real = bench.variants
    with_wrong = [*real(False), bench.Variant("wrong", wrong, "naive")]
    monkeypatch.setattr(bench, "variants", lambda have_torch, compile_threads: with_wrong)
    argv = ["--shapes", "16x40", "--dtypes", "float64", "--budget", "0.01", "--no-cold-compile", "--no-plots",
            "--out", str(tmp_path)]
    assert bench.main(argv) == 1
    rows = {r["variant"]: r for r in json.loads((tmp_path / "bench_loss.json").read_text())["rows"]}
    assert rows["wrong"]["status"] == "FAILED" and "seconds" not in rows["wrong"]
    assert rows["naive"]["status"] == "ok"


def test_kernel_first_call_child(capsys: pytest.CaptureFixture[str]) -> None:
    """The fresh-process probe of the compiled op's first calls: one time per precision and thread count,
    and the table that prints them (the full run runs it twice, into an empty numba cache and from it)."""
    bench = load("bench_loss")
    assert bench.main(["--first-call-child"]) == 0
    seconds = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    want = ["import"] + [f"{p}, {n} thread{'s' * (n > 1)}" for p in ("accurate", "fast") for n in (1, 2)]
    assert list(seconds) == want and all(s >= 0 for s in seconds.values())
    table = bench.kernel_first_calls_table({"empty cache: compiled": seconds, "filled cache: loaded": seconds})
    assert table.splitlines()[0].startswith("| numba cache | import tinyops.kernels | accurate, 1 thread |")
    assert len(table.splitlines()) == 4


def test_copy_bandwidth_and_exp_passes() -> None:
    """The bandwidth probe counts read + write of a copy; the exp passes time NumPy's and the compiled exp."""
    common = load("common")
    bw1 = common.copy_bandwidth(2**22, 1, 0.01)
    bw2 = common.copy_bandwidth(2**22, 2, 0.01)
    assert 1e8 < bw1 < 1e13 and 1e8 < bw2 < 1e13
    for dtype in (np.float32, np.float64):
        times = common.exp_pass_times(np.linspace(-5, 5, 3000, dtype=dtype).reshape(30, 100), 0.001)
        assert set(times) == {"np.exp", "compiled"}
        assert all(1e-7 < t < 0.1 for t in times.values()), times  # 3,000 exps: microseconds, not nothing


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
    payload = results(tmp_path, "bench_linear_ce", ["bench_linear_ce.png"])
    rows = payload["rows"]
    names = [r["variant"] for r in rows if not r.get("sweep")]
    for backend in ("compiled", "reference"):
        for threads in ("1 thread", "2 threads"):
            assert any(n.startswith(f"tinyops fused ({backend},") and n.endswith(threads) for n in names), backend
    for prefix in ("three matmuls", "tinyops unfused", "torch chunked (best chunk", "torch unfused"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert {r["threads"] for r in rows if r["role"] == "floor"} == {1, 2}
    assert all(r["status"] == "ok" and r["seconds"] > 0 for r in rows)  # every variant checked, then timed
    fused = [r for r in rows if r["role"] == "fused" and not r.get("sweep")]
    unfused = next(r for r in rows if r["role"] == "unfused")
    assert len(fused) == 4 and all(0 < r["peak_bytes"] for r in [*fused, unfused])
    ratios = payload["ratios"]
    assert [r["variant"] for r in ratios] == [r["variant"] for r in fused]
    assert all(r[k] > 0 for r in ratios for k in ("fused_over_three_matmuls", "fused_peak_over_unfused_peak",
                                                   "torch_best_chunk_over_fused"))
    md = (tmp_path / "bench_linear_ce.md").read_text()
    assert "| fused / three matmuls |" in md and "target" not in md.lower() and "issue" not in md.lower()

    # a variant with a wrong result, or one that raises, is reported as FAILED and not timed
    x, w, b, t = bench.make_inputs(*bench.TINY)
    ref = bench.reference(x, w, b, t)
    loss, dx, dweight, dbias = bench.tinyops_fused(None, "compiled", 1)(x, w, b, t)()
    wrong = bench.timed("wrong dweight", lambda: (loss, dx, 1.01 * dweight, dbias),
                        lambda got: bench.check(got, ref, x.dtype), 0.0, 1)
    assert wrong["status"] == "FAILED" and "seconds" not in wrong and wrong["err_over_tol"] > 1
    raises = bench.timed("raises", lambda: 1 / 0, lambda got: bench.check(got, ref, x.dtype), 0.0, 1)
    assert raises["status"] == "FAILED" and "seconds" not in raises and "ZeroDivisionError" in raises["check"]


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
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(cli.BENCHMARKS, "loss", "no_such_bench.py")
    assert cli.main(["bench", "loss", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "no_such_bench.py not found" in err and "source checkout" in err
