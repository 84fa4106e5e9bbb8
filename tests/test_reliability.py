"""Every input either works or is refused by name.

The odd inputs a careless caller or a bad day brings: NumPy subclasses (masked arrays, ``np.matrix``,
memmaps), the cache of another op or of another shape, NumPy scalars and bools for options, 0-D inputs,
index arrays of too many dimensions, float16, empty batchnorm batches, and then what an adversary tries
next (views with negative strides, read-only and big-endian arrays, object and bool arrays, lists of
lists, ragged lists). Each either gives the answer of the plain input (checked against it, or against
torch) or raises naming the argument.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
import torch.nn.functional as F

import tinyops

Array = npt.NDArray[Any]

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")

BACKENDS = ("compiled", "reference")
_rng = np.random.default_rng(2024)

X = _rng.normal(0.0, 2.0, (5, 7)).astype(np.float32)  # (N, C): tanh, the softmax family, batchnorm, logits
TARGET = np.array([0, 6, 3, 3, 1])
LIN_W = _rng.normal(size=(7, 3)).astype(np.float32)  # (I, O)
LIN_B = _rng.normal(size=3).astype(np.float32)
EMB_W = _rng.normal(size=(6, 4)).astype(np.float32)  # (V, D)
EMB_IDX = np.array([[1, 5, 5], [0, 2, 4]])
BN_W = np.array([0.5, 1.5, -1.0, 2.0, 0.7, 1.1, -0.3], np.float32)
BN_B = _rng.normal(size=7).astype(np.float32)


def _float_ops() -> dict[str, Callable[[Any], Array]]:
    """Each public op as a function of its one float argument under test (the other arguments plain)."""
    return {
        "tanh(x)": lambda a: tinyops.tanh(a),
        "softmax(x)": lambda a: tinyops.softmax(a),
        "softmax_naive(x)": lambda a: tinyops.softmax_naive(a),
        "log_softmax(x)": lambda a: tinyops.log_softmax(a),
        "logsumexp(x)": lambda a: tinyops.logsumexp(a),
        "batchnorm1d(x)": lambda a: tinyops.batchnorm1d(a, BN_W, BN_B),
        "batchnorm1d(weight)": lambda a: tinyops.batchnorm1d(X, a, BN_B),
        "linear(x)": lambda a: tinyops.linear(a, LIN_W, LIN_B),
        "linear(weight)": lambda a: tinyops.linear(X, a, LIN_B),
        "linear(bias)": lambda a: tinyops.linear(X, LIN_W, a),
        "embedding(weight)": lambda a: tinyops.embedding(a, EMB_IDX),
        "cross_entropy(logits)": lambda a: tinyops.cross_entropy(a, TARGET),
        "cross_entropy_naive(logits)": lambda a: tinyops.cross_entropy_naive(a, TARGET),
        "linear_cross_entropy(x)": lambda a: tinyops.linear_cross_entropy(a, LIN_W, np.array([0, 2, 1, 1, 0])),
        "linear_cross_entropy(weight)": lambda a: tinyops.linear_cross_entropy(X, a, np.array([0, 2, 1, 1, 0])),
    }


FLOAT_ARGS: dict[str, Array] = {  # the plain value of the argument under test
    "tanh(x)": X, "softmax(x)": X, "softmax_naive(x)": X, "log_softmax(x)": X, "logsumexp(x)": X,
    "batchnorm1d(x)": X, "batchnorm1d(weight)": BN_W, "linear(x)": X, "linear(weight)": LIN_W,
    "linear(bias)": LIN_B, "embedding(weight)": EMB_W, "cross_entropy(logits)": X,
    "cross_entropy_naive(logits)": X, "linear_cross_entropy(x)": X, "linear_cross_entropy(weight)": LIN_W,
}
FLOAT_OPS = _float_ops()


def _arg_name(key: str) -> str:
    return key[key.index("(") + 1 : -1]


# ============================================================================ NumPy subclasses


@pytest.mark.parametrize("key", list(FLOAT_OPS))
def test_masked_float_input_is_refused_by_name(key: str) -> None:
    """A mask would be ignored (logsumexp gave neither the masked nor the unmasked result): refused."""
    plain = FLOAT_ARGS[key]
    masked = np.ma.masked_array(plain, mask=np.zeros(plain.shape, bool))
    masked.mask.flat[0] = True
    name = _arg_name(key)
    with pytest.raises(TypeError, match=rf"^{name} is a masked array.*{name}\.filled\(.*{name}\.data"):
        FLOAT_OPS[key](masked)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda m: tinyops.embedding(EMB_W, m), "idx"),
        (lambda m: tinyops.cross_entropy(X, m), "target"),
        (lambda m: tinyops.cross_entropy_naive(X, m), "target"),
        (lambda m: tinyops.linear_cross_entropy(X, LIN_W, m), "target"),
    ],
    ids=["embedding-idx", "cross_entropy-target", "cross_entropy_naive-target", "linear_cross_entropy-target"],
)
def test_masked_index_input_is_refused_by_name(call: Callable[[Any], Any], name: str) -> None:
    idx = EMB_IDX if name == "idx" else np.array([0, 2, 1, 1, 0])
    with pytest.raises(TypeError, match=rf"^{name} is a masked array"):
        call(np.ma.masked_array(idx, mask=idx == 0))


def test_masked_dout_is_refused_by_name() -> None:
    out, cache = tinyops.softmax_forward(X)
    dout = np.ma.masked_array(np.ones_like(out), mask=out > 0.5)
    with pytest.raises(TypeError, match=r"^dout is a masked array"):
        tinyops.softmax_backward(dout, cache)


@pytest.mark.parametrize("key", [k for k in FLOAT_OPS if FLOAT_ARGS[k].ndim == 2])
def test_matrix_input_gives_the_plain_arrays_answer_as_a_plain_array(key: str) -> None:
    """np.matrix is viewed as the 2-D array it holds (its * is a matrix product: never used inside)."""
    got = FLOAT_OPS[key](np.matrix(FLOAT_ARGS[key]))
    want = FLOAT_OPS[key](FLOAT_ARGS[key])
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("key", list(FLOAT_OPS))
def test_memmap_input_gives_the_plain_arrays_answer(key: str, tmp_path: Path) -> None:
    plain = FLOAT_ARGS[key]
    mm = np.memmap(tmp_path / "a.bin", dtype=plain.dtype, mode="w+", shape=plain.shape)
    mm[...] = plain
    mm.flush()
    ro = np.memmap(tmp_path / "a.bin", dtype=plain.dtype, mode="r", shape=plain.shape)  # read-only as well
    for arr in (mm, ro):
        got = FLOAT_OPS[key](arr)
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, FLOAT_OPS[key](plain))


def test_matrix_memmap_and_masked_through_the_backward() -> None:
    out, cache = tinyops.linear_forward(X, LIN_W, LIN_B)
    dout = _rng.normal(size=out.shape).astype(np.float32)
    want = tinyops.linear_backward(dout, cache)
    got = tinyops.linear_backward(np.matrix(dout), cache)
    for g, w in zip(got, want, strict=True):
        assert type(g) is np.ndarray
        np.testing.assert_array_equal(g, w)


# ============================================================================ the cache of another op


def _pairs() -> dict[str, tuple[Any, Callable[..., Any], Array]]:
    """op name -> (cache, backward, dout) from a forward on float32 inputs."""
    rows: dict[str, tuple[Any, Callable[..., Any], Array]] = {}

    def add(name: str, fwd_result: Any, bwd: Callable[..., Any]) -> None:
        out, cache = fwd_result[0], fwd_result[1]
        rows[name] = (cache, bwd, np.full(np.shape(out), 0.5, np.float32))

    add("tanh", tinyops.tanh_forward(X), tinyops.tanh_backward)
    add("softmax", tinyops.softmax_forward(X), tinyops.softmax_backward)
    add("log_softmax", tinyops.log_softmax_forward(X), tinyops.log_softmax_backward)
    add("logsumexp", tinyops.logsumexp_forward(X), tinyops.logsumexp_backward)
    add("batchnorm1d", tinyops.batchnorm1d_forward(X, BN_W, BN_B), tinyops.batchnorm1d_backward)
    add("linear", tinyops.linear_forward(X, LIN_W, LIN_B), tinyops.linear_backward)
    add("embedding", tinyops.embedding_forward(EMB_W, EMB_IDX), tinyops.embedding_backward)
    add("cross_entropy", tinyops.cross_entropy_forward(X, TARGET, reduction="none"), tinyops.cross_entropy_backward)
    add("cross_entropy_naive", tinyops.cross_entropy_naive_forward(X, TARGET, reduction="none"),
        tinyops.cross_entropy_naive_backward)
    add("linear_cross_entropy", tinyops.linear_cross_entropy_forward(X, LIN_W, np.array([0, 2, 1, 1, 0]),
                                                                     reduction="none"),
        tinyops.linear_cross_entropy_backward)
    return rows


PAIRS = _pairs()
SAME_CACHE = {frozenset({"softmax", "softmax_naive"})}  # softmax_naive_backward is softmax_backward


@pytest.mark.parametrize("bwd_name", list(PAIRS))
@pytest.mark.parametrize("cache_name", list(PAIRS))
def test_backward_refuses_the_cache_of_another_op(bwd_name: str, cache_name: str) -> None:
    """Even with a dout of the right shape for that cache (softmax's and log_softmax's caches have the same
    fields: before, each backward took the other's and returned garbage)."""
    if bwd_name == cache_name:
        return
    _, bwd, _ = PAIRS[bwd_name]
    cache, _, dout = PAIRS[cache_name]
    with pytest.raises(TypeError, match=r"^cache must be the \w+"):
        bwd(dout, cache)


def test_softmax_and_log_softmax_caches_are_told_apart() -> None:
    x = _rng.normal(size=(3, 4))
    _, c_sm = tinyops.softmax_forward(x)
    _, c_lsm = tinyops.log_softmax_forward(x)
    dy = _rng.normal(size=(3, 4))
    with pytest.raises(TypeError, match=r"^cache must be the SoftmaxCache .*got LogSoftmaxCache"):
        tinyops.softmax_backward(dy, c_lsm)
    with pytest.raises(TypeError, match=r"^cache must be the LogSoftmaxCache .*got SoftmaxCache"):
        tinyops.log_softmax_backward(dy, c_sm)
    with pytest.raises(TypeError, match=r"^cache must be the SoftmaxCache"):
        tinyops.softmax_naive_backward(dy, c_lsm)
    with pytest.raises(TypeError, match=r"^cache must be the \w+"):
        tinyops.softmax_backward(dy, tuple(c_sm))  # a plain tuple of the right fields is not a cache


@pytest.mark.parametrize("name", list(PAIRS))
def test_backward_refuses_a_cache_of_another_shape(name: str) -> None:
    """A dout of one forward with the cache of a forward on other shapes: the error names dout and cache."""
    cache, bwd, dout = PAIRS[name]
    wrong = np.full((*dout.shape, 2), 0.5, np.float32) if dout.ndim else np.full(2, 0.5, np.float32)
    with pytest.raises(ValueError, match=r"^d(out|loss) must have the forward output's shape.*\bcache\b"):
        bwd(wrong, cache)


# ============================================================================ NumPy scalars, bools


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", [np.float32, np.float64, np.float16])
def test_batchnorm_takes_numpy_eps_and_momentum(kind: type[np.floating[Any]], backend: str) -> None:
    """np.float32 eps and momentum were refused; they give what the same Python floats give."""
    stats = tinyops.batchnorm1d_stats(7)
    eps, momentum = kind(1e-3), kind(0.25)
    got = tinyops.batchnorm1d_forward(X, BN_W, BN_B, stats, eps=eps, momentum=momentum, backend=backend)
    want = tinyops.batchnorm1d_forward(X, BN_W, BN_B, stats, eps=float(eps), momentum=float(momentum),
                                       backend=backend)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[2].mean, want[2].mean)
    np.testing.assert_array_equal(got[2].var, want[2].var)


