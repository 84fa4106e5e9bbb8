"""Cross-entropy forward + backward: the naive chain, the fused op's two layers, torch eager and
torch.compile, beside the machine's floor and its memory bandwidth.

Variants (same logits, same run; "k threads" = 1 and 2 where the variant has threads):
  naive                  the seed's chain exp -> sum -> divide -> pick -> log -> -mean, one primitive at a time
  fused, reference       tinyops.cross_entropy_forward/backward(backend="reference"): the plain NumPy layer
  fused, compiled        backend="compiled" (numba), precision "accurate" (the default) and "fast", k threads
  torch eager            F.cross_entropy + autograd backward, k threads
  torch.compile          torch.compile of the same function (inductor, C++ through gcc), compiled afresh for
                         each shape (as a training loop at one shape gets it), k threads
  exp pass               one exp over the (N, V) logits into a preallocated array, one core: NumPy's np.exp
                         and "compiled", tinyops.kernels.exp's exp32_array / exp64_array (by dtype); the
                         faster of the two is the floor

Each variant's loss and dlogits are checked against a float64 reference before it is timed; one that fails
is reported FAILED and not timed. Times are medians of repeated calls; the first call of each variant at
each shape is timed apart (it includes torch.compile's compilation, and the numba kernels' compilation
or load from numba's disk cache); the full run also times the compiled op's first call in two fresh
processes, one compiling the kernels into an empty numba cache and one loading them from it. Memory
traffic: the bytes each variant moves at the least (its whole-array passes, listed by --explain-traffic),
against the bandwidth of a copy pass measured in the same run.

    python benchmarks/bench_loss.py [--quick] [--out results] [--shapes 32x27,4096x8192] [--dtypes float32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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

# One training batch, the whole training split, and a sweep over V at N = 4096 (the plot's lines)
FULL_SHAPES = [(32, 27), (182625, 27), (4096, 27), (4096, 1024), (4096, 8192), (4096, 50257)]
QUICK_SHAPES = [(32, 27), (4096, 27), (4096, 1024), (4096, 8192)]
THREADS = (1, 2)
DEFAULT = "fused, compiled accurate"  # the public op with its defaults: what "vs fused" divides by


# ============================================================================ the variants


def naive_step(logits: Array, target: Array) -> tuple[Any, Array]:
    loss, cache = tinyops.cross_entropy_naive_forward(logits, target)
    return loss, tinyops.cross_entropy_naive_backward(1.0, cache)


def fused_step(**options: Any) -> Step:
    def step(logits: Array, target: Array) -> tuple[Any, Array]:
        loss, cache = tinyops.cross_entropy_forward(logits, target, **options)
        return loss, tinyops.cross_entropy_backward(1.0, cache)

    return step


def torch_loss(x: Any, target: Any) -> Any:
    """The function torch eager runs and torch.compile compiles: ``F.cross_entropy`` (mean)."""
    import torch.nn.functional as F

    return F.cross_entropy(x, target)


def torch_step(loss_fn: Callable[[Any, Any], Any]) -> Step:
    import torch

    def step(logits: Array, target: Array) -> tuple[Any, Array]:
        x = torch.from_numpy(logits).requires_grad_(True)
        loss = loss_fn(x, torch.from_numpy(target))
        loss.backward()
        assert x.grad is not None
        return loss.detach().numpy(), x.grad.numpy()

    return step


class TorchCompiled:
    """``torch.compile(torch_loss)``, compiled afresh (``torch._dynamo.reset()``) at each new shape: static
    shapes, as a training loop at one batch shape gets. Its first call at a shape is the compilation."""

    def __init__(self) -> None:
        self.fn: Callable[[Any, Any], Any] | None = None

    def fresh(self) -> None:
        import torch

        torch._dynamo.reset()
        self.fn = torch.compile(torch_loss, dynamic=False)

    def __call__(self, logits: Array, target: Array) -> tuple[Any, Array]:
        if self.fn is None:
            self.fresh()
        assert self.fn is not None
        return torch_step(self.fn)(logits, target)


@dataclass(frozen=True)
class Variant:
    name: str
    step: Step
    traffic: str  # key of TRAFFIC: the whole-array passes this variant makes
    threads: int = 1
    kind: str = "numpy"  # "numpy" (one core), "compiled" (numba), "torch", "torch.compile"
    fresh: Callable[[], None] | None = None  # called before the first call at each shape
    compute: np.dtype[Any] | None = None  # the precision it computes in, when lower than the input's


def variants(have_torch: bool, compile_threads: tuple[int, ...] = THREADS) -> list[Variant]:
    """Every variant, torch's when ``have_torch``; torch.compile at ``compile_threads`` (each thread count
    is a compilation of its own)."""
    out = [
        Variant("naive", naive_step, "naive"),
        Variant("fused, reference", fused_step(backend="reference"), "reference"),
    ]
    for precision in ("accurate", "fast"):
        for n in THREADS:
            step = fused_step(backend="compiled", precision=precision, threads=n)
            out.append(Variant(f"fused, compiled {precision}", step, "fused", n, "compiled"))
    if have_torch:
        out += [Variant("torch eager", torch_step(torch_loss), "torch eager", n, "torch") for n in THREADS]
        for n in compile_threads:
            tc = TorchCompiled()
            out.append(Variant("torch.compile", tc, "torch.compile", n, "torch.compile", tc.fresh))
    return out


def label(name: str, threads: int) -> str:
    return f"{name}, {threads} thread{'s' * (threads > 1)}"


# ============================================================================ memory traffic

# The whole-array passes of each variant's forward + backward: (arrays read, arrays written), in (N, V)
# arrays of the logits' dtype (a float64 temporary of float32 logits counts 2). A pass over a row that
# is still in the cache from the pass before (the row max, then the sum of exps) is not counted: it
# does not reach memory. O(N) arrays are left out. These are the least bytes each must move between
# the cache and memory: bytes = (reads + writes) * N * V * itemsize.
# fmt: off
TRAFFIC: dict[str, tuple[float, float, str]] = {
    "exp pass": (1, 1, "read the logits, write the exps"),
    "fused": (2, 1, "forward: read the logits (row max, then the sum of exps on the row in cache); "
                    "backward: read them again, write dlogits"),
    "torch.compile": (2, 1, "inductor's generated code (TORCH_LOGS=output_code): the forward reads the "
                            "logits once, the backward reads them again and writes dlogits"),
    "torch eager": (3, 3, "log_softmax: read x, write logprobs; nll backward: write its zero-filled "
                          "gradient; log_softmax backward: read it and logprobs, write dlogits"),
    "naive": (12, 9, "forward: exp (R1 W1), row sums (R1), divide (R1 W1); backward: zero-filled dprobs "
                     "(W1), dprobs / sums (R1 W1), dprobs * probs (R2 W1) / sums (R1 W1) summed (R1), "
                     "broadcast (W1), dcounts += (R2 W1), counts * dcounts (R2 W1)"),
}
# fmt: on


def reference_traffic(itemsize: int) -> tuple[float, float, str]:
    """The reference layer (accurate): float64 work arrays, so float32 logits pay twice per pass.

    argmax (R1); ``d = x - m`` in float64 (R1, W1 float64); float64 logits add TwoSum's lo part
    (``d - x``, ``d - bb``, ``x - that``, ``-m - bb``, their sum, nan_to_num: R10 W6) and ``e += e * lo``
    (R4 W2); ``exp`` in place (R1 W1 float64); the sum (R1 float64); the softmax ``e / (1 + r)`` into the
    logits' dtype (R1 float64, W1); backward ``probs * g`` (R1 W1)."""
    w = 8 / itemsize  # a float64 work array, in arrays of the logits' dtype
    reads, writes = 1 + 1 + 3 * w + 1, 2 * w + 1 + 1  # argmax, d, exp, sum, softmax; backward
    why = "argmax, x - m in float64, exp, sum, softmax into the logits' dtype; backward probs * g"
    if itemsize == 8:
        reads, writes = reads + 14, writes + 8
        why += "; float64 logits add TwoSum's low part of x - m and its correction of the exps (R14 W8)"
    return reads, writes, why


