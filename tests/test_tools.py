"""The checking tools: ``gradcheck``, ``compare`` / ``format_comparisons``, and the ``tinyops check`` CLI."""

from __future__ import annotations

import inspect
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

import tinyops
import tinyops.check
import tinyops.cli
from tinyops.check import CheckCase

Array = npt.NDArray[Any]


def _normal(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> Array:
    return np.random.default_rng(seed).normal(0.0, scale, shape)


# ============================================================================ gradcheck: wrong formulas fail


def _tanh_backward_one_minus_out(dout: Array, cache: tinyops.TanhCache) -> Array:
    return (1 - cache.out) * dout  # wrong: should be 1 - out**2


def _tanh_backward_ignores_dout(dout: Array, cache: tinyops.TanhCache) -> Array:
    return 1 - cache.out**2  # right only when dout is all ones


def _softmax_backward_no_sum_term(dout: Array, cache: tinyops.SoftmaxCache) -> Array:
    return cache.out * dout  # wrong: drops the - sum(dout * y) term


def _cross_entropy_backward_ignores_dloss(dloss: Array, cache: tinyops.CrossEntropyCache) -> Array:
    return tinyops.cross_entropy_backward(1.0, cache)  # right only when dloss == 1


def _embedding_backward_buffered(dout: Array, cache: tinyops.EmbeddingCache) -> Array:
    idx, shape, dtype, *_ = cache
    dweight = np.zeros(shape, dtype=dtype)
    dweight[idx] += dout  # wrong: buffered fancy assignment keeps one of the repeated rows
    return dweight


def _linear_backward_dweight_transposed(dout: Array, cache: tinyops.LinearCache) -> tuple[Array, Array, Array | None]:
    dx, dweight, dbias = tinyops.linear_backward(dout, cache)
    return dx, dweight.T, dbias


def _linear_backward_dbias_doubled(dout: Array, cache: tinyops.LinearCache) -> tuple[Array, Array, Array | None]:
    dx, dweight, dbias = tinyops.linear_backward(dout, cache)
    assert dbias is not None
    return dx, dweight, 2 * dbias


def _linear_backward_no_dbias(dout: Array, cache: tinyops.LinearCache) -> tuple[Array, Array]:
    dx, dweight, _ = tinyops.linear_backward(dout, cache)
    return dx, dweight


def test_gradcheck_passes_correct_tanh() -> None:
    x = _normal(0, (4, 5), 1.5)
    result = tinyops.gradcheck(tinyops.tanh_forward, [x], tinyops.tanh_backward)
    assert result
    assert result.passed
    (check,) = result.inputs
    assert check.name == "x"
    assert check.passed
    assert check.max_abs_err < 1e-7
    assert check.analytic.shape == check.numeric.shape == x.shape
    assert check.analytic.dtype == check.numeric.dtype == np.float64
    assert "ok" in str(result)


@pytest.mark.parametrize(
    ("forward", "inputs", "backward"),
    [
        pytest.param(tinyops.tanh_forward, [_normal(1, (4, 5), 1.5)], _tanh_backward_one_minus_out,
                     id="tanh-1-minus-out"),
        pytest.param(tinyops.softmax_forward, [_normal(2, (3, 6), 2.0)], _softmax_backward_no_sum_term,
                     id="softmax-no-sum-term"),
        pytest.param(tinyops.embedding_forward, [_normal(3, (6, 3)), np.array([[1, 4, 4], [0, 1, 4]])],
                     _embedding_backward_buffered, id="embedding-buffered-scatter"),
    ],
)
def test_gradcheck_fails_wrong_backward(forward: Any, inputs: list[Any], backward: Any) -> None:
    result = tinyops.gradcheck(forward, inputs, backward)
    assert not result
    assert not result.passed
    assert not all(c.passed for c in result.inputs)
    assert "FAIL" in str(result)
    assert max(c.max_abs_err for c in result.inputs) > 1e-3


def test_gradcheck_flags_only_the_wrong_linear_gradient() -> None:
    # square weight, so a transposed dweight has the right shape and only its values are wrong
    inputs = [_normal(4, (3, 4)), _normal(5, (4, 4)), _normal(6, (4,))]
    good = tinyops.gradcheck(tinyops.linear_forward, inputs, tinyops.linear_backward)
    assert good
    assert [c.name for c in good.inputs] == ["x", "weight", "bias"]

    transposed = tinyops.gradcheck(tinyops.linear_forward, inputs, _linear_backward_dweight_transposed)
    assert {c.name: c.passed for c in transposed.inputs} == {"x": True, "weight": False, "bias": True}
    assert not transposed

    doubled = tinyops.gradcheck(tinyops.linear_forward, inputs, _linear_backward_dbias_doubled)
    assert {c.name: c.passed for c in doubled.inputs} == {"x": True, "weight": True, "bias": False}
    assert not doubled


def test_gradcheck_upstream_gradient_is_random_not_ones() -> None:
    x = _normal(7, (4, 5), 1.5)
    out, cache = tinyops.tanh_forward(x)
    ones = np.ones_like(out)
    # for an all-ones upstream gradient the wrong backward is indistinguishable from the right one ...
    np.testing.assert_allclose(_tanh_backward_ignores_dout(ones, cache), tinyops.tanh_backward(ones, cache))
    # ... and gradcheck still fails it
    result = tinyops.gradcheck(tinyops.tanh_forward, [x], _tanh_backward_ignores_dout)
    assert not result

    logits, target = _normal(8, (5, 7), 3.0), np.array([0, 6, 3, 3, 1])
    _, ce_cache = tinyops.cross_entropy_forward(logits, target)
    np.testing.assert_allclose(
        _cross_entropy_backward_ignores_dloss(np.asarray(1.0), ce_cache),
        tinyops.cross_entropy_backward(1.0, ce_cache),
    )
    assert not tinyops.gradcheck(tinyops.cross_entropy_forward, [logits, target], _cross_entropy_backward_ignores_dloss)
    assert tinyops.gradcheck(tinyops.cross_entropy_forward, [logits, target], tinyops.cross_entropy_backward)


def test_gradcheck_seed_changes_the_upstream_gradient() -> None:
    x = _normal(9, (3, 4), 1.5)
    a = tinyops.gradcheck(tinyops.tanh_forward, [x], tinyops.tanh_backward, seed=0).inputs[0]
    b = tinyops.gradcheck(tinyops.tanh_forward, [x], tinyops.tanh_backward, seed=1).inputs[0]
    assert a.passed and b.passed
    assert not np.allclose(a.analytic, b.analytic)


def test_gradcheck_names_come_from_forward_parameters() -> None:
    emb = tinyops.gradcheck(
        tinyops.embedding_forward, [_normal(10, (5, 3)), np.array([0, 4, 4])], tinyops.embedding_backward
    )
    assert [c.name for c in emb.inputs] == ["weight"]
    ce = tinyops.gradcheck(
        tinyops.cross_entropy_forward,
        [_normal(11, (4, 6), 2.0), np.array([5, 0, 2, 2])],
        tinyops.cross_entropy_backward,
        kwargs={"reduction": "sum"},
    )
    assert [c.name for c in ce.inputs] == ["logits"]
    assert ce


def test_gradcheck_passes_integer_inputs_through() -> None:
    target = np.array([2, 0, 5, 5])
    seen: list[Any] = []

    def forward(logits: Array, target: Any) -> tuple[Array, tinyops.CrossEntropyCache]:
        seen.append(target)
        return tinyops.cross_entropy_forward(logits, target, reduction="none")

    result = tinyops.gradcheck(forward, [_normal(12, (4, 6), 2.0), target], tinyops.cross_entropy_backward)
    assert result
    assert [c.name for c in result.inputs] == ["logits"]  # the target is not differentiated
    assert len(seen) == 1 + 2 * 4 * 6  # one forward for the cache, two per logit
    assert all(t is target for t in seen)  # the very same integer array, never converted
    assert target.dtype.kind == "i"
    assert np.array_equal(target, [2, 0, 5, 5])


def test_gradcheck_leaves_callers_float32_arrays_alone() -> None:
    x = _normal(13, (3, 4)).astype(np.float32)
    w = _normal(14, (4, 2)).astype(np.float32)
    b = _normal(15, (2,)).astype(np.float32)
    copies = [a.copy() for a in (x, w, b)]
    result = tinyops.gradcheck(tinyops.linear_forward, [x, w, b], tinyops.linear_backward)
    assert result
    for a, before in zip((x, w, b), copies, strict=True):
        assert a.dtype == np.float32
        assert np.array_equal(a, before)
        for c in result.inputs:
            assert not np.shares_memory(c.analytic, a)
            assert not np.shares_memory(c.numeric, a)


def test_gradcheck_wrong_number_of_gradients() -> None:
    inputs = [_normal(16, (3, 4)), _normal(17, (4, 2)), _normal(18, (2,))]
    with pytest.raises(ValueError, match=r"backward returned 2 gradient\(s\) for 3 floating input\(s\)"):
        tinyops.gradcheck(tinyops.linear_forward, inputs, _linear_backward_no_dbias)

    def tanh_two_grads(dout: Array, cache: tinyops.TanhCache) -> tuple[Array, Array]:
        dx = tinyops.tanh_backward(dout, cache)
        return dx, dx

    with pytest.raises(ValueError, match=r"backward returned 2 gradient\(s\) for 1 floating input\(s\)"):
        tinyops.gradcheck(tinyops.tanh_forward, [_normal(19, (3,))], tanh_two_grads)


def test_gradcheck_wrong_gradient_shape() -> None:
    def tanh_transposed(dout: Array, cache: tinyops.TanhCache) -> Array:
        return tinyops.tanh_backward(dout, cache).T

    with pytest.raises(ValueError, match=r"dx has shape \(4, 3\), expected \(3, 4\)"):
        tinyops.gradcheck(tinyops.tanh_forward, [_normal(20, (3, 4))], tanh_transposed)


def test_gradcheck_no_floating_input() -> None:
    with pytest.raises(ValueError, match="no floating ndarray"):
        tinyops.gradcheck(tinyops.tanh_forward, [np.arange(1, 4)], tinyops.tanh_backward)


def test_gradcheck_accepts_trailing_none_gradient() -> None:
    x, w = _normal(21, (3, 4)), _normal(22, (4, 2))
    out, cache = tinyops.linear_forward(x, w)
    assert tinyops.linear_backward(np.ones_like(out) * 0.5, cache)[2] is None
    result = tinyops.gradcheck(tinyops.linear_forward, [x, w], tinyops.linear_backward)
    assert result
    assert [c.name for c in result.inputs] == ["x", "weight"]
    # an explicit bias=None input is passed through as well
    result_none = tinyops.gradcheck(tinyops.linear_forward, [x, w, None], tinyops.linear_backward)
    assert [c.name for c in result_none.inputs] == ["x", "weight"]
    assert result_none


def test_gradcheck_catches_a_small_error_on_large_outputs() -> None:
    """Outputs near 1e6 (a large bias) with 4096 elements: differencing the contracted scalar sum(u * out)
    carries the rounding of the whole sum (about 1e-10 * 4096 * 1e6 / h), which buried a dx wrong by 1%
    (passed before); differenced per output element, only the 64 outputs a step moves add rounding."""
    rng = np.random.default_rng(40)
    x, w = rng.normal(size=(64, 3)), rng.normal(size=(3, 64))
    b = 1e6 + rng.normal(size=64)

    def dx_off_by_1_percent(dout: Array, cache: tinyops.LinearCache) -> tuple[Array, Array, Array | None]:
        dx, dweight, dbias = tinyops.linear_backward(dout, cache)
        return dx * 1.01, dweight, dbias

    wrong = tinyops.gradcheck(tinyops.linear_forward, [x, w, b], dx_off_by_1_percent)
    assert {c.name: c.passed for c in wrong.inputs} == {"x": False, "weight": True, "bias": True}
    right = tinyops.gradcheck(tinyops.linear_forward, [x, w, b], tinyops.linear_backward)
    assert right
    assert max(c.max_err_over_tol for c in right.inputs) < 0.1  # far from the edge, not a lucky pass


def test_gradcheck_outputs_the_step_does_not_move_add_no_noise() -> None:
    """An elementwise op with 2000 outputs near 1e4 (tanh shifted by 1e4): each step moves one output, so an
    entry's tolerance is that one output's rounding, and a dx wrong by 1e-4 relative is caught (it passed
    before: the contracted sum's rounding, from all 2000 outputs, was larger than the error)."""
    x = _normal(41, (40, 50), 2.0)

    def shifted_tanh_forward(x: Array) -> tuple[Array, tinyops.TanhCache]:
        out, cache = tinyops.tanh_forward(x)
        return out + 1e4, cache

    def tanh_off_by_1e4(dout: Array, cache: tinyops.TanhCache) -> Array:
        return tinyops.tanh_backward(dout, cache) * (1 + 1e-4)

    assert tinyops.gradcheck(shifted_tanh_forward, [x], tinyops.tanh_backward)
    assert not tinyops.gradcheck(shifted_tanh_forward, [x], tanh_off_by_1e4)


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_takes_a_forward_with_extra_results(training: bool) -> None:
    """batchnorm1d_forward returns (out, cache, new_running): the extra result is ignored (a raw unpacking
    error before)."""
    x, w, b = _normal(42, (6, 4)), _normal(43, (4,)) + 2.0, _normal(44, (4,))
    stats = tinyops.BatchNormStats(_normal(45, (4,)), 1.0 + np.abs(_normal(46, (4,))), 2)
    kwargs = {"running": stats, "training": training}
    result = tinyops.gradcheck(tinyops.batchnorm1d_forward, [x, w, b], tinyops.batchnorm1d_backward, kwargs=kwargs)
    assert result and [c.name for c in result.inputs] == ["x", "weight", "bias"]

    def dbias_doubled(dout: Array, cache: tinyops.BatchNormCache) -> Any:
        dx, dw, db = tinyops.batchnorm1d_backward(dout, cache)
        return dx, dw, 2 * db

    bad = tinyops.gradcheck(tinyops.batchnorm1d_forward, [x, w, b], dbias_doubled, kwargs=kwargs)
    assert {c.name: c.passed for c in bad.inputs} == {"x": True, "weight": True, "bias": False}


def test_gradcheck_says_what_the_forward_must_return() -> None:
    with pytest.raises(TypeError, match=r"^forward must return \(out, cache\) or \(out, cache, \*extra\).*ndarray"):
        tinyops.gradcheck(tinyops.tanh, [_normal(47, (3,))], tinyops.tanh_backward)


def test_gradcheck_refuses_a_masked_input() -> None:
    x = np.ma.masked_array(_normal(51, (2, 3)), mask=[[0, 1, 0], [0, 0, 0]])
    with pytest.raises(TypeError, match=r"^inputs\[0\] is a masked array"):
        tinyops.gradcheck(tinyops.tanh_forward, [x], tinyops.tanh_backward)


def test_gradcheck_passing_row_never_reads_as_a_failure() -> None:
    """A gradient entry that is 0 up to the noise (softmax at x = -80: 1e-35) read "max rel err 1.00e+00 ok"
    before. The relative error counts such entries against the tolerance: a pass is <= 2 rtol and err/tol <= 1."""
    x = np.array([[0.0, -80.0, 1.0], [2.0, 0.5, -60.0]])
    results = [
        tinyops.gradcheck(tinyops.softmax_forward, [x], tinyops.softmax_backward),
        tinyops.gradcheck(tinyops.log_softmax_forward, [x], tinyops.log_softmax_backward),
        tinyops.gradcheck(tinyops.cross_entropy_forward, [x, np.array([1, 2])], tinyops.cross_entropy_backward),
        tinyops.gradcheck(tinyops.embedding_forward, [_normal(48, (5, 3)), np.array([0, 0, 2])],
                          tinyops.embedding_backward),
    ]
    for result in results:
        assert result
        for c in result.inputs:
            assert c.max_rel_err <= 2e-5 and c.max_err_over_tol <= 1.0
        for line in str(result).splitlines():
            rel = float(re.search(r"max rel err\s+(\S+)", line).group(1))  # type: ignore[union-attr]
            over = float(re.search(r"err/tol\s+(\S+)", line).group(1))  # type: ignore[union-attr]
            assert line.endswith("ok") and rel <= 2e-5 and over <= 1.0
    failing = tinyops.gradcheck(tinyops.tanh_forward, [_normal(49, (3, 4))], _tanh_backward_one_minus_out)
    (c,) = failing.inputs
    assert not c.passed and c.max_err_over_tol > 1.0 and str(failing).endswith("FAIL")


def test_gradcheck_nan_gradient_fails_and_prints_nan() -> None:
    def tanh_nan(dout: Array, cache: tinyops.TanhCache) -> Array:
        dx = tinyops.tanh_backward(dout, cache)
        dx[0, 0] = np.nan
        return dx

    result = tinyops.gradcheck(tinyops.tanh_forward, [_normal(50, (2, 3))], tanh_nan)
    (c,) = result.inputs
    assert not c.passed and math.isnan(c.max_abs_err) and math.isnan(c.max_err_over_tol)


# ============================================================================ compare


def _makemore_cmp(ours: Array, reference: Array) -> tuple[bool, bool, float]:
    """makemore part 4's ``cmp``, in torch."""
    dt, grad = torch.from_numpy(ours), torch.from_numpy(reference)
    return bool(torch.all(dt == grad).item()), torch.allclose(dt, grad), float((dt - grad).abs().max().item())


_A = _normal(30, (4, 5))


@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        pytest.param(_A, _A.copy(), id="identical"),
        pytest.param(_A + 1e-9, _A, id="off-by-1e-9"),
        pytest.param(_A + 1e-3, _A, id="off-by-1e-3"),
        pytest.param(np.where(_A > 1, np.nan, _A), _A, id="nan-in-ours"),
        pytest.param(np.where(_A > 1, np.nan, _A), np.where(_A > 1, np.nan, _A), id="nan-in-both"),
        pytest.param(np.where(_A > 1, np.inf, _A), np.where(_A > 1, np.inf, _A), id="inf-in-both"),
        pytest.param(np.where(_A > 1, np.inf, _A), _A, id="inf-in-ours"),
    ],
)
def test_compare_matches_makemore_cmp(ours: Array, reference: Array) -> None:
    c = tinyops.compare("d", ours, reference)
    exact, approximate, maxdiff = _makemore_cmp(ours, reference)
    assert c.exact is exact
    assert c.approximate is approximate
    if np.array_equal(ours, reference) and not np.isnan(ours).any():
        assert c.maxdiff == 0.0  # equal infinities differ by 0 here (makemore's cmp reports inf - inf = nan)
    elif math.isnan(maxdiff):
        assert math.isnan(c.maxdiff)
    else:
        assert c.maxdiff == pytest.approx(maxdiff, rel=1e-12, abs=0.0)


