"""The exercise packs: for each, the file the learner starts from, its model solution, and its inputs.

An exercise's ``body`` is the Python of the learner's file below the common header: ``forward`` written out
with the shape of every intermediate, and ``backward`` with one blank per gradient, a line
``dX = TODO("dX")``. ``solutions`` fills each blank (the model solution, which the tests hold to tinyops'
ops and to torch autograd). Each :class:`Step` is one gradient in the order the backward computes it: the
rows of the ``cmp`` table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._checks import Array

Namespace = dict[str, Any]  # name -> array (or int): the inputs and the forward's intermediates


@dataclass(frozen=True)
class Step:
    """One gradient of an exercise: ``d<name>``, a row of the table."""

    name: str  # the intermediate; its gradient is "d" + name
    section: str  # the heading of docs/derivations.md that derives this step
    masks: tuple[str, ...] = ()  # masks of the case (Case.masks) the step's gradient may be wrong in
    scatter: str | None = None  # index array of a scatter-add into this gradient's rows (repeated indices)
    variants: tuple[Variant, ...] = ()  # mistakes particular to this step, as code that makes them


@dataclass(frozen=True)
class Variant:
    """A mistake particular to one step, as the line(s) that would make it: a hypothesis the check tests by
    running the model solution with these lines in the step's blank and comparing with the learner's array."""

    kind: str  # as Diagnosis.kind
    detail: str
    message: str
    code: str


@dataclass(frozen=True)
class Exercise:
    name: str
    title: str
    intro: str  # the file's docstring, after the title
    legend: str  # the shape letters
    body: str  # forward and backward, with the blanks
    steps: tuple[Step, ...]
    solutions: dict[str, str]  # gradient variable -> the lines that fill its blank
    make_case: Callable[[np.random.Generator, bool], Namespace]  # (rng, fixed) -> float64 inputs and indices
    masks: Callable[[Namespace], dict[str, tuple[Array, str]]] = lambda ns: {}
    reference: Callable[[Namespace], dict[str, Array]] | None = None  # tinyops' ops; None: the model solution
    rounding_note: dict[str, str] = field(default_factory=dict)  # step -> how the reference orders the math
    train: bool = False  # exercise 4: train with the learner's backward after the gradients pass
    hints: dict[str, str] = field(default_factory=dict)  # gradient variable -> the step's local derivative, in words

    @property
    def filename(self) -> str:
        return self.name.replace("-", "_") + ".py"


# ============================================================================ shared pieces

_OP_ROUNDING = ("the reference is tinyops' {op}: a float32 formula gives its bits only with the same operations "
                "in the same order (read them in the op's backward); where the op works in float64 inside and "
                "rounds once (the softmax family, cross-entropy), no float32 formula gives all of its bits, and a "
                "few ULP is the expected result")


def _distinct_dims(rng: np.random.Generator, ranges: dict[str, tuple[int, int]],
                   products: Callable[[dict[str, int]], list[int]]) -> dict[str, int]:
    """Random sizes, redrawn until every size (and product) that names a gradient axis differs from the others:
    then no gradient is square and a transposed or wrongly summed one has a shape of its own."""
    while True:
        dims = {k: int(rng.integers(lo, hi + 1)) for k, (lo, hi) in ranges.items()}
        sizes = products(dims)
        if len(set(sizes)) == len(sizes):
            return dims


def _indices_with_repeats(rng: np.random.Generator, V: int, shape: tuple[int, ...]) -> Array:
    """Indices in [0, V) in which some rows appear more than once and some exactly once."""
    idx = rng.integers(0, V, size=shape)
    flat = idx.reshape(-1)
    flat[:2] = flat[0]  # at least one repeat, whatever the draw
    return idx


def _onehot(rows: Array, C: int) -> Array:
    mask = np.zeros((rows.shape[0], C), dtype=bool)
    mask[np.arange(rows.shape[0]), rows] = True
    return mask


def _target_mask(ns: Namespace, key: str) -> tuple[Array, str]:
    return _onehot(ns["Yb"], ns[key].shape[1]), "the entries [range(n), Yb] that the loss picks (the targets)"


def _mlp_params(rng: np.random.Generator, V: int, T: int, D: int, H: int) -> Namespace:
    """makemore part 4's initialization (fan-in scaled W1, small W2, b1, b2; bngain near 1)."""
    fan_in = T * D
    return {
        "C": rng.standard_normal((V, D)),
        "W1": rng.standard_normal((fan_in, H)) * (5 / 3) / fan_in**0.5,
        "b1": rng.standard_normal(H) * 0.1,
        "W2": rng.standard_normal((H, V)) * 0.1,
        "b2": rng.standard_normal(V) * 0.1,
        "bngain": rng.standard_normal((1, H)) * 0.1 + 1.0,
        "bnbias": rng.standard_normal((1, H)) * 0.1,
    }


def _mlp_case(rng: np.random.Generator, fixed: bool) -> Namespace:
    if fixed:
        n, V, T, D, H = 32, 27, 3, 10, 64  # the lecture's
    else:
        d = _distinct_dims(rng, {"n": (8, 48), "T": (2, 4), "D": (3, 9), "H": (12, 80)},
                           lambda d: [d["n"], 27, d["T"] * d["D"], d["H"], d["D"], d["T"]])
        n, V, T, D, H = d["n"], 27, d["T"], d["D"], d["H"]
    P = _mlp_params(rng, V, T, D, H)
    # the parameters as after some training: the lecture's init makes W2 small and every logit near 0
    P["W2"] = P["W2"] * 10 * rng.uniform(0.5, 1.5)
    return {**P, "Xb": _indices_with_repeats(rng, V, (n, T)), "Yb": rng.integers(0, V, size=n)}


def _mlp_masks(ns: Namespace) -> dict[str, tuple[Array, str]]:
    V = ns["logits"].shape[1]
    return {
        "target": _target_mask(ns, "logits"),
        "argmax": (_onehot(ns["logits"].argmax(1), V), "each row's largest logit (the entry logit_maxes takes)"),
    }


# ============================================================================ hints: each step's rule, in words

