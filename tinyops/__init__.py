"""tinyops: the ops of the makemore MLP, each with a hand-derived backward next to its forward.

Every op is a pair of pure functions, ``<op>_forward(inputs..., *, options) -> (out, cache)`` and
``<op>_backward(dout, cache) -> grads``, plus a plain value function where a value is what one wants.
A backward returns one array when its forward has one differentiable input, and otherwise a tuple with
one gradient per differentiable input, in the forward's order (None for an optional input not given).

Two layers compute the ops: the reference (:mod:`tinyops.ops`, plain NumPy, the formulas the derivations
quote) and the compiled kernels (:mod:`tinyops.kernels`, numba). An op that has a compiled kernel takes
``backend='compiled'`` (its default) or ``backend='reference'``; the cache remembers which, so the backward
runs on the same layer.

The rest of the package is reached as attributes too (``tinyops.data``, ``tinyops.mlp``, ``tinyops.train``,
``tinyops.testing``, ``tinyops.audit``, ``tinyops.exercises``, ...), each imported on first use, so that
``import tinyops`` itself loads NumPy only.
"""

import importlib
from typing import Any

from .gradcheck import Comparison, GradcheckResult, InputCheck, compare, format_comparisons, gradcheck
from .ops.batchnorm import (
    BatchNormCache,
    BatchNormStats,
    batchnorm1d,
    batchnorm1d_backward,
    batchnorm1d_forward,
    batchnorm1d_stats,
)
from .ops.cross_entropy import (
    CrossEntropyCache,
    CrossEntropyNaiveCache,
    cross_entropy,
    cross_entropy_backward,
    cross_entropy_forward,
    cross_entropy_naive,
    cross_entropy_naive_backward,
    cross_entropy_naive_forward,
)
from .ops.embedding import EmbeddingCache, embedding, embedding_backward, embedding_forward, embedding_renorm
from .ops.linear import LinearCache, linear, linear_backward, linear_forward
from .ops.linear_cross_entropy import (
    LinearCrossEntropyCache,
    linear_cross_entropy,
    linear_cross_entropy_backward,
    linear_cross_entropy_forward,
)
from .ops.softmax import (
    LogSoftmaxCache,
    LogsumexpCache,
    SoftmaxCache,
    log_softmax,
    log_softmax_backward,
    log_softmax_forward,
    logsumexp,
    logsumexp_backward,
    logsumexp_forward,
    softmax,
    softmax_backward,
    softmax_forward,
    softmax_naive,
    softmax_naive_backward,
    softmax_naive_forward,
)
from .ops.tanh import TanhCache, tanh, tanh_backward, tanh_forward

__version__ = "0.1.0"

SUBMODULES = ("audit", "check", "cli", "data", "exercises", "kernels", "mlp", "ops", "runs", "testing", "train")


def __getattr__(name: str) -> Any:
    """``tinyops.<submodule>``, imported the first time it is asked for."""
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tinyops' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *SUBMODULES])

__all__ = [
    "BatchNormCache",
    "BatchNormStats",
    "Comparison",
    "CrossEntropyCache",
    "CrossEntropyNaiveCache",
    "EmbeddingCache",
    "GradcheckResult",
    "InputCheck",
    "LinearCache",
    "LinearCrossEntropyCache",
    "LogSoftmaxCache",
    "LogsumexpCache",
    "SoftmaxCache",
    "TanhCache",
    "batchnorm1d",
    "batchnorm1d_backward",
    "batchnorm1d_forward",
    "batchnorm1d_stats",
    "compare",
    "cross_entropy",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "cross_entropy_naive",
    "cross_entropy_naive_backward",
    "cross_entropy_naive_forward",
    "embedding",
    "embedding_backward",
    "embedding_forward",
    "embedding_renorm",
    "format_comparisons",
    "gradcheck",
    "linear",
    "linear_backward",
    "linear_cross_entropy",
    "linear_cross_entropy_backward",
    "linear_cross_entropy_forward",
    "linear_forward",
    "log_softmax",
    "log_softmax_backward",
    "log_softmax_forward",
    "logsumexp",
    "logsumexp_backward",
    "logsumexp_forward",
    "softmax",
    "softmax_backward",
    "softmax_forward",
    "softmax_naive",
    "softmax_naive_backward",
    "softmax_naive_forward",
    "tanh",
    "tanh_backward",
    "tanh_forward",
]
