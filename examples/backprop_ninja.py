"""makemore part 4, "becoming a backprop ninja", with NumPy and tinyops. Needs torch (as the reference).

The part-4 network (embedding 10, hidden 64, batchnorm with Bessel's correction, tanh, the seed's
cross-entropy chain written out atom by atom), forward in torch with every intermediate kept, then:

1. exercise 1: the backward of **every intermediate**, one chain-rule step per line, in NumPy, each
   compared with torch autograd's gradient in makemore's ``cmp`` table (``tinyops.compare``);
2. exercise 2: the fused cross-entropy, ``dlogits = (softmax - onehot) / n`` (``tinyops.cross_entropy``);
3. exercise 3: the fused batchnorm backward in one line (``tinyops.batchnorm1d_backward``, ``unbiased=True``);
4. exercise 4: training with the manual backward (``tinyops.mlp``: every gradient hand-derived, no
   autograd), first checking one step's parameter gradients against torch's, then a short run,
   the batchnorm statistics calibrated over the training set, and the train/dev losses.

The parameters get the lecture's initialization, all drawn from one torch generator seeded with
2147483647 (which then draws the batch, from the lecture's split of the names), so a run is
reproducible. The comparisons are in float32, as in the lecture, so most rows are "approximate"
(equal up to float32 rounding), not "exact".

    python examples/backprop_ninja.py --data path/to/names.txt [--steps 2000] [--seed 42]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

import tinyops
from tinyops import mlp
from tinyops.data import build_dataset, build_vocab, read_words, split_words

Array = np.ndarray[Any, Any]

BLOCK_SIZE = 3
N_EMBD = 10
N_HIDDEN = 64
BATCH = 32
BN_EPS = 1e-5
SEED = 2147483647


def lecture_parameters(torch: Any, vocab_size: int) -> tuple[dict[str, Any], Any]:
    """The part-4 initialization as float32 tensors, every one drawn from one seeded generator, and the
    generator, which goes on to draw the batch."""
    g = torch.Generator().manual_seed(SEED)
    fan_in = N_EMBD * BLOCK_SIZE
    C = torch.randn((vocab_size, N_EMBD), generator=g)
    W1 = torch.randn((fan_in, N_HIDDEN), generator=g) * (5 / 3) / fan_in**0.5
    b1 = torch.randn(N_HIDDEN, generator=g) * 0.1  # useless with batchnorm, kept to check its gradient
    W2 = torch.randn((N_HIDDEN, vocab_size), generator=g) * 0.1
    b2 = torch.randn(vocab_size, generator=g) * 0.1
    bngain = torch.randn((1, N_HIDDEN), generator=g) * 0.1 + 1.0
    bnbias = torch.randn((1, N_HIDDEN), generator=g) * 0.1
    return {"C": C, "W1": W1, "b1": b1, "W2": W2, "b2": b2, "bngain": bngain, "bnbias": bnbias}, g


def torch_forward(torch: Any, P: dict[str, Any], Xb: Array, Yb: Array) -> dict[str, Any]:
    """The lecture's forward, "chunkated into smaller steps that are possible to backward one at a time",
    with ``retain_grad`` on every intermediate so that autograd's gradient of each can be compared."""
    n = Xb.shape[0]
    Xt, Yt = torch.from_numpy(Xb), torch.from_numpy(Yb)
    t: dict[str, Any] = {}
    t["emb"] = P["C"][Xt]  # (n, T, D)
    t["embcat"] = t["emb"].view(n, -1)  # (n, T*D)
    t["hprebn"] = t["embcat"] @ P["W1"] + P["b1"]  # (n, H)
    t["bnmeani"] = 1 / n * t["hprebn"].sum(0, keepdim=True)  # (1, H)
    t["bndiff"] = t["hprebn"] - t["bnmeani"]  # (n, H)
    t["bndiff2"] = t["bndiff"] ** 2  # (n, H)
    t["bnvar"] = 1 / (n - 1) * t["bndiff2"].sum(0, keepdim=True)  # (1, H) Bessel's correction
    t["bnvar_inv"] = (t["bnvar"] + BN_EPS) ** -0.5  # (1, H)
    t["bnraw"] = t["bndiff"] * t["bnvar_inv"]  # (n, H)
    t["hpreact"] = P["bngain"] * t["bnraw"] + P["bnbias"]  # (n, H)
    t["h"] = torch.tanh(t["hpreact"])  # (n, H)
    t["logits"] = t["h"] @ P["W2"] + P["b2"]  # (n, V)
    t["logit_maxes"] = t["logits"].max(1, keepdim=True).values  # (n, 1)
    t["norm_logits"] = t["logits"] - t["logit_maxes"]  # (n, V)
    t["counts"] = t["norm_logits"].exp()  # (n, V)
    t["counts_sum"] = t["counts"].sum(1, keepdim=True)  # (n, 1)
    t["counts_sum_inv"] = t["counts_sum"] ** -1  # (n, 1)
    t["probs"] = t["counts"] * t["counts_sum_inv"]  # (n, V)
    t["logprobs"] = t["probs"].log()  # (n, V)
    t["loss"] = -t["logprobs"][torch.arange(n), Yt].mean()  # ()
    for p in P.values():
        p.grad = None
    for v in t.values():
        v.retain_grad()
    t["loss"].backward()
    return t


