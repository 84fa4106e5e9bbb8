"""Fused linear + cross-entropy (a language-model head): tinyops chunked against torch and the unfused path.

``loss = cross_entropy(x @ weight + bias, target)`` with its gradients dx, dweight, dbias, at N rows,
D features and V classes. Variants:
  tinyops fused      tinyops.linear_cross_entropy_forward/backward (row chunks), BLAS at 1 and 2 threads,
                     at its default chunk size (and, one call each, a sweep of other chunk sizes)
  tinyops unfused    linear_forward -> cross_entropy_forward -> backwards: holds the (N, V) logits
  torch chunked      F.linear_cross_entropy with LinearCrossEntropyOptions(batch_chunk_size=c) at the best
                     c of a sweep (chosen at 2 threads), 1 and 2 threads
  torch unfused      F.linear_cross_entropy with options=None (its reference path), 2 threads

Every variant is checked against a float64 reference (computed chunk by chunk, independently of the code
under test) before it is timed: each result within ``64 eps sqrt(K) max|ref|`` (K: the length of the
sums behind it; a random-walk rounding bound, far below what a wrong formula gives). Peak extra memory:
tracemalloc for NumPy, peak-RSS growth of one call in a fresh process for torch.

    python benchmarks/bench_linear_ce.py [--quick] [--out results]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C

import tinyops
from tinyops.ops.linear_cross_entropy import (
    default_chunk_size,
    linear_cross_entropy_backward,
    linear_cross_entropy_forward,
)

Array = np.ndarray[Any, Any]
Result = tuple[Any, Array, Array, Array | None]  # loss, dx, dweight, dbias

FULL = (4096, 256, 32768)
QUICK = (1024, 128, 8192)
TINY = (96, 16, 700)
CHUNKS = (128, 256, 512, 1024, 2048)  # the chunk sweeps (rows per chunk), plus N itself


def make_inputs(N: int, D: int, V: int, dtype: str = "float32", seed: int = 0) -> tuple[Array, Array, Array, Array]:
    """x ~ N(0, 1), weight ~ N(0, 1/D) (logits of unit scale), bias ~ N(0, 0.1^2), uniform targets."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D), dtype=np.float32).astype(dtype)
    weight = (rng.standard_normal((D, V), dtype=np.float32) / np.sqrt(D)).astype(dtype)
    bias = (0.1 * rng.standard_normal(V, dtype=np.float32)).astype(dtype)
    return x, weight, bias, rng.integers(0, V, N)


def reference(x: Array, weight: Array, bias: Array, target: Array, chunk: int = 256) -> Result:
    """float64 loss (mean) and gradients, chunk by chunk: ``dlogits = (softmax - onehot) / N``,
    ``dx = dlogits @ W.T``, ``dW = sum x.T @ dlogits``, ``db = sum dlogits``."""
    N = x.shape[0]
    x64, w64, b64 = x.astype(np.float64), weight.astype(np.float64), bias.astype(np.float64)
    loss, dx, dw, db = 0.0, np.empty_like(x64), np.zeros_like(w64), np.zeros_like(b64)
    for r0 in range(0, N, chunk):
        r1 = min(r0 + chunk, N)
        z = x64[r0:r1] @ w64 + b64
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        rows = np.arange(r1 - r0)
        loss += float(np.sum(np.log(s[:, 0]) + m[:, 0] - z[rows, target[r0:r1]]))
        e /= s
        e[rows, target[r0:r1]] -= 1
        e /= N
        dx[r0:r1] = e @ w64.T
        dw += x64[r0:r1].T @ e
        db += e.sum(axis=0)
    return loss / N, dx, dw, db


def check(got: Result, ref: Result, dtype: np.dtype[Any]) -> C.Check:
    eps = float(np.finfo(dtype).eps)
    N, D = ref[1].shape
    V = ref[2].shape[1]

    def tol(r: Any, K: int) -> float:
        return 64 * eps * np.sqrt(K) * float(np.max(np.abs(r), initial=0.0)) + float(np.finfo(dtype).tiny)

    return C.check_close([
        ("loss", got[0], ref[0], 64 * eps * (1 + abs(ref[0]) + np.log2(V) + np.sqrt(D))),
        ("dx", got[1], ref[1], tol(ref[1], V)), ("dweight", got[2], ref[2], tol(ref[2], N)),
        ("dbias", got[3], ref[3], tol(ref[3], N)),
    ])


# ============================================================================ the variants


