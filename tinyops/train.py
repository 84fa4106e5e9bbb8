"""Train, evaluate and sample the makemore MLP: the training loop, model files, plots, the commands.

A run directory (``--out``) holds ``model.npz`` (parameters, batchnorm statistics, the config, the
vocabulary, the seed and the steps trained: the same seed and steps give the same bytes),
``losses.json`` (final train/dev/test loss and the run's timing), ``loss.png`` (log10 loss per step)
and ``embedding.png`` (the characters at the first two embedding dimensions). :mod:`tinyops.runs`
writes the directory as one transaction: claimed by one run at a time, written into a staging
directory, swapped into place whole; an existing run is never replaced without ``force``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import numpy.typing as npt

from . import mlp, runs
from ._checks import Array
from .data import END, build_dataset, read_words, split_words
from .ops.batchnorm import BatchNormStats

IntArray = npt.NDArray[np.int64]

LETTERS = "abcdefghijklmnopqrstuvwxyz"
ITOS = END + LETTERS  # the lecture's vocabulary: '.' = 0, a..z = 1..26
MODEL_FILE = "model.npz"
LOSSES_FILE = "losses.json"
BATCH_BLOCK = 1000  # batch indices are drawn for this many steps at a time (one rng call)
MAX_STEPS = 100_000_000  # 500 times the lecture's schedule; the batch losses alone take 400 MB
MAX_SEED = 2**63 - 1
SPLITS = ("train", "dev", "test")


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
    return {name: build_dataset(ws, block_size, stoi) for name, ws in zip(SPLITS, (tr, dev, te), strict=True)}


def check_splits(words: list[str], path: str | os.PathLike[str]) -> None:
    """Every split of ``words`` holds at least one word, or a UsageError naming the first empty one and
    how many names the file needs."""
    sizes = dict(zip(SPLITS, map(len, split_words(words)), strict=True))
    empty = [name for name, n in sizes.items() if n == 0]
    if empty:
        need = next(n for n in range(1, 100) if all(map(len, split_words([""] * n))))
        raise UsageError(
            f"{os.fspath(path)!r} holds {len(words)} names, too few for the 80/10/10 split: its {empty[0]} "
            f"split is empty (at least {need} names are needed)"
        )


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
def stop_on_sigint() -> Iterator[Callable[[], bool]]:
    """Within the block, Ctrl-C (SIGINT) only sets a flag, which the caller checks at safe points
    (between training steps, so an update is never half-applied; never while a file is written).
    Yields the function that tells whether Ctrl-C was pressed."""
    flag = {"stop": False}

    def handler(signum: int, frame: FrameType | None) -> None:
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


def check_steps_seed(steps: int, seed: int) -> None:
    """``steps`` in 0..MAX_STEPS and ``seed`` in 0..2**63 - 1, or a UsageError naming the value."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
        raise UsageError(f"steps must be an integer from 0 to {MAX_STEPS:,}, got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")


