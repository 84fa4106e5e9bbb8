"""The seed notebook (the makemore MLP lecture, its first cells), output by output, computed with tinyops.

torch appears only as the source of the seed's random parameters; every computation is a tinyops op.
The names-file tests run when TINYOPS_NAMES holds the path of names.txt and are skipped otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pytest
import torch

import tinyops
from tinyops.data import build_dataset, build_vocab, read_words, split_words

NAMES_ENV = "TINYOPS_NAMES"
NAMES_REASON = "set TINYOPS_NAMES to the path of names.txt"
needs_names = pytest.mark.skipif(not os.environ.get(NAMES_ENV), reason=NAMES_REASON)

# A pangram: words covering a..z, the vocabulary of names.txt, for runs without the names file.
PANGRAM_WORDS = ["sphinx", "of", "black", "quartz", "judge", "my", "vow"]

FIRST_WORDS = ["emma", "olivia", "ava", "isabella", "sophia"]
BLOCK_SIZE = 3

# print(itos)
ITOS_PRINTED = (
    "{1: 'a', 2: 'b', 3: 'c', 4: 'd', 5: 'e', 6: 'f', 7: 'g', 8: 'h', 9: 'i', 10: 'j', 11: 'k', "
    "12: 'l', 13: 'm', 14: 'n', 15: 'o', 16: 'p', 17: 'q', 18: 'r', 19: 's', 20: 't', 21: 'u', "
    "22: 'v', 23: 'w', 24: 'x', 25: 'y', 26: 'z', 0: '.'}"
)

# print(''.join(itos[i] for i in context), '--->', itos[ix]) for the first five words
DATASET_PRINTED = [
    # emma
    "... ---> e",
    "..e ---> m",
    ".em ---> m",
    "emm ---> a",
    "mma ---> .",
    # olivia
    "... ---> o",
    "..o ---> l",
    ".ol ---> i",
    "oli ---> v",
    "liv ---> i",
    "ivi ---> a",
    "via ---> .",
    # ava
    "... ---> a",
    "..a ---> v",
    ".av ---> a",
    "ava ---> .",
    # isabella
    "... ---> i",
    "..i ---> s",
    ".is ---> a",
    "isa ---> b",
    "sab ---> e",
    "abe ---> l",
    "bel ---> l",
    "ell ---> a",
    "lla ---> .",
    # sophia
    "... ---> s",
    "..s ---> o",
    ".so ---> p",
    "sop ---> h",
    "oph ---> i",
    "phi ---> a",
    "hia ---> .",
]

SEED_LOSS = 17.7697  # loss.item() of the seed's forward, to the 4 decimals printed

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def names_path() -> Path | None:
    """The names file named by TINYOPS_NAMES, or None when the variable is unset or empty."""
    value = os.environ.get(NAMES_ENV)
    return Path(value) if value else None


@pytest.fixture(scope="module")
def names_words(names_path: Path | None) -> list[str]:
    """Every word of the names file (skips without one; a path that is set but unreadable fails)."""
    if names_path is None:
        pytest.skip(NAMES_REASON)
    return read_words(names_path)


@pytest.fixture(scope="module")
def vocab(names_path: Path | None) -> tuple[dict[str, int], dict[int, str]]:
    """``(stoi, itos)`` as the seed builds them: from the real words when the names file is there,
    otherwise from words covering a..z (the same 27-token vocabulary)."""
    words = read_words(names_path) if names_path is not None else PANGRAM_WORDS
    return build_vocab(words)


@pytest.fixture(scope="module")
def dataset(vocab: tuple[dict[str, int], dict[int, str]]) -> tuple[I64, I64]:
    stoi, _ = vocab
    return build_dataset(FIRST_WORDS, BLOCK_SIZE, stoi)


class Params(NamedTuple):
    C: F32  # (27, 2)
    W1: F32  # (6, 100)
    b1: F32  # (100,)
    W2: F32  # (100, 27)
    b2: F32  # (27,)


@pytest.fixture(scope="module")
def params() -> Params:
    """The seed's parameters, drawn by torch exactly as the notebook draws them, as float32 NumPy."""
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((27, 2), generator=g)
    W1 = torch.randn((6, 100), generator=g)
    b1 = torch.randn(100, generator=g)
    W2 = torch.randn((100, 27), generator=g)
    b2 = torch.randn(27, generator=g)
    return Params(*(np.asarray(t.numpy(), dtype=np.float32) for t in (C, W1, b1, W2, b2)))