@dataclass(frozen=True)
class Variant:
    name: str
    make: Callable[[Array, Array, Array, Array], Callable[[], Result]]  # inputs -> step
    threads: int
    kind: str  # "numpy" (BLAS threads) or "torch"
    chunk: int | None = None


def tinyops_fused(chunk: int | None) -> Callable[[Array, Array, Array, Array], Callable[[], Result]]:
    def make(x: Array, w: Array, b: Array, t: Array) -> Callable[[], Result]:
        def step() -> Result:
            loss, cache = linear_cross_entropy_forward(x, w, t, b, chunk_size=chunk)
            return (loss, *linear_cross_entropy_backward(1.0, cache))

        return step

    return make


def tinyops_unfused(x: Array, w: Array, b: Array, t: Array) -> Callable[[], Result]:
    def step() -> Result:
        logits, lin_cache = tinyops.linear_forward(x, w, b)  # (N, V)
        loss, ce_cache = tinyops.cross_entropy_forward(logits, t)
        return (loss, *tinyops.linear_backward(tinyops.cross_entropy_backward(1.0, ce_cache), lin_cache))

    return step


def torch_make(chunk: int | None, threads: int) -> Callable[[Array, Array, Array, Array], Callable[[], Result]]:
    """torch's op; its weight is laid out (V, D), so ours is transposed once, outside the timed call.
    ``chunk=None``: the reference (unchunked) path."""

    def make(x: Array, w: Array, b: Array, t: Array) -> Callable[[], Result]:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(threads)
        wT, tt = np.ascontiguousarray(w.T), torch.from_numpy(t)
        opts = None if chunk is None else torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk,
                                                                               chunking_method=None)

        def step() -> Result:
            xt, wt, bt = (torch.from_numpy(a).requires_grad_(True) for a in (x, wT, b))
            loss = F.linear_cross_entropy(xt, wt, tt, linear_bias=bt, options=opts)
            loss.backward()
            assert xt.grad is not None and wt.grad is not None and bt.grad is not None
            return loss.detach().numpy(), xt.grad.numpy(), wt.grad.numpy().T, bt.grad.numpy()

        return step

    return make


def torch_rss_step(N: int, D: int, V: int, chunk: int | None, threads: int) -> Callable[[], Any]:
    """For :func:`common.rss_peak`: torch's forward + backward on fresh inputs of this shape."""
    return torch_make(chunk, threads)(*make_inputs(N, D, V))


# ============================================================================ the run


def timed(name: str, step: Callable[[], Result], ref: Result, dtype: np.dtype[Any], budget: float,
          min_runs: int) -> dict[str, Any]:
    try:
        c = check(step(), ref, dtype)
    except Exception as e:  # a variant that raises fails; it is not timed
        c = C.Check(False, float("inf"), f"raised {type(e).__name__}: {e}")
    row: dict[str, Any] = {"variant": name, "status": "ok" if c.ok else "FAILED", "check": c.detail,
                           "err_over_tol": c.err}
    if c.ok:
        row["seconds"] = C.median_time(step, budget, min_runs=min_runs, warm=False)  # checked = warmed up
    return row