def manual_backward(v: dict[str, Array], P: dict[str, Array], Xb: Array, Yb: Array) -> dict[str, Array]:
    """Exercise 1: the gradient of every intermediate, one chain-rule step per line, in NumPy.

    ``v`` holds the forward's intermediates and ``P`` the parameters, as float32 NumPy arrays.
    """
    n = Xb.shape[0]
    rows = np.arange(n)
    d: dict[str, Array] = {}
    # loss = -mean(logprobs[rows, Yb]): each picked entry gets -1/n, the others 0
    d["logprobs"] = np.zeros_like(v["logprobs"])  # (n, V)
    d["logprobs"][rows, Yb] = -1.0 / n
    # logprobs = log(probs): d/dp log p = 1/p
    d["probs"] = d["logprobs"] / v["probs"]  # (n, V)
    # probs = counts * counts_sum_inv, counts_sum_inv broadcast along the row: sum over the row
    d["counts_sum_inv"] = (v["counts"] * d["probs"]).sum(1, keepdims=True)  # (n, 1)
    d["counts"] = v["counts_sum_inv"] * d["probs"]  # (n, V), first path into counts
    # counts_sum_inv = counts_sum ** -1
    d["counts_sum"] = -(v["counts_sum"] ** -2) * d["counts_sum_inv"]  # (n, 1)
    # counts_sum = counts.sum(1): every count enters with weight 1; the second path into counts
    d["counts"] = d["counts"] + d["counts_sum"]  # (n, V) (broadcast)
    # counts = exp(norm_logits)
    d["norm_logits"] = v["counts"] * d["counts"]  # (n, V)
    # norm_logits = logits - logit_maxes (broadcast): logit_maxes sums over the row
    d["logit_maxes"] = -d["norm_logits"].sum(1, keepdims=True)  # (n, 1), ~0: the shift changes nothing
    # logit_maxes = logits.max(1): only the argmax of each row receives it
    d["logits"] = d["norm_logits"].copy()  # (n, V)
    d["logits"][rows, v["logits"].argmax(1)] += d["logit_maxes"][:, 0]
    # logits = h @ W2 + b2
    d["h"] = d["logits"] @ P["W2"].T  # (n, H)
    d["W2"] = v["h"].T @ d["logits"]  # (H, V)
    d["b2"] = d["logits"].sum(0)  # (V,)
    # h = tanh(hpreact)
    d["hpreact"] = (1.0 - v["h"] ** 2) * d["h"]  # (n, H)
    # hpreact = bngain * bnraw + bnbias, bngain and bnbias (1, H) broadcast down the batch
    d["bngain"] = (v["bnraw"] * d["hpreact"]).sum(0, keepdims=True)  # (1, H)
    d["bnraw"] = P["bngain"] * d["hpreact"]  # (n, H)
    d["bnbias"] = d["hpreact"].sum(0, keepdims=True)  # (1, H)
    # bnraw = bndiff * bnvar_inv
    d["bndiff"] = v["bnvar_inv"] * d["bnraw"]  # (n, H), first path into bndiff
    d["bnvar_inv"] = (v["bndiff"] * d["bnraw"]).sum(0, keepdims=True)  # (1, H)
    # bnvar_inv = (bnvar + eps) ** -0.5
    d["bnvar"] = -0.5 * (v["bnvar"] + BN_EPS) ** -1.5 * d["bnvar_inv"]  # (1, H)
    # bnvar = 1/(n-1) * bndiff2.sum(0)
    d["bndiff2"] = np.ones_like(v["bndiff2"]) / (n - 1) * d["bnvar"]  # (n, H)
    # bndiff2 = bndiff ** 2: the second path into bndiff
    d["bndiff"] = d["bndiff"] + 2.0 * v["bndiff"] * d["bndiff2"]  # (n, H)
    # bndiff = hprebn - bnmeani (broadcast)
    d["bnmeani"] = -d["bndiff"].sum(0, keepdims=True)  # (1, H)
    # bnmeani = 1/n * hprebn.sum(0): the second path into hprebn
    d["hprebn"] = d["bndiff"] + np.ones_like(v["hprebn"]) / n * d["bnmeani"]  # (n, H)
    # hprebn = embcat @ W1 + b1
    d["embcat"] = d["hprebn"] @ P["W1"].T  # (n, T*D)
    d["W1"] = v["embcat"].T @ d["hprebn"]  # (T*D, H)
    d["b1"] = d["hprebn"].sum(0)  # (H,)
    # embcat = emb.view(n, -1)
    d["emb"] = d["embcat"].reshape(v["emb"].shape)  # (n, T, D)
    # emb = C[Xb]: scatter-add, a row looked up k times gets k gradients
    d["C"] = np.zeros_like(P["C"])  # (V, D)
    np.add.at(d["C"], Xb.reshape(-1), d["emb"].reshape(-1, P["C"].shape[1]))
    return d


