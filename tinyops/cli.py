"""The ``tinyops`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tinyops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="gradcheck every op's backward (float64, no torch needed)")
    p_check.add_argument("--seed", type=int, default=0, help="seed of the inputs and upstream gradients")
    args = parser.parse_args(argv)

    if args.command == "check":
        from .check import main as check_main

        return check_main(seed=args.seed)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse already refuses


if __name__ == "__main__":
    sys.exit(main())
