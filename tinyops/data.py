"""The seed's data: names, the character vocabulary, (context -> next character) examples, the split.

Shapes: M = examples, T = block_size (context length).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

END = "."  # the start/end token, index 0


def read_words(path: str | os.PathLike[str]) -> list[str]:
    """The words of a names file, one per line, blank lines skipped.

    Raises:
        OSError (FileNotFoundError, IsADirectoryError, ...): the file cannot be read; the message names it.
        ValueError: the file is not UTF-8 text, or holds no words.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{os.fspath(path)!r} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    words = [line.strip() for line in text.splitlines() if line.strip()]
    if not words:
        raise ValueError(f"{os.fspath(path)!r} holds no words")
    return words


def build_vocab(words: Sequence[str]) -> tuple[dict[str, int], dict[int, str]]:
    """The lecture's vocabulary: '.' = 0, then the characters of ``words`` in sorted order from 1.

    For names.txt that is a..z = 1..26. Returns ``(stoi, itos)``.

    Raises:
        ValueError: a word contains '.', which is reserved for the start/end token.
    """
    chars = sorted(set("".join(words)))
    if END in chars:
        bad = next(w for w in words if END in w)
        raise ValueError(f"word {bad!r} contains {END!r}, the reserved start/end token")
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi[END] = 0
    itos = {i: s for s, i in stoi.items()}
    return stoi, itos


def build_dataset(
    words: Sequence[str], block_size: int, stoi: dict[str, int]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every (context of ``block_size`` characters -> next character) pair of every word, as the seed.

    Each word is padded on the left with ``block_size`` '.' tokens and ends with '.'; a word of length
    L gives L + 1 examples.

    Returns:
        ``X`` (M, T) int64 contexts and ``Y`` (M,) int64 targets.

    Raises:
        ValueError: block_size < 1, a word contains '.', or a word has a character outside ``stoi``
            (the word is named).
    """
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    block_size = int(block_size)
    X: list[list[int]] = []
    Y: list[int] = []
    for w in words:
        context = [0] * block_size
        if END in w:
            raise ValueError(f"word {w!r} contains {END!r}, the reserved start/end token")
        for ch in w + END:
            if ch not in stoi:
                raise ValueError(f"word {w!r} has character {ch!r}, which is not in the vocabulary")
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = [*context[1:], ix]
    Xa = np.array(X, dtype=np.int64).reshape(len(Y), block_size)  # (M, T), also for M == 0
    Ya = np.array(Y, dtype=np.int64)  # (M,)
    return Xa, Ya


def split_words(words: Sequence[str], seed: int = 42) -> tuple[list[str], list[str], list[str]]:
    """The lecture's 80/10/10 train/dev/test split: ``random.seed(seed); random.shuffle(words)``.

    Uses (and restores) Python's global ``random`` state exactly as the lecture does, so the split
    matches it word for word. The caller's list is not shuffled.
    """
    shuffled = list(words)
    state = random.getstate()
    try:
        random.seed(seed)
        random.shuffle(shuffled)
    finally:
        random.setstate(state)
    n1 = int(0.8 * len(shuffled))
    n2 = int(0.9 * len(shuffled))
    return shuffled[:n1], shuffled[n1:n2], shuffled[n2:]
