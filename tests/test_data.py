"""Unit tests of tinyops.data: read_words, build_vocab, build_dataset, split_words."""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinyops.data import END, build_dataset, build_vocab, read_words, split_words

# ----------------------------------------------------------------------------- build_vocab


def test_end_token() -> None:
    assert END == "."


def test_build_vocab_sorted_from_one_with_end_zero() -> None:
    stoi, itos = build_vocab(["cab", "bad"])
    assert stoi == {"a": 1, "b": 2, "c": 3, "d": 4, ".": 0}
    assert itos == {1: "a", 2: "b", 3: "c", 4: "d", 0: "."}
    assert list(itos) == [1, 2, 3, 4, 0]  # as the seed prints it: '.' last


def test_build_vocab_order_ignores_word_order() -> None:
    assert build_vocab(["zy", "x"]) == build_vocab(["x", "yz"])
    stoi, _ = build_vocab(["zy", "x"])
    assert stoi == {"x": 1, "y": 2, "z": 3, ".": 0}


def test_build_vocab_alphabet() -> None:
    stoi, itos = build_vocab(list(string.ascii_lowercase))
    assert len(stoi) == len(itos) == 27
    assert stoi["."] == 0
    assert [itos[i] for i in range(1, 27)] == list(string.ascii_lowercase)
    assert all(itos[i] == s for s, i in stoi.items())


def test_build_vocab_empty() -> None:
    assert build_vocab([]) == ({".": 0}, {0: "."})


@pytest.mark.parametrize("words", [["ab", "a.b"], ["."], ["x", "y."]])
def test_build_vocab_rejects_end_token_in_word(words: list[str]) -> None:
    bad = next(w for w in words if "." in w)
    with pytest.raises(ValueError, match="reserved") as excinfo:
        build_vocab(words)
    assert repr(bad) in str(excinfo.value)


# ----------------------------------------------------------------------------- build_dataset

STOI_AB = {"a": 1, "b": 2, ".": 0}


def test_build_dataset_block_size_1() -> None:
    X, Y = build_dataset(["ab", "b"], 1, STOI_AB)
    # ab: . -> a, a -> b, b -> .;  b: . -> b, b -> .
    np.testing.assert_array_equal(X, np.array([[0], [1], [2], [0], [2]]))
    np.testing.assert_array_equal(Y, np.array([1, 2, 0, 2, 0]))
    assert X.dtype == np.int64
    assert Y.dtype == np.int64


def test_build_dataset_block_size_3() -> None:
    X, Y = build_dataset(["ab", "b"], 3, STOI_AB)
    expected_X = np.array(
        [
            [0, 0, 0],  # ... -> a
            [0, 0, 1],  # ..a -> b
            [0, 1, 2],  # .ab -> .
            [0, 0, 0],  # ... -> b
            [0, 0, 2],  # ..b -> .
        ]
    )
    np.testing.assert_array_equal(X, expected_X)
    np.testing.assert_array_equal(Y, np.array([1, 2, 0, 2, 0]))
    assert X.shape == (5, 3)
    assert Y.shape == (5,)
    assert X.dtype == np.int64
    assert Y.dtype == np.int64


def test_build_dataset_context_slides_past_block() -> None:
    X, Y = build_dataset(["abab"], 2, STOI_AB)
    np.testing.assert_array_equal(X, np.array([[0, 0], [0, 1], [1, 2], [2, 1], [1, 2]]))
    np.testing.assert_array_equal(Y, np.array([1, 2, 1, 2, 0]))


@pytest.mark.parametrize("block_size", [1, 2, 3, 8])
def test_build_dataset_length_plus_one_examples(block_size: int) -> None:
    words = ["a", "ab", "bab", ""]
    X, Y = build_dataset(words, block_size, STOI_AB)
    M = sum(len(w) + 1 for w in words)
    assert X.shape == (M, block_size)
    assert Y.shape == (M,)
    assert int(np.count_nonzero(Y == 0)) == len(words)  # each word ends with '.'


def test_build_dataset_empty_word() -> None:
    X, Y = build_dataset([""], 3, STOI_AB)
    np.testing.assert_array_equal(X, np.zeros((1, 3), dtype=np.int64))
    np.testing.assert_array_equal(Y, np.array([0]))


@pytest.mark.parametrize("block_size", [1, 3, 5])
def test_build_dataset_no_words(block_size: int) -> None:
    X, Y = build_dataset([], block_size, STOI_AB)
    assert X.shape == (0, block_size)
    assert Y.shape == (0,)
    assert X.dtype == np.int64
    assert Y.dtype == np.int64


