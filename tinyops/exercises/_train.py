"""Exercise 4's second half: train the makemore MLP with the learner's backward until the loss reaches its mark.

The data is a names file (``--data``, or $TINYOPS_NAMES) or, without one, a built-in list of synthetic
names drawn from a small syllable grammar, so that the exercise runs on a fresh install. The network is
the lecture's part-4 network at its exercise size (embedding 10, hidden 64, batchnorm), float32, SGD on
batches of 32 at learning rate 0.1 (0.01 for the last quarter of the steps); every ``EVAL_EVERY`` steps
the batchnorm statistics are calibrated over the training split (as the lecture does after training) and
the loss on the held-out split is measured. The check passes when that loss reaches the mark, which a
right backward reaches in a fraction of the step budget and a backward that is wrong anywhere does not.
"""

from __future__ import annotations

import bisect
import inspect
import os
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from .._checks import Array
from ..data import build_dataset, build_vocab, read_words, split_words
from ._packs import _mlp_params

BLOCK_SIZE, N_EMBD, N_HIDDEN, BATCH = 3, 10, 64, 32
EVAL_EVERY = 500

# The held-out loss to reach, and the step budget, per data source. The model solution reaches the synthetic
# mark in about 1,500 of its 6,000 steps (2 s on one core; tests/test_exercises.py runs it) and the names.txt
# mark in about 1,500 of 12,000 (6 s, most of it the calibration over 182,625 examples every 500 steps).
TARGETS = {"synthetic": (2.25, 6000), "names": (2.40, 12000)}

_ONSETS = ["", "b", "d", "k", "l", "m", "n", "r", "s", "t", "v", "j", "sh", "ch", "br", "st"]
_ONSET_P = [4, 3, 3, 4, 5, 5, 5, 4, 4, 3, 2, 3, 2, 2, 1, 1]
_VOWELS = ["a", "e", "i", "o", "u", "ia", "ea", "y"]
_VOWEL_P = [8, 6, 5, 4, 2, 2, 1, 2]
_CODAS = ["", "n", "r", "l", "s", "th"]
_CODA_P = [10, 3, 2, 2, 1, 1]
_ENDINGS = ["", "a", "e", "y", "n", "ie", "elle", "o"]
_ENDING_P = [8, 5, 2, 3, 3, 2, 1, 1]


def synthetic_names(count: int = 4000, seed: int = 0) -> list[str]:
    """``count`` made-up names (2 or 3 syllables and an ending) from a fixed seed: the same list every time."""
    uniforms = iter(np.random.default_rng(seed).random(count * 16).tolist())  # at most 15 draws per name

    def cdf(weights: list[int]) -> list[float]:
        total = sum(weights)
        return [sum(weights[: i + 1]) / total for i in range(len(weights) - 1)]  # the last bound is 1

    onset, vowel, coda, ending = ((options, cdf(weights)) for options, weights in (
        (_ONSETS, _ONSET_P), (_VOWELS, _VOWEL_P), (_CODAS, _CODA_P), (_ENDINGS, _ENDING_P)))

    def pick(table: tuple[list[str], list[float]]) -> str:
        options, bounds = table
        return options[bisect.bisect_right(bounds, next(uniforms))]

    names = []
    for _ in range(count):
        syllables = 1 + bisect.bisect_right([0.2, 0.75], next(uniforms))  # 1, 2, 3 syllables: 20, 55, 25 %
        word = "".join(pick(onset) + pick(vowel) + pick(coda) for _ in range(syllables))
        names.append(word + pick(ending))
    return names


def _words(data: str | None) -> tuple[list[str], str, str]:
    path = data or os.environ.get("TINYOPS_NAMES")
    if path:
        return read_words(path), "names", path
    return synthetic_names(), "synthetic", "the built-in synthetic names (pass --data names.txt for the real ones)"


def _eval_loss(forward: Callable[..., Any], P: dict[str, Array], Xtr: Array, Xdev: Array, Ydev: Array) -> float:
    """The held-out mean loss, with the batchnorm mean and variance of the whole training split."""
    from ..ops.cross_entropy import cross_entropy

    def hprebn(X: Array) -> Array:
        return np.asarray(P["C"][X].reshape(X.shape[0], -1) @ P["W1"] + P["b1"], dtype=np.float64)

    train = hprebn(Xtr)
    mean, var = train.mean(0, keepdims=True), train.var(0, keepdims=True, ddof=1)
    hpreact = P["bngain"] * (hprebn(Xdev) - mean) / np.sqrt(var + 1e-5) + P["bnbias"]
    logits = np.tanh(hpreact) @ P["W2"] + P["b2"]
    return float(cross_entropy(logits, Ydev, backend="reference"))


def train_to_target(
    backward: Callable[..., Any],
    forward: Callable[..., Any],
    *,
    data: str | None = None,
    out: TextIO,
    seed: int = 0,
    time_limit: float = 60.0,
) -> tuple[bool, float]:
    """Train with ``backward``'s gradients until the held-out loss reaches the mark of the data source.

    Returns ``(reached, last held-out loss)``.
    """
    words, source, where = _words(data)
    target, budget = TARGETS[source]
    stoi, _ = build_vocab(words)
    train_words, dev_words, _ = split_words(words)
    Xtr, Ytr = build_dataset(train_words, BLOCK_SIZE, stoi)
    Xdev, Ydev = build_dataset(dev_words, BLOCK_SIZE, stoi)
    rng = np.random.default_rng(seed)
    P = {k: v.astype(np.float32) for k, v in _mlp_params(rng, len(stoi), BLOCK_SIZE, N_EMBD, N_HIDDEN).items()}
    names = list(inspect.signature(backward).parameters)
    print(f"training with your backward on {where}: {len(Xtr)} examples, vocabulary {len(stoi)}; "
          f"mark: held-out loss <= {target} within {budget} steps and {time_limit:.0f} s", file=out)
    start = time.perf_counter()
    dev = _eval_loss(forward, P, Xtr, Xdev, Ydev)
    print(f"  step {0:6d}: held-out loss {dev:.4f}", file=out)
    for step in range(1, budget + 1):
        ix = rng.integers(0, Xtr.shape[0], BATCH)
        ns = {**P, "Xb": Xtr[ix], "Yb": Ytr[ix]}
        ns |= forward(**ns)
        grads = backward(**{k: ns[k] for k in names if k in ns})
        lr = np.float32(0.1 if step <= 0.75 * budget else 0.01)
        for k, p in P.items():
            p -= lr * np.asarray(grads[f"d{k}"], dtype=np.float32).reshape(p.shape)
        if step % EVAL_EVERY == 0 or step == budget:
            dev = _eval_loss(forward, P, Xtr, Xdev, Ydev)
            elapsed = time.perf_counter() - start
            print(f"  step {step:6d}: held-out loss {dev:.4f} ({elapsed:.1f} s)", file=out)
            if not np.isfinite(dev):
                print("  the loss is not finite: training diverged", file=out)
                return False, dev
            if dev <= target:
                print(f"reached the mark ({dev:.4f} <= {target}) in {step} steps, {elapsed:.1f} s", file=out)
                return True, dev
            if elapsed > time_limit:
                break
    print(f"did not reach the mark: held-out loss {dev:.4f} > {target}", file=out)
    return False, dev
