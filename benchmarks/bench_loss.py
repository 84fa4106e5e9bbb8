"""Cross-entropy forward + backward, naive versus fused versus torch, beside the hardware floor.

Variants (same logits, same run):
  naive            the seed's chain exp -> sum -> divide -> pick -> log -> -mean, one primitive at a time
  composed         tinyops log_softmax forward/backward plus a pick of the targets (NLL)
  fused            tinyops.cross_entropy, default precision, 1 thread
  fused fast       precision="fast", threads=1 and threads=2 (when the op has those options)
  torch            F.cross_entropy with autograd, 1 and 2 threads (when torch is installed)
  floor            one np.exp(logits, out=buf) pass on one core: no correct fused forward + backward
                   avoids one exp and one write per element

Each variant's loss and dlogits are checked against a float64 reference (tolerance: a few eps of the
variant's compute precision, times the magnitudes the rounding grows with) before it is timed; one that
fails is reported as FAILED and not timed. Times are medians of repeated calls. Peak extra memory: tracemalloc
for the NumPy variants, the peak-RSS growth of one call in a fresh process for torch.

    python benchmarks/bench_loss.py [--quick] [--out results] [--shapes 32x27,4096x8192] [--dtypes float32]
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C

import tinyops

Array = np.ndarray[Any, Any]
Step = Callable[[Array, Array], tuple[Any, Array]]  # (logits, target) -> (loss, dlogits)

FULL_SHAPES = [(32, 27), (4096, 27), (182625, 27), (4096, 8192), (2048, 50257)]
QUICK_SHAPES = [(32, 27), (4096, 27), (2048, 8192)]
CE_PARAMS = inspect.signature(tinyops.cross_entropy_forward).parameters


# ============================================================================ the variants


def naive_step(logits: Array, target: Array) -> tuple[Any, Array]:
    loss, cache = tinyops.cross_entropy_naive_forward(logits, target)
    return loss, tinyops.cross_entropy_naive_backward(1.0, cache)


def composed_step(logits: Array, target: Array) -> tuple[Any, Array]:
    """log_softmax, then NLL: ``loss = -mean(logprobs[n, t_n])``; backward: ``dlogprobs`` is
    ``-1/N`` at the targets and 0 elsewhere, pushed through log_softmax's backward."""
    N = logits.shape[0]
    rows = np.arange(N)
    logprobs, cache = tinyops.log_softmax_forward(logits, axis=1)  # (N, V)
    loss = -logprobs[rows, target].mean()
    dlogprobs = np.zeros_like(logprobs)  # (N, V)
    dlogprobs[rows, target] = -1.0 / N
    return loss, tinyops.log_softmax_backward(dlogprobs, cache)


def fused_step(**options: Any) -> Step:
    def step(logits: Array, target: Array) -> tuple[Any, Array]:
        loss, cache = tinyops.cross_entropy_forward(logits, target, **options)
        return loss, tinyops.cross_entropy_backward(1.0, cache)

    return step


def torch_step(threads: int) -> Step:
    import torch
    import torch.nn.functional as F

    def step(logits: Array, target: Array) -> tuple[Any, Array]:
        x = torch.from_numpy(logits).requires_grad_(True)
        loss = F.cross_entropy(x, torch.from_numpy(target))
        loss.backward()
        assert x.grad is not None
        return loss.detach().numpy(), x.grad.numpy()

    return step


@dataclass(frozen=True)
class Variant:
    name: str
    step: Step
    compute: np.dtype[Any] | None = None  # the precision it computes in, when lower than the input's
    torch_threads: int | None = None  # a torch variant, run at this many threads
    options: tuple[tuple[str, Any], ...] = ()  # keyword options of the fused op (for the memory child)


def variants(have_torch: bool) -> list[Variant]:
    out = [Variant("naive", naive_step), Variant("composed", composed_step)]
    if "precision" in CE_PARAMS and "threads" in CE_PARAMS:
        out.append(Variant("fused", fused_step(precision="accurate", threads=1), None, None,
                           (("precision", "accurate"), ("threads", 1))))  # fmt: skip
        for n in (1, 2):
            opts = (("precision", "fast"), ("threads", n))
            out.append(Variant(f"fused fast, {n} thread{'s' * (n > 1)}", fused_step(**dict(opts)),
                               np.dtype(np.float32), None, opts))  # fmt: skip
    else:  # the op without the speed options: the default only
        out.append(Variant("fused", fused_step()))
    if have_torch:
        out += [Variant(f"torch, {n} thread{'s' * (n > 1)}", torch_step(n), torch_threads=n) for n in (1, 2)]
    return out