def test_build_dataset_unknown_character_names_word_and_char() -> None:
    with pytest.raises(ValueError, match="not in the vocabulary") as excinfo:
        build_dataset(["ab", "abz"], 3, STOI_AB)
    message = str(excinfo.value)
    assert "'abz'" in message
    assert "'z'" in message


def test_build_dataset_uppercase_is_outside_lowercase_vocab() -> None:
    stoi, _ = build_vocab(list(string.ascii_lowercase))
    with pytest.raises(ValueError, match=r"'Emma'.*'E'"):
        build_dataset(["emma", "Emma"], 3, stoi)


@pytest.mark.parametrize("block_size", [0, -1, 2.0, True, False, "3", None])
def test_build_dataset_bad_block_size(block_size: Any) -> None:
    with pytest.raises(ValueError, match="block_size"):
        build_dataset(["ab"], block_size, STOI_AB)


def test_build_dataset_numpy_int_block_size() -> None:
    X, Y = build_dataset(["ab"], np.int64(2), STOI_AB)
    X2, Y2 = build_dataset(["ab"], 2, STOI_AB)
    assert np.array_equal(X, X2) and np.array_equal(Y, Y2)


def test_build_dataset_rejects_end_token_inside_a_word() -> None:
    # '.' is in stoi (it is the end token), but inside a word it would end the word early
    with pytest.raises(ValueError, match=r"'a\.b'.*'\.'"):
        build_dataset(["ab", "a.b"], 1, STOI_AB)


# ----------------------------------------------------------------------------- read_words


def test_read_words_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_text("emma\n\nolivia\n   \n\tava\nsophia  \n\n", encoding="utf-8")
    assert read_words(path) == ["emma", "olivia", "ava", "sophia"]


def test_read_words_crlf_and_no_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_bytes(b"emma\r\nolivia\r\n\r\nava")
    assert read_words(path) == ["emma", "olivia", "ava"]


def test_read_words_accepts_str_path(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_text("mia\n", encoding="utf-8")
    assert read_words(str(path)) == ["mia"]


def test_read_words_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError) as excinfo:
        read_words(path)
    assert "missing.txt" in str(excinfo.value)


def test_read_words_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("emma\nzoé\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8") as excinfo:
        read_words(path)
    assert "latin1.txt" in str(excinfo.value)


@pytest.mark.parametrize("content", ["", "\n\n", "  \n\t\n"])
def test_read_words_no_words(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="holds no words") as excinfo:
        read_words(path)
    assert "empty.txt" in str(excinfo.value)


# ----------------------------------------------------------------------------- split_words


def _words(n: int) -> list[str]:
    """n distinct lowercase words of four letters (n <= 26**4), in order: aaaa, aaab, ..."""
    letters = string.ascii_lowercase
    return ["".join(letters[i // 26**k % 26] for k in (3, 2, 1, 0)) for i in range(n)]


@pytest.mark.parametrize(
    ("n", "sizes"),
    [(100, (80, 10, 10)), (1000, (800, 100, 100)), (37, (29, 4, 4)), (32033, (25626, 3203, 3204))],
)
def test_split_words_sizes(n: int, sizes: tuple[int, int, int]) -> None:
    train, dev, test = split_words(_words(n))
    assert (len(train), len(dev), len(test)) == sizes
    assert sizes == (int(0.8 * n), int(0.9 * n) - int(0.8 * n), n - int(0.9 * n))


def test_split_words_deterministic() -> None:
    words = _words(500)
    assert split_words(words) == split_words(words)
    assert split_words(words, seed=7) == split_words(words, seed=7)
    assert split_words(words, seed=7) != split_words(words)


def test_split_words_as_the_lecture() -> None:
    words = _words(500)
    shuffled = list(words)
    random.Random(42).shuffle(shuffled)  # the lecture: random.seed(42); random.shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    assert split_words(words) == (shuffled[:n1], shuffled[n1:n2], shuffled[n2:])


def test_split_words_disjoint_and_covering() -> None:
    words = _words(500)
    train, dev, test = split_words(words)
    assert not set(train) & set(dev)
    assert not set(train) & set(test)
    assert not set(dev) & set(test)
    assert sorted(train + dev + test) == sorted(words)
    assert train + dev + test != words  # shuffled, not sliced in order


def test_split_words_does_not_shuffle_callers_list() -> None:
    words = _words(200)
    before = list(words)
    split_words(words)
    assert words == before


def test_split_words_accepts_tuple() -> None:
    words = _words(50)
    assert split_words(tuple(words)) == split_words(words)


def test_split_words_leaves_global_random_state() -> None:
    random.seed(1234)
    state = random.getstate()
    expected_next = random.random()
    random.setstate(state)
    split_words(_words(300))
    assert random.getstate() == state
    assert random.random() == expected_next


def test_split_words_empty() -> None:
    assert split_words([]) == ([], [], [])
