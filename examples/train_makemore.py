"""Train the makemore MLP with the tinyops API (not the CLI): train, evaluate, sample, plot.

Every gradient is hand-derived (``tinyops.mlp.backward`` walks the ops' caches in reverse); there is no
autograd and no torch. A short run by default; ``--steps 200000`` is the lecture's full schedule
(lr 0.1, then 0.01 from step 100,000).

    python examples/train_makemore.py --data path/to/names.txt [--config pt2|pt4] [--steps 5000]
                                      [--seed 0] [--out results/train_makemore]

Prints the mean batch loss as it goes, the train/dev loss of the whole splits at the end (pt4: after
calibrating the batchnorm statistics over the training set), and 10 sampled names; writes
``loss.png`` (log10 of the batch loss per step, as the lecture plots it) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinyops import mlp
from tinyops import train as tr

Array = np.ndarray[Any, Any]


def plot_loss(lossi: Array, path: Path, title: str) -> bool:
    """log10 of each step's batch loss, and its mean over blocks of steps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(np.log10(lossi), lw=0.3, alpha=0.5, label="batch")
    block = max(1, min(1000, lossi.size // 20))
    k = lossi.size // block
    if k >= 2:
        means = lossi[: k * block].reshape(k, block).mean(1)
        ax.plot(np.arange(k) * block + block / 2, np.log10(means), label=f"mean of {block} steps")
    ax.set(xlabel="step", ylabel="log10 loss", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("TINYOPS_NAMES"),
                        help="path of names.txt (default: the TINYOPS_NAMES environment variable)")
    parser.add_argument("--config", choices=sorted(mlp.CONFIGS), default="pt2", help="model (default pt2)")
    parser.add_argument("--steps", type=int, default=5000, help="SGD steps (default 5000; the lecture: 200000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialization and the batches")
    parser.add_argument("--out", type=Path, default=Path("results/train_makemore"), help="folder for loss.png")
    parser.add_argument("--samples", type=int, default=10, help="names to sample (default 10)")
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("no names file: pass --data path/to/names.txt or set TINYOPS_NAMES")
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    try:
        words = tr.load_words(args.data)  # checked against the vocabulary '.', a..z
    except tr.UsageError as exc:
        parser.error(str(exc))

    config = mlp.CONFIGS[args.config]
    data = tr.splits(words, config.block_size)  # the lecture's 80/10/10 split: {name: (X, Y)}
    Xtr, Ytr = data["train"]
    print(f"{len(words)} words; train {Xtr.shape[0]} examples; config {config.name}: "
          f"{config.num_params()} parameters; {args.steps} steps")

    result = tr.train(config, Xtr, Ytr, seed=args.seed, steps=args.steps)
    lossi = result.lossi  # (steps,) the batch loss of every step
    report = max(1, args.steps // 10)
    for start in range(0, args.steps, report):
        chunk = lossi[start : start + report]
        print(f"steps {start:7d}-{start + chunk.size - 1:7d}: mean batch loss {chunk.mean():.4f}")
    print(f"{result.seconds:.1f} s, {result.seconds / max(1, result.steps_done) * 1e6:.0f} µs per step")

    stats = mlp.calibrate(result.params, Xtr, config, result.stats)  # pt4: batchnorm over the training set
    for name in ("train", "dev"):
        X, Y = data[name]
        print(f"{name} {mlp.evaluate(result.params, X, Y, config, stats):.4f}")

    itos = dict(enumerate(tr.ITOS))
    rng = np.random.default_rng(args.seed + 10)
    for name in mlp.sample(result.params, config, stats, itos, rng, n=args.samples):
        print(name)

    args.out.mkdir(parents=True, exist_ok=True)
    if plot_loss(lossi, args.out / "loss.png", f"{config.name}, {args.steps} steps, seed {args.seed}"):
        print(f"wrote {args.out / 'loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