CHAIN_HINTS = {
    "dlogprobs": "loss = -(1/n) * (the sum of the n entries logprobs[i, Yb[i]]): each picked entry gets -1/n, "
                 "every other entry 0 (start from np.zeros_like(logprobs)).",
    "dprobs": "logprobs = log(probs), entry by entry: d log(p)/dp = 1/p, times dlogprobs.",
    "dcounts_sum_inv": "probs = counts * counts_sum_inv, with counts_sum_inv (n, 1) broadcast across each row: its "
                       "local derivative is counts, and the copies' gradients add up: a sum over axis 1, "
                       "keepdims=True.",
    "dcounts_sum": "counts_sum_inv = counts_sum**-1: the power rule gives -counts_sum**-2, times dcounts_sum_inv.",
    "dcounts": "counts is used twice: in probs = counts * counts_sum_inv (local derivative counts_sum_inv) and in "
               "counts_sum = counts.sum(1) (every entry passes its row's dcounts_sum through). Add both.",
    "dnorm_logits": "counts = exp(norm_logits): exp is its own derivative, and exp(norm_logits) is counts.",
    "dlogit_maxes": "norm_logits = logits - logit_maxes, logit_maxes (n, 1) broadcast across each row with a minus "
                    "sign: minus dnorm_logits summed over axis 1 (keepdims). It comes out near 0: shifting the "
                    "logits does not change the loss.",
    "dlogits": "logits is used twice: in norm_logits (dnorm_logits passes through) and in logit_maxes = "
               "logits.max(1) (only each row's largest entry, at logits.argmax(1), gets its row's dlogit_maxes).",
    "dh": "logits = h @ W2 + b2: dh = dlogits @ W2.T (the shapes decide the order and the transpose).",
    "dW2": "logits = h @ W2 + b2: dW2 = h.T @ dlogits, (H, n) @ (n, V).",
    "db2": "b2 (V,) is added to every row: the rows' gradients add up, a sum over axis 0.",
    "dhpreact": "h = tanh(hpreact): d tanh(x)/dx = 1 - tanh(x)**2, and tanh(hpreact) is h.",
    "dbngain": "hpreact = bngain * bnraw + bnbias, bngain (1, H) broadcast down the batch: bnraw * dhpreact, summed "
               "over axis 0 (keepdims).",
    "dbnbias": "bnbias (1, H) is added to every row: dhpreact summed over axis 0 (keepdims).",
    "dbnraw": "hpreact = bngain * bnraw + bnbias: the local derivative with respect to bnraw is bngain.",
    "dbnvar_inv": "bnraw = bndiff * bnvar_inv, bnvar_inv (1, H) broadcast down the batch: bndiff * dbnraw, summed "
                  "over axis 0 (keepdims).",
    "dbnvar": "bnvar_inv = (bnvar + 1e-5)**-0.5: the power rule, -0.5 * (bnvar + 1e-5)**-1.5, times dbnvar_inv.",
    "dbndiff2": "bnvar = 1/(n-1) * bndiff2.sum(0): every entry of a column enters with weight 1/(n-1), so each "
                "gets its column's dbnvar / (n-1), an (n, H) array.",
    "dbndiff": "bndiff is used twice: in bnraw = bndiff * bnvar_inv (local derivative bnvar_inv) and in bndiff2 = "
               "bndiff**2 (local derivative 2 * bndiff). Add both.",
    "dbnmeani": "bndiff = hprebn - bnmeani, bnmeani (1, H) broadcast down the batch with a minus sign: minus "
                "dbndiff summed over axis 0 (keepdims).",
    "dhprebn": "hprebn is used twice: in bndiff (dbndiff passes through) and in bnmeani = 1/n * hprebn.sum(0) "
               "(every entry gets its column's dbnmeani / n). Add both.",
    "dembcat": "hprebn = embcat @ W1 + b1: dembcat = dhprebn @ W1.T.",
    "dW1": "hprebn = embcat @ W1 + b1: dW1 = embcat.T @ dhprebn.",
    "db1": "b1 (H,) is added to every row: a sum over axis 0. (Its true value is 0, because batchnorm subtracts "
           "the mean right after; expect rounding noise.)",
    "demb": "embcat = emb.reshape(n, -1) only moves the numbers: reshape the gradient back to emb's shape.",
    "dC": "emb = C[Xb] copies row C[Xb[i, j]] to emb[i, j]: send each demb[i, j] back to its row and add them up; "
          "a row looked up k times gets k gradients (np.add.at does this; dC[Xb] += demb does not).",
}

FUSED_HINTS = {
    "dlogits": "loss = mean over rows of logsumexp(logits[i]) - logits[i, Yb[i]]. The gradient of logsumexp is "
               "the softmax of the row; that of the picked logit is 1 at Yb[i] and 0 elsewhere; the mean "
               "divides by n.",
    "dhprebn": "three paths reach each hprebn: directly through bnraw, through the mean, and through the variance. "
               "With bnraw = (hprebn - mean) * bnvar_inv, pull bngain * bnvar_inv / n out in front: one term "
               "per path is left, two of them sums over the batch (axis 0), and the variance's carries "
               "n/(n-1) from Bessel's correction.",
}

VJP_HINTS = {
    "dx_lse": "d logsumexp(x)/dx_j = softmax(x)_j = y_j; dlse has one value per row: broadcast it across the row.",
    "dx_softmax": "dy_i/dx_j = y_i * ([i = j] - y_j), so dx_j = y_j * (dy_j - sum_i dy_i * y_i), the sum over each "
                  "row (keepdims).",
    "dx_log_softmax": "logy_i = x_i - logsumexp(x), so dlogy_i/dx_j = [i = j] - y_j: dx_j = dlogy_j - y_j * "
                      "sum_i dlogy_i, with y = exp(logy) and the sum over each row (keepdims).",
}

LINEAR_TANH_HINTS = {
    "dhpre": "h = tanh(hpre): d tanh(x)/dx = 1 - tanh(x)**2, and tanh(hpre) is h.",
    "dx": "hpre = x @ W + b: dx = dhpre @ W.T (the shapes decide the order and the transpose).",
    "dW": "hpre = x @ W + b: dW = x.T @ dhpre.",
    "db": "b (O,) is added to every row: the rows' gradients add up, a sum over axis 0.",
}