# ============================================================================ reference and check


def make_inputs(N: int, V: int, dtype: str, seed: int = 0) -> tuple[Array, Array]:
    """Synthetic logits ~ N(0, 2^2) (a peaked but not saturated softmax) and uniform targets."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((N, V), dtype=np.float32 if dtype == "float32" else np.float64)
    logits *= 2
    return logits.astype(dtype, copy=False), rng.integers(0, V, N)


def reference(logits: Array, target: Array) -> tuple[float, Array]:
    """float64 loss and dlogits, written out independently of the code under test."""
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(x.shape[0])
    loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - x[rows, target]))
    e /= s
    e[rows, target] -= 1
    e /= x.shape[0]
    return loss, e


def check(v: Variant, logits: Array, target: Array, ref: tuple[float, Array]) -> C.Check:
    """Loss within ``16 eps (1 + max|logits| + log2 V)``; dlogits within ``16 eps (1 + log2 V) / N``
    elementwise (``|softmax - onehot| <= 1``, scaled by 1/N), eps of the variant's compute precision."""
    try:
        loss, grad = v.step(logits, target)
    except Exception as e:  # a variant that raises is a failed variant, reported as such
        return C.Check(False, float("inf"), f"raised {type(e).__name__}: {e}")
    N, V = logits.shape
    compute = v.compute if v.compute is not None and v.compute.itemsize < logits.dtype.itemsize else logits.dtype
    eps = float(np.finfo(compute).eps)
    log_v = 1 + np.log2(V)
    return C.check_close([
        ("loss", loss, ref[0], 16 * eps * (1 + float(np.abs(logits).max()) + log_v)),
        ("dlogits", grad, ref[1], 16 * eps * log_v / N),
    ])  # fmt: skip


# ============================================================================ the memory child


def torch_rss_step(N: int, V: int, dtype: str, threads: int) -> Callable[[], Any]:
    """For :func:`common.rss_peak`: torch's forward + backward on fresh inputs of this shape."""
    import torch

    torch.set_num_threads(threads)
    logits, target = make_inputs(N, V, dtype)
    step = torch_step(threads)
    return lambda: step(logits, target)


# ============================================================================ the run


def run(shapes: list[tuple[int, int]], dtypes: list[str], budget: float, torch_memory: bool) -> list[dict[str, Any]]:
    try:
        import torch

        have_torch = True
    except ImportError:
        have_torch = False
        print("torch is not installed: its variants are left out")
    vs = variants(have_torch)
    rows: list[dict[str, Any]] = []
    for dtype in dtypes:
        for N, V in shapes:
            t0 = time.perf_counter()
            logits, target = make_inputs(N, V, dtype)
            ref = reference(logits, target)
            floor = C.floor_time(logits, budget)
            base = {"dtype": dtype, "N": N, "V": V}
            rows.append({**base, "variant": "floor (np.exp, 1 core)", "status": "ok", "seconds": floor,
                         "ns_per_elem": floor * 1e9 / (N * V), "x_floor": 1.0, "peak_bytes": 0,
                         "peak_method": "out= buffer", "check": "not a loss"})  # fmt: skip
            for v in vs:
                if v.torch_threads is not None:
                    torch.set_num_threads(v.torch_threads)
                c = check(v, logits, target, ref)
                row: dict[str, Any] = {**base, "variant": v.name, "status": "ok" if c.ok else "FAILED",
                                       "check": c.detail, "err_over_tol": c.err}  # fmt: skip
                if c.ok:
                    call = partial(v.step, logits, target)
                    seconds = C.median_time(call, budget, warm=False)  # the check was the warm-up
                    row.update(seconds=seconds, ns_per_elem=seconds * 1e9 / (N * V), x_floor=seconds / floor)
                    if v.torch_threads is None:
                        row.update(peak_bytes=C.tracemalloc_peak(call),
                                   peak_method="tracemalloc")  # fmt: skip
                    elif torch_memory:
                        kw = {"N": N, "V": V, "dtype": dtype, "threads": v.torch_threads}
                        row.update(peak_bytes=C.rss_peak(Path(__file__), "torch_rss_step", kw),
                                   peak_method="RSS growth, fresh process")  # fmt: skip
                rows.append(row)
            del ref
            print(f"  {dtype} {N} x {V}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        fused = next((f for f in rows if (f["dtype"], f["N"], f["V"]) == (r["dtype"], r["N"], r["V"])
                      and f["variant"] == "fused" and f["status"] == "ok"), None)  # fmt: skip
        ok = r["status"] == "ok"
        peak = r.get("peak_bytes")
        out.append([
            r["dtype"], f"{r['N']} x {r['V']}", r["variant"], r["status"],
            C.fmt(r["seconds"] * 1e6) if ok else "-",
            C.fmt(r["ns_per_elem"]) if ok else "-",
            f"{r['x_floor']:.2f}x" if ok else "-",
            f"{r['seconds'] / fused['seconds']:.2f}x" if ok and fused else "-",
            "-" if peak is None else C.fmt(peak / 2**20),
        ])  # fmt: skip
    headers = ["dtype", "N x V", "variant", "check", "median µs", "ns/elem", "vs floor", "vs fused", "peak extra MiB"]
    return C.md_table(headers, out, "lllrrrrrr")


