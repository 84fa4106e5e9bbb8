"""Rerun everything README.md and docs/ quote, and rewrite the tables, numbers and pictures they show.

    make results DATA=path/to/names.txt            # or: python benchmarks/results.py --data names.txt

The steps, in this order (``--only train,loss`` runs some of them; ``--render`` only rewrites the docs
from what ``--out`` already holds):

    train      tinyops train, pt2 and pt4, seeds 0 to 4, 200,000 steps each (two runs at a time)
               -> <out>/runs/<config>-seed<k>/losses.json; the pt2 seed-0 run's loss plot
    sample     tinyops sample --model <out>/runs/pt2-seed0 -n 10
    step       tinyops bench train --data names.txt    (one training step against torch eager)
    loss       tinyops bench loss                      (cross-entropy, 6 shapes x 2 dtypes)
    embedding  tinyops bench embedding
    linear-ce  tinyops bench linear-ce
    accuracy   tinyops bench accuracy --write-docs     (writes docs/accuracy.md's atlas and README's table)

Then every block between ``<!-- results:NAME begin ... -->`` and ``<!-- results:NAME end -->`` in README.md and
docs/benchmarks.md is rewritten from the JSON files the steps wrote, and the pictures are copied into docs/img/.
The prose around the blocks is not touched. About 25 minutes on 2 cores; the benchmarks want an otherwise
idle machine (their times vary by about 30% from run to run on a shared one). Each file is replaced whole
(written beside it, then renamed: ``tinyops.runs.atomic_path``), so an interrupted run leaves every
document as it was or fully rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C

from tinyops import mlp, runs

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BENCH_DOC = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"

STEPS = ("train", "sample", "step", "loss", "embedding", "linear-ce", "accuracy")
CONFIGS = ("pt2", "pt4")
SEEDS = tuple(range(5))
# The final losses of the lectures' notebooks (makemore part 3 "MLP" for pt2, part 4 "backprop ninja" for pt4:
# train / dev, one run each), which the training table is compared with.
LECTURE = {"pt2": (2.1260, 2.1701), "pt4": (2.0705, 2.1099)}
README_BLOCKS = ("training", "step", "sample", "loss")
DOC_BLOCKS = ("machine", "loss-vocab", "loss-side", "loss-batch", "loss-traffic", "loss-first", "train", "embedding",
              "linear-ce")
QUICK_STEPS = 2_000  # --quick: training steps per run
LOSS_SHAPE = (4096, 8192)  # README's cross-entropy table: this shape, float32


# ============================================================================ running the steps


def tinyops(*args: str) -> list[str]:
    return [sys.executable, "-m", "tinyops", *args]


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    print("$ " + " ".join(cmd[2:] if cmd[:3] == tinyops() else cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"results: `{' '.join(cmd)}` exited with status {proc.returncode}")
    return proc


def train_runs(data: str, out: Path, jobs: int, extra: list[str]) -> None:
    """Every (config, seed) run into ``out/runs``; ``jobs`` at a time (each is one thread)."""
    queue = [(c, s) for c in CONFIGS for s in SEEDS]
    (out / "runs").mkdir(parents=True, exist_ok=True)
    with runs.atomic_path(out / "runs" / "machine.json") as tmp:
        tmp.write_text(json.dumps({"machine": C.machine_info(), "jobs": jobs}, indent=1))
    running: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        while queue or running:
            while queue and len(running) < jobs:
                config, seed = queue.pop(0)
                plots = [] if (config, seed) == ("pt2", 0) else ["--no-plots"]
                cmd = tinyops("train", "--data", data, "--config", config, "--seed", str(seed), "--out",
                              str(out / "runs" / f"{config}-seed{seed}"), "--force", "--no-progress", *plots, *extra)
                print("$ " + " ".join(cmd[2:]), flush=True)
                env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # one core per run, two runs side by side
                running.append((" ".join(cmd[2:]), subprocess.Popen(cmd, cwd=ROOT, env=env)))
            time.sleep(0.5)
            for item in list(running):
                name, proc = item
                if proc.poll() is not None:
                    running.remove(item)
                    if proc.returncode != 0:
                        raise SystemExit(f"results: `{name}` exited with status {proc.returncode}")
    finally:
        for _, proc in running:
            proc.terminate()
            proc.wait()


def run_steps(steps: list[str], data: str, out: Path, jobs: int, quick: bool) -> None:
    bench = {"step": ["train", "--data", data], "loss": ["loss"], "embedding": ["embedding"],
             "linear-ce": ["linear-ce"], "accuracy": ["accuracy"] if quick else ["accuracy", "--write-docs"]}
    for step in steps:
        t0 = time.perf_counter()
        if step == "train":
            train_runs(data, out, jobs, ["--steps", str(QUICK_STEPS)] if quick else [])
        elif step == "sample":
            proc = run(tinyops("sample", "--model", str(out / "runs" / "pt2-seed0"), "-n", "10"),
                       stdout=subprocess.PIPE)
            (out / "sample.txt").write_text(proc.stdout)
        else:
            where = os.path.relpath(out, ROOT) if out.is_relative_to(ROOT) else str(out)  # as the docs quote it
            run(tinyops("bench", *bench[step], "--out", where, *(["--quick"] if quick else [])))
        print(f"results: {step} took {time.perf_counter() - t0:.0f} s\n", flush=True)


# ============================================================================ the blocks


def load(out: Path, name: str) -> dict[str, Any]:
    path = out / f"{name}.json"
    if not path.exists():
        raise SystemExit(f"results: {path} is missing: run the step that writes it (see --help)")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def machine(payload: dict[str, Any]) -> str:
    return C.machine_line(payload["machine"])


def source(command: str, payload: dict[str, Any] | None = None) -> str:
    where = f"; {machine(payload)}" if payload is not None else ""
    return f"*Written by `make results` from `{command}`{where}.*"


def training_block(out: Path) -> str:
    rows, notes, steps = [], [], 0
    for config in CONFIGS:
        losses = []
        for seed in SEEDS:
            path = out / "runs" / f"{config}-seed{seed}" / "losses.json"
            if not path.exists():
                raise SystemExit(f"results: {path} is missing: run the train step")
            losses.append(json.loads(path.read_text()))
        steps = losses[0]["steps"]
        tr, dv = [r["train"] for r in losses], [r["dev"] for r in losses]
        lt, ld = LECTURE[config]
        rows.append([f"{config} ({mlp.CONFIGS[config].num_params():,} params)",
                     " / ".join(f"{x:.4f}" for x in tr), " / ".join(f"{x:.4f}" for x in dv),
                     f"**{statistics.median(tr):.4f} / {statistics.median(dv):.4f}**",
                     f"{min(tr):.4f} to {max(tr):.4f} / {min(dv):.4f} to {max(dv):.4f}", f"{lt:.4f} / {ld:.4f}"])
        inside = [min(tr) <= lt <= max(tr), min(dv) <= ld <= max(dv)]
        where = ("inside" if all(inside) else "outside" if not any(inside) else
                 "inside" + (" for train, outside for dev" if inside[0] else " for dev, outside for train"))
        notes.append(f"{config}: the lecture's run lies {where} the range of the {len(SEEDS)} seeds, whose train "
                     f"losses span {max(tr) - min(tr):.4f}")
    headers = ["config", f"train (seeds {' / '.join(map(str, SEEDS))})", "dev", "median train / dev",
               "range train / dev", "lecture train / dev"]
    info = load(out / "runs", "machine")
    return "\n".join([
        source("tinyops train --data names.txt --config pt2|pt4 --seed 0..4", info) + f" {steps:,} steps "
        "of batch 32, float32, each run on one thread (`OPENBLAS_NUM_THREADS=1`).",
        "",
        C.md_table(headers, rows, "llllll"),
        "",
        "; ".join(notes) + ".",
    ])


def step_block(out: Path) -> str:
    p = load(out, "bench_train")
    parts = []
    for name in CONFIGS:
        t = p["configs"][name]["timing"]
        full = p["configs"][name].get("full_run")
        run_s = (f"; a whole {full['steps']:,}-step run, batch sampling included, {full['seconds']:.1f} s"
                 if full else "")
        parts.append(f"{name}: {t['tinyops_us']:.1f} µs against torch eager's {t['torch_us']:.1f} µs, "
                     f"**{t['speedup']:.2f}x faster** (the six matrix products alone: "
                     f"{t['matmul_floor_us']:.1f} µs{run_s})")
    return "\n".join([
        source("tinyops bench train --data names.txt", p),
        "",
        "One training step (`tinyops.mlp.Trainer`, batch 32, float32, one thread), median over blocks of "
        "steps alternating with torch eager on the same parameters and batches: " + "; ".join(parts) + ".",
    ])


def sample_block(out: Path) -> str:
    path = out / "sample.txt"
    if not path.exists():
        raise SystemExit(f"results: {path} is missing: run the sample step")
    names = path.read_text().split()
    return (source("tinyops sample --model results/runs/pt2-seed0 -n 10") + " Ten names from the pt2 seed-0 "
            "model: " + ", ".join(names) + ".")


def readme_loss_block(out: Path) -> str:
    p = load(out, "bench_loss")
    N, V = LOSS_SHAPE
    at = [r for r in p["rows"] if r["dtype"] == "float32" and (r["N"], r["V"]) == (N, V) and r["status"] == "ok"]
    if not at:
        raise SystemExit(f"results: bench_loss.json has no float32 {N} x {V} rows")
    names = {"naive": "the seed's naive chain", "fused, reference": "tinyops fused, `backend=\"reference\"`",
             "fused, compiled accurate": "tinyops fused, compiled (the default, correctly rounded)",
             "fused, compiled fast": "tinyops fused, compiled, `precision=\"fast\"`",
             "torch eager": "torch `F.cross_entropy` (eager)", "torch.compile": "`torch.compile` of the same"}
    body = []
    for variant, label in names.items():
        rs = {r["threads"]: r for r in at if r["variant"] == variant}
        if not rs:
            continue
        peak = next((r.get("peak_bytes") for r in rs.values() if r.get("peak_bytes")), None)
        body.append([label, *(C.fmt(rs[t]["seconds"] * 1e3) if t in rs else "" for t in (1, 2)),
                     f"{rs[min(rs)]['x_floor']:.2f}x", "" if peak is None else C.fmt(peak / 2**20)])
    floor = next(r for r in at if r.get("is_floor"))
    body.append([f"floor: one exp pass over the logits on one core ({floor['variant']})",
                 C.fmt(floor["seconds"] * 1e3), "", "1.00x", "0"])
    small = {(r["variant"], r["threads"]): r for r in p["rows"]
             if r["dtype"] == "float32" and (r["N"], r["V"]) == (32, 27) and r["status"] == "ok"}
    ours, eager = small.get(("fused, compiled accurate", 1)), small.get(("torch eager", 1))
    batch = (f" At one training batch (32 x 27) the compiled op's forward + backward takes "
             f"{ours['seconds'] * 1e6:.1f} µs, torch eager {eager['seconds'] * 1e6:.1f} µs (one thread)."
             if ours and eager else "")
    return "\n".join([
        source("tinyops bench loss", p) + f" Forward + backward of the mean cross-entropy, {N:,} x {V:,} float32; "
        "`make bench` runs this shape too.",
        "",
        C.md_table(["variant", "1 thread, median ms", "2 threads, median ms", "vs floor (1 thread)",
                    "peak extra MiB"], body, "lrrrr"),
        "",
        "vs floor: the time over that of the floor. Peak extra memory: what one call allocates beyond its "
        "inputs." + batch,
    ])


def doc_blocks(out: Path, modules: dict[str, Any]) -> dict[str, str]:
    loss, emb, lce = modules["bench_loss"], modules["bench_embedding"], modules["bench_linear_ce"]
    pl, pe, pc, pt = (load(out, n) for n in ("bench_loss", "bench_embedding", "bench_linear_ce", "bench_train"))
    blocks: dict[str, str] = {}

    def load_line(name: str, p: dict[str, Any]) -> str:
        return f"- {name}: {machine(p)}"

    bw = pl["bandwidth_bytes_per_s"]
    exp = {r["dtype"]: r for r in pl["rows"] if r["variant"].startswith("exp pass") and r.get("is_floor")
           and (r["N"], r["V"]) == LOSS_SHAPE}
    blocks["machine"] = "\n".join([
        "*Written by `make results`: the machine line each benchmark printed.*",
        "",
        load_line("loss", pl), load_line("training step", pt), load_line("embedding", pe),
        load_line("linear + cross-entropy", pc),
        "- copy bandwidth (the loss benchmark's np.copyto): " + ", ".join(
            f"{float(b) / 1e9:.1f} GB/s on {n} thread{'s' * (n != '1')}" for n, b in bw.items()),
        "- the floor at 4096 x 8192 (the faster exp pass, one core): " + ", ".join(
            f"{d} {r['ns_per_elem']:.2f} ns per element ({r['variant']})" for d, r in sorted(exp.items())),
    ])
    big = [r for r in pl["rows"] if r["dtype"] == "float32" and r["V"] >= 8192]
    blocks["loss-vocab"] = source("tinyops bench loss", pl) + "\n\n" + loss.time_table(big)
    blocks["loss-side"] = source("tinyops bench loss", pl) + "\n\n" + C.md_table(
        loss.SUMMARY_HEADERS, pl["side_by_side"], "llrrrrr")
    small = [r for r in pl["rows"] if r["dtype"] == "float32" and (r["N"], r["V"]) == (32, 27)]
    blocks["loss-batch"] = source("tinyops bench loss", pl) + "\n\n" + loss.time_table(small)
    traffic = [r for r in pl["rows"] if r["dtype"] == "float32" and r["N"] * r["V"] >= 2**22]
    blocks["loss-traffic"] = source("tinyops bench loss", pl) + "\n\n" + loss.traffic_table(traffic)
    firsts = [[f"{f['dtype']} {f['N']} x {f['V']}", f["variant"], C.fmt(f["first_call_s"] * 1e3),
               f"{f['loaded']} loaded, {f['compiled']} compiled"] for f in pl["first_calls"]
              if f["variant"].startswith("torch.compile")]
    cold = pl.get("kernel_first_calls")
    blocks["loss-first"] = "\n\n".join([
        source("tinyops bench loss", pl),
        "The compiled op's first forward + backward in a fresh process, 32 x 27 float32, ms:",
        loss.kernel_first_calls_table(cold) if cold else "(not measured in this run)",
        "torch.compile's first call at each shape (its graphs loaded from inductor's disk cache or compiled):",
        C.md_table(["shape", "variant", "first call ms", "cache"], firsts, "llrl"),
    ])
    train_md = (out / "bench_train.md").read_text().split("\n", 2)[2].strip()
    train_md = re.sub(r"^## ", "### ", train_md, flags=re.M)  # its configurations: under "Training step"
    blocks["train"] = source("tinyops bench train --data names.txt", pt) + "\n\n" + train_md
    main_emb = [r for r in pe["rows"] if r["variant"] in (
        "tinyops reference layer", "tinyops compiled layer", "tinyops embedding_backward", "torch, 1 thread",
        "torch, 2 threads")]
    blocks["embedding"] = source("tinyops bench embedding", pe) + "\n\n" + emb.table(main_emb)
    blocks["linear-ce"] = "\n\n".join([
        source("tinyops bench linear-ce", pc),
        lce.table([r for r in pc["rows"] if not r.get("sweep")]),
        lce.ratios_table(pc["ratios"]),
        "Profile of one chunk of the fused op (1 thread); the share of each step in the chunk's total:",
        C.md_table(["step", "median ms", "share, compiled", "share, reference", "GFLOP/s"], pc["profile"], "lrrrr"),
    ])
    return blocks


def copy_picture(src: Path, dst: Path) -> None:
    if not src.exists():
        raise SystemExit(f"results: {src} is missing: run the step that writes it")
    with runs.atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def render(out: Path, docs_out: Path | None) -> None:
    """Rewrite README.md, docs/benchmarks.md and docs/img/'s pictures, or copies of them in ``docs_out``."""
    readme, bench_doc, img = README, BENCH_DOC, IMG
    if docs_out is not None:
        readme, bench_doc, img = docs_out / "README.md", docs_out / "docs" / "benchmarks.md", docs_out / "docs" / "img"
        img.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(README, readme)
        shutil.copyfile(BENCH_DOC, bench_doc)
    here = Path(__file__).resolve().parent
    modules = {n: C.load_module(here / f"{n}.py") for n in ("bench_loss", "bench_embedding", "bench_linear_ce")}
    blocks = {"training": training_block(out), "step": step_block(out), "sample": sample_block(out),
              "loss": readme_loss_block(out)}
    assert tuple(blocks) == README_BLOCKS
    C.replace_blocks(readme, blocks)
    blocks = doc_blocks(out, modules)
    assert tuple(blocks) == DOC_BLOCKS
    C.replace_blocks(bench_doc, blocks)
    copy_picture(out / "runs" / "pt2-seed0" / "loss.png", img / "loss_pt2.png")
    for name in ("bench_loss_time.png", "bench_loss_bandwidth.png"):
        copy_picture(out / name, img / name)
    print(f"results: rewrote {readme}, {bench_doc} and the pictures in {img} from {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("TINYOPS_NAMES"),
                        help="names.txt (default: $TINYOPS_NAMES); the train, sample and step steps need it")
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="folder of the runs and the JSON files")
    parser.add_argument("--only", default=None, help=f"comma list of steps to run, from {', '.join(STEPS)}")
    parser.add_argument("--render", action="store_true", help="run no step: rewrite the docs from --out")
    parser.add_argument("--jobs", type=int, default=2, help="training runs at a time (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: the benchmarks' --quick, {QUICK_STEPS:,} training steps; needs --docs-out")
    parser.add_argument("--docs-out", type=Path, default=None,
                        help="write the rewritten README.md and docs/ into this folder instead of the checkout")
    args = parser.parse_args(argv)
    steps = [] if args.render else (args.only.split(",") if args.only else list(STEPS))
    bad = [s for s in steps if s not in STEPS]
    if bad:
        parser.error(f"--only: unknown step(s) {', '.join(map(repr, bad))}; the steps are {', '.join(STEPS)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if {"train", "step"} & set(steps) and not (args.data and Path(args.data).is_file()):
        parser.error(f"--data: the names file is needed by the train and step steps, got {args.data!r}")
    if args.quick and args.docs_out is None:
        parser.error("--quick writes the numbers of a smoke run: give --docs-out, so that README and docs keep "
                     "the real ones")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        run_steps(steps, str(Path(args.data).resolve()) if args.data else "", out, args.jobs, args.quick)
        render(out, args.docs_out)
    except KeyboardInterrupt:
        print("results: interrupted; the documents were left as they were", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