# ============================================================================ exercise 1: every intermediate

_CHAIN_BODY = '''
def forward(C, W1, b1, W2, b2, bngain, bnbias, Xb, Yb):
    """makemore part 4's forward, one small step per line so that each can be backpropagated by hand."""
    n = Xb.shape[0]
    emb = C[Xb]  # (n, T, D) embed the characters
    embcat = emb.reshape(n, -1)  # (n, T*D) concatenate the vectors
    hprebn = embcat @ W1 + b1  # (n, H) hidden layer pre-activation
    # batchnorm, with Bessel's correction (n - 1) in the variance
    bnmeani = 1 / n * hprebn.sum(0, keepdims=True)  # (1, H)
    bndiff = hprebn - bnmeani  # (n, H)
    bndiff2 = bndiff**2  # (n, H)
    bnvar = 1 / (n - 1) * bndiff2.sum(0, keepdims=True)  # (1, H)
    bnvar_inv = (bnvar + 1e-5) ** -0.5  # (1, H)
    bnraw = bndiff * bnvar_inv  # (n, H)
    hpreact = bngain * bnraw + bnbias  # (n, H)
    h = np.tanh(hpreact)  # (n, H) hidden layer
    logits = h @ W2 + b2  # (n, V) output layer
    # cross-entropy, the long way
    logit_maxes = logits.max(1, keepdims=True)  # (n, 1)
    norm_logits = logits - logit_maxes  # (n, V) subtract the max for numerical stability
    counts = np.exp(norm_logits)  # (n, V)
    counts_sum = counts.sum(1, keepdims=True)  # (n, 1)
    counts_sum_inv = counts_sum**-1  # (n, 1) (1.0 / counts_sum rounds differently from the lecture's torch)
    probs = counts * counts_sum_inv  # (n, V)
    logprobs = np.log(probs)  # (n, V)
    loss = -logprobs[np.arange(n), Yb].mean()  # ()
    return locals()


def backward(Xb, Yb, C, W1, b1, W2, b2, bngain, bnbias, emb, embcat, hprebn, bnmeani, bndiff, bndiff2,
             bnvar, bnvar_inv, bnraw, hpreact, h, logits, logit_maxes, norm_logits, counts, counts_sum,
             counts_sum_inv, probs, logprobs, loss):
    """The gradient of the loss with respect to every intermediate, in reverse order of the forward.

    Each dX has X's shape. An intermediate used twice in the forward (counts, bndiff, hprebn) gets the
    sum of the gradients along both paths.
    """
    n = Xb.shape[0]
    dlogprobs = TODO("dlogprobs")  # (n, V) loss = -mean of the picked logprobs
    dprobs = TODO("dprobs")  # (n, V)
    dcounts_sum_inv = TODO("dcounts_sum_inv")  # (n, 1) broadcast along each row in probs
    dcounts_sum = TODO("dcounts_sum")  # (n, 1)
    dcounts = TODO("dcounts")  # (n, V) two paths: through probs and through counts_sum
    dnorm_logits = TODO("dnorm_logits")  # (n, V)
    dlogit_maxes = TODO("dlogit_maxes")  # (n, 1)
    dlogits = TODO("dlogits")  # (n, V) two paths: through norm_logits and through logit_maxes
    dh = TODO("dh")  # (n, H)
    dW2 = TODO("dW2")  # (H, V)
    db2 = TODO("db2")  # (V,)
    dhpreact = TODO("dhpreact")  # (n, H)
    dbngain = TODO("dbngain")  # (1, H)
    dbnbias = TODO("dbnbias")  # (1, H)
    dbnraw = TODO("dbnraw")  # (n, H)
    dbnvar_inv = TODO("dbnvar_inv")  # (1, H)
    dbnvar = TODO("dbnvar")  # (1, H)
    dbndiff2 = TODO("dbndiff2")  # (n, H)
    dbndiff = TODO("dbndiff")  # (n, H) two paths: through bnraw and through bndiff2
    dbnmeani = TODO("dbnmeani")  # (1, H)
    dhprebn = TODO("dhprebn")  # (n, H) two paths: through bndiff and through bnmeani
    dembcat = TODO("dembcat")  # (n, T*D)
    dW1 = TODO("dW1")  # (T*D, H)
    db1 = TODO("db1")  # (H,)
    demb = TODO("demb")  # (n, T, D)
    dC = TODO("dC")  # (V, D) a row of C looked up k times gets k gradients
    return locals()
'''

_CHAIN_SOLUTIONS = {
    "dlogprobs": "dlogprobs = np.zeros_like(logprobs)\ndlogprobs[np.arange(n), Yb] = -1.0 / n",
    "dprobs": "dprobs = (1.0 / probs) * dlogprobs",
    "dcounts_sum_inv": "dcounts_sum_inv = (counts * dprobs).sum(1, keepdims=True)",
    "dcounts_sum": "dcounts_sum = -counts_sum**-2 * dcounts_sum_inv",
    "dcounts": "dcounts = counts_sum_inv * dprobs + np.ones_like(counts) * dcounts_sum",
    "dnorm_logits": "dnorm_logits = counts * dcounts",
    "dlogit_maxes": "dlogit_maxes = -dnorm_logits.sum(1, keepdims=True)",
    "dlogits": "dlogits = dnorm_logits.copy()\ndlogits[np.arange(n), logits.argmax(1)] += dlogit_maxes[:, 0]",
    "dh": "dh = dlogits @ W2.T",
    "dW2": "dW2 = h.T @ dlogits",
    "db2": "db2 = dlogits.sum(0)",
    "dhpreact": "dhpreact = (1.0 - h**2) * dh",
    "dbngain": "dbngain = (bnraw * dhpreact).sum(0, keepdims=True)",
    "dbnbias": "dbnbias = dhpreact.sum(0, keepdims=True)",
    "dbnraw": "dbnraw = bngain * dhpreact",
    "dbnvar_inv": "dbnvar_inv = (bndiff * dbnraw).sum(0, keepdims=True)",
    "dbnvar": "dbnvar = -0.5 * (bnvar + 1e-5) ** -1.5 * dbnvar_inv",
    "dbndiff2": "dbndiff2 = 1.0 / (n - 1) * np.ones_like(bndiff2) * dbnvar",
    "dbndiff": "dbndiff = bnvar_inv * dbnraw + 2 * bndiff * dbndiff2",
    "dbnmeani": "dbnmeani = -dbndiff.sum(0, keepdims=True)",
    "dhprebn": "dhprebn = dbndiff + 1.0 / n * np.ones_like(hprebn) * dbnmeani",
    "dembcat": "dembcat = dhprebn @ W1.T",
    "dW1": "dW1 = embcat.T @ dhprebn",
    "db1": "db1 = dhprebn.sum(0)",
    "demb": "demb = dembcat.reshape(emb.shape)",
    "dC": "dC = np.zeros_like(C)\nnp.add.at(dC, Xb, demb)",
}

