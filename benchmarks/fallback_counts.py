"""How often the 'accurate' kernels' rounding decision falls back, per region and per quantity.

For every region of tinyops.testing.regions (fixed seed; 512 rows of 64 classes, 16 rows of 50,257 for
long_row) and for random normal logits at the loss benchmark's shapes, it counts the rows whose results
the float64 evaluation did not decide:

- compiled (tinyops/kernels): rows decided by the second tier (the row again in float64 pairs), rows
  computed in double-double, and rows a double-double value still left open (none expected);
- reference (tinyops/ops): rows computed in double-double, and rows left open.

The counts are deterministic for a fixed seed (they do not depend on the machine's load). One float32
table and one float64 table, in markdown:

    python benchmarks/fallback_counts.py [--seed 0] [--dtypes float32,float64]

``--cost`` prints instead what the decision costs on random float32 logits: the median time of the
compiled 'accurate' cross-entropy forward + backward over that of 'fast' (the classic float32 formula:
no float64, no decision; the softmax family has no 'fast' to compare with), on 1 and 2 threads.
Timings, unlike the counts, move with the machine's load (on a shared machine, +-30%).

    python benchmarks/fallback_counts.py --cost [--repeats 21] [--shapes 4096x27,1024x8192,1024x50257]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from tinyops.kernels import cross_entropy as kce
from tinyops.kernels import rounding
from tinyops.kernels import softmax as ksm
from tinyops.ops import cross_entropy as oce
from tinyops.ops import softmax as osm
from tinyops.testing import regions

Array = np.ndarray[Any, Any]
QUANTITIES = ("lse", "softmax", "log_softmax", "loss", "grad")


def compiled_fell(x: Array, t: Array) -> dict[str, Array]:
    """Per quantity, the compiled kernels' FELL_* code of each row."""
    out = {}
    for op, name in ((ksm.LSE, "lse"), (ksm.SOFTMAX, "softmax"), (ksm.LOG_SOFTMAX, "log_softmax")):
        out[name] = ksm.forward_counted(x, op, 1)[2].astype(int)
    _, _, state = kce.ce_rows_forward(x, t)
    out["loss"] = state.stats[kce.FELL].astype(int)
    out["grad"] = kce.ce_rows_backward_counted(np.full(1, 1.0 / len(t), x.dtype), state)[1].astype(int)
    return out


def reference_fell(x: Array, t: Array) -> dict[str, Array]:
    """Per quantity, the reference layer's fell code of each row (1: double-double, 2: left open)."""
    with np.errstate(all="ignore"):
        s = osm.shifted_rows(x, keep_d=True)
        out = {
            "lse": osm.lse_rows(s)[1],
            "softmax": osm.softmax_rows_decided(s, np.empty(x.shape, x.dtype))[1],
            "log_softmax": osm.log_softmax_rows(s)[1],
        }
    _, _, state = oce.ce_rows_forward(x, t, backend="reference")
    assert isinstance(state, oce.RowsCache) and state.fell is not None
    out["loss"] = state.fell
    out["grad"] = oce.ce_rows_backward_decided(np.full(1, 1.0 / len(t), x.dtype), state)[1]
    return {k: v.astype(int) for k, v in out.items()}


def cell(fell_c: Array, fell_r: Array) -> str:
    """``compiled pairs / dd / open ; reference dd / open``, in rows."""
    c = [int((fell_c == code).sum()) for code in (rounding.FELL_PAIRS, rounding.FELL_DD, rounding.FELL_UNDECIDED)]
    r = [int((fell_r == code).sum()) for code in (1, 2)]
    return f"{c[0]} / {c[1]} / {c[2]} ; {r[0]} / {r[1]}"


def cases(dtype: np.dtype[Any], seed: int) -> list[tuple[str, Array, Array]]:
    out = []
    for name in regions.REGIONS:
        n, v = (16, 50_257) if name == "long_row" else (512, 64)
        x, t = regions.BUILDERS[name](np.random.default_rng(seed), dtype, n, v)
        out.append((name, x, t))
    rng = np.random.default_rng(seed)
    for N, V in ((4096, 27), (512, 8192), (64, 50_257)):  # the loss benchmark's random logits
        x = rng.standard_normal((N, V)).astype(dtype)
        out.append((f"random {N}x{V}", x, rng.integers(0, V, N)))
    return out


def cost_ratio(x: Array, t: Array, threads: int, repeats: int) -> tuple[float, float, float]:
    """Median times (ms) of the cross-entropy forward + backward, 'accurate' and 'fast', and their ratio."""
    g = np.full(1, 1.0 / len(t), x.dtype)

    def run(precision: str) -> None:
        _, _, state = kce.ce_rows_forward(x, t, precision=precision, threads=threads)
        kce.ce_rows_backward(g, state)

    times: dict[str, list[float]] = {"accurate": [], "fast": []}
    for p in times:
        run(p)  # compiled, and the pages touched
    for _ in range(repeats):  # interleaved, so that a change of load hits both
        for p, ts in times.items():
            t0 = time.perf_counter()
            run(p)
            ts.append(time.perf_counter() - t0)
    a, f = (float(np.median(ts)) * 1e3 for ts in times.values())
    return a, f, a / f


def cost(shapes: str, repeats: int, seed: int) -> None:
    print("\ncross-entropy forward + backward, float32 random normal logits, medians\n")
    print("| shape | threads | 'accurate' ms | 'fast' ms | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rng = np.random.default_rng(seed)
    for shape in shapes.split(","):
        N, V = (int(s) for s in shape.split("x"))
        x = rng.standard_normal((N, V)).astype(np.float32)
        t = rng.integers(0, V, N)
        for threads in (1, 2):
            a, f, r = cost_ratio(x, t, threads, repeats)
            print(f"| {N}x{V} | {threads} | {a:.2f} | {f:.2f} | {r:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--cost", action="store_true", help="time 'accurate' against 'fast' instead")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--shapes", default="4096x27,1024x8192,1024x50257")
    args = parser.parse_args()
    if args.cost:
        cost(args.shapes, args.repeats, args.seed)
        return
    for dt in args.dtypes.split(","):
        dtype = np.dtype(dt)
        print(f"\n**{dt}**: rows redone, compiled pairs / double-double / open ; reference double-double / open\n")
        print("| region | rows | " + " | ".join(QUANTITIES) + " |")
        print("| --- | ---: | " + " | ".join("---:" for _ in QUANTITIES) + " |")
        for name, x, t in cases(dtype, args.seed):
            fc, fr = compiled_fell(x, t), reference_fell(x, t)
            cells = " | ".join(cell(fc[q], fr[q]) for q in QUANTITIES)
            print(f"| {name} | {x.shape[0]} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
