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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt

from .ops.batchnorm import (
    BatchNormCache,
    BatchNormStats,
    batchnorm1d_backward,
    batchnorm1d_forward,
    batchnorm1d_stats,
)
from .ops.cross_entropy import CrossEntropyCache, cross_entropy_backward, cross_entropy_forward
from .ops.embedding import EmbeddingCache, embedding_backward, embedding_forward
from .ops.linear import LinearCache, linear_backward, linear_forward
from .ops.softmax import softmax
from .ops.tanh import TanhCache, tanh_backward, tanh_forward

Array = npt.NDArray[Any]
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
    loss: CrossEntropyCache | None


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
        )  # fmt: skip
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
    demb = dembcat.reshape((*cache.emb.idx.shape, -1))  # (N, T, D)
    grads["C"] = embedding_backward(demb, cache.emb)  # (V, D)
    return cast(Params, grads)  # every layer here has its weight and bias: no None


def sgd_update(params: Params, grads: Params, lr: float) -> None:
    """``p -= lr * grad`` for every parameter, in place (the parameters belong to the training loop)."""
    for name, p in params.items():
        g = grads[name]
        np.multiply(g, -lr, out=g)  # the gradient is ours: scale it where it lies
        p += g


def learning_rate(step: int, config: Config) -> float:
    """The lecture's step decay: ``lr`` before ``lr_decay_step``, ``lr_after`` from it on."""
    return config.lr if step < config.lr_decay_step else config.lr_after


def train_step(
    params: Params, Xb: IntArray, Yb: IntArray, config: Config, lr: float, stats: BatchNormStats | None
) -> tuple[float, BatchNormStats | None]:
    """One step of SGD on the batch: forward, backward, update. Returns the loss and the new running stats."""
    loss, cache, stats = forward(params, Xb, Yb, config, stats=stats, training=True)
    grads = backward(cache)
    sgd_update(params, grads, lr)
    return float(loss), stats


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
