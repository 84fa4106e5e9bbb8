"""Embedding backward: candidate scatter-adds, tinyops' embedding_backward and torch, per shape.

The backward of ``out = weight[idx]`` is the scatter-add ``dweight[v] = sum_{m: idx[m] = v} dout[m]``.
Candidates (each on the flattened (M,) indices and (M, D) upstream gradient):
  add.at rows        np.add.at(dweight, idx, dout)
  add.at flat        np.add.at on the raveled (V*D,) gradient with flat indices idx*D + j
  bincount columns   one np.bincount(idx, weights=dout[:, j]) per column (float64 sums)
  bincount flat      one np.bincount of the flat indices idx*D + j (float64 sums; small V*D only)
  ..., blocked       the same, a block of rows at a time (the block's flat indices stay in cache)
  sort + reduceat    stable argsort of idx, np.add.reduceat over the runs of equal indices
  one-hot matmul     onehot(idx).T @ dout with a (M, V) one-hot (small V only)
  tinyops reference layer   the entry point embedding_weight_grad, backend='reference' (np.add.at rows)
  tinyops compiled layer    the same entry point, backend='compiled' (tinyops.kernels.embedding, 1 thread)
  tinyops            tinyops.embedding_backward as shipped (default backend 'compiled'; checks included)
  torch              aten.embedding_dense_backward, the kernel torch's autograd runs, 1 and 2 threads

Each is checked against a float64 scatter-add (tolerance: the sum's length times eps times the sum of
|dout| in the row) before it is timed; one that fails is FAILED, not timed.

    python benchmarks/bench_embedding.py [--quick] [--out results]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C

import tinyops
from tinyops.ops.embedding import embedding_weight_grad

Array = np.ndarray[Any, Any]
Method = Callable[[Array, Array, int], Array]  # (idx (M,), dout (M, D), V) -> dweight (V, D)

# (V, D, index shape): one training batch (32 x 3 context), the whole training split, a GPT-2-sized table
FULL_SHAPES = [(27, 10, (32, 3)), (27, 10, (182625, 3)), (50257, 768, (8192,))]
QUICK_SHAPES = [(27, 10, (32, 3)), (27, 10, (182625, 3)), (50257, 768, (1024,))]
ONE_HOT_MAX_BYTES = 256 * 2**20  # the one-hot candidate is skipped above this (M, V) size
BINCOUNT_MAX_BINS = 2**20  # the flat bincounts allocate V*D float64 bins per call: skipped above this


# ============================================================================ the candidates


def add_at_rows(idx: Array, dout: Array, V: int) -> Array:
    dweight = np.zeros((V, dout.shape[1]), dtype=dout.dtype)
    np.add.at(dweight, idx, dout)
    return dweight


def _flat_index(idx: Array, D: int) -> Array:
    return (idx[:, None] * D + np.arange(D)).reshape(-1)  # (M * D,)  position of dout[m, j] in dweight


def add_at_flat(idx: Array, dout: Array, V: int) -> Array:
    D = dout.shape[1]
    dweight = np.zeros(V * D, dtype=dout.dtype)
    np.add.at(dweight, _flat_index(idx, D), dout.reshape(-1))
    return dweight.reshape(V, D)


BLOCK_ELEMS = 2**17  # blocked candidates: rows per block such that a block has about this many elements


def add_at_flat_blocked(idx: Array, dout: Array, V: int) -> Array:
    """add.at flat, a block of rows at a time: the block's flat indices stay in cache."""
    D = dout.shape[1]
    dweight = np.zeros(V * D, dtype=dout.dtype)
    B = max(1, BLOCK_ELEMS // max(D, 1))
    for r0 in range(0, idx.shape[0], B):
        np.add.at(dweight, _flat_index(idx[r0 : r0 + B], D), dout[r0 : r0 + B].reshape(-1))
    return dweight.reshape(V, D)


def bincount_flat_blocked(idx: Array, dout: Array, V: int) -> Array:
    """bincount flat, a block of rows at a time, summed into (V*D,) float64 accumulators."""
    D = dout.shape[1]
    acc = np.zeros(V * D)
    B = max(1, BLOCK_ELEMS // max(D, 1))
    for r0 in range(0, idx.shape[0], B):
        acc += np.bincount(_flat_index(idx[r0 : r0 + B], D), weights=dout[r0 : r0 + B].reshape(-1), minlength=V * D)
    return acc.astype(dout.dtype).reshape(V, D)


def bincount_columns(idx: Array, dout: Array, V: int) -> Array:
    dweight = np.empty((V, dout.shape[1]), dtype=dout.dtype)
    for j in range(dout.shape[1]):
        dweight[:, j] = np.bincount(idx, weights=dout[:, j], minlength=V)
    return dweight


def bincount_flat(idx: Array, dout: Array, V: int) -> Array:
    D = dout.shape[1]
    sums = np.bincount(_flat_index(idx, D), weights=dout.reshape(-1), minlength=V * D)  # float64
    return sums.astype(dout.dtype).reshape(V, D)


def sort_reduceat(idx: Array, dout: Array, V: int) -> Array:
    dweight = np.zeros((V, dout.shape[1]), dtype=dout.dtype)
    if idx.size == 0:
        return dweight
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])  # first position of each run
    dweight[sorted_idx[starts]] = np.add.reduceat(dout[order], starts, axis=0)
    return dweight


