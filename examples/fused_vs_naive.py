"""Fused against naive cross-entropy, forward + backward: time and peak memory as the vocabulary grows.

The seed's naive chain (``exp -> sum -> divide -> pick -> log -> -mean``, one array per intermediate,
and one gradient array per intermediate on the way back) against the fused op
(``logsumexp(logits) - logits[target]``, backward ``(softmax - onehot) / N``), in its default accurate
mode (float64 internals, ``log1p``/``expm1``: a few ULP) and with ``precision="fast"`` (float32
internals, the textbook formula). For each vocabulary
size V, both are first checked against a float64 reference written out here (loss and gradient);
only then are they timed (median of repeated calls) and their peak extra memory measured
(tracemalloc, which sees NumPy's allocations). Memory is also given in units of one (N, V) array of
the dtype: the gradient alone is one such array, everything above it is intermediates.

A small lesson, not the benchmark suite (that is ``benchmarks/``): the machine is shared and the
timings are noisy, so read the ratios, which are measured side by side in one process.

Writes ``fused_vs_naive.md``, ``fused_vs_naive.json`` and ``fused_vs_naive.png`` (needs matplotlib) to ``--out``.

    python examples/fused_vs_naive.py [--rows 512] [--vocab 27 256 1024 4096] [--budget 0.3] [--out results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import tinyops

Array = np.ndarray[Any, Any]
Step = Callable[[Array, Array], tuple[Array, Array]]  # (logits, target) -> (loss, dlogits)


def naive_step(logits: Array, target: Array) -> tuple[Array, Array]:
    loss, cache = tinyops.cross_entropy_naive_forward(logits, target)
    return loss, tinyops.cross_entropy_naive_backward(1.0, cache)


def fused_step(logits: Array, target: Array) -> tuple[Array, Array]:
    loss, cache = tinyops.cross_entropy_forward(logits, target)
    return loss, tinyops.cross_entropy_backward(1.0, cache)


def fast_step(logits: Array, target: Array) -> tuple[Array, Array]:
    loss, cache = tinyops.cross_entropy_forward(logits, target, precision="fast")
    return loss, tinyops.cross_entropy_backward(1.0, cache)


VARIANTS: dict[str, Step] = {"naive": naive_step, "fused": fused_step, "fused fast": fast_step}


def reference(logits: Array, target: Array) -> tuple[float, Array]:
    """The mean loss and its gradient in float64, max-shifted, written out without tinyops."""
    x = logits.astype(np.float64)  # (N, V)
    m = x.max(axis=1, keepdims=True)  # (N, 1)
    e = np.exp(x - m)  # (N, V)
    s = e.sum(axis=1, keepdims=True)  # (N, 1)
    rows = np.arange(x.shape[0])
    loss = float(np.mean(m[:, 0] + np.log(s[:, 0]) - x[rows, target]))
    grad = e / s
    grad[rows, target] -= 1.0
    return loss, grad / x.shape[0]


def check(name: str, step: Step, logits: Array, target: Array) -> tuple[float, float]:
    """Raise unless the variant's loss and gradient match the reference; return (loss error, gradient error)."""
    ref_loss, ref_grad = reference(logits, target)
    loss, grad = step(logits, target)
    eps = float(np.finfo(logits.dtype).eps)
    loss_err = abs(float(loss) - ref_loss)
    grad_err = float(np.max(np.abs(grad.astype(np.float64) - ref_grad)))
    # the loss rounds at the size of the logits; each gradient entry is at most 1/N
    if not (loss_err <= 64 * eps * (1 + float(np.abs(logits).max())) and grad_err <= 64 * eps / logits.shape[0]):
        raise SystemExit(f"{name}: wrong result (loss error {loss_err:.2e}, gradient error {grad_err:.2e})")
    return loss_err, grad_err


def median_seconds(step: Step, logits: Array, target: Array, budget: float) -> float:
    """Median time of one call, over calls filling about ``budget`` seconds (at least 5 calls)."""
    step(logits, target)  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < budget and len(times) < 5000):
        t0 = time.perf_counter()
        step(logits, target)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_bytes(step: Step, logits: Array, target: Array) -> int:
    """Peak bytes NumPy allocated during one call (the inputs already exist and are not counted)."""
    tracemalloc.start()
    try:
        step(logits, target)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run(rows: int, vocab: Sequence[int], budget: float, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    results: list[dict[str, Any]] = []
    for V in vocab:
        logits = rng.normal(0.0, 2.0, (rows, V)).astype(np.float32)  # (N, V)
        target = rng.integers(0, V, rows)  # (N,)
        for name, step in VARIANTS.items():
            loss_err, grad_err = check(name, step, logits, target)  # correct first, then timed
            seconds = median_seconds(step, logits, target, budget)
            peak = peak_bytes(step, logits, target)
            results.append({"variant": name, "N": rows, "V": V, "dtype": "float32", "us": seconds * 1e6,
                            "ns_per_elem": seconds * 1e9 / (rows * V), "peak_bytes": peak,
                            "peak_arrays": peak / logits.nbytes,
                            "loss_err": loss_err, "grad_err": grad_err})
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| N x V | variant | median µs | ns/elem | peak KiB | peak in (N, V) arrays | time / fused |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        fused = next(f for f in results if f["V"] == r["V"] and f["variant"] == "fused")
        ratio = f"{r['us'] / fused['us']:.2f}x"
        lines.append(f"| {r['N']} x {r['V']} | {r['variant']} | {r['us']:.1f} | {r['ns_per_elem']:.2f} | "
                     f"{r['peak_bytes'] / 1024:.1f} | {r['peak_arrays']:.2f} | {ratio} |")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, style in (("naive", "o-"), ("fused", "s-"), ("fused fast", "^--")):
        sub = [r for r in results if r["variant"] == name]
        ax_t.plot([r["V"] for r in sub], [r["ns_per_elem"] for r in sub], style, label=name)
        ax_m.plot([r["V"] for r in sub], [r["peak_arrays"] for r in sub], style, label=name)
    ax_t.set(xscale="log", yscale="log", xlabel="V (classes)", ylabel="ns per logit (forward + backward)",
             title=f"time, N = {results[0]['N']}, float32")
    ax_m.set(xscale="log", xlabel="V (classes)", ylabel="peak extra memory / size of (N, V) logits",
             title="peak memory (tracemalloc)")
    ax_m.set_ylim(bottom=0)
    for ax in (ax_t, ax_m):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512, help="N, rows of logits (default 512)")
    parser.add_argument("--vocab", type=int, nargs="+", default=[27, 256, 1024, 4096], help="values of V")
    parser.add_argument("--budget", type=float, default=0.3, help="seconds of timing per variant and size")
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for fused_vs_naive.{md,json,png}")
    args = parser.parse_args(argv)
    if args.rows < 1 or any(v < 1 for v in args.vocab):
        parser.error(f"--rows and --vocab must be positive, got --rows {args.rows} --vocab {args.vocab}")
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")

    results = run(args.rows, args.vocab, args.budget)
    md = table(results)
    print("Cross-entropy forward + backward, mean reduction, float32 (each result checked before timing)\n")
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fused_vs_naive.md").write_text(md + "\n")
    (args.out / "fused_vs_naive.json").write_text(json.dumps(results, indent=1))
    wrote = [args.out / "fused_vs_naive.md", args.out / "fused_vs_naive.json"]
    if plot(results, args.out / "fused_vs_naive.png"):
        wrote.append(args.out / "fused_vs_naive.png")
    print("\nwrote " + ", ".join(str(p) for p in wrote))
    return 0


if __name__ == "__main__":
    sys.exit(main())