NUMPY_OPTIONS = [
    ("label_smoothing", lambda v: tinyops.cross_entropy(X, TARGET, label_smoothing=v), np.float32(0.125), 0.125),
    ("ignore_index", lambda v: tinyops.cross_entropy(X, TARGET, ignore_index=v), np.int16(3), 3),
    ("chunk_size", lambda v: tinyops.linear_cross_entropy(X, LIN_W, np.array([0, 2, 1, 1, 0]), chunk_size=v),
     np.uint8(2), 2),
    ("threads-tanh", lambda v: tinyops.tanh(X, threads=v), np.int64(2), 2),
    ("threads-softmax", lambda v: tinyops.softmax(X, threads=v), np.int32(2), 2),
    ("padding_idx", lambda v: tinyops.embedding_backward(
        np.ones((2, 3, 4), np.float32), tinyops.embedding_forward(EMB_W, EMB_IDX, padding_idx=v)[1]),
     np.int64(-1), -1),
    ("max_norm", lambda v: tinyops.embedding_renorm(EMB_W, EMB_IDX, v), np.float32(0.5), 0.5),
    ("axis", lambda v: tinyops.log_softmax(X, axis=v), np.int64(0), 0),
    ("num_features", lambda v: tinyops.batchnorm1d_stats(v).mean, np.int32(3), 3),
]