def one_hot_matmul(idx: Array, dout: Array, V: int) -> Array:
    onehot = np.zeros((idx.shape[0], V), dtype=dout.dtype)  # (M, V)
    onehot[np.arange(idx.shape[0]), idx] = 1
    return onehot.T @ dout  # (V, D)


def tinyops_layer(backend: str) -> Method:
    """The scatter-add entry point of tinyops.ops.embedding on one layer (no input checks)."""

    def method(idx: Array, dout: Array, V: int) -> Array:
        rows = idx.reshape(-1, 1).astype(np.intp, copy=False)  # (M, 1): one index per row
        return embedding_weight_grad(rows, np.ascontiguousarray(dout), V, dout.shape[1], backend=backend)  # type: ignore[arg-type]

    return method


CANDIDATES: dict[str, Method] = {
    "add.at rows": add_at_rows,
    "add.at flat": add_at_flat,
    "add.at flat, blocked": add_at_flat_blocked,
    "bincount columns": bincount_columns,
    "bincount flat": bincount_flat,
    "bincount flat, blocked": bincount_flat_blocked,
    "sort + reduceat": sort_reduceat,
    "one-hot matmul": one_hot_matmul,
    "tinyops reference layer": tinyops_layer("reference"),
    "tinyops compiled layer": tinyops_layer("compiled"),
}


# ============================================================================ inputs, reference, check


def make_inputs(V: int, D: int, idx_shape: tuple[int, ...], dtype: str, seed: int = 0) -> tuple[Array, Array]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, V, idx_shape)
    dout = rng.standard_normal((*idx_shape, D)).astype(dtype)
    return idx, dout


def reference(idx: Array, dout: Array, V: int) -> tuple[Array, Array]:
    """float64 scatter-add, and the tolerance of a dtype-precision one: ``(count + 1) * eps * sum|dout|``."""
    D = dout.shape[-1]
    flat, g = idx.reshape(-1), dout.reshape(-1, D).astype(np.float64)
    ref = np.zeros((V, D))
    np.add.at(ref, flat, g)
    abs_sum = np.zeros((V, D))
    np.add.at(abs_sum, flat, np.abs(g))
    count = np.bincount(flat, minlength=V)[:, None]
    eps = float(np.finfo(dout.dtype).eps)
    return ref, (count + 1) * eps * abs_sum + float(np.finfo(dout.dtype).smallest_normal)


def tinyops_step(idx: Array, dout: Array, V: int) -> Callable[[], Array]:
    D = dout.shape[-1]
    _, cache = tinyops.embedding_forward(np.zeros((V, D), dtype=dout.dtype), idx)
    return lambda: tinyops.embedding_backward(dout, cache)


def torch_step(idx: Array, dout: Array, V: int) -> Callable[[], Any]:
    import torch

    g = torch.from_numpy(np.ascontiguousarray(dout))
    i = torch.from_numpy(idx.astype(np.int64))
    return lambda: torch.ops.aten.embedding_dense_backward(g, i, V, -1, False)


