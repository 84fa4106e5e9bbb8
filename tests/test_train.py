"""The train / eval / sample commands in process: a run end to end on a small names file, and every error
path (one line on stderr, exit status 2, no traceback, nothing created), no silent overwrite, Ctrl-C,
atomic and reproducible model files, crafted model files, the command line's help.

The run directory as a transaction (claims, races, kills, signals, permissions) is tested against real
processes in tests/test_runs.py."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinyops import mlp
from tinyops import train as T
from tinyops.cli import BENCHMARKS, main

STEPS = "200"


@pytest.fixture(scope="module")
def names(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 made-up names of a..z (the vocabulary is the lecture's whatever letters occur)."""
    rng = np.random.default_rng(0)
    letters = np.array(list(T.LETTERS))
    words = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(300)]
    path = tmp_path_factory.mktemp("data") / "names.txt"
    path.write_text("\n".join(words) + "\n")
    return path


@pytest.fixture(scope="module")
def run(names: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "pt4"
    assert main(["train", "--data", str(names), "--config", "pt4", "--steps", STEPS, "--seed", "3",
                 "--out", str(out), "--no-progress"]) == 0
    return out


def one_error_line(capsys: pytest.CaptureFixture[str], rc: int, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, f"exit status {rc}, stderr: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinyops: error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"
    return lines[0]


def test_train_saves_the_run(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sorted(p.name for p in run.iterdir()) == ["embedding.png", "loss.png", "losses.json", "model.npz"]
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    losses = json.loads((run / "losses.json").read_text())
    assert losses["config"] == "pt4" and losses["steps"] == int(STEPS) and losses["interrupted"] is False
    model = T.load_model(run)
    assert model.config == mlp.CONFIGS["pt4"] and model.stats is not None
    assert model.meta["seed"] == 3 and model.itos == T.ITOS
    with np.load(run / "model.npz") as z:  # the running estimates of training are kept beside the calibrated ones
        assert z["bn_running_mean"].shape == (200,) and not np.array_equal(z["bn_running_mean"], z["bn_mean"])
    assert main(["eval", "--model", str(run), "--data", str(_names_of(run))]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[0::2] == ["train", "dev", "test"]
    assert [float(v) for v in printed[1::2]] == [round(losses[k], 4) for k in ("train", "dev", "test")]


def _names_of(run: Path) -> Path:
    return next(run.parent.parent.glob("data*/names.txt"))


def test_saved_parameters_reproduce_bit_for_bit(run: Path) -> None:
    config = mlp.CONFIGS["pt4"]
    split = T.splits(T.load_words(_names_of(run)), config.block_size)
    res = T.train(config, *split["train"], seed=3, steps=int(STEPS))
    model = T.load_model(run / "model.npz")
    for k in config.param_names:
        assert np.array_equal(model.params[k], res.params[k]), k
    stats = mlp.calibrate(res.params, split["train"][0], config, res.stats)
    assert model.stats is not None and stats is not None
    assert np.array_equal(model.stats.mean, stats.mean) and np.array_equal(model.stats.var, stats.var)


def test_sample_is_deterministic(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outs = []
    for seed in ("1", "1", "2"):
        assert main(["sample", "--model", str(run), "-n", "8", "--seed", seed]) == 0
        outs.append(capsys.readouterr().out.splitlines())
    assert outs[0] == outs[1] != outs[2]
    assert len(outs[0]) == 8 and all(set(name) <= set(T.LETTERS) for name in outs[0])


def test_an_existing_run_is_not_overwritten(run: Path, names: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (run / "model.npz").read_bytes()
    rc = main(["train", "--data", str(names), "--steps", "10", "--out", str(run), "--no-progress", "--no-plots"])
    one_error_line(capsys, rc, "already holds a run", "pass --force (make train: TRAIN_ARGS=--force)")
    assert (run / "model.npz").read_bytes() == before
    out = run.parent / "forced"
    args = ["train", "--data", str(names), "--steps", "10", "--out", str(out), "--no-progress", "--no-plots"]
    assert main(args) == 0
    assert main([*args, "--force", "--seed", "1"]) == 0
    assert json.loads((out / "losses.json").read_text())["seed"] == 1


def _bad_data(tmp: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    (tmp / "accent.txt").write_text("anna\nzoé\n", encoding="utf-8")
    (tmp / "upper.txt").write_text("anna\nBob\n")
    (tmp / "latin1.txt").write_bytes("anna\nzo\xe9\n".encode("latin-1"))
    (tmp / "empty.txt").write_text("\n\n")
    (tmp / "adir").mkdir(exist_ok=True)
    (tmp / "two.txt").write_text("anna\nbob\n")
    return {
        "missing": (tmp / "nope.txt", ("cannot read data file", "nope.txt", "No such file")),
        "directory": (tmp / "adir", ("cannot read data file", "adir")),
        "outside-vocabulary": (tmp / "accent.txt", ("word 2 'zoé'", "'é'", "outside the vocabulary")),
        "uppercase": (tmp / "upper.txt", ("word 2 'Bob'", "'B'")),
        "not-utf8": (tmp / "latin1.txt", ("latin1.txt", "is not UTF-8")),
        "empty": (tmp / "empty.txt", ("holds no words",)),
        "two-names": (tmp / "two.txt", ("holds 2 names", "its dev split is empty", "at least 6 names")),
    }


@pytest.mark.parametrize(
    "case", ["missing", "directory", "outside-vocabulary", "uppercase", "not-utf8", "empty", "two-names"]
)
def test_bad_data_file(case: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, fragments = _bad_data(tmp_path)[case]
    rc = main(["train", "--data", str(path), "--steps", "5", "--out", str(tmp_path / "r"), "--no-progress"])
    one_error_line(capsys, rc, *fragments)
    assert not (tmp_path / "r").exists()  # nothing created for a run that could not start
    one_error_line(capsys, main(["eval", "--model", str(run), "--data", str(path)]), *fragments)


def _write_npz(path: Path, **arrays: Any) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_bad_model_file(run: Path, names: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = dict(np.load(run / "model.npz"))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    other_shape = _write_npz(tmp_path / "shape.npz", **{**good, "param_W1": np.zeros((30, 100), np.float32)})
    no_config = _write_npz(tmp_path / "noconfig.npz", **{k: v for k, v in good.items() if k != "config"})
    no_stats = _write_npz(tmp_path / "nostats.npz", **{k: v for k, v in good.items() if not k.startswith("bn_")})
    pt2 = dict(
        good, config=np.array(json.dumps({**json.loads(str(good["config"])), "name": "pt2", "batchnorm": False}))
    )
    extra = _write_npz(tmp_path / "extra.npz", **pt2)
    cases = [
        (tmp_path / "missing.npz", ("cannot read model file", "missing.npz")),
        (garbage, ("is not a tinyops model file",)),
        (other_shape, ("parameter 'W1' has shape (30, 100)", "needs a floating array of shape (30, 200)")),
        (no_config, ("is not a tinyops model file", "config")),
        (no_stats, ("batchnorm statistics", "missing")),
        (extra, ("parameters ['bnbias', 'bngain'] do not belong to config pt2",)),
    ]
    for path, fragments in cases:
        one_error_line(capsys, main(["sample", "--model", str(path)]), *fragments)
        one_error_line(capsys, main(["eval", "--model", str(path), "--data", str(names)]), *fragments)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--steps", "-1"], ("steps must be an integer from 0 to 100,000,000, got -1",)),
        (["--steps", str(10**15)], ("steps must be an integer from 0 to 100,000,000, got 1000000000000000",)),
        (["--seed", "-1"], ("seed must be an integer from 0 to 2**63 - 1, got -1",)),
        (["--seed", str(2**64)], ("seed must be an integer from 0 to 2**63 - 1",)),
    ],
)
def test_steps_and_seed_out_of_range(
    args: list[str], fragments: tuple[str, ...], names: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results" / "run"
    rc = main(["train", "--data", str(names), "--out", str(out), "--no-progress", "--no-plots", *args])
    one_error_line(capsys, rc, *fragments)
    assert list(tmp_path.iterdir()) == []  # refused before anything was created


def test_bad_arguments(names: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_error_line(capsys, T.cmd_train(str(names), "pt3", out=str(tmp_path / "a")), "unknown config 'pt3'")
    (tmp_path / "file").write_text("x")
    rc = main(["train", "--data", str(names), "--out", str(tmp_path / "file"), "--no-progress"])
    one_error_line(capsys, rc, "exists and is not a directory")
    rc = main(["train", "--data", str(names), "--out", str(tmp_path / "file" / "a" / "run"), "--no-progress"])
    one_error_line(capsys, rc, "cannot be created", "file' is not a directory")  # a path under a regular file
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for force in ([], ["--force"]):  # a directory of other files is never replaced by a run
        rc = main(["train", "--data", str(names), "--out", str(tmp_path / "mine"), "--no-progress", *force])
        one_error_line(capsys, rc, "holds other files and no run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine"]
    one_error_line(capsys, main(["sample", "--model", str(run), "--seed", "-1"]), "seed must be")


def test_ctrl_c_saves_the_parameters_so_far(
    names: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIGINT during step 50 lets that step finish, stops the loop, skips the evaluation, and saves a
    complete partial run that says how many steps it has."""
    calls = {"n": 0}
    step = mlp.Trainer.step

    def interrupted_step(self: mlp.Trainer, *args: Any) -> Any:
        if calls["n"] == 50:
            os.kill(os.getpid(), signal.SIGINT)
        calls["n"] += 1
        return step(self, *args)

    monkeypatch.setattr(mlp.Trainer, "step", interrupted_step)
    out = tmp_path / "run"
    rc = main(["train", "--data", str(names), "--steps", "1000", "--out", str(out), "--no-progress", "--no-plots"])
    assert rc == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "partial run of 51 of 1,000 steps (train, dev, test not evaluated)" in err[0], err
    losses = json.loads((out / "losses.json").read_text())
    assert losses["interrupted"] is True and losses["steps"] == 51 and losses["steps_planned"] == 1000
    assert "train" not in losses
    model = T.load_model(out)  # a complete, loadable model
    assert model.meta["steps"] == 51 and model.meta["steps_planned"] == 1000
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored


def test_model_files_are_written_atomically(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash while writing leaves the previous file intact and no temporary file behind."""
    model = T.load_model(run)
    path = tmp_path / "model.npz"
    T.save_model(path, model.config, model.params, model.stats, {"seed": 3})
    before = path.read_bytes()

    def crash(f: Any, arrays: Any) -> None:
        f.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(T, "_write_npz", crash)
    with pytest.raises(OSError, match="No space left"):
        T.save_model(path, model.config, model.params, model.stats, {"seed": 4})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def _craft(good: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**good, **changes}


def _config(good: dict[str, Any], **fields: Any) -> Any:
    return np.array(json.dumps({**json.loads(str(good["config"])), **fields}))


def test_crafted_model_files(run: Path, names: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every array and config field of a model is checked on load: each crafted file is refused in one
    line naming what is wrong, by sample and by eval alike."""
    good = dict(np.load(run / "model.npz"))
    W1 = good["param_W1"]
    nan_W1 = W1.copy()
    nan_W1[3, 7] = np.nan
    neg_var = good["bn_var"].copy()
    neg_var[5] = -0.5
    inf_mean = good["bn_mean"].copy()
    inf_mean[0] = np.inf
    cases: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
        "nan-parameter": (_craft(good, param_W1=nan_W1), ("parameter 'W1' holds 1 nan or inf values",)),
        "float-config": (_craft(good, config=_config(good, n_hidden=200.0)), ("'n_hidden' is 200.0, not a valid int",)),
        "bool-config": (_craft(good, config=_config(good, block_size=True)), ("'block_size' is True",)),
        "zero-config": (_craft(good, config=_config(good, n_embd=0)), ("'n_embd' is 0",)),
        "string-config": (_craft(good, config=_config(good, lr="0.1")), ("'lr' is '0.1', not a valid float",)),
        "unknown-field": (_craft(good, config=_config(good, depth=3)), ("unknown ['depth']",)),
        "wrong-shape": (_craft(good, param_b1=np.zeros(199, np.float32)), ("parameter 'b1' has shape (199,)",)),
        "mixed-dtypes": (_craft(good, param_W2=good["param_W2"].astype(np.float64)),
                         ("parameter 'W2'", "dtype float64", "needs shape (200, 27) and dtype float32")),
        "float16": (_craft(good, **{k: v.astype(np.float16) for k, v in good.items() if k.startswith("param_")}),
                    ("parameter 'C'", "dtype float16")),
        "negative-var": (_craft(good, bn_var=neg_var), ("statistic 'var' holds a negative variance",)),
        "inf-mean": (_craft(good, bn_mean=inf_mean), ("statistic 'mean' holds 1 nan or inf values",)),
        "stats-dtype": (_craft(good, bn_mean=good["bn_mean"].astype(np.float64)), ("statistic 'mean'", "float64")),
        "float-count": (_craft(good, bn_num_batches_tracked=np.float64(3.5)), ("'num_batches_tracked' is",)),
        "unknown-array": (_craft(good, extra=np.zeros(3)), ("arrays ['extra'] do not belong",)),
        "vocabulary": (_craft(good, meta=np.array(json.dumps({"itos": "ab" * 13 + "c"}))), ("vocabulary 'abab",)),
    }
    for case, (arrays, fragments) in cases.items():
        path = _write_npz(tmp_path / f"{case}.npz", **arrays)
        one_error_line(capsys, main(["sample", "--model", str(path), "-n", "2"]), *fragments)
        one_error_line(capsys, main(["eval", "--model", str(path), "--data", str(names)]), *fragments)
    assert main(["sample", "--model", str(_write_npz(tmp_path / "good.npz", **good)), "-n", "2"]) == 0


def test_the_same_seed_gives_the_same_model_file(names: Path, tmp_path: Path) -> None:
    """Wall-clock figures go to losses.json; the model's bytes depend on the seed and steps alone (its
    zip entries carry a fixed time stamp)."""
    runs = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    for out, seed in zip(runs, ("5", "5", "6"), strict=True):
        assert main(["train", "--data", str(names), "--steps", "50", "--seed", seed, "--out", str(out),
                     "--no-progress", "--no-plots"]) == 0
    a, b, c = ((out / "model.npz").read_bytes() for out in runs)
    assert a == b != c
    assert "train_seconds" in json.loads((runs[0] / "losses.json").read_text())


@pytest.mark.parametrize("replacement", [["--no-plots"], ["--steps", "0"]])
def test_force_replaces_the_whole_run(
    replacement: list[str], names: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--force swaps in the new run whole: no plot of the replaced run stays beside the new model."""
    out = tmp_path / "run"
    args = ["train", "--data", str(names), "--steps", "20", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert (out / "loss.png").exists()
    assert main([*args, "--force", "--seed", "1", *replacement]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["losses.json", "model.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no claim or staging left beside it
    assert "saved" in capsys.readouterr().out


def test_short_run_says_the_learning_rate_does_not_decay(
    names: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", str(names), "--out", str(tmp_path / "a"), "--no-progress", "--no-plots"]
    assert main([*args, "--steps", "30"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "learning rate" in line]
    assert notes == ["note: 30 steps end before step 100,000, where the learning rate drops to 0.01: this run "
                     "trains at lr 0.1 throughout"]
    assert main([*args, "--steps", "0", "--force"]) == 0
    assert "learning rate" not in capsys.readouterr().out


def test_ctrl_c_while_saving_completes_the_save(
    names: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIGINT while the plots are written neither cuts the save short nor raises: the run is complete,
    all its steps, and the command says it was interrupted (status 130)."""
    save_plots = T.save_plots

    def interrupted_save(*args: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        save_plots(*args)

    monkeypatch.setattr(T, "save_plots", interrupted_save)
    out = tmp_path / "run"
    assert main(["train", "--data", str(names), "--steps", "40", "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("run' complete (40 steps)"), err
    assert sorted(p.name for p in out.iterdir()) == ["embedding.png", "loss.png", "losses.json", "model.npz"]
    losses = json.loads((out / "losses.json").read_text())
    assert losses["steps"] == 40 and losses["interrupted"] is False and "test" in losses  # nothing cut short
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    """--help of every command, and of each benchmark through tinyops bench, shows no reStructuredText
    markup, and a benchmark's usage line names the command that runs it."""
    commands = [[], ["train"], ["sample"], ["eval"], ["check"], ["bench"],
                *(["bench", name] for name in sorted(BENCHMARKS))]
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: {' '.join(['tinyops', *command])} "), text[:80]
        for markup in ("``", ":class:", ":func:", ":mod:", ":meth:", ":data:"):
            assert markup not in text, (command, markup)
