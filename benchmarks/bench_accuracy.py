"""The error atlas: every built-in contender of ``tinyops audit``, side by side, per hard region, in ULPs.

One corpus of fixed-seed rows from every hard region of ``tinyops.testing.regions`` (benign, confident,
near ties, wide and tiny scales, +-1e4 offsets, -inf masks, the exp overflow and underflow thresholds,
long rows of V = 50,257, log-normalized rows), in float32 and float64. For each op (logsumexp, softmax,
log_softmax, cross_entropy) the audit's runner (``tinyops.audit.measure.run_regions``) measures each
contender's output and its gradient (of ``sum(out * dout)``, a random dout) against the exact mpmath
reference, as ``tinyops audit`` does for one target; the exact side is computed once for all contenders.

Contenders: the built-in adapters that run here (``tinyops.audit.available``: tinyops, tinyops-fast
(cross_entropy only), torch (one thread), scipy, jax when installed, numpy-naive); ``--torch-compile``
adds torch.compile (it compiles each shape: minutes).

The error of each entry is ``|got - exact| / ulp(exact rounded to the dtype)``; gradients and float64
values are scored where the exact value is a normal number. The tables give the worst over the corpus,
then per region (``tinyops audit`` gives p99 and median too, for one target). tinyops' documented
bounds (``tinyops.testing.bounds``) are checked region by region: the exit status is 1 when one is
exceeded.

    python benchmarks/bench_accuracy.py [--quick] [--tiny] [--out results/accuracy] [--no-plots] [--write-docs]

Writes ``bench_accuracy.md`` / ``.json`` and ``bench_accuracy_loss.png`` (the per-sample cross-entropy
error against the loss, one panel per contender and dtype) into ``--out``. ``--write-docs`` also writes
the atlas into docs/accuracy.md and the summary into README.md (between their ``atlas`` markers) and the
picture to docs/img/accuracy_loss.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C

from tinyops import audit
from tinyops.audit import measure
from tinyops.audit.report import RegionStats, Report, fmt_ulp, md_table
from tinyops.testing import exact, regions

ROOT = Path(__file__).resolve().parent.parent
DTYPES = ["float32", "float64"]
OPS = list(audit.OPS)
QUANTITY_NAMES = {
    "lse": "logsumexp",
    "lse.grad": "logsumexp gradient",
    "softmax": "softmax",
    "softmax.grad": "softmax gradient",
    "log_softmax": "log_softmax",
    "log_softmax.grad": "log_softmax gradient",
    "loss": "per-sample cross-entropy",
    "grad": "cross-entropy gradient",
}
# rows x classes per region, long rows x their classes
SIZES = {"full": (64, 64, 4, 50_257), "quick": (16, 32, 1, 50_257), "tiny": (3, 6, 1, 1_000)}
SEED = 20240229


def run(size: str, torch_compile: bool) -> tuple[list[Report], list[str]]:
    """Every contender on every op and dtype: one Report each (regions only), and the missing contenders."""
    rows, classes, long_rows, long_classes = SIZES[size]
    reports: list[Report] = []
    missing: set[str] = set()
    for dtype in DTYPES:
        t0 = time.perf_counter()
        corpus = measure.corpus(dtype, rows, classes, long_rows, long_classes, SEED)
        refs = [exact.reference(x, t) for _, x, t in corpus]
        print(f"  {dtype}: exact reference of {sum(x.size for _, x, _ in corpus):,} logits in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        for op in OPS:
            t0 = time.perf_counter()
            names = [n for n in audit.BUILTINS if n != "torch-compile" or torch_compile]
            adapters, unavailable = audit.available(op, names)
            missing |= {m for m in unavailable if "not installed" in m or "does not run" in m}
            cases = [
                measure.make_case(region, x, t, op, True, SEED + i, ref=ref)
                for i, ((region, x, t), ref) in enumerate(zip(corpus, refs, strict=True))
            ]
            for name, (stats, points) in measure.run_regions(adapters, op, cases).items():
                reports.append(Report(name, op, dtype, True, stats, points=points))
            print(f"  {dtype} {op:13s}: {len(adapters)} contenders in {time.perf_counter() - t0:.1f} s", flush=True)
    return reports, sorted(missing)


def contenders(reports: list[Report]) -> list[str]:
    """The contenders measured, in the order of audit.BUILTINS."""
    seen = {r.target for r in reports}
    return [n for n in audit.BUILTINS if n in seen]


def find(reports: list[Report], target: str, op: str, dtype: str) -> Report | None:
    return next((r for r in reports if (r.target, r.op, r.dtype) == (target, op, dtype)), None)


def worst(rep: Report | None, q: str) -> str:
    """The worst error of one quantity over the corpus ('-': not offered by this contender)."""
    return "-" if rep is None or not any(s.quantity == q and s.count for s in rep.regions) else fmt_ulp(rep.worst(q))


def summary_table(reports: list[Report], dtype: str) -> str:
    names = contenders(reports)
    rows = []
    for op in OPS:
        for q in measure.QUANTITIES[op]:
            rows.append([QUANTITY_NAMES[q], *(worst(find(reports, n, op, dtype), q) for n in names)])
    title = f"**{dtype}**: worst ULP error over the corpus"
    return title + "\n\n" + md_table(["quantity", *names], rows)


def region_table(reports: list[Report], dtype: str, op: str, q: str) -> str:
    names = contenders(reports)
    rows = []
    for region in regions.REGIONS:
        cells = []
        for n in names:
            rep = find(reports, n, op, dtype)
            s = next((s for s in rep.regions if s.region == region and s.quantity == q), None) if rep else None
            cells.append("-" if s is None else fmt_ulp(s.worst))
        rows.append([region, *cells])
    return f"**{dtype} {QUANTITY_NAMES[q]}**: worst ULP error per region\n\n" + md_table(["region", *names], rows)


def atlas(reports: list[Report]) -> str:
    parts = [summary_table(reports, d) for d in DTYPES]
    for dtype in DTYPES:
        tables = [region_table(reports, dtype, op, q) for op in OPS for q in measure.QUANTITIES[op]]
        parts.append(f"<details><summary>{dtype}: per region</summary>\n\n" + "\n\n".join(tables) + "\n\n</details>")
    return "\n\n".join(parts)


def readme_table(reports: list[Report]) -> str:
    """float32, tinyops and torch: the worst error per quantity over the corpus."""
    names = [n for n in ("tinyops", "torch") if n in contenders(reports)]
    rows = []
    for op in OPS:
        for q in measure.QUANTITIES[op]:
            rows.append([QUANTITY_NAMES[q], *(worst(find(reports, n, op, "float32"), q) for n in names)])
    return md_table(["quantity (float32)", *names], rows)


def bounds_check(reports: list[Report]) -> tuple[str, bool]:
    """tinyops' documented bounds (tinyops.testing.bounds), region by region, in both dtypes."""
    lines, ok = [], True
    for dtype in DTYPES:
        for op in OPS:
            rep = find(reports, "tinyops", op, dtype)
            if rep is None:
                continue
            for q in measure.QUANTITIES[op]:
                stats: list[RegionStats] = [s for s in rep.regions if s.quantity == q and s.bound is not None]
                if not stats:
                    continue
                over = [s for s in stats if s.over_bound]
                ok &= not over
                worst = max(s.worst for s in stats)
                detail = ", ".join(f"{s.region}: {s.over_bound} entries, worst {fmt_ulp(s.worst)}" for s in over)
                lines.append(f"{dtype} {q}: {'held' if not over else 'EXCEEDED (' + detail + ')'} "
                             f"(worst {fmt_ulp(worst)})")
    return "tinyops' documented bounds (tinyops/testing/bounds.py):\n- " + "\n- ".join(lines), ok


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="16 rows x 32 per region and one long row")
    parser.add_argument("--tiny", action="store_true", help="3 rows x 6 per region, a long row of 1,000 (tests)")
    parser.add_argument("--out", type=Path, default=Path("results/accuracy"), help="folder for .md/.json/.png")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plot")
    parser.add_argument("--torch-compile", action="store_true", help="add torch.compile (slow: it compiles)")
    parser.add_argument("--write-docs", action="store_true", help="write the atlas into docs/accuracy.md and README")
    args = parser.parse_args(argv)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    rows, classes, long_rows, long_classes = SIZES[size]
    info = C.machine_info()
    print(f"Accuracy in ULPs against an exact reference (mpmath, {exact.PREC} bits)\nMachine: {C.machine_line(info)}")
    print(f"Corpus: {len(regions.REGIONS) - 1} regions x {rows} rows x {classes} classes, {long_rows} row(s) of "
          f"{long_classes:,} classes; float32 and float64; seed {SEED}\n", flush=True)
    t0 = time.perf_counter()
    reports, missing = run(size, args.torch_compile)
    if missing:
        print("not measured: " + "; ".join(missing))
    body = atlas(reports)
    check_line, ok = bounds_check(reports)
    print("\n" + body + "\n\n" + check_line)
    command = "python benchmarks/bench_accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    seconds = time.perf_counter() - t0
    payload = {
        "benchmark": "accuracy",
        "machine": info,
        "size": size,
        "seed": SEED,
        "prec_bits": exact.PREC,
        "command": command.strip(),
        "seconds": seconds,
        "bounds_held": ok,
        "contenders": contenders(reports),
        "missing": missing,
        "reports": [{k: v for k, v in r.to_dict().items() if k != "points"} for r in reports],
    }
    header = f"Corpus: {size}, seed {SEED}. Command: `{command.strip()}` ({seconds:.0f} s)"
    paths = C.write_results(args.out, "bench_accuracy", "Accuracy in ULPs",
                            f"{header}\n\n{body}\n\n{check_line}", payload)
    ce = [r for r in reports if r.op == "cross_entropy"]
    if not args.no_plots:
        paths.append(audit.plot(ce, args.out / "bench_accuracy_loss.png"))
    if args.write_docs:
        stamp = f"{header}\n\nMachine: {C.machine_line(info)}"
        C.replace_blocks(ROOT / "docs" / "accuracy.md", {"atlas": f"{stamp}\n\n{body}\n\n{check_line}"})
        C.replace_blocks(ROOT / "README.md", {"atlas": readme_table(reports)})
        paths += [ROOT / "docs" / "accuracy.md", ROOT / "README.md"]
        paths.append(audit.plot(ce, ROOT / "docs" / "img" / "accuracy_loss.png"))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
