"""The ``tinyops`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

BENCHMARKS = {"loss": "bench_loss.py", "embedding": "bench_embedding.py", "linear-ce": "bench_linear_ce.py",
              "accuracy": "bench_accuracy.py", "train": "bench_train.py"}


def run_benchmark(name: str, argv: list[str]) -> int:
    """Run ``benchmarks/<script>``'s ``main(argv)``. The benchmarks live in the source checkout beside the
    package (an editable install), not in the package itself."""
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    path = folder / BENCHMARKS[name]
    if not path.is_file():
        print(f"tinyops bench {name}: {path} not found. The benchmarks are not installed with the package; "
              "run this command from an editable install of a tinyops source checkout (pip install -e .).",
              file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses in the script look their module up here
    spec.loader.exec_module(module)
    return int(module.main(argv))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tinyops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="gradcheck every op's backward (float64, no torch needed)")
    p_check.add_argument("--seed", type=int, default=0, help="seed of the inputs and upstream gradients")
    p_train = sub.add_parser("train", help="train the makemore MLP (pt2 or pt4) and save the run")
    p_train.add_argument("--data", required=True, help="names file, one name per line (a..z)")
    p_train.add_argument("--config", choices=["pt2", "pt4"], default="pt2", help="model configuration")
    p_train.add_argument("--steps", type=int, default=None, help="training steps (default: the config's 200,000)")
    p_train.add_argument("--seed", type=int, default=0, help="seed of the init and the batches")
    p_train.add_argument("--out", default=None, help="run directory (default: results/<config>-seed<seed>)")
    p_train.add_argument("--force", action="store_true", help="overwrite an existing run in --out")
    p_train.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_train.add_argument("--no-plots", action="store_true", help="do not save loss.png and embedding.png")
    p_sample = sub.add_parser("sample", help="sample names from a trained model")
    p_sample.add_argument("--model", required=True, help="run directory (or its model.npz)")
    p_sample.add_argument("-n", type=int, default=20, help="how many names")
    p_sample.add_argument("--seed", type=int, default=2147483647 + 10, help="sampling seed (default: the lecture's)")
    p_eval = sub.add_parser("eval", help="train/dev/test loss of a trained model")
    p_eval.add_argument("--model", required=True, help="run directory (or its model.npz)")
    p_eval.add_argument("--data", required=True, help="names file; split 80/10/10 as the lecture")
    p_bench = sub.add_parser("bench", help="run a benchmark of the source checkout's benchmarks/ folder")
    p_bench.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    p_bench.add_argument("args", nargs=argparse.REMAINDER, help="its options, e.g. --quick (see --help of each)")
    args = parser.parse_args(argv)

    if args.command == "bench":
        return run_benchmark(args.name, args.args)

    if args.command in ("train", "sample", "eval"):
        from . import train

        if args.command == "train":
            return train.cmd_train(
                args.data, args.config, steps=args.steps, seed=args.seed, out=args.out, force=args.force,
                progress=not args.no_progress, plots=not args.no_plots,
            )
        if args.command == "sample":
            return train.cmd_sample(args.model, n=args.n, seed=args.seed)
        return train.cmd_eval(args.model, args.data)

    if args.command == "check":
        from .check import main as check_main

        return check_main(seed=args.seed)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse already refuses


if __name__ == "__main__":
    sys.exit(main())
