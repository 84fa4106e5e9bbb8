"""The tinyops command line: gradcheck the ops, train and use the makemore MLP, run the benchmarks."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

BENCHMARKS = {"loss": "bench_loss.py", "embedding": "bench_embedding.py", "linear-ce": "bench_linear_ce.py",
              "accuracy": "bench_accuracy.py", "train": "bench_train.py"}


def plain_text(doc: str | None) -> str | None:
    """A docstring as --help shows it: the reStructuredText markup taken out (``code`` -> code,
    :class:`~a.B` -> B, :mod:`a.b` -> a.b)."""
    if doc is None:
        return None
    doc = re.sub(r":[a-z]+:`~[\w.]*?(\w+)`", r"\1", doc)
    doc = re.sub(r":[a-z]+:`([^`]+)`", r"\1", doc)
    return doc.replace("``", "")


def run_benchmark(name: str, argv: list[str]) -> int:
    """Run ``benchmarks/<script>``'s ``main(argv, prog=...)``. The benchmarks live in the source checkout
    beside the package (an editable install), not in the package itself."""
    import importlib.util
    import inspect
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    path = folder / BENCHMARKS[name]
    if not path.is_file():
        print(f"tinyops: error: bench {name}: {path} not found: the benchmarks are not part of the installed "
              "package; get them with a tinyops source checkout installed in place (pip install -e <checkout>)",
              file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses in the script look their module up here
    spec.loader.exec_module(module)
    module.__doc__ = plain_text(module.__doc__)  # its parser's description, read when main() runs
    if "prog" in inspect.signature(module.main).parameters:  # its --help then says "usage: tinyops bench <name>"
        return int(module.main(argv, prog=f"tinyops bench {name}"))
    return int(module.main(argv))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tinyops", description=plain_text(__doc__))
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="gradcheck every op's backward (float64, no torch needed)")
    p_check.add_argument("--seed", type=int, default=0, help="seed of the inputs and upstream gradients")
    p_train = sub.add_parser(
        "train", help="train the makemore MLP (pt2 or pt4) and save the run",
        description="Train the makemore MLP and save the run directory: model.npz, losses.json and the plots. "
                    "Everything is checked before training; a refused run creates nothing. Ctrl-C during "
                    "training stops after the current step and saves the steps done as a partial run "
                    "(exit status 130).",
    )
    p_train.add_argument("--data", required=True, help="names file, one name per line (a..z)")
    p_train.add_argument("--config", choices=["pt2", "pt4"], default="pt2", help="model configuration")
    p_train.add_argument("--steps", type=int, default=None,
                         help="training steps, 0 to 100,000,000 (default: the config's 200,000). The learning rate "
                              "drops from 0.1 to 0.01 at step 100,000 whatever --steps is: a shorter run trains at "
                              "0.1 throughout (it says so when it starts)")
    p_train.add_argument("--seed", type=int, default=0, help="seed of the init and the batches, 0 to 2**63 - 1")
    p_train.add_argument("--out", default=None,
                         help="run directory (default: results/<config>-seed<seed>); written whole when the run "
                              "ends, one run at a time")
    p_train.add_argument("--force", action="store_true",
                         help="replace the run in --out (all of its files) when the new one is saved")
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
    from .audit import add_arguments as audit_arguments

    p_audit = sub.add_parser("audit", help="audit any logsumexp, softmax, log_softmax or cross-entropy in ULPs")
    audit_arguments(p_audit)
    from .exercises import add_subparser as add_exercise_parser

    add_exercise_parser(sub)  # exercise list | start NAME [DIR] | check FILE
    args = parser.parse_args(argv)

    if args.command == "exercise":
        from .exercises import run_command

        return run_command(args)

    if args.command == "bench":
        return run_benchmark(args.name, args.args)

    if args.command == "audit":
        from .audit import run as audit_run

        return audit_run(args)

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