_CE = "The naive cross-entropy chain"
_BN = "batchnorm"
_MLP_SECTION = "Composing them: the makemore MLP"

CHAIN = Exercise(
    name="backprop-chain",
    title="Backprop through every intermediate (makemore part 4, exercise 1).",
    intro=("The part-4 network, forward in small steps: embedding, linear, batchnorm written out atom by\n"
           "atom, tanh, linear, and the cross-entropy chain. Backpropagate through all of it by hand, one\n"
           "chain-rule step per line, from dlogprobs back to dC."),
    legend="n = batch, T = context length, D = embedding size, H = hidden units, V = vocabulary",
    body=_CHAIN_BODY,
    steps=(
        Step("logprobs", _CE, masks=("target",)),
        Step("probs", _CE, masks=("target",)),
        Step("counts_sum_inv", _CE),
        Step("counts_sum", _CE),
        Step("counts", _CE, masks=("target",)),
        Step("norm_logits", _CE, masks=("target",)),
        Step("logit_maxes", _CE),
        Step("logits", _CE, masks=("target", "argmax")),
        Step("h", "linear"),
        Step("W2", "linear"),
        Step("b2", "linear"),
        Step("hpreact", "tanh"),
        Step("bngain", _BN),
        Step("bnbias", _BN),
        Step("bnraw", _BN),
        Step("bnvar_inv", _BN),
        Step("bnvar", _BN),
        Step("bndiff2", _BN),
        Step("bndiff", _BN),
        Step("bnmeani", _BN),
        Step("hprebn", _BN),
        Step("embcat", "linear"),
        Step("W1", "linear"),
        Step("b1", "linear"),
        Step("emb", "embedding"),
        Step("C", "embedding", scatter="Xb"),
    ),
    solutions=_CHAIN_SOLUTIONS,
    hints=CHAIN_HINTS,
    make_case=_mlp_case,
    masks=_mlp_masks,
    rounding_note={
        "counts_sum": "the lecture writes counts_sum**-1 (not 1.0 / counts_sum) in the forward for this reason: "
                      "the power and the division round differently, and only the same operation in the same "
                      "order gives the same bits",
    },
)


# ============================================================================ exercise 2: fused cross-entropy

_FUSED_CE_BODY = '''
def forward(logits, Yb):
    """The mean cross-entropy of the logits against the targets, in one step."""
    n = logits.shape[0]
    logit_maxes = logits.max(1, keepdims=True)  # (n, 1)
    lse = logit_maxes + np.log(np.exp(logits - logit_maxes).sum(1, keepdims=True))  # (n, 1) logsumexp
    loss = (lse[:, 0] - logits[np.arange(n), Yb]).mean()  # ()
    return locals()


def backward(logits, Yb, loss):
    """dloss/dlogits in one expression: derive it on paper first, then write it here."""
    n = logits.shape[0]
    dlogits = TODO("dlogits")  # (n, V)
    return locals()
'''

FUSED_CE = Exercise(
    name="cross-entropy-fused",
    title="Cross-entropy in one step (makemore part 4, exercise 2).",
    intro=("The loss is loss = mean(logsumexp(logits) - logits[range(n), Yb]). Its gradient collapses to one\n"
           "expression of softmax(logits), the targets and n: derive it, write it without any loop."),
    legend="n = batch, V = vocabulary",
    body=_FUSED_CE_BODY,
    steps=(Step("logits", "Fused cross-entropy", masks=("target",), variants=(Variant(
        "sum-axis", "wrong-axis", "dlogits normalizes the softmax over axis 0 (down the batch) instead of axis 1 "
        "(each row's classes): the sum in the softmax runs over the classes, sum(1, keepdims=True).",
        "counts = np.exp(logits)\ndlogits = counts / counts.sum(0, keepdims=True)\n"
        "dlogits[np.arange(n), Yb] -= 1\ndlogits /= n"),)),),
    solutions={"dlogits": ("counts = np.exp(logits - logits.max(1, keepdims=True))\n"
                           "dlogits = counts / counts.sum(1, keepdims=True)\n"
                           "dlogits[np.arange(n), Yb] -= 1\n"
                           "dlogits /= n")},
    make_case=lambda rng, fixed: _ce_case(rng, fixed),
    masks=lambda ns: {"target": _target_mask(ns, "logits")},
    reference=lambda ns: {"logits": _ce_reference(ns["logits"], ns["Yb"])},
    rounding_note={"logits": _OP_ROUNDING.format(op="cross_entropy_backward (tinyops/ops/cross_entropy.py)")},
    hints={"dlogits": FUSED_HINTS["dlogits"]},
)


def _ce_case(rng: np.random.Generator, fixed: bool) -> Namespace:
    if fixed:
        n, V = 32, 27
    else:
        d = _distinct_dims(rng, {"n": (5, 64), "V": (3, 40)}, lambda d: [d["n"], d["V"]])
        n, V = d["n"], d["V"]
    return {"logits": rng.standard_normal((n, V)) * 2.0, "Yb": rng.integers(0, V, size=n)}


def _ce_reference(logits: Array, Yb: Array) -> Array:
    from ..ops.cross_entropy import cross_entropy_backward, cross_entropy_forward

    _, cache = cross_entropy_forward(logits, Yb, backend="reference")
    return cross_entropy_backward(1.0, cache)


