"""The makemore MLP, composed from tinyops ops, with its hand-walked backward.

    emb = C[X]                        (N, T, D)   embedding
    embcat = emb.reshape(N, T * D)    (N, T*D)    flatten
    hprebn = embcat @ W1 + b1         (N, H)      linear
    hpreact = batchnorm(hprebn)       (N, H)      pt4 only: bngain, bnbias; Bessel-corrected variance
                                                  (pt2: hpreact = hprebn)
    h = tanh(hpreact)                 (N, H)
    logits = h @ W2 + b2              (N, V)      linear
    loss = cross_entropy(logits, Y)   ()          fused

Shapes: N = batch, T = block_size (context length), D = n_embd, H = n_hidden, V = vocab_size.

Two configurations: ``pt2`` (makemore part 2: N(0, 1) init, 11,897 parameters) and ``pt4`` (part 4,
"becoming a backprop ninja", at n_hidden = 200: scaled init and batchnorm, 12,297 parameters). Both
train 200,000 steps of batch 32 with SGD at lr 0.1, then 0.01 from step 100,000.

Two ways to take a step, one model. :func:`forward`, :func:`backward` and :func:`train_step` compose
the public ops (each validating its inputs and returning new arrays): the step as the ops define it.
:class:`Trainer` is the same step written for speed, the one ``tinyops train`` runs: the same entry
points of the op modules (the public ops call them after checking their inputs) into buffers allocated
once, SGD in place on parameters it owns (tests/test_mlp.py holds the two equal, and both equal to torch
autograd).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt

from ._checks import Array, Backend, Precision, check_backend, check_precision
from .ops.batchnorm import (
    BatchNormCache,
    BatchNormStats,
    batchnorm1d_backward,
    batchnorm1d_forward,
    batchnorm1d_stats,
    batchnorm_rows_backward,
    batchnorm_rows_forward,
    batchnorm_running_update,
)
from .ops.cross_entropy import (
    CrossEntropyCache,
    CrossEntropyDenseCache,
    ce_rows_backward,
    ce_rows_forward,
    cross_entropy_backward,
    cross_entropy_forward,
)
from .ops.embedding import (
    EmbeddingCache,
    embedding_backward,
    embedding_forward,
    embedding_gather,
    embedding_weight_grad,
)
from .ops.linear import LinearCache, linear_backward, linear_forward, linear_rows_backward, linear_rows_forward
from .ops.softmax import softmax
from .ops.tanh import TanhCache, tanh_backward, tanh_forward, tanh_rows_backward, tanh_rows_forward

Params = dict[str, Array]  # name -> array, in the order of Config.param_names
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Config:
    """A named model + training configuration (all of it is saved with the parameters)."""

    name: str
    batchnorm: bool  # pt4: batchnorm between the first linear and tanh, and the scaled init
    block_size: int = 3  # T: characters of context
    n_embd: int = 10  # D
    n_hidden: int = 200  # H
    vocab_size: int = 27  # V: '.' and a..z
    steps: int = 200_000
    batch_size: int = 32
    lr: float = 0.1
    lr_decay_step: int = 100_000  # lr_after from this step on
    lr_after: float = 0.01
    bn_momentum: float = 0.001  # running statistics during training (pt4)
    bn_eps: float = 1e-5

    @property
    def param_names(self) -> tuple[str, ...]:
        base = ("C", "W1", "b1", "W2", "b2")
        return (*base, "bngain", "bnbias") if self.batchnorm else base

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        V, D, T, H = self.vocab_size, self.n_embd, self.block_size, self.n_hidden
        shapes = {"C": (V, D), "W1": (T * D, H), "b1": (H,), "W2": (H, V), "b2": (V,)}
        if self.batchnorm:
            shapes |= {"bngain": (H,), "bnbias": (H,)}
        return shapes

    def num_params(self) -> int:
        return sum(int(np.prod(s)) for s in self.param_shapes().values())


CONFIGS: dict[str, Config] = {
    "pt2": Config("pt2", batchnorm=False),
    "pt4": Config("pt4", batchnorm=True),
}


def init_params(config: Config, rng: np.random.Generator, dtype: npt.DTypeLike = np.float32) -> Params:
    """The lecture's initialization, drawn from ``rng`` in float64 and cast to ``dtype``.

    pt2: every parameter N(0, 1). pt4 (part 4): ``C`` N(0, 1); ``W1 * (5/3) / sqrt(T * D)`` (tanh's
    Kaiming gain); ``b1``, ``W2``, ``b2`` times 0.1; ``bngain`` 1 + 0.1 N(0, 1); ``bnbias`` 0.1 N(0, 1).
    (``b1`` is kept although batchnorm subtracts it right away, as the lecture does.)
    """
    shapes = config.param_shapes()
    raw = {name: rng.standard_normal(shape) for name, shape in shapes.items()}  # drawn in a fixed order
    if config.batchnorm:
        fan_in = config.block_size * config.n_embd
        raw["W1"] *= (5 / 3) / fan_in**0.5
        for name in ("b1", "W2", "b2", "bnbias"):
            raw[name] *= 0.1
        raw["bngain"] = raw["bngain"] * 0.1 + 1.0
    return {name: raw[name].astype(dtype) for name in config.param_names}


def initial_stats(config: Config, dtype: npt.DTypeLike = np.float32) -> BatchNormStats | None:
    """Fresh batchnorm running statistics (mean 0, var 1) for pt4; None for pt2."""
    return batchnorm1d_stats(config.n_hidden, dtype) if config.batchnorm else None


# ============================================================================ forward and backward


class MLPCache(NamedTuple):
    """The cache of every op of the forward, unwound in reverse by :func:`backward`."""

    emb: EmbeddingCache
    hprebn: LinearCache
    hpreact: BatchNormCache | None  # pt4's batchnorm; None for pt2
    h: TanhCache
    logits: LinearCache
    loss: CrossEntropyCache | CrossEntropyDenseCache | None  # the loss of index targets: a CrossEntropyCache


def _logits(
    params: Params, X: IntArray, config: Config, stats: BatchNormStats | None, training: bool
) -> tuple[Array, MLPCache, BatchNormStats | None]:
    emb, c_emb = embedding_forward(params["C"], X)  # (N, T, D)
    embcat = emb.reshape(emb.shape[0], -1)  # (N, T*D)  a view: emb is ours
    hprebn, c_hprebn = linear_forward(embcat, params["W1"], params["b1"])  # (N, H)
    hpreact, c_hpreact = hprebn, None
    if config.batchnorm:
        hpreact, c_hpreact, stats = batchnorm1d_forward(
            hprebn, params["bngain"], params["bnbias"], stats,
            training=training, momentum=config.bn_momentum, eps=config.bn_eps, unbiased=True,
        )
    h, c_h = tanh_forward(hpreact)  # (N, H)
    logits, c_logits = linear_forward(h, params["W2"], params["b2"])  # (N, V)
    return logits, MLPCache(c_emb, c_hprebn, c_hpreact, c_h, c_logits, None), stats


def forward(
    params: Params,
    X: IntArray,
    Y: IntArray,
    config: Config,
    *,
    stats: BatchNormStats | None = None,
    training: bool = True,
) -> tuple[Array, MLPCache, BatchNormStats | None]:
    """The mean cross-entropy of the batch ``(X, Y)``.

    Args:
        params: the parameters (:func:`init_params`).
        X: (N, T) int contexts; Y: (N,) int next characters.
        config: the configuration the parameters belong to.
        stats: pt4's batchnorm running statistics (None for pt2; for pt4 in training, None tracks none).
        training: pt4: normalize with the batch's statistics (True) or with ``stats`` (False).

    Returns:
        ``(loss, cache, new_stats)``: 0-D loss in the parameters' dtype; the cache for :func:`backward`;
        the updated running statistics (pt4 in training) or ``stats`` unchanged.
    """
    logits, cache, new_stats = _logits(params, X, config, stats, training)
    loss, c_loss = cross_entropy_forward(logits, target=Y)  # ()
    return loss, cache._replace(loss=c_loss), new_stats


def backward(cache: MLPCache) -> Params:
    """The gradient of the loss with respect to every parameter, walking the forward's caches in reverse.

    Returns:
        ``{name: gradient}`` with each parameter's shape and dtype.
    """
    assert cache.loss is not None, "backward needs the cache of forward(), which ends in the loss"
    grads: dict[str, Array | None] = {}  # linear and batchnorm return None only for a missing bias/weight
    dlogits = cross_entropy_backward(1.0, cache.loss)  # (N, V)
    dh, grads["W2"], grads["b2"] = linear_backward(dlogits, cache.logits)  # (N, H), (H, V), (V,)
    dhpreact = tanh_backward(dh, cache.h)  # (N, H)
    dhprebn = dhpreact
    if cache.hpreact is not None:
        dhprebn, grads["bngain"], grads["bnbias"] = batchnorm1d_backward(dhpreact, cache.hpreact)  # (N, H), (H,)x2
    dembcat, grads["W1"], grads["b1"] = linear_backward(dhprebn, cache.hprebn)  # (N, T*D), (T*D, H), (H,)
    demb = dembcat.reshape((*cache.emb.idx.shape, -1))  # (N, T, D) a view
    grads["C"] = embedding_backward(demb, cache.emb)  # (V, D)
    return cast(Params, grads)  # every layer here has its weight and bias: no None


@functools.cache
def _kernels() -> Any:
    """:mod:`tinyops.kernels.elementwise`, imported on first use: importing tinyops does not import numba."""
    from .kernels import elementwise

    return elementwise


def sgd_step(param: Array, grad: Array, lr: float, *, backend: Backend = "compiled") -> None:
    """SGD on one array, in place: ``param -= lr * grad`` (the parameters belong to the training loop).

    The one definition of the update: :func:`sgd_update` calls it per parameter, :class:`Trainer` once on
    its flat parameter and gradient arrays. 'compiled': one pass of :func:`tinyops.kernels.elementwise.sgd_step`
    over C-contiguous arrays (others, which have no flat view, are updated by NumPy); 'reference': NumPy.
    """
    if backend == "compiled" and param.flags.c_contiguous and grad.flags.c_contiguous:
        _kernels().sgd_step(param.reshape(-1), grad.reshape(-1), lr)
    else:
        param -= param.dtype.type(lr) * grad


def sgd_update(params: Params, grads: Params, lr: float, *, backend: Backend = "compiled") -> None:
    """``p -= lr * grad`` for every parameter, in place (:func:`sgd_step`)."""
    for name, p in params.items():
        sgd_step(p, grads[name], lr, backend=backend)


def learning_rate(step: int, config: Config) -> float:
    """The lecture's step decay: ``lr`` before ``lr_decay_step``, ``lr_after`` from it on."""
    return config.lr if step < config.lr_decay_step else config.lr_after