@pytest.mark.parametrize(("call", "np_value", "py_value"), [o[1:] for o in NUMPY_OPTIONS],
                         ids=[o[0] for o in NUMPY_OPTIONS])
def test_numpy_scalar_options_work_as_python_numbers(call: Callable[[Any], Array], np_value: Any,
                                                      py_value: Any) -> None:
    np.testing.assert_array_equal(call(np_value), call(py_value))


BOOL_OPTIONS = [
    ("eps", lambda v: tinyops.batchnorm1d(X, eps=v), ValueError),
    ("momentum", lambda v: tinyops.batchnorm1d(X, None, None, tinyops.batchnorm1d_stats(7), momentum=v), ValueError),
    ("label_smoothing", lambda v: tinyops.cross_entropy(X, TARGET, label_smoothing=v), TypeError),
    ("ignore_index", lambda v: tinyops.cross_entropy(X, TARGET, ignore_index=v), TypeError),
    ("chunk_size", lambda v: tinyops.linear_cross_entropy(X, LIN_W, np.array([0, 2, 1, 1, 0]), chunk_size=v),
     TypeError),
    ("threads", lambda v: tinyops.tanh(X, threads=v), ValueError),
    ("padding_idx", lambda v: tinyops.embedding(EMB_W, EMB_IDX, padding_idx=v), TypeError),
    ("max_norm", lambda v: tinyops.embedding_renorm(EMB_W, EMB_IDX, v), ValueError),
    ("num_features", lambda v: tinyops.batchnorm1d_stats(v), ValueError),
]


