"""The seed notebook (the makemore MLP lecture, its first cells), cell by cell, computed with tinyops.

Each cell prints the seed's code as a comment line starting with ``>>>`` and then what the seed printed:
the first words, the vocabulary, the (context ---> next character) listing of the first five words,
the dataset shapes, the shapes of the forward, the 3481 parameters, the loss 17.7697 (from the seed's
naive chain and from the fused cross-entropy), and the overflow cells (a logit of 100 breaks the naive
softmax and loss; the max-shifted ones stay finite).

torch is needed for one thing only: the seed's parameters are drawn by ``torch.randn`` with the seed's
generator, so that the numbers are the seed's. Every computation is a tinyops op.

    python examples/seed_walkthrough.py --data path/to/names.txt   (default: $TINYOPS_NAMES)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

import tinyops
from tinyops.data import build_dataset, build_vocab, read_words

BLOCK_SIZE = 3
SEED = 2147483647  # the seed's torch.Generator().manual_seed(...)


def cell(code: str, output: object = None) -> None:
    """Print one notebook cell: its code (``>>>`` lines) and, if it has one, its output."""
    for line in code.strip().splitlines():
        print(f">>> {line}")
    if output is not None:
        print(output)
    print()


def fmt_probs(p: np.ndarray[Any, Any]) -> str:
    """A 1-D probability vector as the seed's torch printed it: ``[4.5079e-05, ..., 9.9293e-01]``."""
    return "[" + ", ".join(f"{v:.4e}" for v in p.tolist()) + "]"


def draw_parameters() -> dict[str, np.ndarray[Any, Any]]:
    """C (27, 2), W1 (6, 100), b1 (100,), W2 (100, 27), b2 (27,): float32, drawn exactly as the seed draws them."""
    try:
        import torch
    except ImportError:
        msg = "seed_walkthrough.py needs torch to draw the seed's random parameters (pip install torch)"
        raise SystemExit(msg) from None
    g = torch.Generator().manual_seed(SEED)
    shapes = {"C": (27, 2), "W1": (6, 100), "b1": (100,), "W2": (100, 27), "b2": (27,)}
    return {name: torch.randn(shape, generator=g).numpy().astype(np.float32) for name, shape in shapes.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("TINYOPS_NAMES"),
                        help="path of names.txt (default: the TINYOPS_NAMES environment variable)")
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("no names file: pass --data path/to/names.txt or set TINYOPS_NAMES")
    try:
        words = read_words(args.data)
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read the names file: {exc}")

    # ------------------------------------------------------------------ the data
    cell("words = open('names.txt', 'r').read().splitlines()\nwords[:8]", words[:8])
    cell("len(words)", len(words))
    stoi, itos = build_vocab(words)
    cell("chars = sorted(list(set(''.join(words))))\n"
         "stoi = {s: i + 1 for i, s in enumerate(chars)}\nstoi['.'] = 0\n"
         "itos = {i: s for s, i in stoi.items()}\nprint(itos)", itos)

    print(">>> for w in words[:5]: ... print(''.join(itos[i] for i in context), '--->', itos[ix])")
    for w in words[:5]:
        Xw, Yw = build_dataset([w], BLOCK_SIZE, stoi)  # (len(w) + 1, 3), (len(w) + 1,)
        for context, ix in zip(Xw.tolist(), Yw.tolist(), strict=True):
            print("".join(itos[i] for i in context), "--->", itos[ix])
    print()
    X, Y = build_dataset(words[:5], BLOCK_SIZE, stoi)  # (32, 3), (32,) int64
    cell("X.shape, X.dtype, Y.shape, Y.dtype", (X.shape, X.dtype, Y.shape, Y.dtype))

    # ------------------------------------------------------------------ the forward
    p = draw_parameters()
    parameters = [p["C"], p["W1"], p["b1"], p["W2"], p["b2"]]
    cell(f"g = torch.Generator().manual_seed({SEED})\nC = torch.randn((27, 2), generator=g)\n"
         "W1 = torch.randn((6, 100), generator=g)\nb1 = torch.randn(100, generator=g)\n"
         "W2 = torch.randn((100, 27), generator=g)\nb2 = torch.randn(27, generator=g)\n"
         "parameters = [C, W1, b1, W2, b2]\nsum(p.nelement() for p in parameters)",
         sum(q.size for q in parameters))

    emb = tinyops.embedding(p["C"], X)  # (32, 3, 2)
    cell("emb = C[X]\nemb.shape", emb.shape)
    h = tinyops.tanh(tinyops.linear(emb.reshape(-1, 6), p["W1"], p["b1"]))  # (32, 100)
    cell("h = torch.tanh(emb.view(-1, 6) @ W1 + b1)\nh.shape", h.shape)
    logits = tinyops.linear(h, p["W2"], p["b2"])  # (32, 27)
    cell("logits = h @ W2 + b2\nlogits.shape", logits.shape)

    loss_naive, cache = tinyops.cross_entropy_naive_forward(logits, Y)  # (), the chain's caches
    cell("counts = logits.exp()\ncounts.shape", cache.counts.out.shape)
    cell("prob = counts / counts.sum(1, keepdims=True)\nprob.shape", cache.probs.out.shape)
    cell("loss = -prob[torch.arange(32), Y].log().mean()\nloss", f"{float(loss_naive):.4f}")
    loss = tinyops.cross_entropy(logits, Y)  # ()
    cell("loss = F.cross_entropy(logits, Y)\nloss", f"{float(loss):.4f}")

    # ------------------------------------------------------------------ the overflow cells
    small = np.array([-5, -3, 0, 5], dtype=np.float32)
    cell("logits = torch.tensor([-5, -3, 0, 5])\ncounts = logits.exp()\nprobs = counts / counts.sum()\nprobs",
         fmt_probs(tinyops.softmax_naive(small)))
    cell("logits = torch.tensor([-5, -3, 0, 5]) - 10  # a shift changes nothing\n...\nprobs",
         fmt_probs(tinyops.softmax_naive(small - np.float32(10))))
    big = np.array([-5, -3, 0, 100], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # exp(100) overflows float32: the point of the cell
        naive_big = tinyops.softmax_naive(big)
    cell("logits = torch.tensor([-5, -3, 0, 100])\ncounts = logits.exp()\nprobs = counts / counts.sum()\nprobs",
         fmt_probs(naive_big))
    cell("# the same logits, max-subtracted (F.softmax)\nprobs", fmt_probs(tinyops.softmax(big)))

    rows = np.stack([big, big])  # (2, 4)
    target = np.array([3, 0])  # the overflowing class, then a class whose probability underflows to 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        naive_losses = tinyops.cross_entropy_naive(rows, target, reduction="none")  # (2,)
    fused_losses = tinyops.cross_entropy(rows, target, reduction="none")  # (2,)
    cell("# the naive loss of those logits, target 3 and target 0\n-(probs[[3, 0]]).log()",
         [f"{v:.4f}" for v in naive_losses.tolist()])
    cell("F.cross_entropy(logits[None].expand(2, 4), torch.tensor([3, 0]), reduction='none')",
         [f"{v:.4f}" for v in fused_losses.tolist()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