def train_step(
    params: Params, Xb: IntArray, Yb: IntArray, config: Config, lr: float, stats: BatchNormStats | None
) -> tuple[float, BatchNormStats | None]:
    """One step of SGD on the batch: forward, backward, update. Returns the loss and the new running stats.

    The step composed from the public ops, for any batch size; :class:`Trainer` runs the same step faster.
    """
    loss, cache, stats = forward(params, Xb, Yb, config, stats=stats, training=True)
    grads = backward(cache)
    sgd_update(params, grads, lr)
    return float(loss), stats


# ============================================================================ the fast training step


TRAIN_PRECISION: Precision = "fast"
"""The loss kernel's precision in training: 'fast'. ``benchmarks/bench_train.py`` times the training step
at both precisions side by side (docs/benchmarks.md has a run): 'fast' computes the batch's 32 x 27 logits
in float32 where 'accurate' works in float64, and saves a measurable part of the step. What 'fast' gives
up does not matter here: its errors (a few float32 eps of ``1 + |lse|`` in the loss, a few eps relative in
each softmax entry; see :mod:`tinyops.kernels.cross_entropy`) are those of torch's own ``F.cross_entropy``,
which the lecture trains with, and far below the noise of SGD on batches of 32 (200,000-step runs of
`tinyops train` with it meet the lecture's losses). Evaluation keeps the accurate default."""