# ============================================================================ exercise 3: batchnorm

_BN_CHAIN_BODY = '''
def forward(hprebn, bngain, bnbias):
    """Batchnorm over the batch, written out atom by atom (Bessel's correction in the variance)."""
    n = hprebn.shape[0]
    bnmeani = 1 / n * hprebn.sum(0, keepdims=True)  # (1, H)
    bndiff = hprebn - bnmeani  # (n, H)
    bndiff2 = bndiff**2  # (n, H)
    bnvar = 1 / (n - 1) * bndiff2.sum(0, keepdims=True)  # (1, H)
    bnvar_inv = (bnvar + 1e-5) ** -0.5  # (1, H)
    bnraw = bndiff * bnvar_inv  # (n, H)
    hpreact = bngain * bnraw + bnbias  # (n, H)
    return locals()


def backward(dhpreact, hprebn, bngain, bnbias, bnmeani, bndiff, bndiff2, bnvar, bnvar_inv, bnraw):
    """Given dhpreact (the gradient arriving from above), the gradient of every intermediate."""
    n = hprebn.shape[0]
    dbngain = TODO("dbngain")  # (1, H)
    dbnbias = TODO("dbnbias")  # (1, H)
    dbnraw = TODO("dbnraw")  # (n, H)
    dbnvar_inv = TODO("dbnvar_inv")  # (1, H)
    dbnvar = TODO("dbnvar")  # (1, H)
    dbndiff2 = TODO("dbndiff2")  # (n, H)
    dbndiff = TODO("dbndiff")  # (n, H) two paths: through bnraw and through bndiff2
    dbnmeani = TODO("dbnmeani")  # (1, H)
    dhprebn = TODO("dhprebn")  # (n, H) two paths: through bndiff and through bnmeani
    return locals()
'''


def _bn_case(rng: np.random.Generator, fixed: bool) -> Namespace:
    n, H = (32, 64) if fixed else tuple(_distinct_dims(rng, {"n": (4, 48), "H": (5, 70)},
                                                       lambda d: [d["n"], d["H"]]).values())
    return {
        "hprebn": rng.standard_normal((n, H)) * rng.uniform(0.5, 2.0, size=H) + rng.standard_normal(H),
        "bngain": rng.standard_normal((1, H)) * 0.1 + 1.0,
        "bnbias": rng.standard_normal((1, H)) * 0.1,
        "dhpreact": rng.standard_normal((n, H)) / n,
    }


BN_CHAIN = Exercise(
    name="batchnorm-chain",
    title="Backprop through batchnorm, step by step (makemore part 4, exercise 1's batchnorm).",
    intro=("hpreact = bngain * (hprebn - mean) / sqrt(var + eps) + bnbias over the batch, with the unbiased\n"
           "variance (divided by n - 1), written out atom by atom. The gradient of hpreact is given."),
    legend="n = batch, H = hidden units",
    body=_BN_CHAIN_BODY,
    steps=tuple(Step(k, _BN) for k in ("bngain", "bnbias", "bnraw", "bnvar_inv", "bnvar", "bndiff2", "bndiff",
                                       "bnmeani", "hprebn")),
    solutions={k: v for k, v in _CHAIN_SOLUTIONS.items()
               if k in ("dbngain", "dbnbias", "dbnraw", "dbnvar_inv", "dbnvar", "dbndiff2", "dbndiff", "dbnmeani",
                        "dhprebn")},
    make_case=_bn_case,
    hints=CHAIN_HINTS,
)

_BN_FUSED_BODY = '''
def forward(hprebn, bngain, bnbias):
    """Batchnorm over the batch in training mode, with the unbiased variance (as the lecture)."""
    n = hprebn.shape[0]
    bnmean = hprebn.mean(0, keepdims=True)  # (1, H)
    bnvar = hprebn.var(0, keepdims=True, ddof=1)  # (1, H) Bessel's correction: divided by n - 1
    bnvar_inv = (bnvar + 1e-5) ** -0.5  # (1, H)
    bnraw = (hprebn - bnmean) * bnvar_inv  # (n, H)
    hpreact = bngain * bnraw + bnbias  # (n, H)
    return locals()


def backward(dhpreact, hprebn, bngain, bnbias, bnmean, bnvar, bnvar_inv, bnraw):
    """dhprebn in one line (from bngain, bnvar_inv, bnraw, dhpreact and n), then dbngain and dbnbias."""
    n = hprebn.shape[0]
    dhprebn = TODO("dhprebn")  # (n, H)
    dbngain = TODO("dbngain")  # (1, H)
    dbnbias = TODO("dbnbias")  # (1, H)
    return locals()
'''


_BN_FUSED_VARIANTS = (
    Variant("factor", "bessel",
            "dhprebn drops the n/(n-1) in front of bnraw * (dhpreact * bnraw).sum(0): that factor is Bessel's "
            "correction, n/(n-1) = (variance divided by n) / (variance divided by n - 1), and the forward divides "
            "by n - 1.",
            "dhprebn = bngain * bnvar_inv / n * (n * dhpreact - dhpreact.sum(0) - bnraw * (dhpreact * bnraw).sum(0))"),
    Variant("sum-axis", "wrong-axis",
            "dhprebn sums over axis 1 (the features) where batchnorm's statistics sum over axis 0 (the batch): "
            "both sums in the one-line form are .sum(0).",
            "dhprebn = bngain * bnvar_inv / n * (n * dhpreact - dhpreact.sum(1, keepdims=True) "
            "- n / (n - 1) * bnraw * (dhpreact * bnraw).sum(1, keepdims=True))"),
)


def _bn_reference(ns: Namespace) -> dict[str, Array]:
    from ..ops.batchnorm import batchnorm1d_backward, batchnorm1d_forward

    _, cache, _ = batchnorm1d_forward(ns["hprebn"], ns["bngain"][0], ns["bnbias"][0], eps=1e-5, unbiased=True,
                                      backend="reference")
    dx, dgain, dbias = batchnorm1d_backward(ns["dhpreact"], cache)
    assert dgain is not None and dbias is not None  # the forward had both
    return {"hprebn": dx, "bngain": dgain[None, :], "bnbias": dbias[None, :]}