@pytest.mark.parametrize("value", [True, np.True_], ids=["bool", "np.bool_"])
@pytest.mark.parametrize(("name", "call", "exc"), BOOL_OPTIONS, ids=[o[0] for o in BOOL_OPTIONS])
def test_bool_is_not_a_number_option(name: str, call: Callable[[Any], Any], exc: type[Exception], value: Any) -> None:
    with pytest.raises(exc, match=rf"^{name}\b"):
        call(value)


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("unbiased", lambda: tinyops.batchnorm1d(X, unbiased="no")),
        ("training", lambda: tinyops.batchnorm1d(X, training=1)),
        ("scale_grad_by_freq", lambda: tinyops.embedding(EMB_W, EMB_IDX, scale_grad_by_freq="no")),
    ],
)
def test_flag_options_take_bools_only(name: str, call: Callable[[], Any]) -> None:
    """A truthy string was silently read as True (unbiased="no" normalized with the unbiased variance)."""
    with pytest.raises(TypeError, match=rf"^{name} must be a bool"):
        call()


# ============================================================================ 0-D


def _zero_d_cases() -> list[Any]:
    cases = []
    for backend in BACKENDS:
        for name, fwd, bwd in [
            ("tanh", tinyops.tanh_forward, tinyops.tanh_backward),
            ("softmax", tinyops.softmax_forward, tinyops.softmax_backward),
            ("log_softmax", tinyops.log_softmax_forward, tinyops.log_softmax_backward),
            ("logsumexp", tinyops.logsumexp_forward, tinyops.logsumexp_backward),
        ]:
            for value in (np.array(0.75, np.float32), np.array(0.75), 0.75, np.float32(0.75)):
                cases.append(pytest.param(fwd, bwd, value, backend, id=f"{name}-{backend}-{type(value).__name__}"))
    return cases