class Trainer:
    """SGD on the MLP with every array of the step allocated once: :func:`train_step`, made fast.

    The same step as ``forward`` -> ``backward`` -> ``sgd_update`` (the ops above), through the same math:
    each line calls the unchecked entry point of an op module (:func:`~tinyops.ops.embedding.embedding_gather`,
    :func:`~tinyops.ops.linear.linear_rows_forward`, :func:`~tinyops.ops.batchnorm.batchnorm_rows_forward`,
    :func:`~tinyops.ops.tanh.tanh_rows_forward`, :func:`~tinyops.ops.cross_entropy.ce_rows_forward` and
    their backwards), which the public ops call too, with preallocated ``out=`` buffers: at batch 32 a call
    costs more than its arithmetic, so the step makes one call per formula and no input checks (the batch
    comes from the checked dataset). The trainer owns its parameters:

    - ``params`` are views of one flat array and ``grads`` views of another (same layout), so the update
      ``p -= lr * grad`` of every parameter is one call on the flat arrays, in place;
    - each linear layer's bias lies right after its weight, so ``[W; b]`` is one (in + 1, out) block and
      ``x @ W + b = [x, 1] @ [W; b]`` (:func:`~tinyops.ops.linear.linear_rows_forward`): the buffers
      ``embcat1 = [embcat, 1]`` and ``h1 = [h, 1]`` carry the column of ones, the embedding's gather and
      tanh write straight into their first columns, and ``[x, 1].T @ dout`` is ``[dW; db]`` in one product.

    :meth:`forward` keeps its intermediates in the trainer (its cache); :meth:`backward` walks them in
    reverse into one named gradient per parameter (``grads[name]``); :meth:`update` applies SGD;
    :meth:`step` is the three. tests/test_mlp.py holds the trainer to :func:`forward`/:func:`backward`
    and to torch autograd (float64), on both backends.

    Args:
        params: initial parameters (copied; :func:`init_params`), all float32 or all float64.
        config: the configuration.
        stats: pt4's initial running statistics (copied; None: fresh ones); ignored for pt2.
        batch_size: rows per batch (default ``config.batch_size``); every batch must have it.
        precision: the loss kernel's precision. See :data:`TRAIN_PRECISION`.
        backend: the ops' layer, 'compiled' (default) or 'reference' (the matrix products are NumPy's
            either way).

    Raises:
        ValueError: parameters of the wrong names, shapes or dtypes; a batch size below 1 (2 for pt4);
            an unknown precision or backend.
    """

    def __init__(
        self,
        params: Params,
        config: Config,
        stats: BatchNormStats | None = None,
        *,
        batch_size: int | None = None,
        precision: Precision = TRAIN_PRECISION,
        backend: Backend = "compiled",
    ) -> None:
        names, shapes = config.param_names, config.param_shapes()
        if set(params) != set(names):
            raise ValueError(f"params must have exactly the names {names}, got {tuple(params)}")
        dtype = params["C"].dtype
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"params must be float32 or float64, got params['C'] of dtype {dtype}")
        for k in names:
            if params[k].shape != shapes[k] or params[k].dtype != dtype:
                raise ValueError(f"params[{k!r}] must have shape {shapes[k]} and dtype {dtype}, "
                                 f"got shape {params[k].shape} and dtype {params[k].dtype}")
        check_precision(precision)
        check_backend(backend)
        N = config.batch_size if batch_size is None else batch_size
        if N < (2 if config.batchnorm else 1):
            raise ValueError(f"batch_size must be >= {2 if config.batchnorm else 1} for {config.name}, got {N}")
        self.config, self.precision, self.backend, self.N = config, precision, backend, N
        T, D, H, V = config.block_size, config.n_embd, config.n_hidden, config.vocab_size

        # parameters and gradients: views of one flat array each, in the order of param_names
        self.flat_params = np.concatenate([params[k].reshape(-1) for k in names])
        self.flat_grads = np.zeros_like(self.flat_params)
        start = dict(zip(names, np.cumsum([0] + [int(np.prod(shapes[k])) for k in names]).tolist(), strict=False))
        self.params: Params = {}
        self.grads: Params = {}
        for k in names:
            i0, size = start[k], int(np.prod(shapes[k]))
            self.params[k] = self.flat_params[i0 : i0 + size].reshape(shapes[k])
            self.grads[k] = self.flat_grads[i0 : i0 + size].reshape(shapes[k])

        def block(flat: Array, w: str, rows: int, cols: int) -> Array:  # [W; b]: the weight, then its bias
            return flat[start[w] : start[w] + (rows + 1) * cols].reshape(rows + 1, cols)

        self.W1b1, self.dW1b1 = block(self.flat_params, "W1", T * D, H), block(self.flat_grads, "W1", T * D, H)
        self.W2b2, self.dW2b2 = block(self.flat_params, "W2", H, V), block(self.flat_grads, "W2", H, V)

        # pt4's running statistics, in one (2, H) array updated in place: [mean; var]
        self.running = np.empty((2, H), dtype)
        self.num_batches_tracked = 0
        if config.batchnorm:
            s = initial_stats(config, dtype) if stats is None else stats
            assert s is not None
            self.running[0], self.running[1], self.num_batches_tracked = s.mean, s.var, s.num_batches_tracked

        # the forward's intermediates (its cache) and the backward's buffers
        e = partial(np.empty, dtype=dtype)
        self.X = np.zeros((N, T), np.intp)  # (N, T) the batch's contexts, ours (the caller may reuse its arrays)
        self.Y = np.zeros(N, np.intp)  # (N,)
        self.embcat1 = np.ones((N, T * D + 1), dtype)  # (N, T*D + 1) [embcat, 1]
        self.hprebn = e((N, H))  # (N, H)
        self.bnstats = e((3, H))  # (3, H) the batch's [bnmean; bnvar (unbiased); bnvar_inv] (pt4)
        self.bnbatch = self.bnstats[:2]  # (2, H) a view: what the running [mean; var] move towards
        self.bnraw, self.hpreact = e((N, H)), e((N, H))  # (N, H) pt4: the normalized hprebn, then scaled and shifted
        self.h1 = np.ones((N, H + 1), dtype)  # (N, H + 1) [h, 1]
        self.logits = e((N, V))  # (N, V)
        self.ce_state: Any = None
        self.dlogits, self.dh1 = e((N, V)), e((N, H + 1))  # dh1: dh and, unused, the gradient of the ones
        self.dhpreact, self.dhprebn, self.bn_g_s = e((N, H)), e((N, H)), e(H)  # pt4: g_s = bngain * bnvar_inv
        self.dembcat1 = e((N, T * D + 1))  # (N, T*D + 1) dembcat and, unused, the gradient of the ones
        self.mean_w = np.full(N, 1.0 / N, dtype)  # (N,) mean over the batch = mean_w @ losses; dloss / N per row
        # (N, H, 1) views for batchnorm's (N, C, L) layout
        self.hprebn3, self.hpreact3, self.bnraw3 = (a.reshape(N, H, 1) for a in (self.hprebn, self.hpreact, self.bnraw))
        self.dhpreact3, self.dhprebn3 = self.dhpreact.reshape(N, H, 1), self.dhprebn.reshape(N, H, 1)

    @property
    def stats(self) -> BatchNormStats | None:
        """pt4's running statistics (copies), or None for pt2."""
        if not self.config.batchnorm:
            return None
        return BatchNormStats(self.running[0].copy(), self.running[1].copy(), self.num_batches_tracked)

    def forward(self, X: IntArray, Y: IntArray) -> float:
        """The batch's mean loss; the intermediates stay in the trainer for :meth:`backward`.

        X: (N, T) ints in [0, V); Y: (N,) ints in [0, V) (the values are not checked: take them from the
        checked dataset). Raises ValueError for a batch of other shapes.
        """
        if X.shape != self.X.shape or Y.shape != (self.N,):
            raise ValueError(f"the batch must be X of shape {self.X.shape} and Y of shape ({self.N},), "
                             f"got {X.shape} and {Y.shape}")
        P, c, be = self.params, self.config, self.backend
        np.copyto(self.X, X)
        np.copyto(self.Y, Y)
        embedding_gather(P["C"], self.X, out=self.embcat1, backend=be)  # (N, T*D) emb = C[X], into [embcat, 1]
        linear_rows_forward(self.embcat1, self.W1b1, out=self.hprebn)  # (N, H) hprebn = embcat @ W1 + b1
        hpreact = self.hprebn
        if c.batchnorm:  # batchnorm1d, training, Bessel-corrected variance (part 4)
            batchnorm_rows_forward(self.hprebn3, P["bngain"], P["bnbias"], self.bnstats, training=True, eps=c.bn_eps,
                                   unbiased=True, out=self.hpreact3, xhat=self.bnraw3, backend=be)
            batchnorm_running_update(self.running, self.bnbatch, c.bn_momentum, out=self.running, backend=be)
            self.num_batches_tracked += 1
            hpreact = self.hpreact
        tanh_rows_forward(hpreact, out=self.h1, backend=be)  # (N, H) h = tanh(hpreact), into [h, 1]
        linear_rows_forward(self.h1, self.W2b2, out=self.logits)  # (N, V) logits = h @ W2 + b2
        losses, _, self.ce_state = ce_rows_forward(self.logits, self.Y, precision=self.precision, backend=be)
        return float(np.dot(losses, self.mean_w))  # loss = mean(logsumexp(logits) - logits[Y])

    def backward(self) -> None:
        """Every parameter's gradient into ``grads``, walking the forward's intermediates in reverse."""
        assert self.ce_state is not None, "backward needs a forward first (and runs once per forward)"
        P, G, c, be = self.params, self.grads, self.config, self.backend
        ce_rows_backward(self.mean_w, self.ce_state, out=self.dlogits)  # (N, V) dlogits = (softmax - onehot) / N
        self.ce_state = None
        linear_rows_backward(self.dlogits, self.h1, self.W2b2, has_bias=False, dx=self.dh1,
                             dweight=self.dW2b2)  # (N, H) dh; (H + 1, V) [dW2; db2]
        tanh_rows_backward(self.h1, self.dh1, out=self.dhpreact, backend=be)  # (N, H) dhpreact = (1 - h**2) * dh
        dhprebn = self.dhpreact
        if c.batchnorm:  # (N, H) dhprebn; (H,) dbngain = sum(dhpreact * bnraw), dbnbias = sum(dhpreact)
            np.multiply(P["bngain"], self.bnstats[2], out=self.bn_g_s)  # (H,) bngain * bnvar_inv
            batchnorm_rows_backward(self.dhpreact3, self.bnraw3, self.bn_g_s, training=True, unbiased=True,
                                    dx=self.dhprebn3, dweight=G["bngain"], dbias=G["bnbias"], backend=be)
            dhprebn = self.dhprebn
        linear_rows_backward(dhprebn, self.embcat1, self.W1b1, has_bias=False, dx=self.dembcat1,
                             dweight=self.dW1b1)  # (N, T*D) dembcat; (T*D + 1, H) [dW1; db1]
        embedding_weight_grad(self.X, self.dembcat1, c.vocab_size, c.n_embd, out=G["C"], backend=be)  # (V, D) dC

    def update(self, lr: float) -> None:
        """SGD, in place: ``p -= lr * grad`` for every parameter at once (:func:`sgd_step` on the flat arrays)."""
        sgd_step(self.flat_params, self.flat_grads, lr, backend=self.backend)

    def step(self, X: IntArray, Y: IntArray, lr: float) -> float:
        """One SGD step on the batch ``(X, Y)``: forward, backward, update. Returns the batch's mean loss."""
        loss = self.forward(X, Y)
        self.backward()
        self.update(lr)
        return loss