BN_FUSED = Exercise(
    name="batchnorm-fused",
    title="Batchnorm's backward in one line (makemore part 4, exercise 3).",
    intro=("The same batchnorm as a few lines of forward. Derive dhprebn on paper (the mean and the variance\n"
           "both depend on every row) and write it as one expression."),
    legend="n = batch, H = hidden units",
    body=_BN_FUSED_BODY,
    steps=(Step("hprebn", _BN, variants=_BN_FUSED_VARIANTS), Step("bngain", _BN), Step("bnbias", _BN)),
    solutions={
        "dhprebn": ("dhprebn = bngain * bnvar_inv / n * (n * dhpreact - dhpreact.sum(0) "
                    "- n / (n - 1) * bnraw * (dhpreact * bnraw).sum(0))"),
        "dbngain": "dbngain = (bnraw * dhpreact).sum(0, keepdims=True)",
        "dbnbias": "dbnbias = dhpreact.sum(0, keepdims=True)",
    },
    make_case=_bn_case,
    reference=_bn_reference,
    rounding_note={"hprebn": _OP_ROUNDING.format(op="batchnorm1d_backward (tinyops/ops/batchnorm.py)")},
    hints={**CHAIN_HINTS, "dhprebn": FUSED_HINTS["dhprebn"]},
)


# ============================================================================ embedding, linear, tanh

_EMB_BODY = '''
def forward(C, Xb):
    """Look up a row of C for every index: the embedding."""
    emb = C[Xb]  # (n, T, D)
    return locals()


def backward(demb, C, Xb):
    """Given demb (the gradient arriving from above), dC. An index that appears k times in Xb sends
    k gradients to the same row of C: they add up."""
    dC = TODO("dC")  # (V, D)
    return locals()
'''


def _emb_case(rng: np.random.Generator, fixed: bool) -> Namespace:
    if fixed:
        n, T, V, D = 32, 3, 27, 10
    else:
        d = _distinct_dims(rng, {"n": (3, 40), "T": (1, 5), "V": (4, 40), "D": (2, 16)},
                           lambda d: [d["V"], d["D"]])
        n, T, V, D = d["n"], d["T"], d["V"], d["D"]
    return {"C": rng.standard_normal((V, D)), "Xb": _indices_with_repeats(rng, V, (n, T)),
            "demb": rng.standard_normal((n, T, D))}


def _emb_reference(ns: Namespace) -> dict[str, Array]:
    from ..ops.embedding import embedding_backward, embedding_forward

    _, cache = embedding_forward(ns["C"], ns["Xb"], backend="reference")
    return {"C": embedding_backward(ns["demb"], cache)}


EMBEDDING = Exercise(
    name="embedding",
    title="The embedding's backward: a scatter-add with repeated indices.",
    intro=("emb = C[Xb] copies a row of C for every index. Its backward sends each row of demb back to the\n"
           "row of C it came from; a row looked up several times receives the sum of their gradients."),
    legend="n = batch, T = context length, V = rows of C, D = embedding size",
    body=_EMB_BODY,
    steps=(Step("C", "embedding", scatter="Xb"),),
    solutions={"dC": "dC = np.zeros_like(C)\nnp.add.at(dC, Xb, demb)"},
    make_case=_emb_case,
    reference=_emb_reference,
    rounding_note={"C": _OP_ROUNDING.format(op="embedding_backward (tinyops/ops/embedding.py)")},
    hints={"dC": CHAIN_HINTS["dC"]},
)

_LT_BODY = '''
def forward(x, W, b):
    """A linear layer and a tanh: h = tanh(x @ W + b)."""
    hpre = x @ W + b  # (n, O)
    h = np.tanh(hpre)  # (n, O)
    return locals()


def backward(dh, x, W, b, hpre, h):
    """Given dh (the gradient arriving from above), the gradients of hpre, x, W and b."""
    dhpre = TODO("dhpre")  # (n, O) use h, the forward's output
    dx = TODO("dx")  # (n, I)
    dW = TODO("dW")  # (I, O)
    db = TODO("db")  # (O,) b was broadcast over the rows
    return locals()
'''


def _lt_case(rng: np.random.Generator, fixed: bool) -> Namespace:
    if fixed:
        n, I, O = 32, 30, 64
    else:
        d = _distinct_dims(rng, {"n": (2, 40), "I": (2, 40), "O": (2, 40)}, lambda d: [d["n"], d["I"], d["O"]])
        n, I, O = d["n"], d["I"], d["O"]
    return {"x": rng.standard_normal((n, I)), "W": rng.standard_normal((I, O)) / I**0.5,
            "b": rng.standard_normal(O) * 0.1, "dh": rng.standard_normal((n, O))}


def _lt_reference(ns: Namespace) -> dict[str, Array]:
    from ..ops.linear import linear_backward, linear_forward
    from ..ops.tanh import tanh_backward, tanh_forward

    hpre, lcache = linear_forward(ns["x"], ns["W"], ns["b"])
    _, tcache = tanh_forward(hpre, backend="reference")
    dhpre = tanh_backward(ns["dh"], tcache)
    dx, dW, db = linear_backward(dhpre, lcache)
    assert db is not None  # the forward had a bias
    return {"hpre": dhpre, "x": dx, "W": dW, "b": db}


LINEAR_TANH = Exercise(
    name="linear-tanh",
    title="The backward of a linear layer and of tanh.",
    intro="h = tanh(x @ W + b): tanh's derivative from its output, then the matrix products and the bias' sum.",
    legend="n = batch, I = inputs, O = outputs",
    body=_LT_BODY,
    steps=(Step("hpre", "tanh"), Step("x", "linear"), Step("W", "linear"), Step("b", "linear")),
    solutions={"dhpre": "dhpre = (1.0 - h**2) * dh", "dx": "dx = dhpre @ W.T", "dW": "dW = x.T @ dhpre",
               "db": "db = dhpre.sum(0)"},
    make_case=_lt_case,
    reference=_lt_reference,
    rounding_note={k: _OP_ROUNDING.format(op=op) for k, op in (
        ("hpre", "tanh_backward (tinyops/ops/tanh.py)"), ("x", "linear_backward (tinyops/ops/linear.py)"),
        ("W", "linear_backward (tinyops/ops/linear.py)"), ("b", "linear_backward (tinyops/ops/linear.py)"))},
    hints=LINEAR_TANH_HINTS,
)


