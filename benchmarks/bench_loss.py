"""Fused versus naive cross-entropy, forward + backward: time and peak extra memory, side by side.

Variants (same inputs, same run): the seed's naive chain, tinyops' fused op, and torch's
F.cross_entropy with autograd (1 thread) when torch is installed. Every variant's loss and gradient
are checked against a float64 reference before anything is timed. Times are medians of repeated
runs; memory is the peak of NumPy allocations during one forward + backward (tracemalloc).

    python benchmarks/bench_loss.py [--quick] [--out results]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
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


def torch_step() -> Step | None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(1)

    def step(logits: Array, target: Array) -> tuple[Array, Array]:
        t = torch.from_numpy(logits).requires_grad_(True)
        loss = F.cross_entropy(t, torch.from_numpy(target))
        loss.backward()
        assert t.grad is not None
        return loss.detach().numpy(), t.grad.numpy()

    return step


def reference(logits: Array, target: Array) -> tuple[float, Array]:
    """float64 loss and gradient, written out independently of the code under test."""
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(x.shape[0])
    loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - x[rows, target]))
    grad = e / s
    grad[rows, target] -= 1
    return loss, grad / x.shape[0]


def check(name: str, step: Step, logits: Array, target: Array, ref: tuple[float, Array]) -> float:
    """Fail loudly unless the variant's loss and gradient match the float64 reference; return the max error."""
    loss, grad = step(logits, target)
    eps = float(np.finfo(logits.dtype).eps)
    loss_err = abs(float(loss) - ref[0])
    grad_err = float(np.max(np.abs(grad.astype(np.float64) - ref[1])))
    scale = 1 + float(np.abs(logits).max())
    if not (loss_err <= 64 * eps * scale and grad_err <= 64 * eps / logits.shape[0]):
        raise SystemExit(f"{name}: result is wrong (loss error {loss_err:.2e}, gradient error {grad_err:.2e})")
    return max(loss_err, grad_err)


def median_time(step: Step, logits: Array, target: Array, budget: float) -> float:
    """Median seconds per call over repeated calls filling about ``budget`` seconds (at least 5)."""
    step(logits, target)  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < budget and len(times) < 10_000):
        t0 = time.perf_counter()
        step(logits, target)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_bytes(step: Step, logits: Array, target: Array) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    step(logits, target)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer shapes, shorter timing (about 20 s)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for bench_loss.json/.md")
    args = parser.parse_args(argv)

    shapes = [(32, 27), (4096, 27), (4096, 8192)] if args.quick else [(32, 27), (4096, 27), (182625, 27), (4096, 8192)]
    dtypes = [np.float32] if args.quick else [np.float32, np.float64]
    budget = 0.5 if args.quick else 2.0
    variants: list[tuple[str, Step]] = [("naive", naive_step), ("fused", fused_step)]
    t_step = torch_step()
    if t_step is not None:
        variants.append(("torch (1 thread)", t_step))

    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for dtype in dtypes:
        for N, V in shapes:
            logits = rng.normal(0.0, 2.0, (N, V)).astype(dtype)
            target = rng.integers(0, V, N)
            ref = reference(logits, target)
            for name, step in variants:
                err = check(name, step, logits, target, ref)
                seconds = median_time(step, logits, target, budget)
                peak = peak_bytes(step, logits, target) if name != "torch (1 thread)" else None
                rows.append({"dtype": np.dtype(dtype).name, "N": N, "V": V, "variant": name,
                             "us": seconds * 1e6, "ns_per_elem": seconds * 1e9 / (N * V),
                             "peak_mib": None if peak is None else peak / 2**20, "max_err": err})  # fmt: skip

    lines = [
        "| dtype | N x V | variant | median µs | ns/elem | peak extra MiB | vs fused (time) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        fused = next(
            f for f in rows if (f["dtype"], f["N"], f["V"], f["variant"]) == (r["dtype"], r["N"], r["V"], "fused")
        )
        mem = "n/a (not NumPy)" if r["peak_mib"] is None else f"{r['peak_mib']:.2f}"
        lines.append(f"| {r['dtype']} | {r['N']} x {r['V']} | {r['variant']} | {r['us']:.1f} | "
                     f"{r['ns_per_elem']:.2f} | {mem} | {r['us'] / fused['us']:.2f}x |")  # fmt: skip
    table = "\n".join(lines)
    machine = (f"{platform.processor() or platform.machine()}, NumPy {np.__version__}, "
               f"Python {platform.python_version()}")  # fmt: skip
    print(f"Cross-entropy forward + backward, mean reduction ({machine})\n")
    print(table)
    print("\nEvery variant's loss and gradient were checked against a float64 reference before timing.")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_loss.md").write_text(table + "\n")
    (args.out / "bench_loss.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"wrote {args.out / 'bench_loss.md'} and {args.out / 'bench_loss.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