def test_compare_exact_and_approximate() -> None:
    a = _normal(31, (3, 7))
    same = tinyops.compare("dx", a, a.copy())
    assert (same.exact, same.approximate, same.maxdiff) == (True, True, 0.0)

    near = tinyops.compare("dx", a + 1e-9, a)
    assert near.exact is False
    assert near.approximate is True
    assert near.maxdiff == pytest.approx(1e-9, rel=1e-5)

    far = tinyops.compare("dx", a + 1e-3, a)
    assert (far.exact, far.approximate) == (False, False)


def test_compare_maxdiff_value() -> None:
    ours = np.array([[0.5, -1.25, 2.0], [3.0, 0.75, -0.5]])
    reference = np.array([[0.5, -1.0, 2.125], [3.0, 0.75, -0.5]])
    c = tinyops.compare("dW", ours, reference)
    assert c.maxdiff == 0.25  # |-1.25 - -1.0|, larger than |2.0 - 2.125|
    assert (c.exact, c.approximate) == (False, False)


def test_compare_nan() -> None:
    a = _normal(32, (2, 3))
    with_nan = a.copy()
    with_nan[1, 2] = np.nan
    c = tinyops.compare("dh", with_nan, a)
    assert c.exact is False
    assert c.approximate is False
    assert math.isnan(c.maxdiff)
    assert "maxdiff: nan" in str(c)


