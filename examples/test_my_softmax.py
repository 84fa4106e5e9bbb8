"""Test your own softmax and cross-entropy for accuracy: copy this file next to your code and edit two lines.

Run it with ``pytest examples/test_my_softmax.py``. It needs tinyops with its ``test`` extra (mpmath,
hypothesis). ``my_softmax`` and ``my_cross_entropy`` below stand for yours: replace them with an import.

Each test draws logits from one of tinyops' hard regions (confident rows, near ties, wide and tiny
scales, +-1e4 offsets, -inf masks, the exp overflow and underflow thresholds, ...), computes the exact
answer with mpmath, and asserts the error in ULPs. On failure, hypothesis shrinks the input and
``assert_ulp_close`` names the worst entry, its error, the computed and the exact value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from tinyops.testing import assert_ulp_close, exact
from tinyops.testing import strategies as ts


def my_softmax(x: Any) -> Any:
    """Yours goes here: the max-shifted softmax over the last axis, in float64 inside."""
    z = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(x.dtype)


def my_cross_entropy(logits: Any, target: Any) -> Any:
    """Yours goes here: per-sample loss, ``m - x[t] + log(sum(exp(x - m)))`` in float64 inside."""
    x = logits.astype(np.float64)
    m = x.max(axis=-1)
    lse = m + np.log(np.exp(x - m[:, None]).sum(axis=-1))
    return (lse - x[np.arange(len(target)), target]).astype(logits.dtype)


@settings(max_examples=50, deadline=None)
@given(ts.hard_logits(dtype=np.float32, target=False))
def test_softmax_within_2_ulp(x: Any) -> None:
    assert_ulp_close(my_softmax(x), exact.softmax(x), 2, name="my_softmax")


@settings(max_examples=50, deadline=None)
@given(ts.benign(dtype=np.float32))
def test_cross_entropy_within_2_ulp_on_benign_rows(case: Any) -> None:
    logits, target = case
    assert_ulp_close(my_cross_entropy(logits, target), exact.cross_entropy(logits, target), 2, name="loss")


# A confident prediction is where most cross-entropies lose every digit: lse - x[t] cancels once the loss
# is below the rounding of lse (float64 inside only moves the threshold). The textbook formula above fails
# here, so the test is marked as an expected failure; a loss of (m - x[t]) + log1p(sum_{j != t} exp(x_j - m))
# passes it (docs/accuracy.md, "Where the error comes from").
@pytest.mark.xfail(strict=True, reason="lse - x[t] cancels on confident rows; log1p keeps the digits")
@settings(max_examples=50, deadline=None)
@given(ts.confident(dtype=np.float32))
def test_cross_entropy_within_2_ulp_on_confident_rows(case: Any) -> None:
    logits, target = case
    assert_ulp_close(my_cross_entropy(logits, target), exact.cross_entropy(logits, target), 2, name="loss")