# ============================================================================ after training


def _chunks(n: int, size: int = 16384) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def calibrate(params: Params, X: IntArray, config: Config, stats: BatchNormStats | None) -> BatchNormStats | None:
    """pt4: the batchnorm mean and (Bessel-corrected) variance of ``hprebn`` over all of ``X``, as the
    lecture computes them after training; they replace the running estimates for evaluation and sampling.

    Two passes over chunks of rows, accumulating in float64 (the mean, then the squared deviations).
    Returns ``stats`` unchanged for pt2 (None).
    """
    if not config.batchnorm:
        return stats
    M = X.shape[0]
    if M < 2:
        raise ValueError(f"calibration needs at least 2 examples, got {M}")
    C, W1, b1 = params["C"], params["W1"], params["b1"]

    def hprebn(rows: slice) -> Array:
        return np.asarray(C[X[rows]].reshape(-1, W1.shape[0]) @ W1 + b1, dtype=np.float64)  # (n, H)

    total = sum(hprebn(rows).sum(axis=0) for rows in _chunks(M))
    mean = total / M  # (H,)
    sq = sum(((hprebn(rows) - mean) ** 2).sum(axis=0) for rows in _chunks(M))
    var = sq / (M - 1)  # (H,) unbiased, as torch.var
    n = stats.num_batches_tracked if stats is not None else 0
    return BatchNormStats(mean.astype(W1.dtype), var.astype(W1.dtype), n)