# ============================================================================ logsumexp, softmax, log_softmax

_VJP_BODY = '''
def forward(x):
    """Three functions of each row of x (the last axis), each the start of its own backward."""
    m = x.max(1, keepdims=True)  # (n, 1)
    lse = (m + np.log(np.exp(x - m).sum(1, keepdims=True)))[:, 0]  # (n,) logsumexp
    y = np.exp(x - m) / np.exp(x - m).sum(1, keepdims=True)  # (n, V) softmax
    logy = x - lse[:, None]  # (n, V) log_softmax
    return locals()


def backward(x, lse, y, logy, dlse, dy, dlogy):
    """Vector-Jacobian products: given the gradient arriving at each output (dlse, dy, dlogy), the gradient
    each sends back to x. No (V, V) Jacobian: each is a line of row-wise products and sums."""
    dx_lse = TODO("dx_lse")  # (n, V) from dlse (n,)
    dx_softmax = TODO("dx_softmax")  # (n, V) from dy (n, V)
    dx_log_softmax = TODO("dx_log_softmax")  # (n, V) from dlogy (n, V)
    return locals()
'''


def _vjp_case(rng: np.random.Generator, fixed: bool) -> Namespace:
    n, V = (32, 27) if fixed else tuple(_distinct_dims(rng, {"n": (2, 40), "V": (2, 60)},
                                                       lambda d: [d["n"], d["V"]]).values())
    return {"x": rng.standard_normal((n, V)) * 2.0, "dlse": rng.standard_normal(n),
            "dy": rng.standard_normal((n, V)), "dlogy": rng.standard_normal((n, V))}


def _vjp_reference(ns: Namespace) -> dict[str, Array]:
    from ..ops import softmax as S

    _, c1 = S.logsumexp_forward(ns["x"], axis=1, backend="reference")
    _, c2 = S.softmax_forward(ns["x"], axis=1, backend="reference")
    _, c3 = S.log_softmax_forward(ns["x"], axis=1, backend="reference")
    return {"x_lse": S.logsumexp_backward(ns["dlse"], c1), "x_softmax": S.softmax_backward(ns["dy"], c2),
            "x_log_softmax": S.log_softmax_backward(ns["dlogy"], c3)}


VJP = Exercise(
    name="softmax-vjp",
    title="logsumexp, softmax and log_softmax as vector-Jacobian products.",
    intro=("The gradient of logsumexp is softmax; softmax's Jacobian is diag(y) - y y^T; log_softmax's is\n"
           "I - 1 y^T. Apply each to the incoming gradient without forming the matrix."),
    legend="n = rows, V = entries per row",
    body=_VJP_BODY,
    steps=(
        Step("x_lse", "logsumexp"),
        Step("x_softmax", "softmax", variants=(Variant(
            "sum-axis", "wrong-axis", "dx_softmax sums dy * y over axis 0 (down the rows) where each row is its own "
            "softmax: the sum runs over the row, sum(1, keepdims=True).",
            "dx_softmax = y * (dy - (dy * y).sum(0, keepdims=True))"),)),
        Step("x_log_softmax", "log_softmax", variants=(Variant(
            "sum-axis", "wrong-axis", "dx_log_softmax sums dlogy over axis 0 (down the rows) where each row is its "
            "own log_softmax: the sum runs over the row, sum(1, keepdims=True).",
            "dx_log_softmax = dlogy - np.exp(logy) * dlogy.sum(0, keepdims=True)"),)),
    ),
    solutions={
        "dx_lse": "dx_lse = y * dlse[:, None]",
        "dx_softmax": "dx_softmax = y * (dy - (dy * y).sum(1, keepdims=True))",
        "dx_log_softmax": "dx_log_softmax = dlogy - np.exp(logy) * dlogy.sum(1, keepdims=True)",
    },
    make_case=_vjp_case,
    reference=_vjp_reference,
    rounding_note={k: _OP_ROUNDING.format(op=f"{op} (tinyops/ops/softmax.py)") for k, op in (
        ("x_lse", "logsumexp_backward"), ("x_softmax", "softmax_backward"), ("x_log_softmax", "log_softmax_backward"))},
    hints=VJP_HINTS,
)


# ============================================================================ exercise 4: train with it

_MLP_BODY = '''
def forward(C, W1, b1, W2, b2, bngain, bnbias, Xb, Yb):
    """makemore part 4's network with the fused steps: batchnorm and cross-entropy in one piece each."""
    n = Xb.shape[0]
    emb = C[Xb]  # (n, T, D)
    embcat = emb.reshape(n, -1)  # (n, T*D)
    hprebn = embcat @ W1 + b1  # (n, H)
    bnmean = hprebn.mean(0, keepdims=True)  # (1, H)
    bnvar = hprebn.var(0, keepdims=True, ddof=1)  # (1, H) Bessel's correction
    bnvar_inv = (bnvar + 1e-5) ** -0.5  # (1, H)
    bnraw = (hprebn - bnmean) * bnvar_inv  # (n, H)
    hpreact = bngain * bnraw + bnbias  # (n, H)
    h = np.tanh(hpreact)  # (n, H)
    logits = h @ W2 + b2  # (n, V)
    logit_maxes = logits.max(1, keepdims=True)  # (n, 1)
    counts = np.exp(logits - logit_maxes)  # (n, V)
    probs = counts / counts.sum(1, keepdims=True)  # (n, V) softmax
    loss = -np.log(probs[np.arange(n), Yb]).mean()  # ()
    return locals()


def backward(Xb, Yb, C, W1, b1, W2, b2, bngain, bnbias, emb, embcat, hprebn, bnvar_inv, bnraw, h, probs):
    """The gradient of every parameter, using the fused forms of exercises 2 and 3. The checker then trains
    the network with these gradients: SGD, batches of 32, until the loss reaches its mark."""
    n = Xb.shape[0]
    dlogits = TODO("dlogits")  # (n, V)
    dh = TODO("dh")  # (n, H)
    dW2 = TODO("dW2")  # (H, V)
    db2 = TODO("db2")  # (V,)
    dhpreact = TODO("dhpreact")  # (n, H)
    dbngain = TODO("dbngain")  # (1, H)
    dbnbias = TODO("dbnbias")  # (1, H)
    dhprebn = TODO("dhprebn")  # (n, H)
    dembcat = TODO("dembcat")  # (n, T*D)
    dW1 = TODO("dW1")  # (T*D, H)
    db1 = TODO("db1")  # (H,)
    demb = TODO("demb")  # (n, T, D)
    dC = TODO("dC")  # (V, D)
    return locals()
'''