def test_compare_torch_reference() -> None:
    a = _normal(33, (4, 3))
    t = torch.tensor(a, requires_grad=True)  # .numpy() alone would refuse a tensor that requires grad
    assert tinyops.compare("t", a, t).exact

    (t.tanh() * torch.tensor(_normal(34, (4, 3)))).sum().backward()
    assert t.grad is not None
    ours = tinyops.tanh_backward(_normal(34, (4, 3)), tinyops.tanh_forward(a)[1])
    c = tinyops.compare("dt", ours, t.grad)
    assert c.approximate
    assert c.maxdiff < 1e-12

    t32 = torch.tensor(a, dtype=torch.float32)
    c32 = tinyops.compare("t32", a.astype(np.float32), t32)
    assert c32.exact and c32.maxdiff == 0.0


def test_compare_complex_is_compared_whole() -> None:
    """The imaginary parts were dropped (with a ComplexWarning): 1+1j against 1+2j read approximate, maxdiff 0."""
    ours = np.array([1 + 1j, 2 - 0.5j, 3.0])
    ref = np.array([1 + 2j, 2 - 0.5j, 3.0])
    c = tinyops.compare("z", ours, ref)
    dt, grad = torch.from_numpy(ours), torch.from_numpy(ref)
    assert (c.exact, c.approximate) == (False, torch.allclose(dt, grad)) == (False, False)
    assert c.maxdiff == float((dt - grad).abs().max().item()) == 1.0
    same = tinyops.compare("z", ours, torch.from_numpy(ours.copy()))
    assert same.exact and same.approximate and same.maxdiff == 0.0
    mixed = tinyops.compare("z", np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-3j]))  # real against complex
    assert not mixed.approximate and mixed.maxdiff == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("ours", "reference", "exc", "pattern"),
    [
        (np.ma.masked_array([1.0, 2.0], mask=[0, 1]), np.array([1.0, 5.0]), TypeError, r"^ours is a masked array"),
        (np.array([1.0, 2.0]), np.ma.masked_array([1.0, 5.0], mask=[0, 1]), TypeError,
         r"^reference is a masked array"),
        (np.array(["a", "b"]), np.array([1.0, 2.0]), TypeError, r"^ours must hold numbers.*<U1"),
        (np.array([1.0, 2.0]), np.array([None, 1.0]), TypeError, r"^reference must hold numbers.*object"),
        ([[1.0, 2.0], [3.0]], np.array([1.0, 2.0]), ValueError, r"^ours must be array-like with one shape"),
    ],
    ids=["masked-ours", "masked-reference", "strings", "objects", "ragged"],
)
def test_compare_refuses_what_it_cannot_compare(ours: Any, reference: Any, exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        tinyops.compare("d", ours, reference)


def test_comparison_str_is_one_makemore_row() -> None:
    a = _normal(35, (3,))
    c = tinyops.compare("dlogits", a + 1e-9, a)
    line = str(c)
    assert "\n" not in line
    assert re.fullmatch(r"dlogits +\| exact: False \| approximate: True  \| maxdiff: \d(\.\d+)?e-09", line), line
    assert line.split(" | ")[0].rstrip() == "dlogits"
    assert [part.split(":")[0] for part in line.split(" | ")[1:]] == ["exact", "approximate", "maxdiff"]


def test_format_comparisons_aligns_columns() -> None:
    a = _normal(36, (2, 2))
    names = ["dx", "a_name_longer_than_twenty_characters", "dW1", "cross_entropy (mean): dlogits"]
    refs = [a, a + 1.0, a + 1e-9, a]
    rows = [tinyops.compare(n, a, r) for n, r in zip(names, refs, strict=True)]
    table = tinyops.format_comparisons(rows)
    lines = table.splitlines()
    assert len(lines) == len(names)
    bars = [[i for i, ch in enumerate(line) if ch == "|"] for line in lines]
    assert all(len(b) == 3 for b in bars)
    assert all(b == bars[0] for b in bars)
    width = max(len(n) for n in names)
    for line, name in zip(lines, names, strict=True):
        assert line.startswith(name)
        assert line[width : width + 3] == " | "
    assert tinyops.format_comparisons([]) == ""


# ============================================================================ the check CLI


def _expected_rows() -> list[str]:
    """``<case>: d<input>`` for every floating input of every case, as gradcheck names them."""
    rng = np.random.default_rng(0)
    rows = []
    for case in tinyops.check.CASES:
        params = list(inspect.signature(case.forward).parameters)
        for i, value in enumerate(case.make_inputs(rng)):
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                rows.append(f"{case.name}: d{params[i]}")
    return rows


def test_cli_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    expected = _expected_rows()
    assert len(expected) >= len(tinyops.check.CASES)
    assert tinyops.cli.main(["check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if " | exact: " in line]
    assert [r.split(" | ")[0].rstrip() for r in rows] == expected
    for row in rows:
        assert row.endswith("  ok"), row
        assert "approximate: True " in row
    assert lines[-1] == f"{len(expected)} passed, 0 failed"


def test_cli_check_with_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert tinyops.cli.main(["check", "--seed", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{len(_expected_rows())} passed, 0 failed"


def test_cli_requires_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        tinyops.cli.main([])
    assert info.value.code == 2
    assert "command" in capsys.readouterr().err


def test_check_main_reports_a_failing_case(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = CheckCase(
        "tanh (wrong)",
        tinyops.tanh_forward,
        _tanh_backward_one_minus_out,
        lambda r: [r.normal(0.0, 1.5, (3, 4))],
    )
    right = next(c for c in tinyops.check.CASES if c.name == "tanh")
    monkeypatch.setattr(tinyops.check, "CASES", (right, wrong))
    assert tinyops.check.main() == 1
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if " | exact: " in line]
    assert len(rows) == 2
    assert rows[0].startswith("tanh: dx") and rows[0].endswith("  ok")
    assert rows[1].startswith("tanh (wrong): dx") and rows[1].endswith("  FAIL")
    assert lines[-1] == "1 passed, 1 failed"


def test_console_script_check() -> None:
    script = Path(sys.executable).parent / "tinyops"
    assert script.exists(), script
    proc = subprocess.run([str(script), "check"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == f"{len(_expected_rows())} passed, 0 failed"


def test_package_and_check_run_without_torch() -> None:
    """``tinyops`` never imports torch, and ``tinyops check`` works where torch cannot be imported."""
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
        "import tinyops, tinyops.data, tinyops.check\n"
        "from tinyops.cli import main\n"
        "sys.exit(main(['check']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "0 failed" in proc.stdout