EXERCISE_1_ORDER = (
    "logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits", "logit_maxes", "logits",
    "h", "W2", "b2", "hpreact", "bngain", "bnbias", "bnraw", "bnvar_inv", "bnvar", "bndiff2", "bndiff",
    "bnmeani", "hprebn", "embcat", "W1", "b1", "emb", "C",
)


def grad_of(t: dict[str, Any], P: dict[str, Any], name: str) -> Any:
    return (P[name] if name in P else t[name]).grad


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("TINYOPS_NAMES"),
                        help="path of names.txt (default: the TINYOPS_NAMES environment variable)")
    parser.add_argument("--steps", type=int, default=2000, help="training steps of exercise 4 (default 2000)")
    parser.add_argument("--seed", type=int, default=42, help="seed of exercise 4's batches (default 42)")
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("no names file: pass --data path/to/names.txt or set TINYOPS_NAMES")
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    try:
        import torch
    except ImportError:
        parser.error("backprop_ninja.py needs torch as the reference for the comparisons (pip install torch)")
    try:
        words = read_words(args.data)
        stoi, _ = build_vocab(words)
        train_words, dev_words, _ = split_words(words)
        Xtr, Ytr = build_dataset(train_words, BLOCK_SIZE, stoi)  # (M, T), (M,)
        Xdev, Ydev = build_dataset(dev_words, BLOCK_SIZE, stoi)
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read the names file: {exc}")
    vocab_size = len(stoi)

    # ------------------------------------------------------------------ the forward, in torch
    Pt, g = lecture_parameters(torch, vocab_size)
    for p in Pt.values():
        p.requires_grad = True
    ix = torch.randint(0, Xtr.shape[0], (BATCH,), generator=g).numpy()
    Xb, Yb = Xtr[ix], Ytr[ix]  # (n, T), (n,)
    t = torch_forward(torch, Pt, Xb, Yb)
    P = {k: p.detach().numpy().copy() for k, p in Pt.items()}  # float32 NumPy parameters
    v = {k: x.detach().numpy().copy() for k, x in t.items()}  # float32 NumPy intermediates
    print(f"parameters: {sum(p.size for p in P.values())}, batch {BATCH}, vocabulary {vocab_size}")
    print(f"loss (torch, the atomic chain): {float(v['loss']):.6f}\n")

    # ------------------------------------------------------------------ exercise 1
    print("exercise 1: backprop through every intermediate, by hand")
    d = manual_backward(v, P, Xb, Yb)
    rows = [tinyops.compare(name, d[name], grad_of(t, Pt, name)) for name in EXERCISE_1_ORDER]
    print(tinyops.format_comparisons(rows))
    print()

    # ------------------------------------------------------------------ exercise 2
    print("exercise 2: cross-entropy in one step, forward and backward")
    loss_fast, ce_cache = tinyops.cross_entropy_forward(v["logits"], Yb)
    print(f"loss_fast {float(loss_fast):.6f} | diff: {abs(float(loss_fast) - float(v['loss'])):.3g}")
    dlogits = tinyops.cross_entropy_backward(1.0, ce_cache)  # (softmax - onehot) / n
    print(tinyops.compare("logits", dlogits, t["logits"].grad))
    print()

    # ------------------------------------------------------------------ exercise 3
    print("exercise 3: batchnorm in one step, forward and backward (Bessel-corrected variance)")
    hpreact_fast, bn_cache, _ = tinyops.batchnorm1d_forward(
        v["hprebn"], P["bngain"][0], P["bnbias"][0], eps=BN_EPS, unbiased=True
    )
    print(f"max diff of hpreact: {float(np.abs(hpreact_fast - v['hpreact']).max()):.3g}")
    dhprebn, dbngain, dbnbias = tinyops.batchnorm1d_backward(d["hpreact"], bn_cache)
    assert dbngain is not None and dbnbias is not None  # the forward had both
    print(tinyops.format_comparisons([
        tinyops.compare("hprebn", dhprebn, t["hprebn"].grad),
        tinyops.compare("bngain", dbngain[None, :], Pt["bngain"].grad),
        tinyops.compare("bnbias", dbnbias[None, :], Pt["bnbias"].grad),
    ]))
    print()

    # ------------------------------------------------------------------ exercise 4
    print("exercise 4: training with the manual backward (tinyops.mlp, no autograd)")
    config = dataclasses.replace(mlp.CONFIGS["pt4"], n_embd=N_EMBD, n_hidden=N_HIDDEN, vocab_size=vocab_size)
    params = {k: P[k].reshape(-1) if k in ("bngain", "bnbias") else P[k].copy() for k in config.param_names}
    _, cache, _ = mlp.forward(params, Xb, Yb, config)
    grads = mlp.backward(cache)
    shapes = {k: tuple(p.shape) for k, p in Pt.items()}
    print(tinyops.format_comparisons(
        tinyops.compare(k, grads[k].reshape(shapes[k]), Pt[k].grad) for k in config.param_names
    ))
    print("(b1's true gradient is 0: batchnorm subtracts the batch mean, which b1 only shifts; both columns")
    print(" hold float32 rounding noise of about 1e-8, so 'approximate' may say False there)")
    stats = mlp.initial_stats(config)
    rng = np.random.default_rng(args.seed)
    losses = []
    report = max(1, args.steps // 10)
    for step in range(args.steps):
        bix = rng.integers(0, Xtr.shape[0], BATCH)
        loss, stats = mlp.train_step(params, Xtr[bix], Ytr[bix], config, mlp.learning_rate(step, config), stats)
        losses.append(loss)
        if step % report == 0 or step == args.steps - 1:
            print(f"{step:7d}/{args.steps:7d}: {loss:.4f}")
    calibrated = mlp.calibrate(params, Xtr, config, stats)
    train_loss = mlp.evaluate(params, Xtr, Ytr, config, calibrated)
    dev_loss = mlp.evaluate(params, Xdev, Ydev, config, calibrated)
    first, last = float(np.mean(losses[: max(1, report)])), float(np.mean(losses[-max(1, report) :]))
    print(f"mean batch loss: first {report} steps {first:.4f}, last {report} steps {last:.4f}")
    print(f"train {train_loss:.4f}")
    print(f"val {dev_loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
