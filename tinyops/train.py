"""Train, evaluate and sample the makemore MLP: the training loop, model files, plots, the commands.

A run directory (``--out``) holds ``model.npz`` (parameters, batchnorm statistics, the config, the
vocabulary), ``losses.json`` (final train/dev/test loss), ``loss.png`` (log10 loss per step) and
``embedding.png`` (the characters at the first two embedding dimensions). Every file is written to a
temporary file in the same directory and moved into place with ``os.replace``, so a crash never leaves
a half-written file; an existing run is never overwritten without ``force``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt

from . import mlp
from ._checks import Array
from .data import END, build_dataset, read_words, split_words
from .ops.batchnorm import BatchNormStats

IntArray = npt.NDArray[np.int64]

LETTERS = "abcdefghijklmnopqrstuvwxyz"
ITOS = END + LETTERS  # the lecture's vocabulary: '.' = 0, a..z = 1..26
MODEL_FILE = "model.npz"
LOSSES_FILE = "losses.json"
BATCH_BLOCK = 1000  # batch indices are drawn for this many steps at a time (one rng call)


class UsageError(Exception):
    """A problem with the user's files or arguments: reported as one line, exit status 2."""


# ============================================================================ data


def load_words(path: str | os.PathLike[str], itos: str = ITOS) -> list[str]:
    """The names of ``path``, each checked against the vocabulary ``itos`` (the line is named)."""
    try:
        words = read_words(path)
    except OSError as exc:
        raise UsageError(f"cannot read data file {os.fspath(path)!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    allowed = set(itos) - {END}
    for lineno, w in enumerate(words, 1):
        bad = set(w) - allowed
        if bad:
            raise UsageError(
                f"{os.fspath(path)!r}: word {lineno} {w!r} has character {sorted(bad)[0]!r}, outside the "
                f"vocabulary {itos[1:]!r}"
            )
    return words


def splits(words: list[str], block_size: int, itos: str = ITOS) -> dict[str, tuple[IntArray, IntArray]]:
    """The lecture's train/dev/test split (80/10/10 after ``random.seed(42)``), as (X, Y) arrays."""
    stoi = {s: i for i, s in enumerate(itos)}
    tr, dev, te = split_words(words)
    return {name: build_dataset(ws, block_size, stoi) for name, ws in (("train", tr), ("dev", dev), ("test", te))}


# ============================================================================ the training loop


@dataclasses.dataclass
class TrainResult:
    params: mlp.Params
    stats: BatchNormStats | None  # running statistics at the end of training (pt4)
    lossi: Array  # (steps_done,) the batch loss of each step
    steps_done: int
    interrupted: bool
    seconds: float


@contextmanager
def _stop_on_sigint() -> Iterator[Callable[[], bool]]:
    """Within the block, the first Ctrl-C only sets a flag (checked between steps, so an update is never
    half-applied); a second one interrupts at once."""
    flag = {"stop": False}

    def handler(signum: int, frame: FrameType | None) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        yield lambda: False
        return
    try:
        yield lambda: flag["stop"]
    finally:
        signal.signal(signal.SIGINT, previous)


def train(
    config: mlp.Config,
    Xtr: IntArray,
    Ytr: IntArray,
    *,
    seed: int,
    steps: int | None = None,
    progress: bool = False,
    dtype: npt.DTypeLike = np.float32,
) -> TrainResult:
    """Train from scratch: ``init_params`` from ``default_rng(seed)``, then ``steps`` SGD steps on random
    batches of the training split drawn from the same generator. Bit for bit reproducible from the seed.

    Ctrl-C stops after the current step and returns what was trained so far (``interrupted``).
    """
    steps = config.steps if steps is None else steps
    if steps < 0:
        raise UsageError(f"steps must be >= 0, got {steps}")
    if Xtr.shape[0] == 0:
        raise UsageError("the training split is empty")
    rng = np.random.default_rng(seed)
    trainer = mlp.Trainer(mlp.init_params(config, rng, dtype), config, mlp.initial_stats(config, dtype))
    B = config.batch_size
    lossi = np.empty(steps, dtype=np.float32)
    bar = _progress_bar(steps) if progress else None
    step = 0
    start = time.perf_counter()
    with _stop_on_sigint() as stop_requested:
        for step in range(steps):
            if stop_requested():
                break
            if step % BATCH_BLOCK == 0:
                batches = rng.integers(0, Xtr.shape[0], (BATCH_BLOCK, B))  # the next BATCH_BLOCK batches
            ix = batches[step % BATCH_BLOCK]  # (B,) gathered by indexing: for a small batch it beats
            # np.take into a reused buffer (which buffers its out=); the trainer copies the batch anyway
            lossi[step] = trainer.step(Xtr[ix], Ytr[ix], mlp.learning_rate(step, config))
            if bar is not None and (step + 1) % 1000 == 0:
                bar.update(1000)
                bar.set_postfix(loss=f"{lossi[step - 999 : step + 1].mean():.4f}", lr=mlp.learning_rate(step, config))
        else:
            step = steps
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.update(step - bar.n)  # the steps since the last update
        bar.close()
    return TrainResult(trainer.params, trainer.stats, lossi[:step], step, step < steps, seconds)


def _progress_bar(total: int) -> Any:
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        raise UsageError("the progress bar needs tqdm: pip install 'tinyops[train]'") from None
    return tqdm(total=total, unit="step", unit_scale=True, file=sys.stderr, mininterval=0.5)


# ============================================================================ model files


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; move it over ``path`` only if the block succeeds."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(
    path: Path,
    config: mlp.Config,
    params: mlp.Params,
    stats: BatchNormStats | None,
    meta: dict[str, Any],
    running: BatchNormStats | None = None,
) -> None:
    """One ``.npz``: ``param_<name>`` arrays, the batchnorm statistics (``bn_*``: the calibrated ones that
    evaluation and sampling use; ``bn_running_*``: the running estimates of training, kept for reference),
    the config and ``meta`` as JSON."""
    arrays: dict[str, Any] = {f"param_{k}": v for k, v in params.items()}
    if stats is not None:
        arrays |= {"bn_mean": stats.mean, "bn_var": stats.var, "bn_num_batches_tracked": stats.num_batches_tracked}
    if running is not None:
        arrays |= {"bn_running_mean": running.mean, "bn_running_var": running.var}
    arrays["config"] = np.array(json.dumps(dataclasses.asdict(config)))
    arrays["meta"] = np.array(json.dumps({"itos": ITOS, **meta}))
    with _atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


