"""Exercises in manual backpropagation, with a checker that says which gradient is wrong first, and why.

The loop (``tinyops exercise ...`` on the command line, or these functions)::

    list_exercises()                      # the packs, and which of them pass
    start("backprop-chain", ".")          # writes ./backprop_chain.py: the forward, and a blank per gradient
    check("backprop_chain.py")            # the cmp table; the first wrong gradient's likely bug, and a link
                                          # to the section of docs/derivations.md that derives that step

Packs: ``backprop-chain`` (makemore part 4's exercise 1: every intermediate, dlogprobs back to dC),
``cross-entropy-fused`` (exercise 2), ``batchnorm-chain`` and ``batchnorm-fused`` (exercise 3, the chain
and the one-line form), ``embedding`` (a scatter-add with repeated indices), ``linear-tanh``,
``softmax-vjp`` (logsumexp, softmax and log_softmax as vector-Jacobian products) and ``mlp-train``
(exercise 4: the network's backward, then training with it to a held-out loss). They need NumPy only.

A diagnosis names one kind of bug, chosen by testing each against the learner's array: transposed; summed
over the wrong axis, or not summed over a broadcast axis, or keepdims lost; off by a constant factor (the
1/n of a mean, n against the n - 1 of Bessel's correction, a sign, another constant); repeated indices
dropped in a scatter; wrong only at the entries a mask or the targets select; right up to float32
rounding (how many ULPs, and which order of operations would be bit-exact).

Progress is saved in ``progress.json`` under $TINYOPS_STATE_DIR, else $XDG_STATE_HOME/tinyops, else
~/.local/state/tinyops.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import _progress
from ._check import CheckError, CheckResult, Row, check, render
from ._diagnose import Diagnosis
from ._packs import EXERCISES, Exercise

__all__ = ["EXERCISES", "CheckError", "CheckResult", "Diagnosis", "Exercise", "ExerciseStatus", "Row",
           "add_subparser", "check", "list_exercises", "main", "render", "run_command", "start"]


@dataclass(frozen=True)
class ExerciseStatus:
    name: str
    title: str
    status: str  # 'passed', 'failing' (checked, not passing yet), 'started' (never checked), 'new'
    file: str | None


def list_exercises() -> list[ExerciseStatus]:
    """Every exercise, in teaching order, with the learner's progress."""
    progress = _progress.load()
    out = []
    for name, ex in EXERCISES.items():
        entry = progress.get(name)
        if entry is None:
            status = "new"
        elif entry.get("passed"):
            status = "passed"
        else:
            status = "failing" if entry.get("checked") else "started"
        out.append(ExerciseStatus(name, ex.title, status, entry.get("file") if entry else None))
    return out


def start(name: str, directory: str | os.PathLike[str] = ".") -> Path:
    """Write exercise ``name``'s file into ``directory`` and return its path.

    Raises:
        KeyError: no exercise of that name (the message lists them).
        FileExistsError: the file exists already (it is never overwritten: it may hold the learner's work).
    """
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; the exercises are: {', '.join(EXERCISES)}")
    exercise = EXERCISES[name]
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / exercise.filename).resolve()
    with open(path, "x", encoding="utf-8") as f:  # "x": refuse to overwrite
        f.write(render(exercise))
    try:
        _progress.record_start(name, path)
    except OSError:
        pass
    return path


# ============================================================================ the command line


def add_subparser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``exercise list | start NAME [DIR] | check FILE`` to the ``tinyops`` command's subcommands."""
    p = sub.add_parser("exercise", help="exercises in manual backprop, checked gradient by gradient",
                       description=__doc__.split("\n\n")[0] if __doc__ else None)
    verbs = p.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="the exercises and which of them pass")
    p_start = verbs.add_parser("start", help="write an exercise file to fill in")
    p_start.add_argument("name", help=f"which exercise: {', '.join(EXERCISES)}")
    p_start.add_argument("dir", nargs="?", default=".", help="where to write it (default: here)")
    p_check = verbs.add_parser("check", help="check a filled-in (or partly filled-in) exercise file")
    p_check.add_argument("file", help="the exercise file")
    p_check.add_argument("--seed", type=int, default=None, help="seed of the random case (default: a fresh one)")
    p_check.add_argument("--data", default=None,
                         help="names file for the training exercise (default: $TINYOPS_NAMES, else synthetic names)")


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed ``exercise`` command; the exit status (0: done / passed, 1: not passing, 2: bad usage)."""
    if args.verb == "list":
        rows = list_exercises()
        width = max(len(r.name) for r in rows)
        mark = {"passed": "passed", "failing": "started, not passing yet", "started": "started", "new": ""}
        for r in rows:
            where = f"  ({r.file})" if r.file else ""
            print(f"{r.name:{width}s}  {mark[r.status]:24s}  {r.title}{where}")
        done = sum(r.status == "passed" for r in rows)
        print(f"\n{done} of {len(rows)} passed. Start one with: tinyops exercise start NAME [DIR]")
        return 0
    if args.verb == "start":
        try:
            path = start(args.name, args.dir)
        except KeyError as exc:
            print(f"tinyops exercise start: {exc.args[0]}", file=sys.stderr)
            return 2
        except FileExistsError as exc:
            print(f"tinyops exercise start: {exc.filename} exists already; it is not overwritten (check it "
                  f"with `tinyops exercise check {exc.filename}`, or move it away to start over)", file=sys.stderr)
            return 2
        print(f"wrote {path}\nFill in the blanks, then run: tinyops exercise check {path}")
        return 0
    try:
        result = check(args.file, seed=args.seed, data=args.data)
    except CheckError as exc:
        print(f"tinyops exercise check: {exc}", file=sys.stderr)
        return 2
    return 0 if result.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``tinyops exercise ...`` on its own (the exercise files' ``__main__`` calls it)."""
    parser = argparse.ArgumentParser(prog="tinyops")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(["exercise", *(sys.argv[1:] if argv is None else argv)]))