@pytest.mark.parametrize(("fwd", "bwd", "value", "backend"), _zero_d_cases())
def test_zero_d_input_gives_zero_d_arrays(fwd: Any, bwd: Any, value: Any, backend: str) -> None:
    """A 0-D input gives a 0-D ndarray (never a NumPy scalar) from the forward and the backward."""
    out, cache = fwd(value, backend=backend)
    assert type(out) is np.ndarray and out.shape == ()
    dx = bwd(np.asarray(0.5, out.dtype), cache)
    assert type(dx) is np.ndarray and dx.shape == ()
    x64 = torch.tensor(float(value), dtype=torch.float64, requires_grad=True)
    ref = {"tanh_forward": torch.tanh, "softmax_forward": lambda t: torch.softmax(t, 0),
           "log_softmax_forward": lambda t: torch.log_softmax(t, 0),
           "logsumexp_forward": lambda t: torch.logsumexp(t, 0)}[fwd.__name__](x64)
    ref.backward(torch.tensor(0.5, dtype=torch.float64))
    tol = 1e-6 if out.dtype == np.float32 else 1e-14
    assert abs(float(out) - ref.item()) <= tol and abs(float(dx) - x64.grad.item()) <= tol  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_d_indices_and_unbatched_loss(backend: str) -> None:
    out, cache = tinyops.embedding_forward(EMB_W, np.int64(4), backend=backend)
    assert type(out) is np.ndarray and out.shape == (4,)
    np.testing.assert_array_equal(out, EMB_W[4])
    dw = tinyops.embedding_backward(np.ones(4, np.float32), cache)
    assert dw.shape == EMB_W.shape and dw[4].sum() == 4 and dw.sum() == 4
    loss, c = tinyops.cross_entropy_forward(X[0], np.array(2), backend=backend)
    assert type(loss) is np.ndarray and loss.shape == ()
    ref = F.cross_entropy(torch.from_numpy(X[0].astype(np.float64)), torch.tensor(2)).item()
    assert abs(float(loss) - ref) <= 1e-6 * (1 + abs(ref))
    assert tinyops.cross_entropy_backward(1.0, c).shape == (7,)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: tinyops.linear(np.float32(0.5), LIN_W), r"^x\b.*0-D"),
        (lambda: tinyops.batchnorm1d(np.array(0.5)), r"^batchnorm1d expects x .*0-D"),
        (lambda: tinyops.cross_entropy(np.array(0.5), np.array(0)), r"^logits\b.*0-D"),
        (lambda: tinyops.embedding(np.array(0.5), np.array(0)), r"^weight\b.*0-D"),
    ],
    ids=["linear", "batchnorm1d", "cross_entropy", "embedding"],
)
def test_zero_d_refused_by_name_where_meaningless(call: Callable[[], Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_array_of_too_many_dimensions_is_refused_by_name(backend: str) -> None:
    """The lookup adds an axis: a 64-D idx would make a 65-D output, past NumPy's limit (an error from deep
    inside NumPy before). 63 dimensions still work."""
    with pytest.raises(ValueError, match=r"^idx must have at most 63 dimensions, got 64"):
        tinyops.embedding(EMB_W, np.ones((1,) * 64, np.int64), backend=backend)
    out = tinyops.embedding(EMB_W, np.full((1,) * 62 + (2,), 3), backend=backend)
    assert out.shape == (1,) * 62 + (2, 4)
    np.testing.assert_array_equal(out.reshape(2, 4), EMB_W[[3, 3]])


# ============================================================================ float16


def _ulp16(ref: Array) -> Array:
    """The float16 spacing at each value of ``ref`` (float64)."""
    r16 = np.abs(ref).astype(np.float16)
    return np.spacing(np.maximum(r16, np.float16(6.1e-5))).astype(np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_float16_is_computed_in_float32(backend: str) -> None:
    """A float16 batch of more than 65,504 values per channel: its count, and its sum, overflow float16 (the
    output was all nan before). Against torch in float64: within 1 float16 ulp and the float32 arithmetic."""
    rng = np.random.default_rng(5)
    x16 = (rng.normal(size=(70_000, 2)) * 30 + 50).astype(np.float16)
    w16, b16 = np.array([1.5, -0.5], np.float16), np.array([0.25, 2.0], np.float16)
    stats = tinyops.batchnorm1d_stats(2, np.float16)
    out, cache, new = tinyops.batchnorm1d_forward(x16, w16, b16, stats, backend=backend)
    assert out.dtype == np.float16 and new is not None and new.mean.dtype == new.var.dtype == np.float16
    xt = torch.from_numpy(x16.astype(np.float64)).requires_grad_()
    rm, rv = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    wt = torch.from_numpy(w16.astype(np.float64)).requires_grad_()
    bt = torch.from_numpy(b16.astype(np.float64)).requires_grad_()
    ref = F.batch_norm(xt, rm, rv, wt, bt, training=True, momentum=0.1, eps=1e-5)
    r = ref.detach().numpy()
    # one float16 rounding, plus the float32 arithmetic's own error (~1e-5 here; it shows where out is near 0)
    assert np.all(np.abs(out.astype(np.float64) - r) <= _ulp16(r) + 2e-4)
    np.testing.assert_allclose(new.mean.astype(np.float64), rm.numpy(), rtol=1e-3)
    np.testing.assert_allclose(new.var.astype(np.float64), rv.numpy(), rtol=1e-3)
    dout = rng.normal(size=x16.shape).astype(np.float16)
    dx, dw, db = tinyops.batchnorm1d_backward(dout, cache)
    ref.backward(torch.from_numpy(dout.astype(np.float64)))
    assert dx.dtype == dw.dtype == db.dtype == np.float16  # type: ignore[union-attr]
    for got, want in ((dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        w = want.numpy()  # type: ignore[union-attr]
        assert np.all(np.isfinite(got))  # type: ignore[arg-type]
        np.testing.assert_allclose(got.astype(np.float64), w, rtol=4e-3, atol=4e-3 * np.abs(w).max())  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_cross_entropy_refuses_float16(backend: str) -> None:
    """Its exp sum overflowed float16 past 65,504 classes (inf before; the compiled layer raised from inside)."""
    x = np.zeros((2, 4), np.float16)
    with pytest.raises(TypeError, match=r"^x must be float32 or float64.*float16"):
        tinyops.linear_cross_entropy(x, np.zeros((4, 70_000), np.float16), np.array([0, 1]), backend=backend)
    with pytest.raises(TypeError, match=r"^x must be float32 or float64.*float16"):
        tinyops.linear_cross_entropy_forward(x, np.zeros((4, 7), np.float16), np.array([0, 1]), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_ops_over_more_than_65504_terms(backend: str) -> None:
    """The ops that accept float16 compute it in a wider type: a reduction over 70,000 entries (whose sum of
    exps or count overflows float16) is within a float16 ulp or two of torch in float64."""
    rng = np.random.default_rng(6)
    V = 70_000
    logits = rng.normal(size=(2, V)).astype(np.float16)
    lt = torch.from_numpy(logits.astype(np.float64))
    for ours, ref in [
        (tinyops.logsumexp(logits, backend=backend), torch.logsumexp(lt, 1)),
        (tinyops.softmax(logits, backend=backend), torch.softmax(lt, 1)),
        (tinyops.log_softmax(logits, backend=backend), torch.log_softmax(lt, 1)),
        (tinyops.cross_entropy(logits, np.array([3, V - 1]), backend=backend),
         F.cross_entropy(lt, torch.tensor([3, V - 1]))),
        (tinyops.tanh(logits, backend=backend), torch.tanh(lt)),
    ]:
        r = ref.numpy()
        assert ours.dtype == np.float16
        assert np.all(np.abs(ours.astype(np.float64) - r) <= 2 * _ulp16(r))
    # linear: a 70,000-term dot product (float16 accumulation would stall far below the sum)
    x = np.full((1, V), 0.01, np.float16)
    w = rng.uniform(0.5, 1.5, (V, 2)).astype(np.float16)
    r = x.astype(np.float64) @ w.astype(np.float64)
    assert np.all(np.abs(tinyops.linear(x, w).astype(np.float64) - r) <= 2 * _ulp16(r))
    # the embedding's scatter-add: 70,000 lookups of one row
    _, cache = tinyops.embedding_forward(np.ones((3, 2), np.float16), np.ones(V, np.int64), backend=backend)
    dw = tinyops.embedding_backward(np.full((V, 2), 0.5, np.float16), cache)
    np.testing.assert_array_equal(dw, np.array([[0, 0], [35_000, 35_000], [0, 0]], np.float16))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("C", [27, 70_000])
def test_naive_ops_keep_the_seeds_float16_arithmetic(C: int) -> None:
    """The naive softmax and cross-entropy are the seed's chain, kept to show where it overflows: in float16 it
    overflows early (an exp past 11.09, or a row's sum of exps past 65,504) exactly as the same chain in
    torch's float16 does, and agrees with it within a float16 ulp where it does not."""
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(4, C)) * (2.0 if C == 27 else 0.0)).astype(np.float16)
    t = rng.integers(0, C, 4)
    xt = torch.from_numpy(x)
    counts = xt.exp()
    probs = counts / counts.sum(1, keepdim=True)
    loss_ref = -probs[torch.arange(4), torch.from_numpy(t)].log().mean()
    probs_ours, loss_ours = tinyops.softmax_naive(x), tinyops.cross_entropy_naive(x, t)
    assert probs_ours.dtype == loss_ours.dtype == np.float16
    p, lr = probs.numpy().astype(np.float64), float(loss_ref)
    if C == 27:
        assert np.all(np.abs(probs_ours - p) <= 2 * _ulp16(p))
        assert abs(float(loss_ours) - lr) <= 2 * _ulp16(np.array(lr))
    else:  # 70,000 zeros: the sum of exps is inf in float16, both ways
        assert lr == float(loss_ours) == np.inf and np.array_equal(probs_ours, p)


# ============================================================================ batchnorm: empty batches, eps


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 5), (4, 3, 0)])
def test_batchnorm_empty_training_batch_follows_torch(shape: tuple[int, ...], momentum: float | None,
                                                      backend: str) -> None:
    """torch 2.13: an empty output, the running mean and var unchanged, num_batches_tracked + 1; zero
    gradients for weight and bias (an error before)."""
    w, b = np.array([0.5, 2.0, -1.0]), np.array([0.1, 0.2, 0.3])
    stats = tinyops.BatchNormStats(np.array([0.5, -1.0, 2.0]), np.array([2.0, 0.5, 1.5]), 3)
    out, cache, new = tinyops.batchnorm1d_forward(np.zeros(shape), w, b, stats, momentum=momentum, backend=backend)
    bn = torch.nn.BatchNorm1d(3, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(w))
        bn.bias.copy_(torch.from_numpy(b))
        bn.running_mean.copy_(torch.from_numpy(stats.mean))
        bn.running_var.copy_(torch.from_numpy(stats.var))
        bn.num_batches_tracked.fill_(3)
    ref = bn(torch.zeros(shape, dtype=torch.float64))
    assert out.shape == tuple(ref.shape) and out.dtype == np.float64
    assert new is not None
    np.testing.assert_array_equal(new.mean, bn.running_mean.numpy())
    np.testing.assert_array_equal(new.var, bn.running_var.numpy())
    assert new.num_batches_tracked == int(bn.num_batches_tracked)
    assert not np.shares_memory(new.mean, stats.mean)
    ref.sum().backward()
    dx, dw, db = tinyops.batchnorm1d_backward(np.zeros(shape), cache)
    assert dx.shape == shape
    np.testing.assert_array_equal(dw, bn.weight.grad.numpy())  # type: ignore[union-attr]
    np.testing.assert_array_equal(db, bn.bias.grad.numpy())  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_empty_eval_batch(backend: str) -> None:
    stats = tinyops.batchnorm1d_stats(3, np.float64)
    out, cache, new = tinyops.batchnorm1d_forward(np.zeros((0, 3)), None, None, stats, training=False, backend=backend)
    assert out.shape == (0, 3) and new is stats
    assert tinyops.batchnorm1d_backward(np.zeros((0, 3)), cache)[0].shape == (0, 3)


def test_batchnorm_eps_zero_as_torch() -> None:
    """torch refuses eps <= 0 in training and takes eps = 0 in eval; so does batchnorm1d (eps = 0 was taken in
    training before, and a channel of equal values gave 0 / 0 = nan)."""
    x = _rng.normal(size=(4, 3))
    with pytest.raises(ValueError, match="eps must be positive during training"):
        F.batch_norm(torch.from_numpy(x), None, None, training=True, eps=0.0)
    for eps in (0, 0.0, np.float32(0)):
        with pytest.raises(ValueError, match=r"^eps must be > 0 in training.*got"):
            tinyops.batchnorm1d(x, eps=eps)
    stats = tinyops.BatchNormStats(np.array([0.5, -1.0, 2.0]), np.array([2.0, 0.5, 1.5]), 3)
    got = tinyops.batchnorm1d(x, None, None, stats, training=False, eps=0.0)
    ref = F.batch_norm(torch.from_numpy(x), torch.from_numpy(stats.mean), torch.from_numpy(stats.var),
                       training=False, eps=0.0)
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-14, atol=1e-14)