@dataclasses.dataclass
class Model:
    config: mlp.Config
    params: mlp.Params
    stats: BatchNormStats | None  # the calibrated statistics (pt4)
    meta: dict[str, Any]

    @property
    def itos(self) -> str:
        return str(self.meta["itos"])


def model_path(model: str | os.PathLike[str]) -> Path:
    p = Path(model)
    return p / MODEL_FILE if p.is_dir() else p


def load_model(model: str | os.PathLike[str]) -> Model:
    """Read and check a model file (or a run directory holding ``model.npz``).

    Raises:
        UsageError: the file cannot be read, is not a tinyops model, or holds parameters whose shapes
            do not match its configuration.
    """
    path = model_path(model)
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except OSError as exc:
        raise UsageError(f"cannot read model file {os.fspath(path)!r}: {exc.strerror or exc}") from None
    except Exception as exc:  # a file that is not an .npz (zip) archive at all
        raise UsageError(f"{os.fspath(path)!r} is not a tinyops model file ({type(exc).__name__}: {exc})") from None
    try:
        config = mlp.Config(**json.loads(str(files["config"])))
        meta = json.loads(str(files["meta"]))
        itos = str(meta["itos"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{os.fspath(path)!r} is not a tinyops model file (bad or missing config: {exc})") from None
    if len(itos) != config.vocab_size:
        raise UsageError(
            f"{os.fspath(path)!r}: vocabulary of {len(itos)} characters but config says {config.vocab_size}"
        )
    params: mlp.Params = {}
    for name, shape in config.param_shapes().items():
        arr = files.get(f"param_{name}")
        if arr is None:
            raise UsageError(f"{os.fspath(path)!r}: parameter {name!r} is missing (config {config.name})")
        if arr.shape != shape or arr.dtype.kind != "f":
            raise UsageError(
                f"{os.fspath(path)!r}: parameter {name!r} has shape {arr.shape} and dtype {arr.dtype}, but config "
                f"{config.name} needs a floating array of shape {shape}"
            )
        params[name] = arr
    extra = sorted(k[len("param_") :] for k in files if k.startswith("param_") and k[len("param_") :] not in params)
    if extra:
        raise UsageError(f"{os.fspath(path)!r}: parameters {extra} do not belong to config {config.name}")
    stats = None
    if config.batchnorm:
        try:
            stats = BatchNormStats(files["bn_mean"], files["bn_var"], int(files["bn_num_batches_tracked"]))
        except KeyError as exc:
            raise UsageError(f"{os.fspath(path)!r}: batchnorm statistics {exc} are missing") from None
        if stats.mean.shape != (config.n_hidden,) or stats.var.shape != (config.n_hidden,):
            raise UsageError(f"{os.fspath(path)!r}: batchnorm statistics do not have shape ({config.n_hidden},)")
    return Model(config, params, stats, meta)


def _write_json(path: Path, obj: Any) -> None:
    with _atomic(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def save_plots(out: Path, lossi: Array, params: mlp.Params, itos: str) -> None:
    """``loss.png``: log10 of each step's batch loss, and its mean over 1,000 steps (as the lecture plots
    it); ``embedding.png``: each character at its first two embedding coordinates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(np.log10(lossi), lw=0.3, alpha=0.5, label="batch")
    if lossi.size >= 1000:
        k = lossi.size // 1000
        ax.plot(np.arange(k) * 1000 + 500, np.log10(lossi[: k * 1000].reshape(k, 1000).mean(1)), label="mean of 1,000")
    ax.set_xlabel("step")
    ax.set_ylabel("log10 loss")
    ax.legend()
    fig.tight_layout()
    with _atomic(out / "loss.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

    C = params["C"]
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(C[:, 0], C[:, 1], s=200)
    for i, ch in enumerate(itos):
        ax.text(float(C[i, 0]), float(C[i, 1]), ch, ha="center", va="center", color="white")
    ax.set_xlabel("C[:, 0]")
    ax.set_ylabel("C[:, 1]")
    ax.grid(True, which="major")
    fig.tight_layout()
    with _atomic(out / "embedding.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ============================================================================ the commands


def _run(fn: Callable[[], int]) -> int:
    """Run a command: a UsageError (bad files or arguments) is one line on stderr and exit status 2."""
    try:
        return fn()
    except UsageError as exc:
        print(f"tinyops: error: {exc}", file=sys.stderr)
        return 2


def evaluate_splits(model: Model, data: dict[str, tuple[IntArray, IntArray]]) -> dict[str, float]:
    return {name: mlp.evaluate(model.params, X, Y, model.config, model.stats) for name, (X, Y) in data.items()}


def cmd_train(
    data: str,
    config: str = "pt2",
    *,
    steps: int | None = None,
    seed: int = 0,
    out: str | None = None,
    force: bool = False,
    progress: bool = True,
    plots: bool = True,
) -> int:
    """``tinyops train``: train, calibrate (pt4), evaluate every split, save the run to ``out``."""

    def run() -> int:
        if config not in mlp.CONFIGS:
            raise UsageError(f"unknown config {config!r}; choose one of {', '.join(mlp.CONFIGS)}")
        cfg = mlp.CONFIGS[config]
        out_dir = Path(out if out is not None else f"results/{config}-seed{seed}")
        if (out_dir / MODEL_FILE).exists() and not force:
            raise UsageError(
                f"{os.fspath(out_dir)!r} already holds a run ({MODEL_FILE}); choose another --out or pass --force"
            )
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--out {os.fspath(out_dir)!r} exists and is not a directory")
        split = splits(load_words(data), cfg.block_size)
        if plots:  # fail before training, not after, when matplotlib is missing
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise UsageError(
                    "the plots need matplotlib: pip install 'tinyops[train]' (or pass --no-plots)"
                ) from None
        out_dir.mkdir(parents=True, exist_ok=True)
        Xtr, Ytr = split["train"]
        res = train(cfg, Xtr, Ytr, seed=seed, steps=steps, progress=progress)
        if res.interrupted:
            print(f"interrupted after {res.steps_done} steps: saving the parameters so far", file=sys.stderr)
        stats = mlp.calibrate(res.params, Xtr, cfg, res.stats)
        model = Model(cfg, res.params, stats, {})
        losses = evaluate_splits(model, split)
        meta = {
            "seed": seed, "steps": res.steps_done, "interrupted": res.interrupted,
            "train_seconds": round(res.seconds, 3),
            "us_per_step": round(1e6 * res.seconds / max(res.steps_done, 1), 2),
        }
        save_model(out_dir / MODEL_FILE, cfg, res.params, stats, meta, running=res.stats)
        _write_json(out_dir / LOSSES_FILE, {"config": cfg.name, **meta, **losses})
        plotted = plots and res.steps_done > 0  # nothing to plot before the first step
        if plotted:
            save_plots(out_dir, res.lossi, res.params, ITOS)
        print(
            f"{cfg.name} seed {seed}: {res.steps_done} steps in {res.seconds:.1f} s "
            f"({meta['us_per_step']} us/step); " + " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        )
        files = [MODEL_FILE, LOSSES_FILE, *(["loss.png", "embedding.png"] if plotted else [])]
        print(f"saved {os.fspath(out_dir)}/{{{','.join(files)}}}")
        return 130 if res.interrupted else 0

    return _run(run)


def cmd_eval(model: str, data: str) -> int:
    """``tinyops eval``: the model's loss on the train/dev/test split of ``data``."""

    def run() -> int:
        m = load_model(model)
        losses = evaluate_splits(m, splits(load_words(data, m.itos), m.config.block_size, m.itos))
        print(" ".join(f"{k} {v:.4f}" for k, v in losses.items()))
        return 0

    return _run(run)


def cmd_sample(model: str, n: int = 20, seed: int = 2147483647 + 10) -> int:
    """``tinyops sample``: ``n`` names, one per line (the default seed is the lecture's)."""

    def run() -> int:
        if n < 0:
            raise UsageError(f"-n must be >= 0, got {n}")
        m = load_model(model)
        itos = dict(enumerate(m.itos))
        for name in mlp.sample(m.params, m.config, m.stats, itos, np.random.default_rng(seed), n=n):
            print(name)
        return 0

    return _run(run)