def traffic(name: str, itemsize: int) -> tuple[float, float, str]:
    return reference_traffic(itemsize) if name == "reference" else TRAFFIC[name]


# ============================================================================ reference and check


def make_inputs(N: int, V: int, dtype: str, seed: int = 0) -> tuple[Array, Array]:
    """Synthetic logits ~ N(0, 2^2) (a peaked but not saturated softmax) and uniform class indices."""
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


def check(v: Variant, logits: Array, target: Array, ref: tuple[float, Array]) -> tuple[C.Check, float]:
    """The variant's first call at this shape, timed, and its check: loss within
    ``16 eps (1 + max|logits| + log2 V)``; dlogits within ``16 eps (1 + log2 V) / N`` elementwise
    (``|softmax - onehot| <= 1``, scaled by 1/N), eps of the variant's compute precision."""
    try:
        t0 = time.perf_counter()
        loss, grad = v.step(logits, target)
        first = time.perf_counter() - t0
    except Exception as e:  # a variant that raises is a failed variant, reported as such
        return C.Check(False, float("inf"), f"raised {type(e).__name__}: {e}"), float("nan")
    N, V = logits.shape
    compute = v.compute if v.compute is not None and v.compute.itemsize < logits.dtype.itemsize else logits.dtype
    eps = float(np.finfo(compute).eps)
    log_v = 1 + np.log2(V)
    return C.check_close([
        ("loss", loss, ref[0], 16 * eps * (1 + float(np.abs(logits).max()) + log_v)),
        ("dlogits", grad, ref[1], 16 * eps * log_v / N),
    ]), first


