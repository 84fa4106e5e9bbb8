"""Fused linear + cross-entropy (a language-model head): tinyops against its matmul floor, torch and the unfused path.

``loss = cross_entropy(x @ weight + bias, target)`` with its gradients dx, dweight, dbias, at N rows,
D features and V classes. Variants ("n threads" runs NumPy's BLAS on n threads and passes ``threads=n``
to the op):
  tinyops fused      tinyops.linear_cross_entropy_forward/backward (row chunks) with backend='compiled'
                     (the default) and backend='reference', at 1 and 2 threads, at the default chunk size
                     (and, one call each, a sweep of other chunk sizes, compiled, 2 threads)
  three matmuls      the fused op's three matrix products alone, chunk by chunk on preallocated buffers:
                     ``logits = x_c @ weight + bias``, ``logits @ weight.T``, ``x_c.T @ logits``; the time
                     the fused op cannot go below with these BLAS calls; 1 and 2 threads
  tinyops unfused    linear_forward -> cross_entropy_forward -> backwards: holds the (N, V) logits
  torch chunked      F.linear_cross_entropy with LinearCrossEntropyOptions(batch_chunk_size=c) at the best
                     c of a sweep (chosen at 2 threads), 1 and 2 threads
  torch unfused      F.linear_cross_entropy with options=None (its reference path), 2 threads

Every variant is checked against a float64 reference (computed chunk by chunk, independently of the code
under test) before it is timed: each result within ``64 eps sqrt(K) max|ref|`` (K: the length of the
sums behind it; a random-walk rounding bound, far below what a wrong formula gives); the three matmuls
against the same products in float64. Peak extra memory: tracemalloc for NumPy, peak-RSS growth of one
call in a fresh process for torch.

    python benchmarks/bench_linear_ce.py [--quick] [--out results]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C

import tinyops
from tinyops._checks import BACKENDS, Backend
from tinyops.ops.cross_entropy import ce_rows_backward, ce_rows_forward
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
        return 64 * eps * float(np.sqrt(K)) * float(np.max(np.abs(r), initial=0.0)) + float(np.finfo(dtype).tiny)

    return C.check_close([
        ("loss", got[0], ref[0], 64 * eps * (1 + abs(ref[0]) + np.log2(V) + np.sqrt(D))),
        ("dx", got[1], ref[1], tol(ref[1], V)), ("dweight", got[2], ref[2], tol(ref[2], N)),
        ("dbias", got[3], ref[3], tol(ref[3], N)),
    ])


# ============================================================================ the variants


def tinyops_fused(chunk: int | None, backend: Backend, threads: int) -> Callable[[Array, Array, Array, Array],
                                                                            Callable[[], Result]]:
    def make(x: Array, w: Array, b: Array, t: Array) -> Callable[[], Result]:
        def step() -> Result:
            loss, cache = linear_cross_entropy_forward(x, w, t, b, chunk_size=chunk, backend=backend,
                                                       threads=threads)
            return (loss, *linear_cross_entropy_backward(1.0, cache))

        return step

    return make


def three_matmuls(x: Array, w: Array, b: Array, chunk: int) -> Callable[[], tuple[Array, Array, Array]]:
    """The fused op's matrix products alone, chunk by chunk as the op makes them, on buffers allocated
    once: ``logits = x_c @ weight + bias``, then ``logits @ weight.T`` (dx) and ``x_c.T @ logits``
    (the chunk's dweight) with the logits standing in for dlogits (a matmul's time does not depend on
    the values). Returns the last chunk's logits, dx and the last chunk's dweight, for the check."""
    N, D = x.shape
    V = w.shape[1]
    buf = np.empty((min(chunk, N), V), dtype=x.dtype)  # (c, V)
    dx = np.empty((N, D), dtype=x.dtype)  # (N, D)
    dweight_c = np.empty((D, V), dtype=x.dtype)  # (D, V)
    weight_T = w.T  # (V, D) a view

    def step() -> tuple[Array, Array, Array]:
        logits = buf
        for r0 in range(0, N, chunk):
            r1 = min(r0 + chunk, N)
            logits = buf[: r1 - r0]
            np.matmul(x[r0:r1], w, out=logits)  # (c, V)
            logits += b
            np.matmul(logits, weight_T, out=dx[r0:r1])  # (c, D)
            np.matmul(x[r0:r1].T, logits, out=dweight_c)  # (D, V)
        return logits, dx, dweight_c

    return step


def check_three_matmuls(x: Array, w: Array, b: Array, chunk: int) -> Callable[[Any], C.Check]:
    """The three products against the same products in float64: ``logits = x @ w + b``, ``dx = logits @ w.T``
    (every row), ``dweight_c = x_c.T @ logits_c`` (the last chunk)."""
    N, D = x.shape
    V = w.shape[1]
    eps = float(np.finfo(x.dtype).eps)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    logits64 = x64 @ w64 + b.astype(np.float64)  # (N, V)
    r0 = (N - 1) // chunk * chunk if N else 0  # the last chunk's first row
    ref = (logits64[r0:], logits64 @ w64.T, x64[r0:].T @ logits64[r0:])

    def tol(r: Array, K: int) -> float:
        return 64 * eps * float(np.sqrt(K)) * float(np.max(np.abs(r), initial=0.0)) + float(np.finfo(x.dtype).tiny)

    def verify(got: Any) -> C.Check:
        return C.check_close([("logits", got[0], ref[0], tol(ref[0], D)), ("dx", got[1], ref[1], tol(ref[1], D + V)),
                              ("dweight_c", got[2], ref[2], tol(ref[2], D + N - r0))])

    return verify


def tinyops_unfused(threads: int) -> Callable[[Array, Array, Array, Array], Callable[[], Result]]:
    def make(x: Array, w: Array, b: Array, t: Array) -> Callable[[], Result]:
        def step() -> Result:
            logits, lin_cache = tinyops.linear_forward(x, w, b)  # (N, V)
            loss, ce_cache = tinyops.cross_entropy_forward(logits, t, threads=threads)
            return (loss, *tinyops.linear_backward(tinyops.cross_entropy_backward(1.0, ce_cache), lin_cache))

        return step

    return make


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


def threads_label(threads: int) -> str:
    return f"{threads} thread{'s' * (threads > 1)}"


def timed(name: str, step: Callable[[], Any], verify: Callable[[Any], C.Check], budget: float,
          min_runs: int) -> dict[str, Any]:
    """Check one call's result with ``verify``; time the step only if it passed."""
    try:
        c = verify(step())
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

    def verify(got: Any) -> C.Check:
        return check(got, ref, dtype)

    rows: list[dict[str, Any]] = []
    chunk = default_chunk_size(V, dtype)
    rows_c = min(chunk, N)  # rows in the op's first chunk
    for threads in (1, 2):  # the floor and the fused op side by side, at the same threads
        with C.blas_threads(threads):
            row = timed(f"three matmuls (chunk {rows_c}), {threads_label(threads)}", three_matmuls(x, w, b, chunk),
                        check_three_matmuls(x, w, b, chunk), budget, min_runs)
            rows.append({**base, **row, "role": "floor", "threads": threads, "chunk": chunk})
            for backend in BACKENDS:
                step = tinyops_fused(None, backend, threads)(x, w, b, t)
                row = timed(f"tinyops fused ({backend}, chunk {rows_c}), {threads_label(threads)}", step, verify,
                            budget, min_runs)
                if row["status"] == "ok":
                    row.update(peak_bytes=C.tracemalloc_peak(step), peak_method="tracemalloc")
                rows.append({**base, **row, "role": "fused", "backend": backend, "threads": threads, "chunk": chunk})
    sweep: list[dict[str, Any]] = []
    with C.blas_threads(2):
        for c in (*(c for c in CHUNKS if c < N and c != chunk), N):  # other chunk sizes, one timed call each
            row = timed(f"tinyops fused (compiled, chunk {c}), 2 threads", tinyops_fused(c, "compiled", 2)(x, w, b, t),
                        verify, 0.0, 1)
            sweep.append({**base, **row, "role": "fused", "backend": "compiled", "threads": 2, "chunk": c,
                          "sweep": True})
        step = tinyops_unfused(2)(x, w, b, t)
        row = timed("tinyops unfused, 2 threads", step, verify, budget, min_runs)
        if row["status"] == "ok":
            row.update(peak_bytes=C.tracemalloc_peak(step), peak_method="tracemalloc")
        rows.append({**base, **row, "role": "unfused", "threads": 2, "chunk": None})
    print(f"  tinyops: {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: its variants are left out")
        return rows + sweep
    for c in (*(c for c in CHUNKS if c < N), N):  # the sweep at 2 threads, one timed call each
        row = timed(f"torch chunked (chunk {c}), 2 threads", torch_make(c, 2)(x, w, b, t), verify, 0.0, 1)
        sweep.append({**base, **row, "role": "torch chunked", "threads": 2, "chunk": c, "sweep": True})
    ok = [r for r in sweep if r["status"] == "ok" and r["role"] == "torch chunked"]
    best = min(ok, key=lambda r: r["seconds"])["chunk"] if ok else CHUNKS[0]
    for threads in (1, 2):
        row = timed(f"torch chunked (best chunk {best}), {threads_label(threads)}",
                    torch_make(best, threads)(x, w, b, t), verify, budget, min_runs)
        if row["status"] == "ok" and threads == 2 and torch_memory:
            kw = {"N": N, "D": D, "V": V, "chunk": best, "threads": 2}
            row.update(peak_bytes=C.rss_peak(Path(__file__), "torch_rss_step", kw),
                       peak_method="RSS growth, fresh process")
        rows.append({**base, **row, "role": "torch chunked", "threads": threads, "chunk": best})
    row = timed("torch unfused (options=None), 2 threads", torch_make(None, 2)(x, w, b, t), verify, budget,
                min_runs)
    if row["status"] == "ok" and torch_memory:
        kw = {"N": N, "D": D, "V": V, "chunk": None, "threads": 2}
        row.update(peak_bytes=C.rss_peak(Path(__file__), "torch_rss_step", kw), peak_method="RSS growth, fresh process")
    rows.append({**base, **row, "role": "torch unfused", "threads": 2, "chunk": None})
    print(f"  torch: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows + sweep


def profile(x: Array, w: Array, b: Array, t: Array, chunk: int, budget: float) -> list[list[str]]:
    """Where one chunk of the fused op spends its time (1 BLAS thread, ``threads=1``): its steps in the op's
    order, each timed alone on the chunk's own arrays, with the cross-entropy on both backends.

    The cross-entropy runs as in the op: ``ce_rows_forward`` on the logits, then ``ce_rows_backward`` writing
    dlogits over them (``out=logits``). That consumes the logits, so each timed call first restores them
    with a copy, whose time (measured alone) is subtracted. Two rows apart from the total show the forward
    alone and the backward writing into a separate (c, V) buffer."""
    x_c, t_c = x[:chunk], t[:chunk].astype(np.intp)
    logits = x_c @ w + b  # (c, V)
    g = np.full(chunk, 1.0 / x.shape[0], dtype=x.dtype)  # (c,)
    dweight, dweight_c = np.zeros_like(w), np.empty_like(w)  # (D, V)
    buf, other = np.empty_like(logits), np.empty_like(logits)  # (c, V)
    states = {be: ce_rows_forward(logits, t_c, precision="fast", backend=be, threads=1)[2] for be in BACKENDS}

    def as_in_the_op(be: Backend) -> Callable[[], Any]:
        def step() -> None:
            np.copyto(buf, logits)
            _, _, state = ce_rows_forward(buf, t_c, precision="fast", backend=be, threads=1)
            ce_rows_backward(g, state, out=buf)

        return step

    def forward(be: Backend) -> Callable[[], Any]:
        return lambda: ce_rows_forward(logits, t_c, precision="fast", backend=be, threads=1)

    def backward_elsewhere(be: Backend) -> Callable[[], Any]:
        return lambda: ce_rows_backward(g, states[be], out=other)

    # (name, the path it counts in: "all", a backend, or "" for a row outside the totals, step)
    steps: list[tuple[str, str, Callable[[], Any]]] = [
        ("logits = x_c @ weight + bias", "all", lambda: np.add(np.matmul(x_c, w, out=buf), b, out=buf)),
    ]
    for be in BACKENDS:
        steps += [
            (f"{be}: ce_rows_forward, then ce_rows_backward(out=logits)", be, as_in_the_op(be)),
            (f"  {be}, apart: ce_rows_forward alone", "", forward(be)),
            (f"  {be}, apart: ce_rows_backward into a separate buffer", "", backward_elsewhere(be)),
        ]
    steps += [
        ("dx_c = dlogits @ weight.T", "all", lambda: np.matmul(buf, w.T)),
        ("dweight += x_c.T @ dlogits", "all",
         lambda: np.add(dweight, np.matmul(x_c.T, buf, out=dweight_c), out=dweight)),
        ("dbias += dlogits.sum(0)", "all", lambda: buf.sum(axis=0)),
    ]
    with C.blas_threads(1):
        copy = C.median_time(lambda: np.copyto(buf, logits), budget)
        times = [(name, layer, C.median_time(f, budget) - (copy if "out=logits" in name else 0.0))
                 for name, layer, f in steps]
    total = {be: sum(sec for _, layer, sec in times if layer in ("all", be)) for be in BACKENDS}
    flops = 2 * chunk * x.shape[1] * w.shape[1]
    return [[name, C.fmt(sec * 1e3),
             *(f"{100 * sec / total[be]:.0f}%" if layer in ("all", be) else "-" for be in BACKENDS),
             C.fmt(flops / sec / 1e9) if "@" in name else "-"] for name, layer, sec in times]


# ============================================================================ the output


def table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        ok = r["status"] == "ok"
        peak = r.get("peak_bytes")
        out.append([
            f"{r['N']} x {r['D']} -> {r['V']}", r["variant"] + (" (sweep)" if r.get("sweep") else ""), r["status"],
            C.fmt(r["seconds"] * 1e3) if ok else "-",
            "-" if peak is None else C.fmt(peak / 2**20),
        ])
    return C.md_table(["N x D -> V", "variant", "check", "median ms", "peak extra MiB"], out, "lllrr")


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each fused variant: its time over the three matmuls' (same threads), its peak memory as a
    fraction of the unfused path's, and torch's chunked op at its best chunk over it (same threads)."""
    main = [r for r in rows if not r.get("sweep") and r["status"] == "ok"]

    def find(role: str, threads: int | None = None) -> dict[str, Any] | None:
        return next((r for r in main if r["role"] == role and threads in (None, r["threads"])), None)

    def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
        return a[key] / b[key] if a and b and a.get(key) and b.get(key) else None

    unfused = find("unfused")
    return [{"variant": f["variant"], "backend": f["backend"], "threads": f["threads"],
             "fused_over_three_matmuls": ratio(f, find("floor", f["threads"]), "seconds"),
             "fused_peak_over_unfused_peak": ratio(f, unfused, "peak_bytes"),
             "torch_best_chunk_over_fused": ratio(find("torch chunked", f["threads"]), f, "seconds")}
            for f in main if f["role"] == "fused"]


RATIO_NOTES = """\
- fused / three matmuls: the fused op's median time over that of its three matrix products alone
  (chunk by chunk, preallocated buffers) at the same threads. The excess is the rest of the op: the
  cross-entropy over each chunk's logits, the bias gradient, the sum of the chunks' weight gradients.
- fused peak / unfused peak: the fused op's peak extra memory over that of the unfused tinyops path
  (linear -> cross-entropy, which holds the N x V logits), both measured with tracemalloc.
- torch best chunk / fused: the median time of torch's chunked F.linear_cross_entropy at its fastest
  chunk size over the fused op's, at equal threads; above 1 the fused op is faster."""


def ratios_table(rat: list[dict[str, Any]]) -> str:
    def cell(v: float | None, digits: int = 2) -> str:
        return "n/a" if v is None else f"{v:.{digits}f}"

    out = [[r["variant"], cell(r["fused_over_three_matmuls"]), cell(r["fused_peak_over_unfused_peak"], 3),
            cell(r["torch_best_chunk_over_fused"])] for r in rat]
    return C.md_table(["fused variant", "fused / three matmuls", "fused peak / unfused peak",
                       "torch best chunk / fused"], out, "lrrr")


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


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    rat = ratios(rows)
    chunk = min(default_chunk_size(shape[2], np.dtype(np.float32)), shape[0])
    prof = profile(*make_inputs(*shape), chunk, budget / 4)
    tab = (
        "n threads: NumPy's BLAS on n threads and, for tinyops, the op's threads=n; "
        "torch: torch.set_num_threads(n).\n\n"
        + table(rows)
        + "\n\nRatios (medians of the rows above, timed in one run):\n\n"
        + ratios_table(rat)
        + "\n\n" + RATIO_NOTES
        + f"\n\nProfile of one chunk ({chunk} rows) of the fused op, 1 BLAS thread, threads=1; the share of each "
        "step in the chunk's total on the compiled and on the reference path (the indented rows are apart from "
        "the totals: the forward alone, and the backward writing into a buffer other than the logits):\n\n"
        + C.md_table(["step", "median ms", "share, compiled", "share, reference", "GFLOP/s"], prof, "lrrrr")
    )
    print(tab)
    failed = [f"{r['variant']}: {r['check']}" for r in rows if r["status"] != "ok"]
    print("\nEvery variant's loss and gradients (the three matmuls: their products) were checked against a float64 "
          "reference before timing." + (f"\nFAILED (not timed): {'; '.join(failed)}" if failed else " All passed."))
    payload = {"benchmark": "linear-ce", "machine": info, "quick": args.quick, "shape": shape, "budget_s": budget,
               "command": "python benchmarks/bench_linear_ce.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "rows": rows, "ratios": rat, "profile": prof}
    paths = C.write_results(args.out, "bench_linear_ce", "Linear + cross-entropy", tab, payload)
    if not args.no_plots:
        paths += plot(rows, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
