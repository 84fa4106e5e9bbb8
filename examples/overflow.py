"""Naive against stable softmax and cross-entropy as the logits grow, in float16, float32 and float64.

One row of logits, ``t * [-1, -0.6, 0, 1]`` (at t = 5 the seed's ``[-5, -3, 0, 5]``), is scaled up
until every naive result has broken. For each dtype and scale the table shows the error against a
float64 reference computed here with the max shift and ``log1p`` (independent of tinyops), rounded to
the dtype (the best answer the dtype can hold: a loss below its smallest subnormal is 0):

- the seed's softmax (``exp(x) / sum(exp(x))``) and the max-shifted one: max absolute error;
- the seed's naive cross-entropy chain and the fused one (default ``precision='accurate'``), for
  target 0 (the smallest logit: a large loss) and target 3 (the largest logit: a confident prediction,
  loss near 0), and the fused one with ``precision='fast'`` for target 3: relative error.

``nan`` / ``inf`` mean the result itself is nan / inf. The naive softmax breaks at the exp overflow
threshold ``log(finfo.max)`` of the dtype (``inf / inf``); the naive loss of target 0 breaks earlier,
when that class's probability underflows to 0 and ``-log(0) = inf``. The stable ones never overflow.
A relative error near 1 for target 3 with a finite loss is cancellation, not overflow: the naive chain
rounds ``p_t`` to 1 before its ``log``, and the fast kernel's ``lse - x[target]`` subtracts two nearly
equal numbers, once the true loss is below about the dtype's eps. The accurate kernel computes that
loss as ``(m - x[t]) + log1p(sum_{j != argmax} exp(x_j - m))``, where nothing cancels.

Writes ``overflow.md``, ``overflow.json`` and ``overflow.png`` (needs matplotlib) to ``--out``.

    python examples/overflow.py [--out results]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import tinyops

Array = np.ndarray[Any, Any]

DTYPES: tuple[type[np.floating[Any]], ...] = (np.float16, np.float32, np.float64)
BASE = (-1.0, -0.6, 0.0, 1.0)  # the row shape; times 5 it is the seed's [-5, -3, 0, 5]
SCALES = (1.0, 5.0, 10.0, 11.0, 12.0, 20.0, 50.0, 88.0, 89.0, 100.0, 200.0, 500.0, 709.0, 710.0, 1000.0, 5000.0)
TARGETS = (0, 3)


def thresholds(dtype: type[np.floating[Any]]) -> dict[str, float]:
    """Where ``exp`` overflows to inf, and where its result leaves the normal range / rounds to 0."""
    fi = np.finfo(dtype)
    return {
        "overflow": float(np.log(fi.max)),  # exp(x) = inf above this
        "underflow_normal": float(np.log(fi.smallest_normal)),  # exp(x) is subnormal below this
        "underflow_zero": float(np.log(fi.smallest_subnormal)),  # exp(x) rounds to 0 below about this
    }


def reference(x: Array) -> tuple[Array, Array]:
    """float64 softmax and per-target loss of a 1-D row, max-shifted, with ``log1p`` for the sum.

    ``lse = m + log1p(sum_{j != argmax} exp(x_j - m))``: the largest term (exactly 1) is kept out of
    the sum, so a confident prediction's small loss is not lost to rounding.
    """
    x = x.astype(np.float64)
    k = int(np.argmax(x))
    m = x[k]
    e = np.exp(x - m)
    rest = float(np.delete(e, k).sum())  # e[k] == 1 exactly, kept out of the sum
    probs = e / (1.0 + rest)
    losses = np.array([math.log1p(rest) + (m - x[t]) for t in TARGETS])
    return probs, losses


def describe(value: Array, ref: Array, *, relative: bool) -> tuple[str, float | None]:
    """A table cell: ``nan`` / ``inf`` if the result has one, else its error (max abs, or relative)."""
    v = value.astype(np.float64)
    if np.isnan(v).any():
        return "nan", None
    if np.isinf(v).any():
        return "inf", None
    err = np.abs(v - ref)
    if relative:
        err = err / np.maximum(np.abs(ref), np.finfo(np.float64).tiny)
    e = float(err.max())
    return f"{e:.1e}", e


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for dtype in DTYPES:
        for t in SCALES:
            x = (t * np.array(BASE)).astype(dtype)  # (4,) in the dtype: the reference sees the same values
            ref_probs, ref_losses = (r.astype(dtype).astype(np.float64) for r in reference(x))  # best in dtype
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # the naive ops overflow here
                naive_sm = tinyops.softmax_naive(x)
                naive_ce = tinyops.cross_entropy_naive(np.stack([x, x]), np.array(TARGETS), reduction="none")
            stable_sm = tinyops.softmax(x)
            fused_ce = tinyops.cross_entropy(np.stack([x, x]), np.array(TARGETS), reduction="none")
            fast_ce = tinyops.cross_entropy(np.stack([x, x]), np.array(TARGETS), reduction="none", precision="fast")
            row: dict[str, Any] = {"dtype": np.dtype(dtype).name, "scale": t, "max_logit": float(x.max())}
            cells = {
                "naive softmax": describe(naive_sm, ref_probs, relative=False),
                "stable softmax": describe(stable_sm, ref_probs, relative=False),
            }
            for i, target in enumerate(TARGETS):
                cells[f"naive CE t={target}"] = describe(naive_ce[i : i + 1], ref_losses[i : i + 1], relative=True)
                cells[f"fused CE t={target}"] = describe(fused_ce[i : i + 1], ref_losses[i : i + 1], relative=True)
            i = TARGETS.index(3)
            cells["fast CE t=3"] = describe(fast_ce[i : i + 1], ref_losses[i : i + 1], relative=True)
            row["cells"] = {k: c[0] for k, c in cells.items()}
            row["errors"] = {k: c[1] for k, c in cells.items()}
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0]["cells"])
    lines = ["| dtype | max logit | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for r in rows:
        lines.append(f"| {r['dtype']} | {r['max_logit']:g} | " + " | ".join(r["cells"][c] for c in columns) + " |")
    return "\n".join(lines)


STYLES = {"naive CE t=0": "o-", "fused CE t=0": "s--", "naive CE t=3": "^-", "fused CE t=3": "v--",
          "fast CE t=3": "d:"}
FLOOR = 1e-18  # an error of exactly 0 is drawn here (log axis)
BROKEN = 1e3  # a nan or inf result is drawn here, as a hollow marker


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Relative error of each loss against the max logit, naive and fused, one panel per dtype.

    Errors of exactly 0 sit on the bottom line (1e-18), nan/inf results on the top line (1e3).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    fig, axes = plt.subplots(1, len(DTYPES), figsize=(5 * len(DTYPES), 3.8), sharey=True)
    for ax, dtype in zip(axes, DTYPES, strict=True):
        name = np.dtype(dtype).name
        sub = [r for r in rows if r["dtype"] == name]
        for key, style in STYLES.items():
            xs = [r["max_logit"] for r in sub if r["errors"][key] is not None]
            ys = [max(r["errors"][key], FLOOR) for r in sub if r["errors"][key] is not None]
            ax.plot(xs, ys, style, label=key, alpha=0.8)
            broken = [r["max_logit"] for r in sub if r["errors"][key] is None]
            if broken:
                ax.plot(broken, [BROKEN] * len(broken), style[0], color=ax.lines[-1].get_color(), markersize=10,
                        fillstyle="none")
        ax.axvline(thresholds(dtype)["overflow"], color="gray", lw=1, ls=":", label="log(finfo.max)")
        ax.set(xscale="log", yscale="log", title=name, xlabel="max logit")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("relative error of the loss (0 at 1e-18, nan/inf at 1e3)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for overflow.{md,json,png}")
    args = parser.parse_args(argv)

    print("exp thresholds per dtype (x above 'overflow': exp(x) = inf; below 'underflow_zero': exp(x) = 0)")
    for dtype in DTYPES:
        th = thresholds(dtype)
        print(f"  {np.dtype(dtype).name:8s} " + "  ".join(f"{k} {v:.6g}" for k, v in th.items()))
    rows = run()
    md = table(rows)
    print()
    print(f"logits = t * {list(BASE)}; errors against a float64 max-shifted log1p reference rounded to the dtype")
    print(md)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overflow.md").write_text(md + "\n")
    payload = {"base": BASE, "targets": TARGETS, "thresholds": {np.dtype(d).name: thresholds(d) for d in DTYPES},
               "rows": rows}
    (args.out / "overflow.json").write_text(json.dumps(payload, indent=1))
    wrote = [args.out / "overflow.md", args.out / "overflow.json"]
    if plot(rows, args.out / "overflow.png"):
        wrote.append(args.out / "overflow.png")
    print("wrote " + ", ".join(str(p) for p in wrote))
    return 0


if __name__ == "__main__":
    sys.exit(main())