def torch_rss_step(V: int, D: int, idx_shape: list[int], dtype: str, threads: int) -> Callable[[], Any]:
    """For :func:`common.rss_peak`: torch's embedding backward on fresh inputs of this shape."""
    import torch

    torch.set_num_threads(threads)
    idx, dout = make_inputs(V, D, tuple(idx_shape), dtype)
    return torch_step(idx, dout, V)


# ============================================================================ the run


def run(shapes: list[tuple[int, int, tuple[int, ...]]], dtypes: list[str], budget: float,
        torch_memory: bool) -> list[dict[str, Any]]:
    try:
        import torch

        have_torch = True
    except ImportError:
        have_torch = False
        print("torch is not installed: its variants are left out")
    rows: list[dict[str, Any]] = []
    for dtype in dtypes:
        for V, D, idx_shape in shapes:
            t0 = time.perf_counter()
            idx, dout = make_inputs(V, D, idx_shape, dtype)
            flat, g = idx.reshape(-1), dout.reshape(-1, D)
            M = flat.shape[0]
            ref, tol = reference(idx, dout, V)
            steps: list[tuple[str, Callable[[], Any], int | None]] = []
            for name, method in CANDIDATES.items():
                if name == "one-hot matmul" and M * V * np.dtype(dtype).itemsize > ONE_HOT_MAX_BYTES:
                    continue
                if name.startswith("bincount flat") and V * D > BINCOUNT_MAX_BINS:
                    continue
                steps.append((name, partial(method, flat, g, V), None))
            steps.append(("tinyops embedding_backward", tinyops_step(idx, dout, V), None))
            if have_torch:
                steps += [(f"torch, {n} thread{'s' * (n > 1)}", torch_step(idx, dout, V), n) for n in (1, 2)]
            base = {"dtype": dtype, "V": V, "D": D, "rows": M}
            for name, step, threads in steps:
                if threads is not None:
                    torch.set_num_threads(threads)
                try:
                    got = step()
                    c = C.check_close([("dweight", np.asarray(got), ref, tol)])
                except Exception as e:  # a candidate that raises fails; it is not timed
                    c = C.Check(False, float("inf"), f"raised {type(e).__name__}: {e}")
                row: dict[str, Any] = {**base, "variant": name, "status": "ok" if c.ok else "FAILED",
                                       "check": c.detail, "err_over_tol": c.err}
                if c.ok:
                    row["seconds"] = C.median_time(step, budget, warm=False)  # the check was the warm-up
                    if threads is None:
                        row.update(peak_bytes=C.tracemalloc_peak(step), peak_method="tracemalloc")
                    elif torch_memory:
                        kw = {"V": V, "D": D, "idx_shape": list(idx_shape), "dtype": dtype, "threads": threads}
                        row.update(peak_bytes=C.rss_peak(Path(__file__), "torch_rss_step", kw),
                                   peak_method="RSS growth, fresh process")
                rows.append(row)
            print(f"  {dtype} {V}x{D}, {M} rows: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows


def best_candidates(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The fastest correct candidate per shape and dtype."""
    best: dict[str, str] = {}
    for key in dict.fromkeys((r["dtype"], r["V"], r["D"], r["rows"]) for r in rows):
        cands = [r for r in rows if (r["dtype"], r["V"], r["D"], r["rows"]) == key
                 and r["variant"] in CANDIDATES and r["status"] == "ok"]
        if cands:
            best[f"{key[0]} {key[1]}x{key[2]}, {key[3]} rows"] = min(cands, key=lambda r: r["seconds"])["variant"]
    return best


def table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        same = [f for f in rows if (f["dtype"], f["V"], f["D"], f["rows"]) == (r["dtype"], r["V"], r["D"], r["rows"])]
        t1 = next((f for f in same if f["variant"] == "torch, 1 thread" and f["status"] == "ok"), None)
        ok = r["status"] == "ok"
        peak = r.get("peak_bytes")
        out.append([
            r["dtype"], f"{r['V']} x {r['D']}", f"{r['rows']:,}", r["variant"], r["status"],
            C.fmt(r["seconds"] * 1e6) if ok else "-",
            f"{t1['seconds'] / r['seconds']:.2f}x" if ok and t1 else "-",
            "-" if peak is None else C.fmt(peak / 2**20),
        ])
    headers = ["dtype", "V x D", "rows", "variant", "check", "median µs", "speed-up vs torch 1 thread",
               "peak extra MiB"]
    return C.md_table(headers, out, "lllllrrr")


def ratios(rows: list[dict[str, Any]]) -> list[list[str]]:
    """How many times faster tinyops' embedding_backward (the public op, default backend) is than torch's
    embedding backward on one thread, at each shape."""
    out = []
    for key in dict.fromkeys((r["dtype"], r["V"], r["D"], r["rows"]) for r in rows):
        same = {r["variant"]: r for r in rows if (r["dtype"], r["V"], r["D"], r["rows"]) == key and r["status"] == "ok"}
        ours, t1 = same.get("tinyops embedding_backward"), same.get("torch, 1 thread")
        ratio = t1["seconds"] / ours["seconds"] if ours and t1 else None
        what = f"{key[0]} {key[1]}x{key[2]}, {key[3]:,} rows: torch 1 thread / tinyops"
        out.append([what, "n/a" if ratio is None else f"{ratio:.2f}x"])
    return out


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    plt = C.pyplot()
    keys = list(dict.fromkeys((r["dtype"], r["V"], r["D"], r["rows"]) for r in rows))
    names = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(7.0, 2.2 * len(keys)), 4.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ys = []
        for k in keys:
            r = next((r for r in rows if (r["dtype"], r["V"], r["D"], r["rows"]) == k and r["variant"] == name), None)
            ys.append(r["seconds"] * 1e6 if r and r["status"] == "ok" else np.nan)
        ax.bar(np.arange(len(keys)) + i * width, ys, width, label=name)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [f"{d}\n{v}x{dd}, {m:,} rows" for d, v, dd, m in keys],
                  fontsize=7)
    ax.set(yscale="log", ylabel="median µs", title="embedding backward (scatter-add)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = out / "bench_embedding.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return [p]


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    C.add_common_args(parser)
    parser.add_argument("--dtypes", default=None, help="comma list of float32, float64")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes only (a self-test of the script)")
    parser.add_argument("--no-torch-memory", action="store_true", help="skip torch's fresh-process memory runs")
    args = parser.parse_args(argv)
    if args.tiny:
        shapes = [(27, 10, (32, 3)), (300, 16, (500,))]
    else:
        shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    dtypes = args.dtypes.split(",") if args.dtypes else (["float32"] if args.quick or args.tiny else
                                                         ["float32", "float64"])
    budget = args.budget if args.budget is not None else (0.3 if args.quick else 1.0)
    info = C.machine_info()
    print(f"Embedding backward (scatter-add)\nMachine: {C.machine_line(info)}\n", flush=True)
    rows = run(shapes, dtypes, budget, torch_memory=not args.no_torch_memory)
    goals = ratios(rows)
    tab = table(rows) + "\n\nSpeed-up of the public op over torch:\n\n" + C.md_table(["shape", "speed-up"], goals, "lr")
    print(tab)
    best = best_candidates(rows)
    print("\nFastest correct candidate: " + "; ".join(f"{k}: {v}" for k, v in best.items()))
    failed = [f"{r['variant']} ({r['dtype']} {r['V']}x{r['D']}, {r['rows']} rows: {r['check']})"
              for r in rows if r["status"] != "ok"]
    print("Every variant was checked against a float64 scatter-add before timing."
          + (f"\nFAILED (not timed): {'; '.join(failed)}" if failed else " All passed."))
    payload = {"benchmark": "embedding", "machine": info, "quick": args.quick, "budget_s": budget,
               "command": "python benchmarks/bench_embedding.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "best": best, "rows": rows, "ratios": goals}
    paths = C.write_results(args.out, "bench_embedding", "Embedding backward", tab, payload)
    if not args.no_plots:
        paths += plot(rows, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
