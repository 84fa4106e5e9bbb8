"""What every benchmark here shares: the machine, thread control, medians, peak memory, the hardware
floor, result checks, and the markdown / JSON / PNG output.

Conventions: times are medians of repeated calls after one warm-up call; peak memory is the extra memory
one call allocates beyond its inputs, measured by tracemalloc for NumPy (NumPy reports its buffers to it)
and, for torch (whose allocations tracemalloc does not see), as the growth of the peak resident set size
of a fresh process running one call (see :func:`rss_peak`).
"""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyops.runs import atomic_path

Array = np.ndarray[Any, Any]
HERE = Path(__file__).resolve().parent


# ============================================================================ the machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> str:
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]  # type: ignore[func-returns-value]
        blas = deps["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '?')}"
    except Exception:  # an older NumPy without mode="dicts": say so rather than guess
        return "unknown"


def machine_info() -> dict[str, Any]:
    """CPU, cores, library versions and the thread settings a reader needs to compare numbers."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "blas_threads": get_blas_threads(),
        "env_threads": {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")},
        # runnable processes averaged over the last minute: above the core count, other work shares the cores
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads_default"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


def machine_line(info: dict[str, Any]) -> str:
    torch_v = f", torch {info['torch']}" if info.get("torch") else ""
    return (
        f"{info['cpu']}, {info['usable_cores']} cores, Python {info['python']}, NumPy {info['numpy']} "
        f"({info['blas']}, {info['blas_threads']} BLAS thread{'s' * (info['blas_threads'] != 1)} by default)"
        f"{torch_v}; "
        f"load average {info.get('load_average_1min')} at the start"
    )


# ============================================================================ threads


def _openblas() -> Any | None:
    """NumPy's bundled OpenBLAS, found among the loaded libraries (None if NumPy uses another BLAS)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split()[-1] if line.split() else ""
        if "openblas" in path.lower() and (path.endswith(".so") or ".so." in path):
            lib = ctypes.CDLL(path)
            for prefix in ("scipy_openblas_", "openblas_"):
                for suffix in ("64_", ""):
                    if hasattr(lib, f"{prefix}set_num_threads{suffix}"):
                        return (getattr(lib, f"{prefix}set_num_threads{suffix}"),
                                getattr(lib, f"{prefix}get_num_threads{suffix}"))
    return None


_BLAS = _openblas()


def get_blas_threads() -> int | None:
    return None if _BLAS is None else int(_BLAS[1]())


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run NumPy's matmuls on ``n`` threads inside the block (a no-op, said so once, without OpenBLAS)."""
    if _BLAS is None:
        yield
        return
    before = int(_BLAS[1]())
    _BLAS[0](n)
    try:
        yield
    finally:
        _BLAS[0](before)


# ============================================================================ time and memory


def median_time(
    step: Callable[[], Any], budget: float, min_runs: int = 3, max_runs: int = 10_000, warm: bool = True
) -> float:
    """Median seconds per call, over at least ``min_runs`` calls and about ``budget`` seconds, after a
    warm-up call (``warm=False``: the caller's check call was the warm-up)."""
    if warm:
        step()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget and len(times) < max_runs):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tracemalloc_peak(step: Callable[[], Any]) -> int:
    """Peak bytes NumPy (and Python) allocate during one call, beyond what was allocated before it."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def exp_pass_times(x: Array, budget: float) -> dict[str, float]:
    """Median seconds of one exp pass over ``x`` into a preallocated buffer, on one core, two ways:
    ``"np.exp"``, NumPy's ``np.exp(x, out=buf)``, and ``"compiled"``, the vectorized ``exp32_array`` /
    ``exp64_array`` of :mod:`tinyops.kernels.exp` by x's dtype (when numba is installed). A correct fused
    forward + backward reads every logit and writes every gradient element through one exp at least: the
    faster of the two is the floor."""
    buf = np.empty_like(x)
    buf.fill(0)  # the output's pages are touched before timing: the floor has no page faults
    out = {"np.exp": median_time(lambda: np.exp(x, out=buf), budget, min_runs=5)}
    if x.dtype in (np.float32, np.float64):
        try:
            from tinyops.kernels import exp as kexp
        except ImportError:  # no numba: NumPy's pass alone
            return out
        kernel = kexp.exp32_array if x.dtype == np.float32 else kexp.exp64_array
        flat, flat_out = x.reshape(-1), buf.reshape(-1)
        out["compiled"] = median_time(lambda: kernel(flat, flat_out), budget, min_runs=5)
    return out


def copy_bandwidth(nbytes: int, threads: int, budget: float) -> float:
    """Memory bandwidth in bytes per second of a copy pass (``np.copyto`` of an ``nbytes`` float64 array
    into another, preallocated and touched; ``threads`` Python threads each copy a contiguous part:
    NumPy releases the GIL while it copies). Counted as STREAM's Copy counts it: bytes read plus bytes
    written, ``2 * nbytes`` a pass (a store's read of the line it writes is not counted)."""
    from concurrent.futures import ThreadPoolExecutor

    src = np.random.default_rng(0).random(nbytes // 8)
    dst = np.ones_like(src)
    bounds = np.linspace(0, src.size, threads + 1).astype(int)
    parts = [(dst[a:b], src[a:b]) for a, b in itertools.pairwise(bounds)]
    with ThreadPoolExecutor(threads) as pool:

        def copy() -> None:
            for f in [pool.submit(np.copyto, d, s) for d, s in parts]:
                f.result()

        seconds = median_time(copy, budget, min_runs=5)
    return 2 * src.nbytes / seconds


def numba_cache_counts() -> tuple[int, int]:
    """(specializations loaded from numba's disk cache, specializations compiled) so far in this process,
    over the compiled kernels of :mod:`tinyops.kernels` that have been imported; (0, 0) without numba."""
    hits = misses = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("tinyops.kernels."):
            continue
        for obj in vars(module).values():
            stats = getattr(obj, "stats", None)
            if stats is not None and hasattr(stats, "cache_hits") and getattr(obj, "__module__", "") == name:
                hits += sum(stats.cache_hits.values())
                misses += sum(stats.cache_misses.values())
    return hits, misses


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_peak(script: Path, factory: str, kwargs: dict[str, Any], timeout: float = 600.0) -> int | None:
    """Peak extra resident memory (bytes) of one call in a fresh Python process, or None where the
    kernel does not let us reset the peak (not Linux).

    The child imports ``script``, calls ``factory(**kwargs)`` to build the inputs and a zero-argument
    step, resets the peak resident set size (``echo 5 > /proc/self/clear_refs``), runs the step once and
    reports ``VmHWM - VmRSS before``. The call is cold (no warm-up, which would leave freed pages in the
    allocator and hide the step's own peak), so one-time setup such as torch's kernel dispatch tables is
    included: compare with the smallest shape to see that share.
    """
    if not Path("/proc/self/clear_refs").exists():
        return None
    cmd = [sys.executable, str(HERE / "common.py"), "--rss-child", str(script), factory, json.dumps(kwargs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child for {script.name}:{factory}({kwargs}) failed:\n{proc.stderr[-2000:]}")
    return int(proc.stdout.strip().splitlines()[-1])


def load_module(path: Path | str) -> Any:
    """Import a benchmark script by its path (registered in sys.modules, as dataclasses need)."""
    name = Path(path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _rss_child(script: str, factory: str, kwargs_json: str) -> int:
    sys.path.insert(0, str(HERE))
    step = getattr(load_module(script), factory)(**json.loads(kwargs_json))
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set size
    before = _status_kib("VmRSS")
    step()
    print((_status_kib("VmHWM") - before) * 1024)
    return 0


# ============================================================================ checks


@dataclass(frozen=True)
class Check:
    ok: bool
    err: float  # the worst error in units of the tolerance (<= 1 passes)
    detail: str


def check_close(parts: Sequence[tuple[str, Any, Any, Any]]) -> Check:
    """Compare named results with float64 references: ``|got - ref| <= tol`` elementwise for each
    ``(name, got, ref, tol)``; reports the worst error relative to its tolerance."""
    worst, detail, ok = 0.0, [], True
    for name, got, ref, tol in parts:
        got64 = np.asarray(got, dtype=np.float64)
        ref64 = np.asarray(ref, dtype=np.float64)
        if got64.shape != ref64.shape:
            return Check(False, float("inf"), f"{name}: shape {got64.shape} != {ref64.shape}")
        with np.errstate(invalid="ignore"):
            ratio = np.abs(got64 - ref64) / np.asarray(tol, dtype=np.float64)
        r = float(np.max(np.where(np.isnan(ratio), np.inf, ratio), initial=0.0))
        worst = max(worst, r)
        detail.append(f"{name} {r:.2g}")
        ok = ok and r <= 1.0
    return Check(ok, worst, ", ".join(detail))


# ============================================================================ output


def ratio_cells(value: float | None, ok: bool | None) -> list[str]:
    """The "measured" and "met" cells of a targets table."""
    return ["n/a" if value is None else f"{value:.2f}x", "n/a" if ok is None else "yes" if ok else "NO"]


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    align = align or "l" * len(headers)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float | None) -> str:
    """Three significant digits, thousands separated; n/a for a missing number."""
    if x is None or not np.isfinite(x):
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 0.01 or x == 0:
        return f"{x:.3g}"
    return f"{x:.2e}"


def write_results(out: Path, name: str, title: str, table: str, payload: dict[str, Any]) -> list[Path]:
    """Write ``<name>.md`` (title, machine, table) and ``<name>.json`` into ``out``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"{name}.md", out / f"{name}.json"
    md.write_text(f"# {title}\n\nMachine: {machine_line(payload['machine'])}\n\n{table}\n")
    js.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return [md, js]


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (the plots are files, never windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def add_common_args(parser: Any, default_out: str = "results") -> None:
    parser.add_argument("--quick", action="store_true", help="a subset of shapes and shorter timing")
    parser.add_argument("--out", type=Path, default=Path(default_out), help="folder for the .md/.json/.png results")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per variant and shape")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--rss-child":
    sys.exit(_rss_child(sys.argv[2], sys.argv[3], sys.argv[4]))


def replace_blocks(path: Path, blocks: dict[str, str]) -> None:
    """Rewrite the blocks between ``<!-- results:NAME begin ... -->`` and ``<!-- results:NAME end -->`` in the
    markdown file ``path`` (each must be there exactly once), replacing the file whole."""
    text = path.read_text()
    for name, body in blocks.items():
        begin, end = f"<!-- results:{name} begin", f"<!-- results:{name} end -->"
        if text.count(begin) != 1 or text.count(end) != 1:
            raise SystemExit(f"{path.name} must hold one `{begin} ... -->` and one `{end}`")
        head, rest = text.split(begin, 1)
        marker, rest = rest.split("-->", 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}{marker}-->\n\n{body}\n\n{end}{tail}"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