class Forward(NamedTuple):
    emb: F32  # (32, 3, 2)
    h: F32  # (32, 100)
    logits: F32  # (32, 27)


@pytest.fixture(scope="module")
def forward(params: Params, dataset: tuple[I64, I64]) -> Forward:
    X, _ = dataset
    emb = tinyops.embedding(params.C, X)
    h = tinyops.tanh(tinyops.linear(emb.reshape(-1, 6), params.W1, params.b1))
    logits = tinyops.linear(h, params.W2, params.b2)
    return Forward(emb, h, logits)


# ----------------------------------------------------------------------------- vocabulary and dataset


def test_itos_printed(vocab: tuple[dict[str, int], dict[int, str]]) -> None:
    stoi, itos = vocab
    assert str(itos) == ITOS_PRINTED  # values and order: a..z = 1..26, then '.' = 0
    assert itos == {**{i: chr(ord("a") + i - 1) for i in range(1, 27)}, 0: "."}
    assert stoi == {s: i for i, s in itos.items()}


def test_dataset_printed_lines(
    dataset: tuple[I64, I64], vocab: tuple[dict[str, int], dict[int, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    X, Y = dataset
    _, itos = vocab
    for context, ix in zip(X.tolist(), Y.tolist(), strict=True):
        print("".join(itos[i] for i in context), "--->", itos[ix])
    assert capsys.readouterr().out.splitlines() == DATASET_PRINTED


def test_dataset_lines_per_word(vocab: tuple[dict[str, int], dict[int, str]]) -> None:
    stoi, _ = vocab
    counts = [build_dataset([w], BLOCK_SIZE, stoi)[1].shape[0] for w in FIRST_WORDS]
    assert counts == [5, 7, 4, 9, 7]
    assert sum(counts) == len(DATASET_PRINTED) == 32


def test_dataset_shapes(dataset: tuple[I64, I64]) -> None:
    X, Y = dataset
    assert X.shape == (32, 3)
    assert Y.shape == (32,)
    assert X.dtype == np.int64
    assert Y.dtype == np.int64


# ----------------------------------------------------------------------------- parameters and forward


def test_parameters(params: Params) -> None:
    shapes = {name: p.shape for name, p in params._asdict().items()}
    assert shapes == {"C": (27, 2), "W1": (6, 100), "b1": (100,), "W2": (100, 27), "b2": (27,)}
    assert all(p.dtype == np.float32 for p in params)
    assert sum(p.size for p in params) == 3481
    # the generator's first draw, C[0], as torch prints it
    assert [f"{v:.4f}" for v in params.C[0]] == ["1.5674", "-0.2373"]


def test_forward_shapes_and_dtypes(forward: Forward) -> None:
    assert forward.emb.shape == (32, 3, 2)
    assert forward.h.shape == (32, 100)
    assert forward.logits.shape == (32, 27)
    assert all(a.dtype == np.float32 for a in forward)
    assert np.all(np.abs(forward.h) <= 1)


def test_forward_embedding_rows(forward: Forward, params: Params, dataset: tuple[I64, I64]) -> None:
    X, _ = dataset
    # the first context is '...' (index 0 three times); the second is '..e'
    np.testing.assert_array_equal(forward.emb[0], np.stack([params.C[0]] * 3))
    np.testing.assert_array_equal(forward.emb[1], params.C[[0, 0, 5]])
    assert X[1].tolist() == [0, 0, 5]


@pytest.mark.parametrize("loss_fn", [tinyops.cross_entropy_naive, tinyops.cross_entropy])
def test_seed_loss(forward: Forward, dataset: tuple[I64, I64], loss_fn: Any) -> None:
    _, Y = dataset
    loss = loss_fn(forward.logits, Y)
    assert loss.shape == ()
    assert loss.dtype == np.float32
    assert round(float(loss), 4) == SEED_LOSS


def test_seed_loss_naive_equals_fused(forward: Forward, dataset: tuple[I64, I64]) -> None:
    _, Y = dataset
    naive = tinyops.cross_entropy_naive(forward.logits, Y)
    fused = tinyops.cross_entropy(forward.logits, Y)
    np.testing.assert_allclose(naive, fused, rtol=1e-6)


# ----------------------------------------------------------------------------- the overflow cells


def _softmax64(x: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    x64 = np.asarray(x, dtype=np.float64)
    e = np.exp(x64 - x64.max())
    out: npt.NDArray[np.float64] = e / e.sum()
    return out


def test_naive_softmax_overflows() -> None:
    logits = np.array([-5, -3, 0, 100], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        probs = tinyops.softmax_naive(logits)
        probs_row = tinyops.softmax_naive(logits[None, :])
    assert probs.dtype == np.float32
    np.testing.assert_array_equal(probs[:3], [0, 0, 0])
    assert np.isnan(probs[3])
    np.testing.assert_array_equal(probs_row, probs[None, :])


def test_naive_loss_overflows() -> None:
    logits = np.array([[-5, -3, 0, 100]], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divide: log(0)
        loss_nan, cache = tinyops.cross_entropy_naive_forward(logits, np.array([3]))
        loss_inf = tinyops.cross_entropy_naive(logits, np.array([0]))
    counts = cache.counts.out
    assert counts.dtype == np.float32
    assert counts[0, 3] == np.inf  # exp(100) overflows float32
    np.testing.assert_allclose(counts[0, :3], np.exp(np.array([-5.0, -3.0, 0.0])), rtol=1e-6)
    assert np.isnan(loss_nan)  # -log(inf / inf)
    assert loss_inf == np.inf  # -log(finite / inf) = -log(0)


def test_stable_softmax_does_not_overflow() -> None:
    logits = np.array([-5, -3, 0, 100], dtype=np.float32)
    probs = tinyops.softmax(logits)
    assert probs.dtype == np.float32
    assert np.all(np.isfinite(probs))
    assert np.sum(probs, dtype=np.float64) == pytest.approx(1.0, abs=1e-6)
    # float32 subnormals are 1.4e-45 apart: exp(-105) and exp(-103) are held to that spacing
    np.testing.assert_allclose(probs, _softmax64(logits), rtol=1e-6, atol=1e-44)


def test_stable_loss_does_not_overflow() -> None:
    logits = np.array([[-5, -3, 0, 100], [-5, -3, 0, 100]], dtype=np.float32)
    target = np.array([3, 0])
    losses = tinyops.cross_entropy(logits, target, reduction="none")
    x64 = logits[0].astype(np.float64)
    lse64 = x64.max() + np.log(np.exp(x64 - x64.max()).sum())
    assert np.all(np.isfinite(losses))
    np.testing.assert_allclose(losses, lse64 - x64[target], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shift", [0, -10])
@pytest.mark.parametrize("softmax_fn", [tinyops.softmax_naive, tinyops.softmax])
def test_softmax_small_logits(shift: int, softmax_fn: Any) -> None:
    logits = np.array([-5, -3, 0, 5], dtype=np.float32) + np.float32(shift)
    probs = softmax_fn(logits)
    assert probs.dtype == np.float32
    # tensor([4.5079e-05, 3.3309e-04, 6.6903e-03, 9.9293e-01])
    assert [f"{p:.4e}" for p in probs] == ["4.5079e-05", "3.3309e-04", "6.6903e-03", "9.9293e-01"]
    np.testing.assert_allclose(probs, _softmax64(logits), rtol=1e-6)


# ----------------------------------------------------------------------------- the names file


@needs_names
def test_names_words(names_words: list[str]) -> None:
    assert len(names_words) == 32033
    assert names_words[:8] == ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia"]
    assert names_words[:5] == FIRST_WORDS


@needs_names
def test_names_itos(names_words: list[str]) -> None:
    _, itos = build_vocab(names_words)
    assert str(itos) == ITOS_PRINTED


@needs_names
def test_names_split_shapes(names_words: list[str]) -> None:
    stoi, _ = build_vocab(names_words)
    train, dev, test = split_words(names_words)
    assert (len(train), len(dev), len(test)) == (25626, 3203, 3204)
    shapes = []
    for part in (train, dev, test):
        X, Y = build_dataset(part, BLOCK_SIZE, stoi)
        assert X.dtype == np.int64
        assert Y.dtype == np.int64
        shapes.append((X.shape, Y.shape))
    assert shapes == [
        ((182625, 3), (182625,)),
        ((22655, 3), (22655,)),
        ((22866, 3), (22866,)),
    ]
    assert sum(len(w) + 1 for w in names_words) == 182625 + 22655 + 22866
