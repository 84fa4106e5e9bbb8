"""Audit any implementation of logsumexp, softmax, log_softmax or cross-entropy for numerical accuracy.

``tinyops audit TARGET --op OP [--grad] [--dtype float32|float64]`` on the command line, or::

    from tinyops.audit import audit
    report = audit("mypackage.mymodule:my_softmax", "softmax")  # or the callable itself
    print(report.to_text())

TARGET is a built-in adapter (``tinyops``, ``tinyops-fast``, ``torch``, ``torch-compile``, ``scipy``,
``jax``, ``numpy-naive``) or any importable ``package.module:function`` following the protocol of
:mod:`tinyops.audit.adapters` (NumPy (N, C) in, NumPy out; an :class:`Adapter` adds the gradient).

The report (:class:`Report`) holds:

1. per hard region of :mod:`tinyops.testing.regions` and per quantity (the output, and with ``grad`` the
   gradient of ``sum(out * dout)``): the worst, p99 and median error in ULPs against the exact mpmath
   reference, the worst error over ``(kappa + 1) u`` (see :mod:`tinyops.audit.measure`) and the entries
   above the bound (tinyops' documented bound, :mod:`tinyops.testing.bounds`, or ``max_ulp``);
2. a worst-case search: hypothesis over every region, ``target()`` toward the largest error, the first
   input above the bound shrunk and printed as copy-pasteable Python;
3. metamorphic checks (shift, permutation, batch of one, chunks, float32 against float64);
4. the special values (±0, ±inf, nan, empty and all -inf rows, one class, a target at -inf) against
   torch's semantics and SciPy's where it differs.

Needs mpmath and hypothesis (the ``test`` extra); matplotlib for the plot.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .adapters import BUILTINS, OPS, Adapter, AuditError, Unavailable, builtin, load_target
from .report import CheckResult, RegionStats, Report, SearchResult, SpecialResult, plot

__all__ = [
    "BUILTINS",
    "OPS",
    "Adapter",
    "AuditError",
    "CheckResult",
    "RegionStats",
    "Report",
    "SearchResult",
    "SpecialResult",
    "Unavailable",
    "audit",
    "available",
    "builtin",
    "load_target",
    "main",
    "plot",
]


OPTIONAL = {"torch": "torch", "torch-compile": "torch", "scipy": "scipy", "jax": "jax"}
"""The built-in adapters that need an optional library, and that library."""


def available(op: str, names: Sequence[str] | None = None) -> tuple[list[Adapter], list[str]]:
    """The built-in adapters for ``op`` that run here (default: all but ``torch-compile``), and one line per
    one that does not ('jax: jax is not installed')."""
    ok, missing = [], []
    for name in names if names is not None else [n for n in BUILTINS if n != "torch-compile"]:
        try:
            ok.append(builtin(name, op))
        except Unavailable as exc:
            missing.append(f"{name}: {exc}")
    return ok, missing


def audit(
    target: str | Callable[..., Any] | Adapter,
    op: str,
    *,
    grad: bool = False,
    dtype: npt.DTypeLike = np.float32,
    rows: int = 16,
    classes: int = 32,
    long_rows: int = 1,
    long_classes: int = 50_257,
    seed: int = 20240229,
    examples: int = 200,
    max_ulp: float | None = None,
    checks: bool = True,
) -> Report:
    """Audit ``target`` (see the module docstring) on ``op``; returns the :class:`Report`.

    Args:
        target: a built-in name, ``package.module:function``, a callable (the forward) or an Adapter.
        op: 'logsumexp', 'softmax', 'log_softmax' or 'cross_entropy'.
        grad: also the gradient (the target must be an Adapter with a backward, or a built-in).
        dtype: float32 or float64 input.
        rows, classes: the batch of each region (fixed seed ``seed``); long_rows x long_classes for
            ``long_row`` (0 rows: left out).
        examples: the worst-case search's budget (0: no search).
        max_ulp: the bound for every quantity, instead of tinyops' documented ones.
        checks: run the metamorphic checks and the special values.

    Raises:
        AuditError: the target does not import, is not callable, raises on a benign input, returns the
            wrong shape or dtype, or has no gradient for ``grad``.
        Unavailable: a built-in whose library is missing.
        ValueError: an unknown op or dtype.
    """
    from . import measure

    if op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    t0 = time.perf_counter()
    adapter = load_target(target, op)
    name = target if isinstance(target, str) else adapter.name
    measure.probe(adapter, op, dt, grad)
    cases = [
        measure.make_case(region, x, t, op, grad, seed + i, max_ulp)
        for i, (region, x, t) in enumerate(measure.corpus(dt, rows, classes, long_rows, long_classes, seed))
    ]
    stats, points = measure.run_regions([adapter], op, cases)[adapter.name]
    report = Report(name, op, dt.name, grad, stats, points=points)
    if examples:
        report.search = measure.search(adapter, name, op, dt, grad, max_examples=examples, max_ulp=max_ulp)
    if checks:
        report.metamorphic = measure.metamorphic(adapter, op, dt)
        report.special = measure.special_values(adapter, op, dt, grad)
    report.seconds = time.perf_counter() - t0
    return report


def main(argv: Sequence[str] | None = None, prog: str = "tinyops audit") -> int:
    """``tinyops audit``: parse the arguments, audit, print the report; 2 on a bad TARGET."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=fmt)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tinyops audit`` (also used by tinyops.cli's subparser)."""
    parser.description = parser.description or (
        "Audit TARGET's logsumexp, softmax, log_softmax or cross-entropy against an exact reference: the error "
        "in ULPs per hard region, a hypothesis search for the worst input (shrunk, printed as Python), "
        "metamorphic checks and special values. Exit status: 0 within the bounds, 1 above, 2 a bad TARGET."
    )
    parser.add_argument("target", metavar="TARGET", help=f"{', '.join(BUILTINS)}, or package.module:function")
    parser.add_argument("--op", required=True, choices=OPS, help="what TARGET computes")
    parser.add_argument("--grad", action="store_true", help="also the gradient (TARGET: a built-in or an Adapter)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--rows", type=int, default=16, help="rows per region (default 16)")
    parser.add_argument("--classes", type=int, default=32, help="classes per row (default 32)")
    parser.add_argument("--long-classes", type=int, default=50_257, help="the long row's classes (0: no long row)")
    parser.add_argument("--examples", type=int, default=200, help="the worst-case search's budget (0: no search)")
    parser.add_argument("--max-ulp", type=float, default=None, help="bound for every quantity (default: tinyops')")
    parser.add_argument("--no-checks", action="store_true", help="skip the metamorphic checks and special values")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the report as markdown here")
    parser.add_argument("--plot", type=Path, help="also save the error-against-magnitude plot (PNG) here")


def run(args: argparse.Namespace) -> int:
    """Run an audit from parsed arguments; print the report (and the optional libraries missing)."""
    missing = [name for name, lib in OPTIONAL.items() if importlib.util.find_spec(lib) is None]
    if missing:
        print(f"optional adapters not installed: {', '.join(missing)}")
    if ":" in args.target and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # a TARGET module in the current folder imports, as with python -m
    try:
        report = audit(
            args.target,
            args.op,
            grad=args.grad,
            dtype=args.dtype,
            rows=args.rows,
            classes=args.classes,
            long_rows=1 if args.long_classes else 0,
            long_classes=args.long_classes or 1,
            examples=args.examples,
            max_ulp=args.max_ulp,
            checks=not args.no_checks,
        )
    except (AuditError, Unavailable) as exc:
        print(f"tinyops audit: {exc}", file=sys.stderr)
        return 2
    print(report.to_text(), end="")
    for path, text in ((args.json, report.to_json()), (args.markdown, report.to_markdown())):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if args.plot is not None:
        print(f"wrote {plot([report], args.plot)}")
    return 0 if report.within_bounds else 1
