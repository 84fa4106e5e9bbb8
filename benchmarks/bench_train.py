"""One training step of the makemore MLP: tinyops against the identical model in torch eager, side by side.

For each configuration (pt2, pt4), float32, one thread each (OMP/OpenBLAS/MKL threads are set to 1 before
NumPy and torch are imported, and ``torch.set_num_threads(1)``):

1. check: from the same parameters, tinyops (each variant timed in 2.) and torch train the same batches
   for a few steps; their losses and final parameters must agree (float32 rounding only) before anything
   is timed;
2. time: blocks of steps, tinyops and torch alternating (so both see the same machine load), on the same
   batches; the median microseconds per step of each and their ratio, and the median of each repeat's
   ratio of adjacent blocks (steadier on a loaded machine). tinyops is timed three ways: its
   training step (``tinyops.mlp.Trainer``, the loss at ``TRAIN_PRECISION``), the same with the loss at the
   other precision, and the step composed from the public ops (``tinyops.mlp.train_step``); each is
   checked in 1.;
3. profile: the parts of the training step (:class:`tinyops.mlp.Trainer`: forward, loss kernel, backward,
   update), each timed alone; and each call of the step composed from the public ops timed alone on the
   step's own inputs (median), beside the bare NumPy arithmetic it performs: the difference is the op's
   per-call input checks and bookkeeping;
4. full run (without ``--quick``): the wall time of ``tinyops train`` for the config's 200,000 steps
   (the training loop of :mod:`tinyops.train`, batch sampling included).

The torch step is the lecture's: ``loss.backward()`` then ``p.data -= lr * p.grad`` (pt4: part 4's
batchnorm with the Bessel-corrected variance, the running statistics updated under ``no_grad``).

    python benchmarks/bench_train.py [--quick] [--data names.txt] [--out results]   (or: tinyops bench train ...)

Without ``--data`` (or ``TINYOPS_NAMES``) the batches come from random contexts and the full run is skipped.
Prints a markdown table and writes ``<out>/bench_train.{md,json}``.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one thread: set before numpy and torch load (imported, e.g. by a test, it is too late)
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C

import tinyops
from tinyops import mlp
from tinyops import train as T
from tinyops.ops.cross_entropy import ce_rows_backward, ce_rows_forward

Array = np.ndarray[Any, Any]


# ============================================================================ the torch model


class TorchMLP:
    """The lecture's model in torch eager with autograd, from tinyops' parameters (copied)."""

    def __init__(self, params: mlp.Params, config: mlp.Config) -> None:
        self.config = config
        self.P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        H = config.n_hidden
        self.running_mean = torch.zeros(H)
        self.running_var = torch.ones(H)

    def step(self, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> float:
        P, c = self.P, self.config
        emb = P["C"][Xb]  # (N, T, D)
        hpre = emb.view(emb.shape[0], -1) @ P["W1"] + P["b1"]  # (N, H)
        if c.batchnorm:
            bnmean = hpre.mean(0, keepdim=True)
            bnvar = hpre.var(0, keepdim=True, unbiased=True)
            hpre = P["bngain"] * (hpre - bnmean) * (bnvar + c.bn_eps) ** -0.5 + P["bnbias"]
            with torch.no_grad():
                self.running_mean.mul_(1 - c.bn_momentum).add_(c.bn_momentum * bnmean[0])
                self.running_var.mul_(1 - c.bn_momentum).add_(c.bn_momentum * bnvar[0])
        h = torch.tanh(hpre)
        logits = h @ P["W2"] + P["b2"]
        loss = F.cross_entropy(logits, Yb)
        for p in P.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in P.values():
                p -= lr * p.grad  # type: ignore[operator]
        return loss.item()

    def params(self) -> dict[str, Array]:
        return {k: v.detach().numpy().copy() for k, v in self.P.items()}


# ============================================================================ check, time


def batches(n_rows: int, steps: int, batch_size: int, seed: int) -> Array:
    return np.random.default_rng(seed).integers(0, n_rows, (steps, batch_size))


def check_agreement(config: mlp.Config, X: Array, Y: Array, steps: int = 20) -> dict[str, float]:
    """Train both from the same parameters on the same batches; return the largest differences."""
    params = mlp.init_params(config, np.random.default_rng(0))
    model = TorchMLP(params, config)
    trainers = [mlp.Trainer(params, config, precision=p) for p in ("fast", "accurate")]
    op_params, stats = {k: v.copy() for k, v in params.items()}, mlp.initial_stats(config)
    ix = batches(len(X), steps, config.batch_size, 1)
    ours: list[list[float]] = [[], [], []]  # Trainer fast, Trainer accurate, train_step (the ops composed)
    theirs = []
    for i in range(steps):
        for t, losses in zip(trainers, ours, strict=False):
            losses.append(t.step(X[ix[i]], Y[ix[i]], config.lr))
        loss, stats = mlp.train_step(op_params, X[ix[i]], Y[ix[i]], config, config.lr, stats)
        ours[2].append(loss)
        theirs.append(model.step(torch.from_numpy(X[ix[i]]), torch.from_numpy(Y[ix[i]]), config.lr))
    loss_diff = max(abs(a - b) / abs(b) for losses in ours for a, b in zip(losses, theirs, strict=True))
    tp = model.params()
    param_diff = max(
        float(np.abs(ps[k] - tp[k]).max() / (np.abs(tp[k]).max()))
        for ps in (trainers[0].params, trainers[1].params, op_params)
        for k in ps
    )
    if not (loss_diff < 1e-4 and param_diff < 1e-4):
        raise SystemExit(
            f"{config.name}: tinyops and torch disagree after {steps} steps (loss rel diff {loss_diff:.2e}, "
            f"param rel diff {param_diff:.2e}); not timing"
        )
    return {"loss_rel_diff": loss_diff, "param_rel_diff": param_diff, "steps": steps}


def time_steps(config: mlp.Config, X: Array, Y: Array, block: int, repeats: int) -> dict[str, float]:
    """Median microseconds per step, blocks alternating, on the same batches, of: tinyops' training step
    (:class:`tinyops.mlp.Trainer`, the loss at :data:`tinyops.mlp.TRAIN_PRECISION`), the same with the
    other precision, the step composed from the public ops (:func:`tinyops.mlp.train_step`), and torch."""
    params = mlp.init_params(config, np.random.default_rng(0))
    model = TorchMLP(params, config)
    other: Any = "accurate" if mlp.TRAIN_PRECISION == "fast" else "fast"
    trainer, trainer_other = mlp.Trainer(params, config), mlp.Trainer(params, config, precision=other)
    op_params = {k: v.copy() for k, v in params.items()}
    stats = mlp.initial_stats(config)
    ix = batches(len(X), block, config.batch_size, 2)
    Xb = [X[i] for i in ix]
    Yb = [Y[i] for i in ix]
    Xt = [torch.from_numpy(x) for x in Xb]
    Yt = [torch.from_numpy(y) for y in Yb]
    lr = config.lr_after  # a small rate: many repeated blocks on the same batches stay well-behaved

    def ours(t: mlp.Trainer) -> Callable[[], None]:
        def run() -> None:
            for i in range(block):
                t.step(Xb[i], Yb[i], lr)

        return run

    def composed() -> None:
        nonlocal stats
        for i in range(block):
            _, stats = mlp.train_step(op_params, Xb[i], Yb[i], config, lr, stats)

    def theirs() -> None:
        for i in range(block):
            model.step(Xt[i], Yt[i], lr)

    # tinyops' step and torch's side by side: each repeat's two blocks see one machine load
    runs = {"tinyops_us": ours(trainer), "torch_us": theirs, "other_precision_us": ours(trainer_other),
            "ops_us": composed}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) / block * 1e6)
    res: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    paired = statistics.median(t / o for t, o in zip(times["torch_us"], times["tinyops_us"], strict=True))
    res |= {"speedup": res["torch_us"] / res["tinyops_us"], "speedup_paired": paired, "precision": mlp.TRAIN_PRECISION,
            "other_precision": other, "block": block, "repeats": repeats}
    return res


def profile_trainer(config: mlp.Config, X: Array, Y: Array, number: int) -> list[tuple[str, float]]:
    """(part, µs) of the training step: its forward without the loss, the loss kernel's forward and
    backward, the rest of the backward, the update; each timed alone (median) on one batch."""
    trainer = mlp.Trainer(mlp.init_params(config, np.random.default_rng(0)), config)
    ix = batches(len(X), 1, config.batch_size, 4)[0]
    Xb, Yb = X[ix], Y[ix]
    trainer.forward(Xb, Yb)
    state = trainer.ce_state
    assert state is not None
    prec, be = trainer.precision, trainer.backend
    ce_fwd = median_us(lambda: ce_rows_forward(trainer.logits, trainer.Y, precision=prec, backend=be), number)
    ce_bwd = median_us(lambda: ce_rows_backward(trainer.mean_w, state, out=trainer.dlogits), number)

    def backward() -> None:
        trainer.ce_state = state
        trainer.backward()

    fwd = median_us(lambda: trainer.forward(Xb, Yb), number)
    bwd = median_us(backward, number)
    upd = median_us(lambda: trainer.update(0.0), number)
    return [
        ("forward: embedding .. logits", fwd - ce_fwd),
        (f"cross-entropy kernel fwd ({prec})", ce_fwd),
        (f"cross-entropy kernel bwd ({prec})", ce_bwd),
        ("backward: logits .. embedding", bwd - ce_bwd),
        ("sgd update (flat, in place)", upd),
    ]


# ============================================================================ where the time goes


def median_us(fn: Callable[[], Any], number: int, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number * 1e6)
    return statistics.median(times)


def profile_ops(config: mlp.Config, X: Array, Y: Array, number: int) -> list[tuple[str, float, float]]:
    """(op, µs per call of the tinyops op, µs of the bare NumPy arithmetic it does) for each call of a step."""
    p = mlp.init_params(config, np.random.default_rng(0))
    stats = mlp.initial_stats(config)
    ix = batches(len(X), 1, config.batch_size, 3)[0]
    Xb, Yb = X[ix], Y[ix]
    N = len(Yb)
    emb, c_emb = tinyops.embedding_forward(p["C"], Xb)
    embcat = emb.reshape(N, -1)
    hpre, c_hpre = tinyops.linear_forward(embcat, p["W1"], p["b1"])
    hbn, c_bn = hpre, None
    bn_kw: dict[str, Any] = dict(momentum=config.bn_momentum, eps=config.bn_eps, unbiased=True)
    if config.batchnorm:
        hbn, c_bn, _ = tinyops.batchnorm1d_forward(hpre, p["bngain"], p["bnbias"], stats, **bn_kw)
    h, c_h = tinyops.tanh_forward(hbn)
    logits, c_logits = tinyops.linear_forward(h, p["W2"], p["b2"])
    _, c_loss = tinyops.cross_entropy_forward(logits, target=Yb)
    dlogits = tinyops.cross_entropy_backward(1.0, c_loss)
    dh, _, _ = tinyops.linear_backward(dlogits, c_logits)
    dhbn = tinyops.tanh_backward(dh, c_h)
    dhpre = dhbn
    if c_bn is not None:
        dhpre, _, _ = tinyops.batchnorm1d_backward(dhbn, c_bn)
    dembcat, _, _ = tinyops.linear_backward(dhpre, c_hpre)
    demb = dembcat.reshape(N, config.block_size, -1)
    grads = mlp.backward(mlp.forward(p, Xb, Yb, config, stats=stats)[1])
    rows = np.arange(N)

    def bare_ce() -> Any:  # max-shifted log-sum-exp and softmax, one pass
        m = logits.max(1, keepdims=True)
        e = np.exp(logits - m)
        s = e.sum(1)
        loss = (np.log(s) + m[:, 0] - logits[rows, Yb]).mean()
        e /= s[:, None]
        return loss, e

    def bare_ce_bwd() -> Any:
        d = c_loss_probs.copy()
        d[rows, Yb] -= 1
        d *= 1 / N
        return d

    c_loss_probs = bare_ce()[1]

    def bare_bn() -> Any:
        mean = hpre.sum(0) / N
        xc = hpre - mean
        inv = 1 / np.sqrt(np.einsum("nc,nc->c", xc, xc) / (N - 1) + np.float32(1e-5))
        xc *= inv
        return xc * p["bngain"] + p["bnbias"]

    xhat = (hpre - hpre.mean(0)) / hpre.std(0, ddof=1)

    def bare_bn_bwd() -> Any:
        db = dhbn.sum(0)
        dw = np.einsum("nc,nc->c", dhbn, xhat)
        dx = xhat * (N / (N - 1) * dw)
        dx += db
        np.subtract(N * dhbn, dx, out=dx)
        dx *= p["bngain"] / N
        return dx, dw, db

    def bare_add_at() -> Any:
        d = np.zeros_like(p["C"])
        np.add.at(d, Xb.reshape(-1), demb.reshape(-1, demb.shape[-1]))
        return d

    sgd_grads = {k: g.copy() for k, g in grads.items()}

    def sgd() -> None:
        for k, g in sgd_grads.items():
            g[...] = grads[k]
        mlp.sgd_update(p, sgd_grads, 0.0)

    def bare_sgd() -> None:
        for k, g in sgd_grads.items():
            g[...] = grads[k]
        for k, w in p.items():
            np.multiply(sgd_grads[k], -0.0, out=sgd_grads[k])
            w += sgd_grads[k]

    calls: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("batch gather", lambda: (X[ix], Y[ix]), lambda: (X[ix], Y[ix])),
        ("embedding fwd", lambda: tinyops.embedding_forward(p["C"], Xb), lambda: p["C"][Xb]),
        ("linear 1 fwd", lambda: tinyops.linear_forward(embcat, p["W1"], p["b1"]), lambda: embcat @ p["W1"] + p["b1"]),
    ]
    if config.batchnorm:
        calls.append(
            (
                "batchnorm fwd",
                lambda: tinyops.batchnorm1d_forward(hpre, p["bngain"], p["bnbias"], stats, **bn_kw),
                bare_bn,
            )
        )
    calls += [
        ("tanh fwd", lambda: tinyops.tanh_forward(hbn), lambda: np.tanh(hbn)),
        ("linear 2 fwd", lambda: tinyops.linear_forward(h, p["W2"], p["b2"]), lambda: h @ p["W2"] + p["b2"]),
        ("cross_entropy fwd", lambda: tinyops.cross_entropy_forward(logits, target=Yb), bare_ce),
        ("cross_entropy bwd", lambda: tinyops.cross_entropy_backward(1.0, c_loss), bare_ce_bwd),
        ("linear 2 bwd", lambda: tinyops.linear_backward(dlogits, c_logits),
         lambda: (dlogits @ p["W2"].T, h.T @ dlogits, dlogits.sum(0))),
        ("tanh bwd", lambda: tinyops.tanh_backward(dh, c_h), lambda: (1 - h**2) * dh),
    ]
    if c_bn is not None:
        calls.append(("batchnorm bwd", lambda: tinyops.batchnorm1d_backward(dhbn, c_bn), bare_bn_bwd))
    calls += [
        ("linear 1 bwd", lambda: tinyops.linear_backward(dhpre, c_hpre),
         lambda: (dhpre @ p["W1"].T, embcat.T @ dhpre, dhpre.sum(0))),
        ("embedding bwd", lambda: tinyops.embedding_backward(demb, c_emb), bare_add_at),
        ("sgd update", sgd, bare_sgd),
    ]
    return [(name, median_us(op, number), median_us(bare, number)) for name, op, bare in calls]


def matmul_floor(config: mlp.Config, number: int) -> float:
    """µs of the step's six matrix products alone (2 forward, 4 backward): arithmetic that every
    implementation of the step performs, whatever its overhead."""
    rng = np.random.default_rng(0)
    N, H, V, K = config.batch_size, config.n_hidden, config.vocab_size, config.block_size * config.n_embd
    embcat, W1, W2 = (rng.standard_normal(s).astype(np.float32) for s in ((N, K), (K, H), (H, V)))
    h, dlogits, dhpre = (rng.standard_normal(s).astype(np.float32) for s in ((N, H), (N, V), (N, H)))

    def products() -> None:
        embcat @ W1, h @ W2, dlogits @ W2.T, h.T @ dlogits, dhpre @ W1.T, embcat.T @ dhpre

    return median_us(products, number)


# ============================================================================ main


def load(data: str | None, config: mlp.Config) -> tuple[Array, Array, bool]:
    if data:
        words = T.load_words(data)
        X, Y = T.splits(words, config.block_size)["train"]
        return X, Y, True
    rng = np.random.default_rng(0)
    return rng.integers(0, 27, (180_000, config.block_size)), rng.integers(0, 27, 180_000), False


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and no full 200,000-step run")
    ap.add_argument("--data", default=os.environ.get("TINYOPS_NAMES"), help="names.txt (default: $TINYOPS_NAMES)")
    ap.add_argument("--configs", default="pt2,pt4", help="comma-separated configurations")
    ap.add_argument("--out", default="results", help="directory for bench_train.{md,json}")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with C.blas_threads(1):  # also when run as `tinyops bench train`, after NumPy has loaded
        return run(args)


def run(args: argparse.Namespace) -> int:
    block, repeats, number = (200, 5, 300) if args.quick else (1000, 11, 2000)

    info = {
        **C.machine_info(),
        "threads": "1 (NumPy's OpenBLAS set to 1 thread, torch.set_num_threads(1))",
        "dtype": "float32",
        "quick": args.quick,
    }
    results: dict[str, Any] = {"machine": info, "configs": {}}
    printed = 0
    lines = [
        f"# bench_train ({'quick' if args.quick else 'full'}): numpy {np.__version__}, torch {torch.__version__}, "
        f"1 thread, float32; {info['cpu']}",
        "",
    ]
    for name in args.configs.split(","):
        config = mlp.CONFIGS[name]
        X, Y, real = load(args.data, config)
        agree = check_agreement(config, X, Y)
        timing = time_steps(config, X, Y, block, repeats)
        prof = profile_ops(config, X, Y, number)
        parts = profile_trainer(config, X, Y, number)
        r_parts = sum(us for _, us in parts)
        floor = matmul_floor(config, number)
        timing["matmul_floor_us"] = floor
        r: dict[str, Any] = {
            "agreement": agree,
            "timing": timing,
            "profile": prof,
            "step_parts": parts,
            "data": "names" if real else "random",
        }
        lines += [
            f"## {name} ({config.num_params():,} parameters, batch {config.batch_size}, "
            f"{'names' if real else 'random contexts'})",
            "",
            f"agreement over {agree['steps']} steps: loss rel diff {agree['loss_rel_diff']:.1e}, "
            f"parameter rel diff {agree['param_rel_diff']:.1e}",
            "",
            "| implementation | µs/step (median of {repeats} blocks of {block}) |".format(**timing),
            "|---|---:|",
            f"| tinyops (`Trainer`, loss '{timing['precision']}') | {timing['tinyops_us']:.1f} |",
            f"| tinyops (`Trainer`, loss '{timing['other_precision']}') | {timing['other_precision_us']:.1f} |",
            f"| tinyops (`train_step`: the public ops composed) | {timing['ops_us']:.1f} |",
            f"| torch eager | {timing['torch_us']:.1f} |",
            f"| **speedup** (torch / `Trainer`) | **{timing['speedup']:.2f}x** |",
            f"| speedup, median of each repeat's ratio (adjacent blocks) | {timing['speedup_paired']:.2f}x |",
            f"| the six matrix products alone (floor) | {floor:.1f} |",
            f"| torch / products: the speedup if all else were free | {timing['torch_us'] / floor:.2f}x |",
            "",
            "| `Trainer` step, part | µs |",
            "|---|---:|",
            *[f"| {part} | {us:.1f} |" for part, us in parts],
            f"| **sum** | **{r_parts:.1f}** |",
            "",
            "| op call | tinyops µs | bare NumPy µs | checks + bookkeeping µs |",
            "|---|---:|---:|---:|",
            *[f"| {op} | {a:.1f} | {b:.1f} | {a - b:.1f} |" for op, a, b in prof],
            f"| **sum** | **{sum(a for _, a, _ in prof):.1f}** | **{sum(b for _, _, b in prof):.1f}** | "
            f"**{sum(a - b for _, a, b in prof):.1f}** |",
            "",
        ]
        if real and not args.quick:
            t0 = time.perf_counter()
            res = T.train(config, X, Y, seed=0)
            wall = time.perf_counter() - t0
            r["full_run"] = {"steps": res.steps_done, "seconds": wall, "us_per_step": wall / res.steps_done * 1e6,
                             "final_loss_1000": float(res.lossi[-1000:].mean())}
            lines += [
                f"full run: {res.steps_done:,} steps in {wall:.1f} s ({r['full_run']['us_per_step']:.1f} µs/step, "
                f"loss over the last 1,000 steps {r['full_run']['final_loss_1000']:.4f}); torch eager at its "
                f"measured step time would take {timing['torch_us'] * res.steps_done / 1e6:.1f} s",
                "",
            ]
        results["configs"][name] = r
        print("\n".join(lines[printed:]), flush=True)
        printed = len(lines)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_train.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "bench_train.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'bench_train.md'} and {out / 'bench_train.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