# ============================================================================ the memory child


def torch_rss_step(N: int, V: int, dtype: str, threads: int) -> Callable[[], Any]:
    """For :func:`common.rss_peak`: torch's forward + backward on fresh inputs of this shape."""
    import torch

    torch.set_num_threads(threads)
    logits, target = make_inputs(N, V, dtype)
    step = torch_step(torch_loss)
    return lambda: step(logits, target)


# ============================================================================ the kernels' first calls, fresh processes


def first_call_child() -> int:
    """In a fresh process: import the compiled layer, then the first forward + backward of the compiled
    op at 32 x 27 float32 for each precision and thread count (each a compilation of its own, or a load
    from numba's disk cache); prints the seconds as JSON."""
    logits, target = make_inputs(32, 27, "float32")
    t0 = time.perf_counter()
    import tinyops.kernels.cross_entropy  # noqa: F401  (numba and the kernels' module)

    seconds = {"import": time.perf_counter() - t0}
    for precision in ("accurate", "fast"):
        for n in THREADS:
            step = fused_step(backend="compiled", precision=precision, threads=n)
            t0 = time.perf_counter()
            step(logits, target)
            seconds[label(precision, n)] = time.perf_counter() - t0
    print(json.dumps(seconds))
    return 0


def kernel_first_calls(timeout: float = 1800.0) -> dict[str, dict[str, float]]:
    """The compiled op's first calls in two fresh processes sharing an empty numba cache directory: the
    first compiles every kernel (what the first run after installing pays), the second loads them."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        code = "import time; t0 = time.perf_counter(); import tinyops; print(time.perf_counter() - t0)"
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        import_tinyops = float(proc.stdout.strip())  # a fresh process: what a user's `import tinyops` costs
        for when in ("empty cache: compiled", "filled cache: loaded"):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--first-call-child"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"first-call child failed:\n{proc.stderr[-2000:]}")
            out[when] = {"import tinyops": import_tinyops, **json.loads(proc.stdout.strip().splitlines()[-1])}
    return out


def kernel_first_calls_table(calls: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(calls.values())))
    headers = ["numba cache", *("import tinyops.kernels" if k == "import" else k for k in keys)]
    body = [[when, *(C.fmt(s[k] * 1e3) for k in keys)] for when, s in calls.items()]
    return C.md_table(headers, body, "l" + "r" * len(keys))


# ============================================================================ the run


def set_threads(v: Variant) -> None:
    if v.kind in ("torch", "torch.compile"):
        import torch

        torch.set_num_threads(v.threads)


def torch_compile_counts() -> tuple[int, int]:
    """(inductor graphs loaded from its on-disk cache, graphs compiled) so far in this process."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0, 0
    return int(counters["inductor"]["fxgraph_cache_hit"]), int(counters["inductor"]["fxgraph_cache_miss"])