def test_readme_and_docstring_agree_on_eval_mode_running_stats() -> None:
    """Eval mode returns ``running`` itself (the docstring); the README said "as new arrays" for all modes."""
    stats = tinyops.batchnorm1d_stats(7)
    _, _, new_eval = tinyops.batchnorm1d_forward(X, None, None, stats, training=False)
    _, _, new_train = tinyops.batchnorm1d_forward(X, None, None, stats, training=True)
    assert new_eval is stats
    assert new_train is not None and not np.shares_memory(new_train.mean, stats.mean)
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    start = readme.index("`batchnorm1d_forward` also returns")
    sentence = readme[start : readme.index(".", start)]
    assert "eval" in sentence and "unchanged" in sentence and "itself" in sentence
    assert "``running`` itself" in (tinyops.batchnorm1d_forward.__doc__ or "")


# ============================================================================ what an adversary tries next


def _views() -> dict[str, Callable[[Array], Array]]:
    return {
        "negative-strides": lambda a: np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1],
        "fortran-order": lambda a: np.asfortranarray(a),
        "strided": lambda a: np.repeat(a, 2, axis=1)[:, ::2],
        "read-only": lambda a: _read_only(a),
        "big-endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    }


def _read_only(a: Array) -> Array:
    b = a.copy()
    b.flags.writeable = False
    return b