def logits(params: Params, X: IntArray, config: Config, stats: BatchNormStats | None) -> Array:
    """(N, V) logits in eval mode (pt4 normalizes with ``stats``, the calibrated statistics)."""
    return _logits(params, X, config, stats, training=False)[0]


def evaluate(params: Params, X: IntArray, Y: IntArray, config: Config, stats: BatchNormStats | None) -> float:
    """The mean cross-entropy over a whole split, in eval mode, in chunks of rows."""
    if X.shape[0] == 0:
        raise ValueError("cannot evaluate an empty split")
    total = 0.0
    for rows in _chunks(X.shape[0]):
        loss, _ = cross_entropy_forward(logits(params, X[rows], config, stats), target=Y[rows], reduction="sum")
        total += float(loss)
    return total / len(X)


def sample(
    params: Params,
    config: Config,
    stats: BatchNormStats | None,
    itos: dict[int, str],
    rng: np.random.Generator,
    n: int = 20,
    max_len: int = 100,
) -> list[str]:
    """Draw ``n`` names as the lecture does: from a context of '.', draw the next character from the
    softmax of the logits, shift it into the context, stop at '.' (0). ``max_len`` only guards against
    a model that never emits '.'. Deterministic given ``rng``'s state.
    """
    names = []
    for _ in range(n):
        context = [0] * config.block_size
        out: list[int] = []
        while len(out) < max_len:
            probs = softmax(logits(params, np.array([context]), config, stats)[0].astype(np.float64))  # (V,)
            ix = int(rng.choice(config.vocab_size, p=probs))
            if ix == 0:
                break
            out.append(ix)
            context = [*context[1:], ix]
        names.append("".join(itos[i] for i in out))
    return names