def run(
    shapes: list[tuple[int, int]],
    dtypes: list[str],
    budget: float,
    bandwidth: dict[int, float],
    torch_memory: bool,
    compile_threads: tuple[int, ...],
    compile_shapes: set[tuple[int, int]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every variant at every shape (torch.compile at ``compile_shapes`` only, when given): (rows, first
    calls of the compiled code with their cache counts)."""
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
        print("torch is not installed: its variants are left out")
    vs = variants(have_torch, compile_threads)
    rows: list[dict[str, Any]] = []
    firsts: list[dict[str, Any]] = []
    for dtype in dtypes:
        for N, V in shapes:
            t0 = time.perf_counter()
            logits, target = make_inputs(N, V, dtype)
            itemsize = logits.dtype.itemsize
            ref = reference(logits, target)
            base = {"dtype": dtype, "N": N, "V": V}
            exps = C.exp_pass_times(logits, budget)
            floor_by = min(exps, key=lambda k: exps[k])
            floor = exps[floor_by]
            reads, writes, _ = traffic("exp pass", itemsize)
            for name, seconds in exps.items():
                nbytes = (reads + writes) * N * V * itemsize
                rows.append({**base, "variant": f"exp pass, {name}", "threads": 1, "status": "ok",
                             "check": "not a loss", "seconds": seconds, "first_call_s": None,
                             "ns_per_elem": seconds * 1e9 / (N * V), "x_floor": seconds / floor,
                             "is_floor": name == floor_by, "traffic": "exp pass", "passes": reads + writes,
                             "bytes": nbytes, "gb_per_s": nbytes / seconds / 1e9,
                             "bw_fraction": nbytes / seconds / bandwidth[1], "peak_bytes": 0,
                             "peak_method": "out= buffer"})
            for v in vs:
                if v.kind == "torch.compile" and compile_shapes is not None and (N, V) not in compile_shapes:
                    continue
                set_threads(v)
                if v.fresh is not None:
                    v.fresh()
                counts = {"compiled": C.numba_cache_counts, "torch.compile": torch_compile_counts}.get(v.kind)
                before = counts() if counts else (0, 0)
                c, first = check(v, logits, target, ref)
                row: dict[str, Any] = {**base, "variant": v.name, "threads": v.threads, "kind": v.kind,
                                       "status": "ok" if c.ok else "FAILED", "check": c.detail,
                                       "err_over_tol": c.err, "first_call_s": first}
                if v.kind in ("compiled", "torch.compile"):
                    assert counts is not None
                    after = counts()
                    loaded, compiled = after[0] - before[0], after[1] - before[1]
                    if loaded or compiled or v.kind == "torch.compile":
                        firsts.append({**base, "variant": label(v.name, v.threads), "kind": v.kind,
                                       "first_call_s": first, "loaded": loaded, "compiled": compiled})
                if c.ok:
                    call = partial(v.step, logits, target)
                    seconds = C.median_time(call, budget, warm=True)  # warm: one more call after the first
                    reads, writes, _ = traffic(v.traffic, itemsize)
                    nbytes = (reads + writes) * N * V * itemsize
                    row.update(seconds=seconds, ns_per_elem=seconds * 1e9 / (N * V), x_floor=seconds / floor,
                               traffic=v.traffic, passes=reads + writes, bytes=nbytes,
                               gb_per_s=nbytes / seconds / 1e9,
                               bw_fraction=nbytes / seconds / bandwidth[min(v.threads, max(bandwidth))])
                    if v.kind in ("numpy", "compiled"):
                        row.update(peak_bytes=C.tracemalloc_peak(call), peak_method="tracemalloc")
                    elif v.kind == "torch" and torch_memory:
                        kw = {"N": N, "V": V, "dtype": dtype, "threads": v.threads}
                        row.update(peak_bytes=C.rss_peak(Path(__file__), "torch_rss_step", kw),
                                   peak_method="RSS growth, fresh process")
                rows.append(row)
            del ref
            print(f"  {dtype} {N} x {V}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    add_ratios(rows)
    return rows, firsts


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``vs_fused``: time over the default fused op's (compiled, accurate) at the same thread count;
    ``torch_over``: torch eager's time at the same thread count over this variant's."""

    def find(r: dict[str, Any], name: str) -> dict[str, Any] | None:
        return next((f for f in rows if (f["dtype"], f["N"], f["V"], f["threads"]) ==
                     (r["dtype"], r["N"], r["V"], r["threads"]) and f["variant"] == name
                     and f["status"] == "ok"), None)

    for r in rows:
        if r["status"] != "ok":
            continue
        fused, eager = find(r, DEFAULT), find(r, "torch eager")
        r["vs_fused"] = r["seconds"] / fused["seconds"] if fused else None
        r["torch_over"] = eager["seconds"] / r["seconds"] if eager else None


# ============================================================================ output


def ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def time_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        ok = r["status"] == "ok"
        peak = r.get("peak_bytes")
        first = r.get("first_call_s")
        name = r["variant"] + (" = floor" if r.get("is_floor") else "")
        out.append([
            r["dtype"], f"{r['N']} x {r['V']}", name, r["threads"], r["status"],
            "-" if first is None or not np.isfinite(first) else C.fmt(first * 1e3),
            C.fmt(r["seconds"] * 1e3) if ok else "-",
            C.fmt(r["ns_per_elem"]) if ok else "-",
            f"{r['x_floor']:.2f}x" if ok else "-",
            ratio(r.get("vs_fused")), ratio(r.get("torch_over")),
            "-" if peak is None else C.fmt(peak / 2**20),
        ])
    headers = ["dtype", "N x V", "variant", "threads", "check", "first call ms", "median ms", "ns/elem",
               "vs floor", "vs fused", "torch eager / it", "peak extra MiB"]
    return C.md_table(headers, out, "lllrlrrrrrrr")


def traffic_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        if r["status"] != "ok":
            continue
        out.append([r["dtype"], f"{r['N']} x {r['V']}", r["variant"], r["threads"], f"{r['passes']:g}",
                    C.fmt(r["bytes"] / 1e6), C.fmt(r["gb_per_s"]), f"{100 * r['bw_fraction']:.0f}%"])
    headers = ["dtype", "N x V", "variant", "threads", "passes", "MB moved at least", "GB/s", "of copy bandwidth"]
    return C.md_table(headers, out, "lllrrrrr")


def side_by_side(rows: list[dict[str, Any]]) -> list[list[str]]:
    """For each shape with V >= 8192 and each thread count: the compiled op's two precisions, with the
    floor, torch eager, torch.compile and the naive chain measured beside them."""

    def get(key: tuple[str, int, int], name: str, threads: int) -> dict[str, Any] | None:
        return next((r for r in rows if (r["dtype"], r["N"], r["V"]) == key and r["variant"] == name
                     and r["threads"] == threads and r["status"] == "ok"), None)

    out: list[list[str]] = []
    for key in dict.fromkeys((r["dtype"], r["N"], r["V"]) for r in rows):
        dtype, N, V = key
        largest = max(r["N"] * r["V"] for r in rows if r["dtype"] == dtype)
        if V < 8192 and N * V != largest:  # tiny runs: their largest shape
            continue
        for threads in THREADS:
            eager, comp = get(key, "torch eager", threads), get(key, "torch.compile", threads)
            naive = get(key, "naive", 1)
            for precision in ("fast", "accurate"):
                f = get(key, f"fused, compiled {precision}", threads)
                if f is None:
                    continue
                s = f["seconds"]
                over = [None if r is None else r["seconds"] / s for r in (eager, comp, naive)]
                out.append([f"{dtype} {N} x {V}", label(f"compiled {precision}", threads), C.fmt(s * 1e3),
                            f"{f['x_floor']:.2f}x", *map(ratio, over)])
    return out


SUMMARY_HEADERS = ["shape", "compiled op", "median ms", "vs floor", "torch eager / it", "torch.compile / it",
                   "naive / it"]

LEGEND = """\
Columns of the first table:
  threads            threads the variant ran on (NumPy's ufuncs and the exp passes: one core)
  check              ok: loss and dlogits agree with a float64 reference (the first call's result)
  first call ms      the first call at this shape: torch.compile compiles here; the compiled kernels are
                     compiled or loaded from numba's disk cache at their first shape (see "First calls")
  median ms          median time of one forward + backward, after the first calls
  ns/elem            median time per logit (N * V elements)
  vs floor           time / the floor: the faster exp pass over the same array on one core ("= floor")
  vs fused           time / the default fused op's (compiled, precision "accurate") at the same threads
  torch eager / it   torch eager's time at the same threads / this time (above 1: faster than torch)
  peak extra MiB     memory one call allocates beyond its inputs (tracemalloc; torch eager: a fresh
                     process's peak RSS growth, its one-time setup included; torch.compile: not measured)
Columns of the memory-traffic table (a roofline view: at the large shapes every pass runs at memory speed):
  passes             whole (N, V) arrays read + written at the least (--explain-traffic lists them)
  MB moved at least  passes * N * V * itemsize
  GB/s               MB moved at least / median time
  of copy bandwidth  GB/s / the copy pass's bandwidth at the same threads (above 100%: the arrays fit in
                     the caches, so a pass counted here never reached memory)"""


def sweep_n(rows: list[dict[str, Any]], dtype: str) -> int:
    """The N measured at the most values of V (the larger N on a tie): the time plot's sweep over V."""
    ns = {r["N"] for r in rows if r["dtype"] == dtype}
    return max(ns, key=lambda n: (len({r["V"] for r in rows if r["dtype"] == dtype and r["N"] == n}), n))


def plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    plt = C.pyplot()
    dtypes = sorted({r["dtype"] for r in rows})
    series = list(dict.fromkeys((r["variant"], r["threads"]) for r in rows if r["status"] == "ok"))
    families = list(dict.fromkeys(name for name, _ in series))
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(families)}

    def style(name: str, threads: int) -> dict[str, Any]:
        if name.startswith("exp pass"):
            return {"color": "black", "linestyle": ":" if "np.exp" in name else "-.", "marker": None}
        return {"color": colors[name], "linestyle": "-" if threads == 1 else "--",
                "marker": "o" if threads == 1 else "s"}

    # 1. ns per element against V at one N: the N measured at the most vocabularies (one line per variant)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(5.5 * len(dtypes) + 3.2, 4.8), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        sweep = sweep_n(rows, dtype)
        vs = sorted({r["V"] for r in rows if r["dtype"] == dtype and r["N"] == sweep})
        for name, threads in series:
            pts = {r["V"]: r["ns_per_elem"] for r in rows if r["dtype"] == dtype and r["variant"] == name
                   and r["threads"] == threads and r["status"] == "ok" and r["N"] == sweep}
            if pts:
                xs = sorted(pts)
                ax.plot(xs, [pts[x] for x in xs], label=label(name, threads), **style(name, threads))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(vs, [f"{V:,}" for V in vs], fontsize=8)
        ax.minorticks_off()
        ax.set(xlabel=f"V (classes per row), N = {sweep:,} rows", ylabel="ns per logit (median)",
               title=f"cross-entropy forward + backward, {dtype}")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 3.0 / fig.get_figwidth(), 1))
    p1 = out / "bench_loss_time.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    # 2. roofline view: the fraction of the copy bandwidth each variant reaches, at the large shapes
    big = [k for k in dict.fromkeys((r["dtype"], r["N"], r["V"]) for r in rows) if k[1] * k[2] >= 2**22]
    if not big:  # tiny runs: the largest shape per dtype
        big = [max((r["dtype"], r["N"], r["V"]) for r in rows if r["dtype"] == d) for d in dtypes]
    grid = [[k for k in big if k[0] == d] for d in dtypes if any(k[0] == d for k in big)]  # a row per dtype
    ncols = max(len(g) for g in grid)
    fig, axes = plt.subplots(len(grid), ncols, figsize=(3.6 * ncols + 2.6, len(grid) * (0.3 * len(series) + 1.2)),
                             squeeze=False, sharey=True)
    ys = np.arange(len(series))[::-1]
    for i, keys in enumerate(grid):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(keys):
                ax.set_visible(False)
                continue
            key = keys[j]
            vals = []
            for name, threads in series:
                r = next((r for r in rows if (r["dtype"], r["N"], r["V"]) == key and r["variant"] == name
                          and r["threads"] == threads and r["status"] == "ok"), None)
                vals.append(100 * r["bw_fraction"] if r else np.nan)
            ax.barh(ys, vals, color=[style(n, t)["color"] for n, t in series], alpha=0.85)
            for y, v in zip(ys, vals, strict=True):
                if np.isfinite(v):
                    ax.text(v, y, f" {v:.0f}%", va="center", fontsize=7)
            ax.set_yticks(ys, [label(n, t) for n, t in series], fontsize=8)
            ax.axvline(100, color="black", linewidth=0.8)
            ax.set_title(f"{key[0]} {key[1]:,} x {key[2]:,}", fontsize=9)
            ax.set_xlim(0, max(110, np.nanmax(vals) * 1.2) if np.isfinite(vals).any() else 110)
            if i == len(grid) - 1:
                ax.set_xlabel("% of the copy bandwidth (same threads)", fontsize=8)
    fig.suptitle("bytes moved at the least / time / copy bandwidth", fontsize=10)
    fig.tight_layout()
    p2 = out / "bench_loss_bandwidth.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)

    # 3. peak extra memory per variant, one group per shape
    shapes = list(dict.fromkeys((r["dtype"], r["N"], r["V"]) for r in rows))
    mem = [(n, t) for n, t in series if not n.startswith("exp pass")
           and any(r.get("peak_bytes") for r in rows if (r["variant"], r["threads"]) == (n, t))]
    fig, ax = plt.subplots(figsize=(max(6, 1.9 * len(shapes)) + 3, 4.5))
    width = 0.8 / max(1, len(mem))
    for i, (name, threads) in enumerate(mem):
        peaks = []
        for s in shapes:
            r = next((r for r in rows if (r["dtype"], r["N"], r["V"]) == s and r["variant"] == name
                      and r["threads"] == threads), None)
            peaks.append(r["peak_bytes"] / 2**20 if r and r.get("peak_bytes") else np.nan)
        ax.bar(np.arange(len(shapes)) + i * width, peaks, width, label=label(name, threads),
               color=style(name, threads)["color"], alpha=1.0 if threads == 1 else 0.55)
    ax.set_xticks(np.arange(len(shapes)) + 0.4 - width / 2, [f"{d}\n{n}x{v}" for d, n, v in shapes], fontsize=7)
    ax.set(yscale="log", ylabel="peak extra MiB (one forward + backward)", title="cross-entropy peak extra memory")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    p3 = out / "bench_loss_memory.png"
    fig.savefig(p3, dpi=110)
    plt.close(fig)
    return [p1, p2, p3]


