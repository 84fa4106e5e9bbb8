"""The audit's report: per-region statistics, the worst-case search, the metamorphic checks and the
special values, printed as a terminal table, markdown or JSON, and the error-against-magnitude plot."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CheckResult", "RegionStats", "Report", "SearchResult", "SpecialResult", "fmt_ulp", "md_table", "plot"]


@dataclass
class RegionStats:
    """One quantity of one region: ULP errors over the scored entries (see tinyops.audit.measure)."""

    region: str
    quantity: str
    count: int  # entries scored (nan: not scored, e.g. a subnormal gradient)
    worst: float
    p99: float
    median: float
    worst_kappa_u: float  # the worst error / ((kappa + 1) u); nan where kappa is not computed
    bound: float | None  # the documented bound (or --max-ulp), None: none
    over_bound: int  # entries above their bound
    error: str | None = None  # what the target raised on this region, if it did


@dataclass
class SearchResult:
    """The worst-case search: hypothesis driven by ``target()`` toward the largest error."""

    examples: int  # inputs tried, the shrinking run included
    found: bool  # an input above the bound was found
    found_after: int | None  # inputs tried when the first one above the bound came up
    quantity: str | None  # the quantity of the worst error over its bound
    ulp: float  # the error of the reported input (the shrunk one when found)
    bound: float | None
    shape: tuple[int, ...] | None  # of the reported input
    reproduction: str  # copy-pasteable Python
    seconds: float
    explored: int = 0  # inputs of the exploring run
    worst_ulp: float = math.nan  # the largest error seen in that quantity


@dataclass
class CheckResult:
    """A metamorphic check: two ways of computing the same thing, their largest difference in ULPs."""

    name: str
    max_ulp: float
    tolerance: float
    passed: bool
    note: str


@dataclass
class SpecialResult:
    """One special-value case: the expected result (torch's semantics; SciPy's where it differs) and the target's."""

    case: str
    quantity: str
    input: str
    expected: str
    scipy: str | None
    got: str
    verdict: str  # 'as torch', 'as scipy', 'differs', or 'raised ...'


