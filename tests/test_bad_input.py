"""Bad input stops at the public function with an error that names the argument and the offending value.

(That no op writes into its inputs, ``dout`` or the cache, and that no output aliases an array the
caller holds, is checked on every drawn example by the oracle harness, tests/oracle.py.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import tinyops

from .oracle import arrays_in

Array = npt.NDArray[Any]

_rng = np.random.default_rng(1234)

# N = 5 rows, C = 27 classes (the makemore vocabulary)
N, C = 5, 27
LOGITS = _rng.normal(0.0, 2.0, (N, C)).astype(np.float32)
TARGET = np.array([0, 26, 3, 3, 11])

# embedding: V = 6 rows of D = 4, looked up by a (2, 3) index
EMB_W = _rng.normal(size=(6, 4)).astype(np.float32)
EMB_IDX = np.array([[1, 5, 5], [0, 2, 4]])

# linear: (3, 4) @ (4, 2) + (2,)
LIN_X = _rng.normal(size=(3, 4)).astype(np.float32)
LIN_W = _rng.normal(size=(4, 2)).astype(np.float32)
LIN_B = _rng.normal(size=2).astype(np.float32)

# the softmax family and tanh: a (3, 4) input
SM_X = _rng.normal(0.0, 2.0, (3, 4)).astype(np.float32)

_, TANH_CACHE = tinyops.tanh_forward(SM_X)
_, EMB_CACHE = tinyops.embedding_forward(EMB_W, EMB_IDX)  # out (2, 3, 4)
_, LIN_CACHE = tinyops.linear_forward(LIN_X, LIN_W, LIN_B)  # out (3, 2)

LOSSES: dict[str, tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = {
    "cross_entropy": (tinyops.cross_entropy, tinyops.cross_entropy_forward, tinyops.cross_entropy_backward),
    "cross_entropy_naive": (
        tinyops.cross_entropy_naive,
        tinyops.cross_entropy_naive_forward,
        tinyops.cross_entropy_naive_backward,
    ),
}
SOFTMAX_FAMILY: dict[str, tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = {
    "logsumexp": (tinyops.logsumexp, tinyops.logsumexp_forward, tinyops.logsumexp_backward),
    "softmax": (tinyops.softmax, tinyops.softmax_forward, tinyops.softmax_backward),
    "softmax_naive": (tinyops.softmax_naive, tinyops.softmax_naive_forward, tinyops.softmax_naive_backward),
    "log_softmax": (tinyops.log_softmax, tinyops.log_softmax_forward, tinyops.log_softmax_backward),
}


def _loss_rows() -> Iterator[Any]:
    """Rows that apply to both cross-entropy ops, one row per op."""
    for name, (fn, fwd, bwd) in LOSSES.items():
        _, mean_cache = fwd(LOGITS, TARGET)  # loss is 0-D float32
        yield from [
            (f"{name}-target-eq-C", partial(fn, LOGITS, np.array([0, 1, 27, 2, 3])), IndexError,
             r"^target\b.*got 27$"),
            (f"{name}-target-negative", partial(fn, LOGITS, np.array([0, 1, -3, 2, 3])), IndexError,
             r"^target\b.*got -3$"),
            (f"{name}-target-bool", partial(fn, LOGITS, TARGET > 5), TypeError, r"^target\b.*bool"),
            (f"{name}-target-2d", partial(fn, LOGITS, TARGET[:, None]), ValueError,
             r"^target\b.*\(5, 1\)"),
            (f"{name}-logits-int", partial(fn, LOGITS.astype(np.int64), TARGET), TypeError,
             r"^logits\b.*int64"),
            (f"{name}-reduction-avg", partial(fn, LOGITS, TARGET, reduction="avg"), ValueError,
             r"^reduction\b.*'avg'"),
            pytest.param(
                f"{name}-backward-dloss-shape", partial(bwd, np.ones(N, np.float32) * 0.5, mean_cache),
                ValueError, r"\bdloss\b.*\(5,\)",
            ),
            pytest.param(
                f"{name}-backward-dloss-dtype", partial(bwd, np.array(0.5), mean_cache),
                TypeError, r"\bdloss\b.*float64",
            ),
        ]
    # the seed's naive chain: (N, C) logits and index targets only
    fn = tinyops.cross_entropy_naive
    yield from [
        ("cross_entropy_naive-target-float", partial(fn, LOGITS, TARGET.astype(np.float64)), TypeError,
         r"^target\b.*float64"),
        ("cross_entropy_naive-target-float-list", partial(fn, LOGITS, [0.0, 1.0, 2.0, 3.0, 4.0]), TypeError,
         r"^target\b.*float64"),
        ("cross_entropy_naive-logits-1d", partial(fn, LOGITS[0], TARGET), ValueError,
         r"^logits\b.*1-D.*\(27,\)"),
        ("cross_entropy_naive-logits-3d", partial(fn, LOGITS[None], TARGET), ValueError,
         r"^logits\b.*3-D.*\(1, 5, 27\)"),
        ("cross_entropy_naive-batch-mismatch", partial(fn, LOGITS, TARGET[:4]), ValueError,
         r"^target\b.*\b4\b.*logits\b.*\b5\b"),
    ]
    # the fused op: torch's options, probability targets, (C,) and (N, C, d1, ...) logits
    fn = tinyops.cross_entropy
    probs = np.full((N, C), 1 / C, np.float32)
    yield from [
        ("cross_entropy-probs-wrong-shape", partial(fn, LOGITS, TARGET.astype(np.float32)), ValueError,
         r"^probability target\b.*\(5, 27\).*\(5,\)"),
        ("cross_entropy-probs-list-wrong-shape", partial(fn, LOGITS, [0.0, 1.0, 2.0, 3.0, 4.0]), ValueError,
         r"^probability target\b.*\(5, 27\).*\(5,\)"),
        ("cross_entropy-probs-dtype", partial(fn, LOGITS, probs.astype(np.float64)), TypeError,
         r"^target\b.*float64.*logits\b.*float32"),
        ("cross_entropy-probs-ignore-index", partial(fn, LOGITS, probs, ignore_index=0), ValueError,
         r"^ignore_index \(0\).*probability targets"),
        ("cross_entropy-target-complex", partial(fn, LOGITS, TARGET.astype(np.complex64)), TypeError,
         r"^target\b.*complex64"),
        ("cross_entropy-target-str", partial(fn, LOGITS, "abc"), TypeError, r"^target\b.*str"),
        ("cross_entropy-logits-0d", partial(fn, np.float32(0.5), np.array(0)), ValueError, r"^logits\b.*0-D"),
        ("cross_entropy-unbatched-target-1d", partial(fn, LOGITS[0], TARGET), ValueError,
         r"^target must have shape \(\).*\(27,\).*got \(5,\)"),
        ("cross_entropy-kdim-target-shape", partial(fn, LOGITS[None], TARGET), ValueError,
         r"^target must have shape \(1, 27\).*\(1, 5, 27\).*got \(5,\)"),
        ("cross_entropy-batch-mismatch", partial(fn, LOGITS, TARGET[:4]), ValueError,
         r"^target must have shape \(5,\).*got \(4,\)"),
        ("cross_entropy-target-is-ignore-of-other", partial(fn, LOGITS, np.array([0, 1, -100, 2, 3]),
         ignore_index=-1), IndexError, r"^target\b.*ignore_index \(-1\), got -100$"),
        ("cross_entropy-target-eq-C-beside-ignored", partial(fn, LOGITS, np.array([0, -100, 27, 2, 3])),
         IndexError, r"^target\b.*got 27$"),
        ("cross_entropy-weight-length", partial(fn, LOGITS, TARGET, weight=np.ones(26, np.float32)), ValueError,
         r"^weight\b.*C = 27.*\(26,\)"),
        ("cross_entropy-weight-2d", partial(fn, LOGITS, TARGET, weight=np.ones((1, 27), np.float32)), ValueError,
         r"^weight\b.*2-D.*\(1, 27\)"),
        ("cross_entropy-weight-dtype", partial(fn, LOGITS, TARGET, weight=np.ones(27)), TypeError,
         r"^weight\b.*float64.*logits\b.*float32"),
        ("cross_entropy-weight-int", partial(fn, LOGITS, TARGET, weight=np.ones(27, np.int64)), TypeError,
         r"^weight\b.*int64"),
        ("cross_entropy-smoothing-negative", partial(fn, LOGITS, TARGET, label_smoothing=-0.1), ValueError,
         r"^label_smoothing\b.*\[0, 1\].*-0\.1"),
        ("cross_entropy-smoothing-above-1", partial(fn, LOGITS, TARGET, label_smoothing=1.5), ValueError,
         r"^label_smoothing\b.*1\.5"),
        ("cross_entropy-smoothing-nan", partial(fn, LOGITS, TARGET, label_smoothing=float("nan")), ValueError,
         r"^label_smoothing\b.*nan"),
        ("cross_entropy-smoothing-str", partial(fn, LOGITS, TARGET, label_smoothing="0.1"), TypeError,
         r"^label_smoothing\b.*'0\.1'"),
        ("cross_entropy-ignore-index-float", partial(fn, LOGITS, TARGET, ignore_index=-100.0), TypeError,
         r"^ignore_index\b.*float -100\.0"),
        ("cross_entropy-precision", partial(fn, LOGITS, TARGET, precision="exact"), ValueError,
         r"^precision\b.*'exact'"),
        ("cross_entropy-threads-0", partial(fn, LOGITS, TARGET, threads=0), ValueError, r"^threads\b.*\b0$"),
        ("cross_entropy-threads-float", partial(fn, LOGITS, TARGET, threads=2.0), ValueError,
         r"^threads\b.*2\.0"),
    ]


def _softmax_family_rows() -> Iterator[Any]:
    for name, (fn, fwd, bwd) in SOFTMAX_FAMILY.items():
        out, cache = fwd(SM_X)  # logsumexp: out (3,); the others: out (3, 4)
        wrong_shape = np.full((*out.shape[::-1], 2), 0.5, np.float32)
        yield from [
            (f"{name}-axis-too-big", partial(fn, SM_X, axis=5), ValueError, r"^axis 5\b"),
            (f"{name}-axis-too-negative", partial(fn, SM_X, axis=-3), ValueError, r"^axis -3\b"),
            (f"{name}-axis-repeated", partial(fn, SM_X, axis=(1, -1)), ValueError, r"^axis \(1, -1\)"),
            (f"{name}-axis-str", partial(fn, SM_X, axis="1"), TypeError, r"^axis\b.*'1'"),
            (f"{name}-axis-float", partial(fn, SM_X, axis=1.5), TypeError, r"^axis\b.*1\.5"),
            (f"{name}-axis-bool", partial(fn, SM_X, axis=True), TypeError, r"^axis\b.*True"),
            (f"{name}-x-int", partial(fn, SM_X.astype(np.int32)), TypeError, r"^x\b.*int32"),
            (f"{name}-backward-dout-shape", partial(bwd, wrong_shape, cache), ValueError,
             rf"^dout\b.*{re.escape(str(wrong_shape.shape))}"),
            (f"{name}-backward-dout-dtype", partial(bwd, out.astype(np.float64), cache), TypeError,
             r"^dout\b.*float64"),
        ]


ROWS: list[Any] = [
    *_loss_rows(),
    # ---------------------------------------------------------------- embedding (V = 6)
    ("embedding-idx-eq-V", partial(tinyops.embedding, EMB_W, np.array([[1, 6]])), IndexError,
     r"^idx\b.*got 6$"),
    ("embedding-idx-negative", partial(tinyops.embedding, EMB_W, np.array([[1, -2]])), IndexError,
     r"^idx\b.*got -2$"),
    ("embedding-idx-float", partial(tinyops.embedding, EMB_W, EMB_IDX.astype(np.float32)), TypeError,
     r"^idx\b.*float32"),
    ("embedding-idx-bool", partial(tinyops.embedding, EMB_W, EMB_IDX > 2), TypeError, r"^idx\b.*bool"),
    ("embedding-idx-bool-scalar", partial(tinyops.embedding, EMB_W, True), TypeError, r"^idx\b.*True"),
    ("embedding-weight-1d", partial(tinyops.embedding, EMB_W[0], EMB_IDX), ValueError,
     r"^weight\b.*1-D.*\(4,\)"),
    ("embedding-weight-3d", partial(tinyops.embedding, EMB_W[None], EMB_IDX), ValueError,
     r"^weight\b.*3-D.*\(1, 6, 4\)"),
    ("embedding-weight-int", partial(tinyops.embedding, EMB_W.astype(np.int64), EMB_IDX), TypeError,
     r"^weight\b.*int64"),
    ("embedding-padding-idx-eq-V", partial(tinyops.embedding, EMB_W, EMB_IDX, padding_idx=6), ValueError,
     r"^padding_idx\b.*\[-6, 6\).*got 6$"),
    ("embedding-padding-idx-below-minus-V", partial(tinyops.embedding, EMB_W, EMB_IDX, padding_idx=-7),
     ValueError, r"^padding_idx\b.*got -7$"),
    ("embedding-padding-idx-float", partial(tinyops.embedding, EMB_W, EMB_IDX, padding_idx=1.0), TypeError,
     r"^padding_idx\b.*float 1\.0"),
    ("embedding-renorm-max-norm-0", partial(tinyops.embedding_renorm, EMB_W, EMB_IDX, 0.0), ValueError,
     r"^max_norm\b.*0\.0"),
    ("embedding-renorm-norm-type-neg", partial(tinyops.embedding_renorm, EMB_W, EMB_IDX, 1.0, norm_type=-2),
     ValueError, r"^norm_type\b.*-2"),
    ("embedding-renorm-idx-eq-V", partial(tinyops.embedding_renorm, EMB_W, np.array([6]), 1.0), IndexError,
     r"^idx\b.*got 6$"),
    ("embedding-backward-dout-shape",
     partial(tinyops.embedding_backward, np.full((2, 3, 5), 0.5, np.float32), EMB_CACHE), ValueError,
     r"^dout\b.*\(2, 3, 4\).*\(2, 3, 5\)"),
    ("embedding-backward-dout-dtype",
     partial(tinyops.embedding_backward, np.full((2, 3, 4), 0.5), EMB_CACHE), TypeError,
     r"^dout\b.*float64"),
    # ---------------------------------------------------------------- linear: (3, 4) @ (4, 2) + (2,)
    ("linear-feature-mismatch", partial(tinyops.linear, LIN_X, LIN_W[:3]), ValueError,
     r"^x has 4 features.*weight\b.*\b3\b"),
    ("linear-bias-length", partial(tinyops.linear, LIN_X, LIN_W, np.ones(3, np.float32) * 0.5), ValueError,
     r"^bias\b.*\(3,\)"),
    ("linear-bias-2d", partial(tinyops.linear, LIN_X, LIN_W, LIN_B[None]), ValueError,
     r"^bias\b.*2-D.*\(1, 2\)"),
    ("linear-weight-1d", partial(tinyops.linear, LIN_X, LIN_W[:, 0]), ValueError,
     r"^weight\b.*1-D.*\(4,\)"),
    ("linear-weight-3d", partial(tinyops.linear, LIN_X, LIN_W[None]), ValueError,
     r"^weight\b.*3-D.*\(1, 4, 2\)"),
    ("linear-x-f32-weight-f64", partial(tinyops.linear, LIN_X, LIN_W.astype(np.float64)), TypeError,
     r"^weight\b.*float64.*\bx\b.*float32"),
    ("linear-bias-dtype", partial(tinyops.linear, LIN_X, LIN_W, LIN_B.astype(np.float64)), TypeError,
     r"^bias\b.*float64.*\bx\b.*float32"),
    ("linear-x-int", partial(tinyops.linear, LIN_X.astype(np.int64), LIN_W), TypeError, r"^x\b.*int64"),
    ("linear-x-0d", partial(tinyops.linear, np.float32(0.5), LIN_W), ValueError, r"^x\b.*0-D"),
    ("linear-backward-dout-shape",
     partial(tinyops.linear_backward, np.full((3, 4), 0.5, np.float32), LIN_CACHE), ValueError,
     r"^dout\b.*\(3, 2\).*\(3, 4\)"),
    ("linear-backward-dout-dtype",
     partial(tinyops.linear_backward, np.full((3, 2), 0.5), LIN_CACHE), TypeError, r"^dout\b.*float64"),
    # ---------------------------------------------------------------- tanh
    ("tanh-x-int", partial(tinyops.tanh, SM_X.astype(np.int64)), TypeError, r"^x\b.*int64"),
    ("tanh-x-bool", partial(tinyops.tanh, SM_X > 0), TypeError, r"^x\b.*bool"),
    ("tanh-backward-dout-shape",
     partial(tinyops.tanh_backward, np.full((4, 3), 0.5, np.float32), TANH_CACHE), ValueError,
     r"^dout\b.*\(3, 4\).*\(4, 3\)"),
    ("tanh-backward-dout-dtype",
     partial(tinyops.tanh_backward, np.full((3, 4), 0.5), TANH_CACHE), TypeError, r"^dout\b.*float64"),
    ("tanh-backward-dout-int",
     partial(tinyops.tanh_backward, np.full((3, 4), 2, np.int64), TANH_CACHE), TypeError, r"^dout\b.*int64"),
    # ---------------------------------------------------------------- softmax family
    *_softmax_family_rows(),
    # ---------------------------------------------------------------- subclasses, caches, dimensions, float16
    ("tanh-x-masked", partial(tinyops.tanh, np.ma.masked_array(SM_X, mask=SM_X > 1)), TypeError,
     r"^x is a masked array.*x\.filled\(.*x\.data"),
    ("logsumexp-x-masked", partial(tinyops.logsumexp, np.ma.masked_array(SM_X, mask=SM_X > 1)), TypeError,
     r"^x is a masked array"),
    ("linear-weight-masked", partial(tinyops.linear, LIN_X, np.ma.masked_array(LIN_W)), TypeError,
     r"^weight is a masked array"),
    ("embedding-idx-masked", partial(tinyops.embedding, EMB_W, np.ma.masked_array(EMB_IDX)), TypeError,
     r"^idx is a masked array"),
    ("cross_entropy-target-masked", partial(tinyops.cross_entropy, LOGITS, np.ma.masked_array(TARGET)), TypeError,
     r"^target is a masked array"),
    ("embedding-idx-64d", partial(tinyops.embedding, EMB_W, np.zeros((1,) * 64, np.int64)), ValueError,
     r"^idx must have at most 63 dimensions, got 64"),
    ("embedding-scale-grad-str", partial(tinyops.embedding, EMB_W, EMB_IDX, scale_grad_by_freq="no"), TypeError,
     r"^scale_grad_by_freq must be a bool, got str 'no'"),
    ("tanh-backward-linear-cache", partial(tinyops.tanh_backward, np.full((3, 2), 0.5, np.float32), LIN_CACHE),
     TypeError, r"^cache must be the TanhCache returned by tanh_forward, got LinearCache"),
    ("linear-backward-tanh-cache", partial(tinyops.linear_backward, np.full((3, 4), 0.5, np.float32), TANH_CACHE),
     TypeError, r"^cache must be the LinearCache returned by linear_forward, got TanhCache"),
    ("embedding-backward-tanh-cache",
     partial(tinyops.embedding_backward, np.full((3, 4), 0.5, np.float32), TANH_CACHE), TypeError,
     r"^cache must be the EmbeddingCache returned by embedding_forward, got TanhCache"),
    ("softmax-backward-log-softmax-cache",
     partial(tinyops.softmax_backward, np.full((3, 4), 0.5, np.float32), tinyops.log_softmax_forward(SM_X)[1]),
     TypeError, r"^cache must be the SoftmaxCache .*got LogSoftmaxCache"),
    ("log-softmax-backward-softmax-cache",
     partial(tinyops.log_softmax_backward, np.full((3, 4), 0.5, np.float32), tinyops.softmax_forward(SM_X)[1]),
     TypeError, r"^cache must be the LogSoftmaxCache .*got SoftmaxCache"),
    ("cross_entropy-backward-naive-cache",
     partial(tinyops.cross_entropy_backward, 1.0, tinyops.cross_entropy_naive_forward(LOGITS, TARGET)[1]),
     TypeError, r"^cache must be the CrossEntropyCache .*got CrossEntropyNaiveCache"),
    ("batchnorm-eps-0-training", partial(tinyops.batchnorm1d, SM_X, eps=0.0), ValueError,
     r"^eps must be > 0 in training.*got 0\.0"),
    ("linear_cross_entropy-float16",
     partial(tinyops.linear_cross_entropy, LIN_X.astype(np.float16), LIN_W.astype(np.float16), np.array([0, 1, 1])),
     TypeError, r"^x must be float32 or float64.*float16"),
    # ---------------------------------------------------------------- compare
    ("compare-shape-mismatch",
     partial(tinyops.compare, "dW1", np.full((2, 3), 0.5), np.full((3, 2), 0.5)), ValueError,
     r"^dW1\b.*ours\b.*\(2, 3\).*reference\b.*\(3, 2\)"),
]


def _row_id(row: Any) -> str:
    values = row.values if hasattr(row, "marks") else row  # a pytest.param or a plain tuple
    return str(values[0])


@pytest.mark.parametrize(("case_id", "call", "exc", "pattern"), ROWS, ids=[_row_id(r) for r in ROWS])
def test_bad_input_raises_naming_argument_and_value(
    case_id: str, call: Callable[[], object], exc: type[Exception], pattern: str
) -> None:
    with pytest.raises(exc, match=pattern):
        call()


def test_row_ids_are_unique() -> None:
    ids = [_row_id(r) for r in ROWS]
    assert len(ids) == len(set(ids))


# ============================================================================ no mutation, no aliasing


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_backward_accepts_python_float_without_touching_cache(name: str) -> None:
    _, fwd, bwd = LOSSES[name]
    logits = LOGITS.copy()
    _, cache = fwd(logits, TARGET)
    before = [a.copy() for a in arrays_in(cache)]
    first = bwd(0.75, cache)
    second = bwd(0.75, cache)
    assert first.dtype == np.float32
    assert np.array_equal(first, second)
    assert not np.shares_memory(first, second)
    for a, b in zip(arrays_in(cache), before, strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(logits, LOGITS)