def parse_shapes(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(a), int(b)) for a, b in (s.lower().split("x") for s in text.split(","))]
    except ValueError:
        raise SystemExit(f"--shapes must look like 32x27,4096x8192, got {text!r}") from None


def explain_traffic() -> str:
    lines = ["Whole (N, V) arrays each variant reads (R) and writes (W) at the least, in arrays of the "
             "logits' dtype:"]
    for name in ("exp pass", "fused", "torch.compile", "torch eager", "naive"):
        r, w, why = TRAFFIC[name]
        lines.append(f"  {name}: R{r:g} W{w:g} = {r + w:g} passes: {why}")
    for itemsize, dtype in ((4, "float32"), (8, "float64")):
        r, w, why = reference_traffic(itemsize)
        lines.append(f"  reference, {dtype}: R{r:g} W{w:g} = {r + w:g} passes: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    C.add_common_args(parser)
    parser.add_argument("--shapes", type=parse_shapes, default=None, help="N x V list, e.g. 32x27,4096x8192")
    parser.add_argument("--dtypes", default=None, help="comma list of float32, float64")
    parser.add_argument("--no-torch-memory", action="store_true", help="skip torch's fresh-process memory runs")
    parser.add_argument("--torch-compile-threads", default=None,
                        help="thread counts of torch.compile, e.g. 1,2 (the default; --quick: 1), or none")
    parser.add_argument("--explain-traffic", action="store_true", help="list each variant's passes and exit")
    parser.add_argument("--no-cold-compile", action="store_true",
                        help="skip timing the compile from an empty numba cache (--quick skips it)")
    parser.add_argument("--first-call-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.first_call_child:
        return first_call_child()
    if args.explain_traffic:
        print(explain_traffic())
        return 0
    shapes = args.shapes or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    dtypes = args.dtypes.split(",") if args.dtypes else (["float32"] if args.quick else ["float32", "float64"])
    for d in dtypes:
        if d not in ("float32", "float64"):
            raise SystemExit(f"--dtypes: float32 and/or float64, got {d!r}")
    budget = args.budget if args.budget is not None else (0.3 if args.quick else 1.5)

    info = C.machine_info()
    print(f"Cross-entropy forward + backward, mean reduction\nMachine: {C.machine_line(info)}", flush=True)
    bw_bytes = 2**24 if args.budget is not None and args.budget < 0.1 else 2**26 if args.quick else 2**28
    bandwidth = {n: C.copy_bandwidth(bw_bytes, n, max(budget, 0.2)) for n in THREADS}
    bw_line = (
        "Memory bandwidth, copy pass (np.copyto of "
        + f"{bw_bytes // 2**20} MiB, read + write counted): "
        + ", ".join(f"{bandwidth[n] / 1e9:.1f} GB/s on {n} thread{'s' * (n > 1)}" for n in THREADS)
    )
    print(bw_line + "\n", flush=True)
    spec = args.torch_compile_threads or ("1" if args.quick else ",".join(map(str, THREADS)))
    try:
        compile_threads = () if spec == "none" else tuple(int(n) for n in spec.split(","))
    except ValueError:
        raise SystemExit(f"--torch-compile-threads: a comma list of 1, 2, or none; got {spec!r}") from None
    if not set(compile_threads) <= set(THREADS):
        raise SystemExit(f"--torch-compile-threads: a comma list of 1, 2, or none; got {spec!r}")
    # --quick: torch.compile at its largest shape only (each shape and thread count compiles anew, 5 to 15 s)
    compile_shapes = {max(shapes, key=lambda s: s[0] * s[1])} if args.quick else None
    rows, firsts = run(shapes, dtypes, budget, bandwidth, torch_memory=not args.no_torch_memory,
                       compile_threads=compile_threads, compile_shapes=compile_shapes)
    cold = None if args.quick or args.no_cold_compile else kernel_first_calls()
    summary = side_by_side(rows)
    first_rows = [[f"{f['dtype']} {f['N']} x {f['V']}", f["variant"], C.fmt(f["first_call_s"] * 1e3),
                   f"{f['loaded']} loaded, {f['compiled']} compiled"] for f in firsts]
    floors = {(r["dtype"], r["N"], r["V"]): r["variant"] for r in rows if r.get("is_floor")}
    # fmt: off
    tab = "\n\n".join([
        time_table(rows),
        "Memory traffic (roofline view). " + bw_line,
        traffic_table(rows),
        "Side by side, the compiled fused op (median ms) and how many times slower the others are than it "
        "(torch eager / it, torch.compile / it, naive / it; the naive chain runs on one core):",
        C.md_table(SUMMARY_HEADERS, summary, "llrrrrr"),
        "First calls of compiled code (torch.compile: inductor graphs loaded from its disk cache or compiled; "
        "numba kernels: specializations loaded from numba's disk cache or compiled):",
        C.md_table(["shape", "variant", "first call ms", "cache"], first_rows, "llrl"),
        "The compiled op's first forward + backward in a fresh process, 32 x 27 float32, ms (each precision and "
        "thread count is a kernel of its own; float64 logits compile theirs at their first call):\n\n"
        + (kernel_first_calls_table(cold) if cold else
           "(not measured in this run: --quick or --no-cold-compile; the full run measures it)"),
        "The floor at each shape: " + "; ".join(f"{d} {n}x{v}: {name}" + (
            f" ({'exp32_array' if d == 'float32' else 'exp64_array'})" if name.endswith("compiled") else "")
            for (d, n, v), name in floors.items()),
    ])
    # fmt: on
    print(tab)
    print("\n" + LEGEND)
    left = [n for n in THREADS if n not in compile_threads]
    if compile_threads and compile_shapes is not None:
        ((N, V),) = compile_shapes
        print(f"torch.compile ran at {N} x {V} only, --quick: each shape and thread count is a compilation of "
              "its own (5 to 15 s each); the full run has it at every shape.")
    if left:
        print(f"torch.compile at {', '.join(map(str, left))} thread(s) was left out "
              f"({'--quick: ' if args.quick else ''}--torch-compile-threads {spec}); the full run has it.")
    failed = [f"{label(r['variant'], r['threads'])} ({r['dtype']} {r['N']}x{r['V']}: {r['check']})"
              for r in rows if r["status"] != "ok"]
    print("\nEvery variant's loss and dlogits were checked against a float64 reference before timing."
          + (f"\nFAILED (not timed): {'; '.join(failed)}" if failed else " All passed."))
    payload = {"benchmark": "loss", "machine": info, "quick": args.quick, "budget_s": budget,
               "command": "python benchmarks/bench_loss.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "bandwidth_bytes_per_s": {str(n): b for n, b in bandwidth.items()},
               "bandwidth_method": f"np.copyto of {bw_bytes} bytes, read + write counted",
               "traffic": {k: list(v) for k, v in TRAFFIC.items()} | {
                   "reference": {"float32": list(reference_traffic(4)), "float64": list(reference_traffic(8))}},
               "rows": rows, "first_calls": firsts, "kernel_first_calls": cold, "side_by_side": summary}
    paths = C.write_results(args.out, "bench_loss", "Cross-entropy forward + backward", tab + "\n\n" + LEGEND,
                            payload)
    if not args.no_plots:
        paths += plots(rows, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