def train(
    config: mlp.Config,
    Xtr: IntArray,
    Ytr: IntArray,
    *,
    seed: int,
    steps: int | None = None,
    progress: bool = False,
    dtype: npt.DTypeLike = np.float32,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train from scratch: ``init_params`` from ``default_rng(seed)``, then ``steps`` SGD steps on random
    batches of the training split drawn from the same generator. Bit for bit reproducible from the seed.

    Training stops early, after the current step, when ``stop()`` turns true (``interrupted``); without
    ``stop``, Ctrl-C does that during the call (:func:`stop_on_sigint`).
    """
    steps = config.steps if steps is None else steps
    check_steps_seed(steps, seed)
    if Xtr.shape[0] == 0:
        raise UsageError("the training split is empty")
    if stop is None:
        with stop_on_sigint() as stop_requested:
            return train(config, Xtr, Ytr, seed=seed, steps=steps, progress=progress, dtype=dtype,
                         stop=stop_requested)
    rng = np.random.default_rng(seed)
    trainer = mlp.Trainer(mlp.init_params(config, rng, dtype), config, mlp.initial_stats(config, dtype))
    B = config.batch_size
    lossi = np.empty(steps, dtype=np.float32)
    bar = _progress_bar(steps) if progress else None
    step = 0
    start = time.perf_counter()
    for step in range(steps):
        if stop():
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


def _tqdm() -> Any:
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        raise UsageError("the progress bar needs tqdm: pip install 'tinyops[train]' (or pass --no-progress)") from None
    return tqdm


def _progress_bar(total: int) -> Any:
    return _tqdm()(total=total, unit="step", unit_scale=True, file=sys.stderr, mininterval=0.5)


# ============================================================================ model files


_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can say: a model's bytes do not depend on the clock


def _write_npz(f: Any, arrays: dict[str, Any]) -> None:
    """``np.savez(f, **arrays)`` with a fixed time stamp on every entry (np.savez stamps the current time)."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


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
    the config and ``meta`` as JSON. The same arguments give the same bytes."""
    arrays: dict[str, Any] = {f"param_{k}": v for k, v in params.items()}
    if stats is not None:
        arrays |= {"bn_mean": stats.mean, "bn_var": stats.var,
                   "bn_num_batches_tracked": np.int64(stats.num_batches_tracked)}
    if running is not None:
        arrays |= {"bn_running_mean": running.mean, "bn_running_var": running.var}
    arrays["config"] = np.array(json.dumps(dataclasses.asdict(config)))
    arrays["meta"] = np.array(json.dumps({"itos": ITOS, **meta}))
    with runs.atomic_path(path) as tmp, open(tmp, "wb") as f:
        _write_npz(f, arrays)
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


_CONFIG_TYPES = {f.name: f.type for f in dataclasses.fields(mlp.Config)}  # 'str', 'bool', 'int', 'float'


def _config_from_json(text: str) -> mlp.Config:
    """A Config from its JSON, every field present and of its type (an int field holds an int >= 1, or
    >= 0 for the step counts; a float field a finite number): a ValueError naming the field otherwise."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError(f"config is {type(raw).__name__}, not an object")
    if set(raw) != set(_CONFIG_TYPES):
        missing, extra = sorted(set(_CONFIG_TYPES) - set(raw)), sorted(set(raw) - set(_CONFIG_TYPES))
        raise ValueError(f"config fields missing {missing}, unknown {extra}")
    for key, kind in _CONFIG_TYPES.items():
        v = raw[key]
        ok = {
            "str": isinstance(v, str),
            "bool": isinstance(v, bool),
            "int": isinstance(v, int) and not isinstance(v, bool) and v >= (0 if "step" in key else 1),
            "float": isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        }[str(kind)]
        if not ok:
            raise ValueError(f"config field {key!r} is {v!r}, not a valid {kind}")
    return mlp.Config(**raw)


def _check_array(path: Path, what: str, arr: npt.NDArray[Any], shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
    if arr.shape != shape or arr.dtype != dtype:
        raise UsageError(
            f"{os.fspath(path)!r}: {what} has shape {arr.shape} and dtype {arr.dtype}, but the model needs "
            f"shape {shape} and dtype {dtype}"
        )
    if not np.isfinite(arr).all():
        raise UsageError(f"{os.fspath(path)!r}: {what} holds {int((~np.isfinite(arr)).sum())} nan or inf values")


def load_model(model: str | os.PathLike[str]) -> Model:
    """Read and check a model file (or a run directory holding ``model.npz``).

    Every array is checked before the model is used: the parameters have the shapes of the config, one
    floating dtype (float32 or float64) and finite values; the batchnorm statistics (pt4) have shape
    (H,) and that dtype, finite values and variances >= 0; the config's fields have their types.

    Raises:
        UsageError: the file cannot be read, is not a tinyops model, or fails one of those checks (the
            message names the array or field).
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
        config = _config_from_json(str(files["config"]))
        meta = json.loads(str(files["meta"]))
        itos = meta["itos"]
        if not isinstance(itos, str):
            raise TypeError(f"the vocabulary is {type(itos).__name__}, not a string")
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{os.fspath(path)!r} is not a tinyops model file (bad or missing config: {exc})") from None
    if len(itos) != config.vocab_size or itos[:1] != END or len(set(itos)) != len(itos):
        raise UsageError(
            f"{os.fspath(path)!r}: vocabulary {itos!r} is not {config.vocab_size} distinct characters starting "
            f"with {END!r}"
        )
    params: mlp.Params = {}
    shapes = config.param_shapes()
    first = files.get("param_C")
    dtype = first.dtype if first is not None and first.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    for name, shape in shapes.items():
        arr = files.get(f"param_{name}")
        if arr is None:
            raise UsageError(f"{os.fspath(path)!r}: parameter {name!r} is missing (config {config.name})")
        if arr.shape != shape or arr.dtype.kind != "f":
            raise UsageError(
                f"{os.fspath(path)!r}: parameter {name!r} has shape {arr.shape} and dtype {arr.dtype}, but config "
                f"{config.name} needs a floating array of shape {shape}"
            )
        _check_array(path, f"parameter {name!r}", arr, shape, dtype)
        params[name] = arr
    extra = sorted(k[len("param_") :] for k in files if k.startswith("param_") and k[len("param_") :] not in params)
    if extra:
        raise UsageError(f"{os.fspath(path)!r}: parameters {extra} do not belong to config {config.name}")
    bn_keys = {"bn_mean", "bn_var", "bn_num_batches_tracked", "bn_running_mean", "bn_running_var"}
    unknown = sorted(set(files) - bn_keys - {"config", "meta"} - {f"param_{k}" for k in shapes})
    if unknown:
        raise UsageError(f"{os.fspath(path)!r}: arrays {unknown} do not belong to a tinyops model")
    stats = None
    if config.batchnorm:
        H = (config.n_hidden,)
        try:
            mean, var, tracked = files["bn_mean"], files["bn_var"], files["bn_num_batches_tracked"]
        except KeyError as exc:
            raise UsageError(f"{os.fspath(path)!r}: batchnorm statistics {exc} are missing") from None
        for what, arr in (("mean", mean), ("var", var), ("running_mean", files.get("bn_running_mean")),
                          ("running_var", files.get("bn_running_var"))):
            if arr is not None:
                _check_array(path, f"batchnorm statistic {what!r}", arr, H, dtype)
                if what.endswith("var") and (arr < 0).any():
                    raise UsageError(f"{os.fspath(path)!r}: batchnorm statistic {what!r} holds a negative variance")
        if tracked.shape != () or tracked.dtype.kind not in "iu" or int(tracked) < 0:
            raise UsageError(
                f"{os.fspath(path)!r}: batchnorm statistic 'num_batches_tracked' is {tracked!r}, not a count"
            )
        stats = BatchNormStats(mean, var, int(tracked))
    elif bn_keys & set(files):
        raise UsageError(f"{os.fspath(path)!r}: batchnorm statistics do not belong to config {config.name}")
    return Model(config, params, stats, meta)


def _write_json(path: Path, obj: Any) -> None:
    with runs.atomic_path(path) as tmp:
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
    with runs.atomic_path(out / "loss.png") as tmp:
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
    with runs.atomic_path(out / "embedding.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ============================================================================ the commands


def _run(fn: Callable[[], int], interrupted: str = "interrupted") -> int:
    """Run a command: a UsageError (bad files or arguments) is one line on stderr and exit status 2;
    Ctrl-C that reaches here is one line (``interrupted``) and exit status 130."""
    try:
        return fn()
    except (UsageError, runs.RunError) as exc:
        print(f"tinyops: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinyops: {interrupted}", file=sys.stderr)
        return 130


def evaluate_splits(
    model: Model, data: dict[str, tuple[IntArray, IntArray]], stop: Callable[[], bool] = lambda: False
) -> dict[str, float]:
    """The loss of each split, in order; the splits after ``stop()`` turns true are left out."""
    losses = {}
    for name, (X, Y) in data.items():
        if stop():
            break
        losses[name] = mlp.evaluate(model.params, X, Y, model.config, model.stats)
    return losses


def _default_out(config: str, seed: int) -> str:
    return f"results/{config}-seed{seed}"


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
    """``tinyops train``: train, calibrate (pt4), evaluate every split, save the run to ``out``.

    Everything that can be checked is checked before anything is written (the arguments, the output
    location, the data and its three splits, the optional packages), so a refused run creates nothing.
    The run directory is written as a whole (:mod:`tinyops.runs`). Ctrl-C before training exits at once
    (status 130, nothing saved); from the start of training on, it stops training after the current
    step, skips the evaluation of the splits not yet evaluated, and saves the steps done as a partial
    run (status 130; ``losses.json`` and the model say how many steps it has).
    """

    def run() -> int:
        if config not in mlp.CONFIGS:
            raise UsageError(f"unknown config {config!r}; choose one of {', '.join(mlp.CONFIGS)}")
        cfg = mlp.CONFIGS[config]
        n_steps = cfg.steps if steps is None else steps
        check_steps_seed(n_steps, seed)
        out_dir = Path(out if out is not None else _default_out(config, seed))
        runs.check_target(out_dir, force=force)
        words = load_words(data)
        check_splits(words, data)
        split = splits(words, cfg.block_size)
        if plots:  # fail before training, not after, when matplotlib is missing
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise UsageError(
                    "the plots need matplotlib: pip install 'tinyops[train]' (or pass --no-plots)"
                ) from None
        if progress:
            _tqdm()  # the same for tqdm
        if 0 < n_steps < cfg.lr_decay_step:
            print(f"note: {n_steps:,} steps end before step {cfg.lr_decay_step:,}, where the learning rate drops "
                  f"to {cfg.lr_after}: this run trains at lr {cfg.lr} throughout")
        with stop_on_sigint() as stop, runs.RunDir(out_dir, force=force) as rundir:
            if stop():  # Ctrl-C while claiming the directory
                raise KeyboardInterrupt
            return _train_run(cfg, split, n_steps, seed, rundir, progress, plots, stop)

    return _run(run, interrupted="interrupted before training: nothing saved")


def _train_run(
    cfg: mlp.Config,
    split: dict[str, tuple[IntArray, IntArray]],
    steps: int,
    seed: int,
    rundir: runs.RunDir,
    progress: bool,
    plots: bool,
    stop: Callable[[], bool],
) -> int:
    """Train into ``rundir``'s staging directory and commit it (Ctrl-C only sets ``stop`` in here)."""
    Xtr, Ytr = split["train"]
    res = train(cfg, Xtr, Ytr, seed=seed, steps=steps, progress=progress, stop=stop)
    stats = mlp.calibrate(res.params, Xtr, cfg, res.stats)
    model = Model(cfg, res.params, stats, {})
    losses = evaluate_splits(model, split, stop)
    meta = {"seed": seed, "steps": res.steps_done, "steps_planned": steps}
    timing = {
        "train_seconds": round(res.seconds, 3),
        "us_per_step": round(1e6 * res.seconds / max(res.steps_done, 1), 2),
    }
    interrupted = stop()
    out = rundir.staging
    save_model(out / MODEL_FILE, cfg, res.params, stats, meta, running=res.stats)
    _write_json(out / LOSSES_FILE, {"config": cfg.name, **meta, "interrupted": interrupted, **timing, **losses})
    plotted = plots and res.steps_done > 0  # nothing to plot before the first step
    if plotted:
        save_plots(out, res.lossi, res.params, ITOS)
    rundir.commit()
    print(
        f"{cfg.name} seed {seed}: {res.steps_done} steps in {res.seconds:.1f} s "
        f"({timing['us_per_step']} us/step); " + " ".join(f"{k} {v:.4f}" for k, v in losses.items())
    )
    files = [MODEL_FILE, LOSSES_FILE, *(["loss.png", "embedding.png"] if plotted else [])]
    print(f"saved {rundir.name}/{{{','.join(files)}}}")
    if stop():  # Ctrl-C at any moment of the run, the save included
        left = [k for k in split if k not in losses]
        if res.steps_done < steps or left:
            what = f"as a partial run of {res.steps_done:,} of {steps:,} steps"
            what += f" ({', '.join(left)} not evaluated)" if left else ""
        else:
            what = f"complete ({steps:,} steps)"
        print(f"tinyops: interrupted: saved {rundir.name!r} {what}", file=sys.stderr)
        return 130
    return 0


def cmd_eval(model: str, data: str) -> int:
    """``tinyops eval``: the model's loss on the train/dev/test split of ``data``."""

    def run() -> int:
        m = load_model(model)
        words = load_words(data, m.itos)
        check_splits(words, data)
        losses = evaluate_splits(m, splits(words, m.config.block_size, m.itos))
        print(" ".join(f"{k} {v:.4f}" for k, v in losses.items()))
        return 0

    return _run(run)


def cmd_sample(model: str, n: int = 20, seed: int = 2147483647 + 10) -> int:
    """``tinyops sample``: ``n`` names, one per line (the default seed is the lecture's)."""

    def run() -> int:
        if n < 0:
            raise UsageError(f"-n must be >= 0, got {n}")
        if not 0 <= seed <= MAX_SEED:
            raise UsageError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")
        m = load_model(model)
        itos = dict(enumerate(m.itos))
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                names = mlp.sample(m.params, m.config, m.stats, itos, np.random.default_rng(seed), n=n)
            except ValueError as exc:  # probabilities that are not finite: parameters that overflow
                raise UsageError(f"{os.fspath(model)!r}: the model's probabilities are not finite ({exc})") from None
        for name in names:
            print(name)
        return 0

    return _run(run)
