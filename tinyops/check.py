"""``tinyops check``: the float64 gradcheck of every op, printed as a ``compare`` table. Needs no torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .gradcheck import GradcheckResult, compare, format_comparisons, gradcheck
from .ops import batchnorm as bn
from .ops import cross_entropy as ce
from .ops import embedding as emb
from .ops import linear as lin
from .ops import linear_cross_entropy as lce
from .ops import softmax as sm
from .ops import tanh as th


@dataclass(frozen=True)
class CheckCase:
    name: str
    forward: Callable[..., tuple[Any, Any]]
    backward: Callable[[Any, Any], Any]
    make_inputs: Callable[[np.random.Generator], list[Any]]
    kwargs: dict[str, Any] = field(default_factory=dict)


def _logits(rng: np.random.Generator) -> list[Any]:
    return [rng.normal(0.0, 3.0, (5, 7)), np.array([0, 6, 3, 3, 1])]


_WEIGHT = np.linspace(0.5, 2.0, 7)  # (C,) class weights, none equal to 1
_PROBS = np.random.default_rng(7).dirichlet(np.ones(7), size=(2, 3)).transpose(0, 2, 1)  # (N, C, d1) = (2, 7, 3)


def _logits_ignored(rng: np.random.Generator) -> list[Any]:
    return [rng.normal(0.0, 3.0, (5, 7)), np.array([0, 6, -100, 3, 1])]


def _batchnorm(x: Any, weight: Any, bias: Any, **kwargs: Any) -> tuple[Any, Any]:
    """batchnorm1d_forward without its third result, the new running statistics (they get no gradient)."""
    out, cache, _ = bn.batchnorm1d_forward(x, weight, bias, **kwargs)
    return out, cache


def _bn_inputs(shape: tuple[int, ...]) -> Callable[[np.random.Generator], list[Any]]:
    C = shape[1]
    return lambda r: [r.normal(1.0, 2.0, shape), r.normal(1.0, 0.3, C), r.normal(0.0, 0.5, C)]


_BN_EVAL = bn.BatchNormStats(np.linspace(-0.5, 0.5, 4), np.linspace(0.5, 2.0, 4), 10)


CASES: tuple[CheckCase, ...] = (
    # repeated indices (1 twice, 4 three times) exercise the scatter-add
    CheckCase("embedding", emb.embedding_forward, emb.embedding_backward,
              lambda r: [r.normal(size=(6, 3)), np.array([[1, 4, 4], [0, 1, 4]])]),
    CheckCase("linear", lin.linear_forward, lin.linear_backward,
              lambda r: [r.normal(size=(2, 3, 4)), r.normal(size=(4, 5)), r.normal(size=5)]),
    CheckCase("linear (no bias)", lin.linear_forward, lin.linear_backward,
              lambda r: [r.normal(size=(3, 4)), r.normal(size=(4, 2))]),
    CheckCase("tanh", th.tanh_forward, th.tanh_backward, lambda r: [r.normal(0.0, 1.5, (4, 5))]),
    CheckCase("batchnorm1d (training)", _batchnorm, bn.batchnorm1d_backward, _bn_inputs((6, 4))),
    CheckCase("batchnorm1d (training, unbiased, (N, C, L))", _batchnorm, bn.batchnorm1d_backward,
              _bn_inputs((3, 4, 5)), {"unbiased": True}),
    CheckCase("batchnorm1d (eval)", _batchnorm, bn.batchnorm1d_backward, _bn_inputs((6, 4)),
              {"running": _BN_EVAL, "training": False}),
    CheckCase("logsumexp", sm.logsumexp_forward, sm.logsumexp_backward,
              lambda r: [r.normal(0.0, 3.0, (4, 6))]),
    CheckCase("logsumexp (axis 0, keepdims)", sm.logsumexp_forward, sm.logsumexp_backward,
              lambda r: [r.normal(0.0, 3.0, (4, 6))], {"axis": 0, "keepdims": True}),
    CheckCase("softmax", sm.softmax_forward, sm.softmax_backward, lambda r: [r.normal(0.0, 3.0, (4, 6))]),
    CheckCase("softmax_naive", sm.softmax_naive_forward, sm.softmax_naive_backward,
              lambda r: [r.normal(0.0, 3.0, (4, 6))]),
    CheckCase("log_softmax", sm.log_softmax_forward, sm.log_softmax_backward,
              lambda r: [r.normal(0.0, 3.0, (4, 6))]),
    *(
        CheckCase(f"cross_entropy ({red})", ce.cross_entropy_forward, ce.cross_entropy_backward, _logits,
                  {"reduction": red})
        for red in ("mean", "sum", "none")
    ),
    CheckCase("cross_entropy (weight, ignore_index, label_smoothing)", ce.cross_entropy_forward,
              ce.cross_entropy_backward, _logits_ignored, {"weight": _WEIGHT, "label_smoothing": 0.2}),
    CheckCase("cross_entropy (probability targets, (N, C, d1))", ce.cross_entropy_forward,
              ce.cross_entropy_backward, lambda r: [r.normal(0.0, 3.0, (2, 7, 3))],
              {"target": _PROBS, "weight": _WEIGHT, "label_smoothing": 0.1}),
    *(
        CheckCase(f"linear_cross_entropy ({red}, chunks of 3 rows)", lce.linear_cross_entropy_forward,
                  lce.linear_cross_entropy_backward,
                  lambda r: [r.normal(size=(7, 5)), r.normal(size=(5, 9)), np.array([0, 8, 3, 3, 1, 2, 5]),
                             r.normal(size=9)], {"reduction": red, "chunk_size": 3})
        for red in ("mean", "none")
    ),
    *(
        CheckCase(f"cross_entropy_naive ({red})", ce.cross_entropy_naive_forward,
                  ce.cross_entropy_naive_backward, _logits, {"reduction": red})
        for red in ("mean", "sum", "none")
    ),
)


def run_checks(seed: int = 0) -> list[tuple[CheckCase, GradcheckResult]]:
    """Gradcheck every case on fresh float64 inputs drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [(case, gradcheck(case.forward, case.make_inputs(rng), case.backward, kwargs=case.kwargs,
                             seed=seed)) for case in CASES]


def main(seed: int = 0) -> int:
    """Print the table; return 0 when every gradient passes, 1 otherwise."""
    results = run_checks(seed)
    rows, flags = [], []
    for case, result in results:
        for c in result.inputs:
            rows.append(compare(f"{case.name}: d{c.name}", c.analytic, c.numeric))
            flags.append(c.passed)
    print("gradcheck of every op: hand-derived backward vs float64 central differences,")
    print("contracted with a random upstream gradient (approximate = allclose(rtol=1e-5, atol=1e-8))\n")
    lines = format_comparisons(rows).splitlines()
    width = max(len(line) for line in lines)
    for line, ok in zip(lines, flags, strict=True):
        print(f"{line:{width}s}  {'ok' if ok else 'FAIL'}")
    failed = sum(not ok for ok in flags)
    print(f"\n{len(flags) - failed} passed, {failed} failed")
    return 1 if failed else 0