@pytest.mark.parametrize("view", list(_views()))
@pytest.mark.parametrize("key", list(FLOAT_OPS))
def test_layouts_give_the_plain_arrays_answer(key: str, view: str) -> None:
    """Non-contiguous and negative-stride views, read-only and big-endian arrays (refused by dtype before:
    '>f4' is not float32 to NumPy's ==; read-only ones raised from inside the compiled cross-entropy)."""
    plain = FLOAT_ARGS[key]
    arg = _views()[view](plain[None] if plain.ndim == 1 else plain)
    arg = arg[0] if plain.ndim == 1 else arg
    np.testing.assert_array_equal(FLOAT_OPS[key](arg), FLOAT_OPS[key](plain))


@pytest.mark.parametrize("name", list(PAIRS))
def test_backward_takes_a_dout_of_any_layout(name: str) -> None:
    """A negative-stride, a Fortran-order and a read-only dout give the contiguous dout's gradients."""
    cache, bwd, dout = PAIRS[name]
    dout = np.random.default_rng(8).normal(size=dout.shape).astype(dout.dtype)
    want = bwd(dout, cache)
    flipped = np.flip(np.flip(dout).copy()) if dout.ndim else dout  # same values, negative strides
    for other in (flipped, np.asfortranarray(dout), _read_only(dout)):
        got = bwd(other, cache)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,),
                        strict=True):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_only_and_big_endian_dout_and_indices(backend: str) -> None:
    _, cache = tinyops.cross_entropy_forward(X, TARGET, reduction="none", backend=backend)
    dloss = np.linspace(0.5, 1.5, 5).astype(np.float32)
    want = tinyops.cross_entropy_backward(dloss, cache)
    np.testing.assert_array_equal(tinyops.cross_entropy_backward(_read_only(dloss), cache), want)
    np.testing.assert_array_equal(tinyops.cross_entropy_backward(dloss.astype(">f4"), cache), want)
    np.testing.assert_array_equal(tinyops.cross_entropy(X, TARGET.astype(">i8"), backend=backend),
                                  tinyops.cross_entropy(X, TARGET, backend=backend))
    np.testing.assert_array_equal(tinyops.embedding(EMB_W, _read_only(EMB_IDX).astype(">i4"), backend=backend),
                                  EMB_W[EMB_IDX])