def targets(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The issue's targets, measured: (what, target, measured, met) per dtype and shape. "fastest fused"
    is the fastest mode of the fused op at that thread count (the targets are for the fastest mode)."""

    def get(key: tuple[str, int, int], name: str) -> dict[str, Any] | None:
        return next((r for r in rows if (r["dtype"], r["N"], r["V"]) == key and r["variant"] == name
                     and r["status"] == "ok"), None)  # fmt: skip

    def fastest(key: tuple[str, int, int], threads: int) -> dict[str, Any] | None:
        names = ["fused", "fused fast, 1 thread"] if threads == 1 else ["fused fast, 2 threads"]
        found = [r for r in (get(key, n) for n in names) if r is not None]
        return min(found, key=lambda r: r["seconds"]) if found else None

    out: list[list[str]] = []

    def add(what: str, target: str, value: float | None, ok: bool | None, unit: str = "x") -> None:
        shown = "n/a" if value is None else f"{value:.2f}{unit}" if unit == "x" else f"{value:.1f} {unit}"
        out.append([what, target, shown, "n/a" if ok is None else "yes" if ok else "NO"])

    for key in dict.fromkeys((r["dtype"], r["N"], r["V"]) for r in rows):
        dtype, N, V = key
        tag = f"{dtype} {N}x{V}"
        f1, f2 = fastest(key, 1), fastest(key, 2)
        if (N, V) == (32, 27):
            us = None if f1 is None else f1["seconds"] * 1e6
            add(f"{tag}: fastest fused fwd+bwd ({f1 and f1['variant']})", "<= 12 µs", us,
                None if us is None else us <= 12, "µs")  # fmt: skip
            d = get(key, "fused")
            add(f"{tag}: default fused fwd+bwd", "(beside it)", d and d["seconds"] * 1e6, None, "µs")
        if V < 8192:
            continue
        add(f"{tag}: fastest fused, 1 thread / floor ({f1 and f1['variant']})", "<= 2", f1 and f1["x_floor"],
            f1 and f1["x_floor"] <= 2)  # fmt: skip
        add(f"{tag}: fastest fused, 2 threads / one-core floor", "<= 1.2", f2 and f2["x_floor"],
            f2 and f2["x_floor"] <= 1.2)  # fmt: skip
        d = get(key, "fused")
        add(f"{tag}: default fused / floor", "(beside it)", d and d["x_floor"], None)
        for threads, f in ((1, f1), (2, f2)):
            t = get(key, f"torch, {threads} thread{'s' * (threads > 1)}")
            r = t["seconds"] / f["seconds"] if t and f else None
            add(f"{tag}: torch / fastest fused, {threads} thread{'s' * (threads > 1)}", ">= 4", r,
                None if r is None else r >= 4)  # fmt: skip
        n = get(key, "naive")
        if n and f1:
            add(f"{tag}: naive / fastest fused (time)", ">= 1.5", n["seconds"] / f1["seconds"],
                n["seconds"] / f1["seconds"] >= 1.5)  # fmt: skip
            m = n["peak_bytes"] / max(f1["peak_bytes"], 1)
            add(f"{tag}: naive / fastest fused (peak memory)", ">= 3", m, m >= 3)
    return out


def plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    plt = C.pyplot()
    dtypes = sorted({r["dtype"] for r in rows})
    names = list(dict.fromkeys(r["variant"] for r in rows))
    # ns per element against V, at the largest N measured for each V (the per-element regime)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.5), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        for name in names:
            pts: dict[int, tuple[int, float]] = {}
            for r in rows:
                if r["dtype"] == dtype and r["variant"] == name and r["status"] == "ok":
                    if r["V"] not in pts or r["N"] > pts[r["V"]][0]:
                        pts[r["V"]] = (r["N"], r["ns_per_elem"])
            if pts:
                vs = sorted(pts)
                style = "k--" if name.startswith("floor") else "o-"
                ax.plot(vs, [pts[v][1] for v in vs], style, label=name)
        ax.set(xscale="log", yscale="log", xlabel="V (classes)", ylabel="ns per element (median)",
               title=f"cross-entropy fwd + bwd, {dtype} (largest N per V)")  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    p1 = out / "bench_loss_time.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)
    # peak extra memory per variant, one group per shape
    shapes = list(dict.fromkeys((r["dtype"], r["N"], r["V"]) for r in rows))
    mem_names = [n for n in names if not n.startswith("floor")]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(shapes) * 1.5), 4.5))
    width = 0.8 / max(1, len(mem_names))
    for i, name in enumerate(mem_names):
        ys = []
        for s in shapes:
            r = next((r for r in rows if (r["dtype"], r["N"], r["V"]) == s and r["variant"] == name), None)
            ys.append(r["peak_bytes"] / 2**20 if r and r.get("peak_bytes") else np.nan)
        ax.bar(np.arange(len(shapes)) + i * width, ys, width, label=name)
    ax.set_xticks(np.arange(len(shapes)) + 0.4 - width / 2, [f"{d}\n{n}x{v}" for d, n, v in shapes], fontsize=7)
    ax.set(yscale="log", ylabel="peak extra MiB (one fwd + bwd)", title="cross-entropy peak extra memory")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p2 = out / "bench_loss_memory.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]


def parse_shapes(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(a), int(b)) for a, b in (s.lower().split("x") for s in text.split(","))]
    except ValueError:
        raise SystemExit(f"--shapes must look like 32x27,4096x8192, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(parser)
    parser.add_argument("--shapes", type=parse_shapes, default=None, help="N x V list, e.g. 32x27,4096x8192")
    parser.add_argument("--dtypes", default=None, help="comma list of float32, float64")
    parser.add_argument("--no-torch-memory", action="store_true", help="skip torch's fresh-process memory runs")
    args = parser.parse_args(argv)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    dtypes = args.dtypes.split(",") if args.dtypes else (["float32"] if args.quick else ["float32", "float64"])
    for d in dtypes:
        if d not in ("float32", "float64"):
            raise SystemExit(f"--dtypes: float32 and/or float64, got {d!r}")
    budget = args.budget if args.budget is not None else (0.3 if args.quick else 1.5)

    info = C.machine_info()
    print(f"Cross-entropy forward + backward, mean reduction\nMachine: {C.machine_line(info)}\n", flush=True)
    rows = run(shapes, dtypes, budget, torch_memory=not args.no_torch_memory)
    goals = targets(rows)
    tab = (
        table(rows)
        + "\n\nTargets (issue 5), from the rows above:\n\n"
        + C.md_table(["what", "target", "measured", "met"], goals, "llrl")
    )
    print(tab)
    failed = [r["variant"] + f" ({r['dtype']} {r['N']}x{r['V']}: {r['check']})" for r in rows if r["status"] != "ok"]
    print("\nEvery variant's loss and dlogits were checked against a float64 reference before timing."
          + (f"\nFAILED (not timed): {'; '.join(failed)}" if failed else " All passed."))  # fmt: skip
    payload = {"benchmark": "loss", "machine": info, "quick": args.quick, "budget_s": budget,
               "command": "python benchmarks/bench_loss.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "rows": rows, "targets": goals}  # fmt: skip
    paths = C.write_results(args.out, "bench_loss", "Cross-entropy forward + backward", tab, payload)
    if not args.no_plots:
        paths += plots(rows, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
