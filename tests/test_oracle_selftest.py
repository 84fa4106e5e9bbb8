"""The oracle harness tested: every deliberately wrong op below must be rejected by ``check_op`` (and bad
comparisons by ``assert_close``), and the right ops beside them must pass. A harness that accepted
everything would fail here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import tinyops

from .oracle import Array, Case, OpSpec, assert_close, check_op
from .test_oracle import SPECS

SPEC = {s.name: s for s in SPECS}
rng = np.random.default_rng(17)
ROWS32 = rng.uniform(-3, 3, (6, 8)).astype(np.float32)
ROWS64 = rng.uniform(-3, 3, (6, 8))
TARGET = rng.integers(0, 8, 6)


def cases_for(name: str) -> list[Case]:
    if name == "cross_entropy":
        return [Case((x, TARGET), {"reduction": r}, 3) for x in (ROWS32, ROWS64) for r in ("mean", "none")]
    return [Case((x,), {"axis": -1}, 3) for x in (ROWS32, ROWS64)]


def with_forward(spec: OpSpec, wrap: Callable[[Any], Any]) -> OpSpec:
    """The spec with its forward's output passed through ``wrap`` (the cache untouched)."""

    def forward(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        out, cache = spec.forward(*args, **kwargs)
        return wrap(out), cache

    return dataclasses.replace(spec, forward=forward)


def with_backward(spec: OpSpec, wrap: Callable[[Any, Any], Any]) -> OpSpec:
    """The spec with its backward's gradient passed through ``wrap(dx, dout)``."""

    def backward(dout: Any, cache: Any) -> Any:
        return wrap(spec.backward(dout, cache), dout)

    return dataclasses.replace(spec, backward=backward)


def with_shape_bug(spec: OpSpec) -> OpSpec:
    """A forward whose output has an extra trailing axis, with a backward that accepts it."""

    def backward(dout: Any, cache: Any) -> Any:
        return spec.backward(dout[..., 0], cache)

    return dataclasses.replace(with_forward(spec, lambda y: y[..., None]), backward=backward)


def _nudge(a: Array, rel: float) -> Array:
    return (a * (1 + rel)).astype(a.dtype)


def _float32_softmax(x: Any, axis: Any = -1, **_: Any) -> tuple[Array, Any]:
    """softmax computed in the input's dtype (float32): the textbook max-shift, no wider type. Its
    backward is the library's, so only the forward's accuracy differs."""
    _, cache = tinyops.softmax_forward(x, axis=axis)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True), cache


WRONG: list[tuple[str, str, Callable[[OpSpec], OpSpec]]] = [
    # (op, what is wrong, the wrong spec)
    ("softmax", "forward off by 1e-4 relative", lambda s: with_forward(s, lambda y: _nudge(y, 1e-4))),
    ("softmax", "forward in float32 (float32 inputs)", lambda s: dataclasses.replace(s, forward=_float32_softmax)),
    ("softmax", "backward off by 1e-4 relative", lambda s: with_backward(s, lambda g, _: _nudge(g, 1e-4))),
    ("softmax", "backward missing the sum term", lambda s: with_backward(s, lambda g, d: g + 0 * d + 1e-3)),
    ("softmax", "forward in float64 for float32 input", lambda s: with_forward(s, lambda y: y.astype(np.float64))),
    ("softmax", "gradient in float64", lambda s: with_backward(s, lambda g, _: g.astype(np.float64))),
    ("softmax", "forward with an extra axis", lambda s: with_shape_bug(s)),
    ("softmax", "gradient of the wrong shape", lambda s: with_backward(s, lambda g, _: g[:, :-1])),
    ("softmax", "gradient is dout itself", lambda s: with_backward(s, lambda g, d: d)),
    ("softmax", "backward writes into dout", lambda s: with_backward(s, lambda g, d: np.multiply(d, 1, out=d))),
    ("cross_entropy", "loss off by 1e-5 relative", lambda s: with_forward(s, lambda y: _nudge(y, 1e-5))),
    ("cross_entropy", "gradient off by 1e-5 relative", lambda s: with_backward(s, lambda g, _: _nudge(g, 1e-5))),
    ("cross_entropy", "gradient transposed rows", lambda s: with_backward(s, lambda g, _: g[::-1].copy())),
    ("logsumexp", "forward off by 1e-6 absolute", lambda s: with_forward(s, lambda y: y + y.dtype.type(1e-6))),
    ("log_softmax", "gradient off by 1e-4 relative", lambda s: with_backward(s, lambda g, _: _nudge(g, 1e-4))),
]