@pytest.mark.parametrize(
    ("call", "exc", "pattern"),
    [
        (lambda: tinyops.softmax(np.array([[1.0, 2.0]], dtype=object)), TypeError, r"^x\b.*object"),
        (lambda: tinyops.tanh(X > 0), TypeError, r"^x\b.*bool"),
        (lambda: tinyops.linear([[1, 2], [3, 4]], np.eye(2)), TypeError, r"^x\b.*int64"),
        (lambda: tinyops.softmax([[1.0, 2.0], [3.0]]), ValueError, r"^x must be array-like with one shape"),
        (lambda: tinyops.embedding(EMB_W, [[1, 2], [3]]), ValueError, r"^idx must be array-like with one shape"),
        (lambda: tinyops.embedding(EMB_W, np.array([1, 2], dtype=object)), TypeError, r"^idx\b.*object"),
        (lambda: tinyops.cross_entropy(X, TARGET.astype(np.uint64) + np.uint64(2**63)), IndexError,
         r"^target\b.*got 9223372036854775808"),
        (lambda: tinyops.logsumexp(X.astype(np.complex64)), TypeError, r"^x\b.*complex64"),
        (lambda: tinyops.batchnorm1d(X, eps=float("nan")), ValueError, r"^eps\b.*nan"),
        (lambda: tinyops.batchnorm1d(X, None, None, tinyops.batchnorm1d_stats(7), momentum=float("inf")),
         ValueError, r"^momentum\b.*inf"),
        (lambda: tinyops.tanh_backward(np.ones((5, 7), np.float32), None), TypeError, r"^cache must be the TanhCache"),
        (lambda: tinyops.softmax(torch.ones(3)), TypeError, r"^x must be a floating numpy array, got Tensor"),
        (lambda: tinyops.gradcheck(tinyops.tanh, [np.ones(3)], tinyops.tanh_backward), TypeError,
         r"^forward must return \(out, cache\)"),
    ],
    ids=["object-x", "bool-x", "int-lists", "ragged-x", "ragged-idx", "object-idx", "uint64-target",
         "complex-x", "eps-nan", "momentum-inf", "cache-none", "torch-tensor", "gradcheck-value-function"],
)
def test_adversarial_inputs_are_refused_by_name(call: Callable[[], Any], exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize("shape", [(4, 0), (2, 3, 0)])
def test_linear_with_no_input_features_gives_the_bias_as_torch(shape: tuple[int, ...]) -> None:
    """0 in features: NumPy could not infer the rows of reshape(-1, 0) (an error from inside NumPy before)."""
    x, w, b = np.zeros(shape), np.zeros((0, 2)), np.array([0.5, -1.5])
    out, cache = tinyops.linear_forward(x, w, b)
    ref = F.linear(torch.from_numpy(x), torch.from_numpy(w.T), torch.from_numpy(b))
    np.testing.assert_array_equal(out, ref.numpy())
    dx, dw, db = tinyops.linear_backward(np.ones(out.shape), cache)
    assert dx.shape == shape and dw.shape == (0, 2)
    np.testing.assert_array_equal(db, np.full(2, float(np.prod(shape[:-1]))))


@pytest.mark.parametrize(("value", "exc"), [("3", ValueError), (-1, ValueError), (2.5, ValueError)])
def test_batchnorm_num_batches_tracked_is_checked(value: Any, exc: type[Exception]) -> None:
    """A string raised from inside the update ("can only concatenate str"), -1 divided by zero, 2.5 was used."""
    stats = tinyops.BatchNormStats(np.zeros(7, np.float32), np.ones(7, np.float32), value)
    with pytest.raises(exc, match=r"^running\.num_batches_tracked must be an int >= 0"):
        tinyops.batchnorm1d(X, None, None, stats, momentum=None)
    ok = tinyops.BatchNormStats(np.zeros(7, np.float32), np.ones(7, np.float32), np.int64(2))
    new = tinyops.batchnorm1d_forward(X, None, None, ok, momentum=None)[2]
    assert new is not None and new.num_batches_tracked == 3 and type(new.num_batches_tracked) is int


def test_lists_of_lists_work_as_arrays() -> None:
    rows = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]
    for op in (tinyops.softmax, tinyops.log_softmax, tinyops.logsumexp, tinyops.tanh):
        np.testing.assert_array_equal(op(rows), op(np.array(rows)))
    np.testing.assert_array_equal(tinyops.embedding(EMB_W, [[1, 2], [3, 0]]), EMB_W[[[1, 2], [3, 0]]])
    np.testing.assert_array_equal(tinyops.cross_entropy(rows, [2, 0]), tinyops.cross_entropy(np.array(rows),
                                                                                              np.array([2, 0])))


def test_no_op_writes_into_a_read_only_input() -> None:
    """Copies made for read-only inputs are the op's own: the caller's array stays read-only and unchanged."""
    x = _read_only(X)
    out, cache = tinyops.softmax_forward(x)
    tinyops.softmax_backward(_read_only(np.ones_like(out)), cache)
    assert not x.flags.writeable
    np.testing.assert_array_equal(x, X)