@dataclass
class Report:
    """Everything ``tinyops audit`` measured about one target, op and dtype."""

    target: str
    op: str
    dtype: str
    grad: bool
    regions: list[RegionStats]
    search: SearchResult | None = None
    metamorphic: list[CheckResult] = field(default_factory=list)
    special: list[SpecialResult] = field(default_factory=list)
    seconds: float = 0.0
    points: dict[str, list[float]] = field(default_factory=dict)  # magnitude, error: one per row, for plot()

    @property
    def within_bounds(self) -> bool:
        """No region entry above its bound, and the search found nothing."""
        return all(r.over_bound == 0 for r in self.regions) and not (self.search and self.search.found)

    def worst(self, quantity: str) -> float:
        """The worst error of ``quantity`` over every region (nan when not measured)."""
        vals = [r.worst for r in self.regions if r.quantity == quantity and r.count]
        return max(vals) if vals else math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=_json_default, allow_nan=True)

    def to_markdown(self) -> str:
        return self._render(markdown=True)

    def to_text(self) -> str:
        return self._render(markdown=False)

    def _render(self, markdown: bool) -> str:
        def table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
            return md_table(header, rows) if markdown else text_table(header, rows, left)

        head = f"tinyops audit {self.target} --op {self.op}{' --grad' if self.grad else ''} --dtype {self.dtype}"
        parts = [("# " if markdown else "") + head + f" ({self.seconds:.1f} s)"]
        rows = [
            [
                r.region,
                r.quantity,
                str(r.count),
                fmt_ulp(r.worst),
                fmt_ulp(r.p99),
                fmt_ulp(r.median),
                fmt_ulp(r.worst_kappa_u),
                "-" if r.bound is None else f"{r.bound:.3g}",
                str(r.over_bound) + (f" (raised {r.error})" if r.error else ""),
            ]
            for r in self.regions
        ]
        parts.append(
            "Error in ULPs per region (worst / p99 / median); worst/(k+1)u: the worst error over the condition "
            "number times the unit roundoff (near 1: as good as the problem allows)\n\n"
            + table(["region", "quantity", "n", "worst", "p99", "median", "worst/(k+1)u", "bound", "over"], rows)
        )
        if self.search is not None:
            s = self.search
            if s.found:
                line = (
                    f"Worst-case search ({s.explored} examples, then shrinking: {s.examples} in {s.seconds:.1f} s): "
                    f"{s.quantity} up to {fmt_ulp(s.worst_ulp)} ULP (bound {s.bound:.3g}), first above the bound "
                    f"after {s.found_after} examples. The smallest input shrunk to, {fmt_ulp(s.ulp)} ULP:"
                )
            else:
                bound = "no documented bound" if s.bound is None else f"bound {s.bound:.3g}"
                line = (
                    f"Worst-case search: nothing above the bound in {s.explored} examples ({s.seconds:.1f} s, "
                    f"{bound}); the worst seen, {s.quantity} {fmt_ulp(s.ulp)} ULP, on:"
                )
            fence = "```python\n" if markdown else ""
            parts.append(line + "\n\n" + fence + s.reproduction + ("\n```" if markdown else ""))
        if self.metamorphic:
            rows = [[c.name, fmt_ulp(c.max_ulp), f"{c.tolerance:g}", "ok" if c.passed else "FAILED", c.note]
                    for c in self.metamorphic]
            header = ["check", "max ULP", "tolerance", "", "what"]
            parts.append("Metamorphic checks (no oracle)\n\n" + table(header, rows, (0, 4)))
        if self.special:
            rows = [[s.case, s.quantity, s.input, s.expected, s.scipy or "", s.got, s.verdict] for s in self.special]
            parts.append(
                "Special values (expected: torch's semantics; SciPy's where it differs)\n\n"
                + table(["case", "quantity", "input", "expected", "scipy", "got", "verdict"], rows, tuple(range(7)))
            )
        return "\n\n".join(parts) + "\n"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def fmt_ulp(x: float) -> str:
    """An error in ULPs for a table: '-' for nan, 'inf', '0', '<0.01', 2 significant digits, 1.7e+07."""
    if x != x:
        return "-"
    if x == math.inf:
        return "inf"
    if x == 0:
        return "0"
    if x < 0.01:
        return "<0.01"
    if x < 10 or x >= 1e5:
        return f"{x:.2g}"
    return f"{x:.0f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table; every column but the first right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    """A fixed-width table for the terminal: the columns in ``left`` left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i in left else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r).rstrip() for r in [header, *rows])


def plot(reports: list[Report], path: Path) -> Path:
    """One panel per report (a row per dtype, a column per target): each row's largest forward error against
    the magnitude of its exact result (|logsumexp| for logsumexp, softmax and log_softmax; the loss for
    cross_entropy), log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    dtypes = list(dict.fromkeys(r.dtype for r in reports))
    targets = list(dict.fromkeys(r.target for r in reports))
    floor, ceiling = 1e-2, 1e18  # 0 and inf drawn at the edges
    fig, axes = plt.subplots(
        len(dtypes), len(targets), figsize=(3.2 * len(targets), 3.2 * len(dtypes)), sharey=True, squeeze=False
    )
    for ax in axes.ravel():
        ax.set_visible(False)
    for rep in reports:
        ax = axes[dtypes.index(rep.dtype), targets.index(rep.target)]
        ax.set_visible(True)
        mag = np.asarray(rep.points.get("magnitude", []), dtype=np.float64)
        err = np.asarray(rep.points.get("error", []), dtype=np.float64)
        keep = np.isfinite(mag) & (mag > 0) & ~np.isnan(err)
        color = "tab:blue" if rep.dtype == "float32" else "tab:orange"
        ax.scatter(mag[keep], np.clip(np.nan_to_num(err[keep], posinf=ceiling), floor, ceiling), s=6, alpha=0.5,
                   color=color)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{rep.target}, {rep.dtype}", fontsize=9)
        ax.set_xlabel("exact loss" if rep.op == "cross_entropy" else "|exact logsumexp|", fontsize=8)
        if targets.index(rep.target) == 0:
            ax.set_ylabel(f"row's worst error, ULP (0 at {floor:g}, inf at {ceiling:g})", fontsize=8)
    fig.suptitle(f"{reports[0].op}: each row's error against the magnitude of its result", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