@pytest.mark.parametrize(("name", "what", "make"), WRONG, ids=[f"{n}: {w}" for n, w, _ in WRONG])
def test_a_wrong_op_is_rejected(name: str, what: str, make: Callable[[OpSpec], OpSpec]) -> None:
    wrong = make(SPEC[name])
    failures = 0
    for case in cases_for(name):
        with np.errstate(all="ignore"):
            try:
                check_op(wrong, case, {"backend": "reference"})
            except AssertionError:
                failures += 1
    assert failures, f"check_op accepted {name} with {what}"


@pytest.mark.parametrize("name", sorted({n for n, _, _ in WRONG}))
def test_the_right_op_passes(name: str) -> None:
    """The control: the same cases pass with the op as it is, on both backends."""
    for case in cases_for(name):
        for backend in ("reference", "compiled"):
            check_op(SPEC[name], case, {"backend": backend})


# An op whose result equals its input: the harness must notice an output that IS the input (or a view).
def _identity_spec(forward: Callable[..., Any], backward: Callable[..., Any]) -> OpSpec:
    return OpSpec("identity", forward, backward, lambda x: x * 1.0, None, None, fwd_k={"float64": 1},
                  bwd_k={"float64": 1}, bwd_scale=lambda r: (np.abs(r.grads[0]),))


def _copy_forward(x: Array) -> tuple[Array, None]:
    return x.copy(), None


def _copy_backward(dout: Array, cache: None) -> Array:
    return dout.copy()


ALIASING = [
    ("output is the input", _identity_spec(lambda x: (x, None), _copy_backward)),
    ("output is a view of the input", _identity_spec(lambda x: (x.reshape(x.shape), None), _copy_backward)),
    ("gradient is dout", _identity_spec(_copy_forward, lambda dout, cache: dout)),
    ("gradient is a view of dout", _identity_spec(_copy_forward, lambda dout, cache: dout[...])),
    ("forward writes into its input", _identity_spec(lambda x: (np.add(x, 0.5, out=x) - 0.5, None),
                                                     _copy_backward)),
]


def test_the_identity_control_passes() -> None:
    check_op(_identity_spec(_copy_forward, _copy_backward), Case((ROWS64,), {}, 1))


@pytest.mark.parametrize(("what", "spec"), ALIASING, ids=[w for w, _ in ALIASING])
def test_aliasing_is_rejected(what: str, spec: OpSpec) -> None:
    with pytest.raises(AssertionError, match=r"alias|wrote"):
        check_op(spec, Case((ROWS64.copy(),), {}, 1))


# ----------------------------------------------------------------------------- assert_close itself


def test_assert_close_accepts_within_and_rejects_beyond_the_tolerance() -> None:
    ref = np.array([1.0, -2.0, 3.0])
    assert_close("x", ref + 1e-9, ref, 1e-8)
    with pytest.raises(AssertionError, match="out of tolerance"):
        assert_close("x", ref + 1e-7, ref, 1e-8)
    with pytest.raises(AssertionError, match="out of tolerance"):  # one element is enough
        assert_close("x", ref + np.array([0.0, 0.0, 1e-7]), ref, 1e-8)


@pytest.mark.parametrize(
    ("ours", "ref", "match"),
    [
        ([1.0, np.nan], [1.0, 2.0], "nan"),  # a nan where the reference is finite
        ([1.0, 2.0], [1.0, np.nan], "nan"),  # a finite value where the reference is nan
        ([1.0, np.inf], [1.0, -np.inf], "infinities"),
        ([1.0, 5.0], [1.0, np.inf], "infinities"),
        ([1.0, 2.0, 3.0], [1.0, 2.0], "shape"),
        ([[1.0, 2.0]], [1.0, 2.0], "shape"),
    ],
)
def test_assert_close_rejects_mismatched_specials_and_shapes(ours: Any, ref: Any, match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        assert_close("x", np.array(ours), np.array(ref), 1.0)


def test_assert_close_reports_the_used_fraction() -> None:
    used = assert_close("x", np.array([1.0, 2.0 + 5e-9]), np.array([1.0, 2.0]), 1e-8)
    assert used == pytest.approx(0.5, rel=1e-6)


def test_the_torch_reference_is_float64_autograd() -> None:
    """The oracle's reference runs torch in float64: a float32 case's reference equals torch's float64
    softmax of the upcast input, not torch's float32 one."""
    x = ROWS32[:1]
    expected = torch.softmax(torch.tensor(x, dtype=torch.float64), dim=-1).numpy()
    from .oracle import torch_reference

    ref = torch_reference(SPEC["softmax"], Case((x,), {"axis": -1}, 0), np.ones_like(x))
    assert ref.out.dtype == np.float64 and np.array_equal(ref.out, expected)