def _mlp_reference(ns: Namespace) -> dict[str, Array]:
    """Every gradient from tinyops' ops (the reference layer), composed as :func:`tinyops.mlp.backward`."""
    from ..ops.batchnorm import batchnorm1d_backward, batchnorm1d_forward
    from ..ops.cross_entropy import cross_entropy_backward, cross_entropy_forward
    from ..ops.embedding import embedding_backward, embedding_forward
    from ..ops.linear import linear_backward, linear_forward
    from ..ops.tanh import tanh_backward, tanh_forward

    emb, c_emb = embedding_forward(ns["C"], ns["Xb"], backend="reference")
    hprebn, c_hprebn = linear_forward(emb.reshape(emb.shape[0], -1), ns["W1"], ns["b1"])
    hpreact, c_bn, _ = batchnorm1d_forward(hprebn, ns["bngain"][0], ns["bnbias"][0], eps=1e-5, unbiased=True,
                                           backend="reference")
    h, c_h = tanh_forward(hpreact, backend="reference")
    logits, c_logits = linear_forward(h, ns["W2"], ns["b2"])
    _, c_loss = cross_entropy_forward(logits, ns["Yb"], backend="reference")
    g: dict[str, Any] = {"logits": cross_entropy_backward(1.0, c_loss)}
    g["h"], g["W2"], g["b2"] = linear_backward(g["logits"], c_logits)
    g["hpreact"] = tanh_backward(g["h"], c_h)
    g["hprebn"], dgain, dbias = batchnorm1d_backward(g["hpreact"], c_bn)
    assert dgain is not None and dbias is not None
    g["bngain"], g["bnbias"] = dgain[None, :], dbias[None, :]
    g["embcat"], g["W1"], g["b1"] = linear_backward(g["hprebn"], c_hprebn)
    g["emb"] = g["embcat"].reshape(emb.shape)
    g["C"] = embedding_backward(g["emb"], c_emb)
    return g


MLP_TRAIN = Exercise(
    name="mlp-train",
    title="Train the makemore MLP with your own backward (makemore part 4, exercise 4).",
    intro=("The network of exercise 1 with the fused cross-entropy and batchnorm. Write every parameter's\n"
           "gradient; the checker compares them with tinyops' ops, then trains the network with them (SGD,\n"
           "batches of 32) and passes when the loss on held-out names reaches its mark."),
    legend="n = batch, T = context length, D = embedding size, H = hidden units, V = vocabulary",
    body=_MLP_BODY,
    steps=(
        Step("logits", "Fused cross-entropy", masks=("target",)),
        Step("h", "linear"),
        Step("W2", "linear"),
        Step("b2", "linear"),
        Step("hpreact", "tanh"),
        Step("bngain", _BN),
        Step("bnbias", _BN),
        Step("hprebn", _BN, variants=_BN_FUSED_VARIANTS),
        Step("embcat", "linear"),
        Step("W1", "linear"),
        Step("b1", "linear"),
        Step("emb", "embedding"),
        Step("C", "embedding", scatter="Xb"),
    ),
    solutions={
        "dlogits": "dlogits = probs.copy()\ndlogits[np.arange(n), Yb] -= 1\ndlogits /= n",
        "dh": "dh = dlogits @ W2.T",
        "dW2": "dW2 = h.T @ dlogits",
        "db2": "db2 = dlogits.sum(0)",
        "dhpreact": "dhpreact = (1.0 - h**2) * dh",
        "dbngain": "dbngain = (bnraw * dhpreact).sum(0, keepdims=True)",
        "dbnbias": "dbnbias = dhpreact.sum(0, keepdims=True)",
        "dhprebn": BN_FUSED.solutions["dhprebn"],
        "dembcat": "dembcat = dhprebn @ W1.T",
        "dW1": "dW1 = embcat.T @ dhprebn",
        "db1": "db1 = dhprebn.sum(0)",
        "demb": "demb = dembcat.reshape(emb.shape)",
        "dC": "dC = np.zeros_like(C)\nnp.add.at(dC, Xb, demb)",
    },
    make_case=_mlp_case,
    masks=lambda ns: {"target": _target_mask(ns, "logits")},
    reference=_mlp_reference,
    rounding_note={k: _OP_ROUNDING.format(op=op) for k, op in (
        ("logits", "cross_entropy_backward (tinyops/ops/cross_entropy.py)"),
        *((k, "linear_backward (tinyops/ops/linear.py)") for k in ("h", "W2", "b2", "embcat", "W1", "b1")),
        ("hpreact", "tanh_backward (tinyops/ops/tanh.py)"),
        *((k, "batchnorm1d_backward (tinyops/ops/batchnorm.py)") for k in ("bngain", "bnbias", "hprebn")),
        *((k, "embedding_backward (tinyops/ops/embedding.py)") for k in ("emb", "C")))},
    hints={**CHAIN_HINTS, **FUSED_HINTS, "dlogits": "the fused cross-entropy of exercise 2, with probs (the "
           "softmax) from the forward: probs, minus 1 at each row's target, divided by n."},
    train=True,
)

EXERCISES: dict[str, Exercise] = {e.name: e for e in (
    CHAIN, FUSED_CE, BN_CHAIN, BN_FUSED, EMBEDDING, LINEAR_TANH, VJP, MLP_TRAIN)}