def run(shape: tuple[int, int, int], budget: float, torch_memory: bool, min_runs: int) -> list[dict[str, Any]]:
    N, D, V = shape
    x, w, b, t = make_inputs(N, D, V)
    dtype = x.dtype
    base = {"dtype": dtype.name, "N": N, "D": D, "V": V}
    t0 = time.perf_counter()
    ref = reference(x, w, b, t)
    print(f"  reference: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rows: list[dict[str, Any]] = []

    chunk = default_chunk_size(V, dtype)
    for threads in (1, 2):
        with C.blas_threads(threads):
            step = tinyops_fused(None)(x, w, b, t)
            row = timed(f"tinyops fused (chunk {chunk}), {threads} BLAS thread{'s' * (threads > 1)}", step, ref,
                        dtype, budget, min_runs)
            if row["status"] == "ok" and threads == 2:
                row.update(peak_bytes=C.tracemalloc_peak(step), peak_method="tracemalloc")
        rows.append({**base, **row, "threads": threads, "chunk": chunk})
    sweep: list[dict[str, Any]] = []
    with C.blas_threads(2):
        for c in (*(c for c in CHUNKS if c < N and c != chunk), N):  # other chunk sizes, one timed call each
            row = timed(f"tinyops fused (chunk {c}), 2 BLAS threads", tinyops_fused(c)(x, w, b, t), ref, dtype, 0.0, 1)
            sweep.append({**base, **row, "threads": 2, "chunk": c, "sweep": True})
    with C.blas_threads(2):
        step = tinyops_unfused(x, w, b, t)
        row = timed("tinyops unfused, 2 BLAS threads", step, ref, dtype, budget, min_runs)
        if row["status"] == "ok":
            row.update(peak_bytes=C.tracemalloc_peak(step), peak_method="tracemalloc")
        rows.append({**base, **row, "threads": 2, "chunk": None})
    print(f"  tinyops: {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: its variants are left out")
        return rows + sweep
    for c in (*(c for c in CHUNKS if c < N), N):  # the sweep at 2 threads, one timed call each
        row = timed(f"torch chunked (chunk {c}), 2 threads", torch_make(c, 2)(x, w, b, t), ref, dtype, 0.0, 1)
        sweep.append({**base, **row, "threads": 2, "chunk": c, "sweep": True})
    ok = [r for r in sweep if r["status"] == "ok" and r["variant"].startswith("torch")]
    best = min(ok, key=lambda r: r["seconds"])["chunk"] if ok else CHUNKS[0]
    for threads in (1, 2):
        row = timed(f"torch chunked (best chunk {best}), {threads} thread{'s' * (threads > 1)}",
                    torch_make(best, threads)(x, w, b, t), ref, dtype, budget, min_runs)
        if row["status"] == "ok" and threads == 2 and torch_memory:
            kw = {"N": N, "D": D, "V": V, "chunk": best, "threads": 2}
            row.update(peak_bytes=C.rss_peak(Path(__file__), "torch_rss_step", kw),
                       peak_method="RSS growth, fresh process")
        rows.append({**base, **row, "threads": threads, "chunk": best})
    row = timed("torch unfused (options=None), 2 threads", torch_make(None, 2)(x, w, b, t), ref, dtype, budget,
                min_runs)
    if row["status"] == "ok" and torch_memory:
        kw = {"N": N, "D": D, "V": V, "chunk": None, "threads": 2}
        row.update(peak_bytes=C.rss_peak(Path(__file__), "torch_rss_step", kw), peak_method="RSS growth, fresh process")
    rows.append({**base, **row, "threads": 2, "chunk": None})
    print(f"  torch: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows + sweep


def profile(x: Array, w: Array, b: Array, t: Array, chunk: int, budget: float) -> list[list[str]]:
    """Where one chunk of the fused op spends its time (1 BLAS thread): the three matmuls against the
    elementwise work, each step timed alone on the chunk's own arrays."""
    from tinyops.ops.linear_cross_entropy import _softmax_rows_

    x_c, t_c = x[:chunk], t[:chunk]
    z = x_c @ w + b
    g = np.full(chunk, 1.0 / x.shape[0], dtype=x.dtype)
    dweight, dweight_c = np.zeros_like(w), np.empty_like(w)
    buf = np.empty_like(z)

    def softmax_and_dlogits() -> None:
        np.copyto(buf, z)
        _, s = _softmax_rows_(buf, t_c)
        np.multiply(buf, g[:, None] / s, out=buf)
        buf[np.arange(chunk), t_c] -= g

    steps = [
        ("logits = x_c @ weight + bias", lambda: np.add(x_c @ w, b, out=buf)),
        ("softmax and dlogits, in place (includes a copy of the logits)", softmax_and_dlogits),
        ("dx_c = dlogits @ weight.T", lambda: buf @ w.T),
        ("dweight += x_c.T @ dlogits", lambda: np.add(dweight, np.matmul(x_c.T, buf, out=dweight_c), out=dweight)),
    ]
    with C.blas_threads(1):
        times = [(name, C.median_time(f, budget)) for name, f in steps]
    total = sum(sec for _, sec in times)
    flops = 2 * chunk * x.shape[1] * w.shape[1]
    return [[name, C.fmt(sec * 1e3), f"{100 * sec / total:.0f}%",
             C.fmt(flops / sec / 1e9) if "@" in name else "-"] for name, sec in times]


def table(rows: list[dict[str, Any]]) -> str:
    def find(prefix: str, threads: int) -> dict[str, Any] | None:
        return next((r for r in rows if r["variant"].startswith(prefix) and r["threads"] == threads
                     and r["status"] == "ok" and not r.get("sweep")), None)

    out = []
    for r in rows:
        ok = r["status"] == "ok"
        t_best = find("torch chunked (best", r["threads"])
        peak = r.get("peak_bytes")
        out.append([
            f"{r['N']} x {r['D']} -> {r['V']}", r["variant"] + (" (sweep)" if r.get("sweep") else ""), r["status"],
            C.fmt(r["seconds"] * 1e3) if ok else "-",
            f"{t_best['seconds'] / r['seconds']:.2f}x" if ok and t_best else "-",
            "-" if peak is None else C.fmt(peak / 2**20),
        ])
    headers = ["N x D -> V", "variant", "check", "median ms", "speed-up vs torch best chunk, same threads",
               "peak extra MiB"]
    return C.md_table(headers, out, "lllrrr")


def targets(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The issue's targets, measured: peak memory <= 1/8 of the unfused path; >= 2x faster than torch's
    chunked op at its best chunk, at equal threads."""
    main = [r for r in rows if not r.get("sweep") and r["status"] == "ok"]

    def find(prefix: str, threads: int) -> dict[str, Any] | None:
        return next((r for r in main if r["variant"].startswith(prefix) and r["threads"] == threads), None)

    out = []
    fused, unfused = find("tinyops fused", 2), find("tinyops unfused", 2)
    if fused and unfused and fused.get("peak_bytes") and unfused.get("peak_bytes"):
        share = fused["peak_bytes"] / unfused["peak_bytes"]
        out.append(["tinyops fused / unfused peak memory", "<= 1/8 (0.125)", f"{share:.3f} (1/{1 / share:.1f})",
                    "yes" if share <= 1 / 8 else "NO"])
    for threads in (1, 2):
        f, t = find("tinyops fused", threads), find("torch chunked (best", threads)
        r = t["seconds"] / f["seconds"] if f and t else None
        what = f"torch best chunk / tinyops fused, {threads} thread{'s' * (threads > 1)}"
        out.append([what, ">= 2", *C.ratio_cells(r, None if r is None else r >= 2)])
    return out


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    plt = C.pyplot()
    main_rows = [r for r in rows if not r.get("sweep") and r["status"] == "ok"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [r["variant"] for r in main_rows]
    a1.barh(names, [r["seconds"] for r in main_rows])
    a1.set(xlabel="median seconds (forward + backward)", title="linear + cross-entropy: time")
    mem = [r for r in main_rows if r.get("peak_bytes")]
    a2.barh([r["variant"] for r in mem], [r["peak_bytes"] / 2**20 for r in mem])
    a2.set(xlabel="peak extra MiB", xscale="log", title="linear + cross-entropy: peak extra memory")
    for a in (a1, a2):
        a.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    p = out / "bench_linear_ce.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return [p]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(parser)
    parser.add_argument("--tiny", action="store_true", help="a tiny shape only (a self-test of the script)")
    parser.add_argument("--no-torch-memory", action="store_true", help="skip torch's fresh-process memory runs")
    args = parser.parse_args(argv)
    shape = TINY if args.tiny else QUICK if args.quick else FULL
    budget = args.budget if args.budget is not None else (0.5 if args.quick or args.tiny else 2.0)
    min_runs = 3
    info = C.machine_info()
    print(f"Linear + cross-entropy forward + backward, N x D -> V = {shape[0]} x {shape[1]} -> {shape[2]}, "
          f"float32\nMachine: {C.machine_line(info)}\n", flush=True)
    rows = run(shape, budget, not args.no_torch_memory, min_runs)
    goals = targets(rows)
    chunk = default_chunk_size(shape[2], np.dtype(np.float32))
    prof = profile(*make_inputs(*shape), min(chunk, shape[0]), budget / 4)
    tab = (
        table(rows)
        + "\n\nTargets (issue 5):\n\n"
        + C.md_table(["what", "target", "measured", "met"], goals, "llrl")
        + f"\n\nProfile of one chunk ({min(chunk, shape[0])} rows) of the fused op, 1 BLAS thread:\n\n"
        + C.md_table(["step", "median ms", "share", "GFLOP/s"], prof, "lrrr")
    )
    print(tab)
    failed = [f"{r['variant']}: {r['check']}" for r in rows if r["status"] != "ok"]
    print("\nEvery variant's loss and gradients were checked against a float64 reference before timing."
          + (f"\nFAILED (not timed): {'; '.join(failed)}" if failed else " All passed."))
    payload = {"benchmark": "linear-ce", "machine": info, "quick": args.quick, "shape": shape, "budget_s": budget,
               "command": "python benchmarks/bench_linear_ce.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "rows": rows, "targets": goals, "profile": prof}
    paths = C.write_results(args.out, "bench_linear_ce", "Linear + cross-entropy", tab, payload)
    if not args.no_plots:
        paths += plot(rows, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
