"""A training run is a transaction, tested against real processes: a second run racing for the same
--out, SIGKILL at chosen moments, Ctrl-C (a real SIGINT) while the data loads, during training and
during the evaluation after the last step, read-only file systems, the umask; and the command line as
installed (python -m tinyops, tinyops bench without the benchmarks).

Each child runs `python -m tinyops` on a small synthetic names file; a moment is picked from what the
child shows (its progress bar, its staging directory, a FIFO it opens), never from a fixed sleep alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from tinyops import train as T
from tinyops.cli import main

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120  # seconds: generous, for a loaded machine


def _names_file(path: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    letters = np.array(list(T.LETTERS))
    path.write_text("\n".join("".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(n)) + "\n")
    return path


@pytest.fixture(scope="module")
def names(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _names_file(tmp_path_factory.mktemp("data") / "names.txt", 300)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class Child:
    """``python -m tinyops <args>`` with its stdout and stderr read as they come."""

    running: ClassVar[list[subprocess.Popen[bytes]]] = []  # killed after each test: none outlives it

    def __init__(self, args: list[str], cwd: Path, prefix: list[str] | None = None, **kw: Any) -> None:
        cmd = [*(prefix or []), sys.executable, "-m", "tinyops", *args]
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
        Child.running.append(self.proc)
        self.out = bytearray()
        self.err = bytearray()
        self._readers = [threading.Thread(target=self._pump, args=(s, b), daemon=True)
                         for s, b in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _pump(stream: Any, buf: bytearray) -> None:
        while chunk := os.read(stream.fileno(), 4096):
            buf.extend(chunk)

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            if self.proc.poll() is not None and not condition():
                raise AssertionError(f"the child exited ({self.proc.returncode}) before {what}: {self.err.decode()}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def finish(self) -> tuple[int, str, str]:
        rc = self.proc.wait(TIMEOUT)
        for t in self._readers:
            t.join(TIMEOUT)
        return rc, self.out.decode(), self.err.decode()


@pytest.fixture(autouse=True)
def _no_child_left() -> Iterator[None]:
    yield
    while Child.running:
        proc = Child.running.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _train(names: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(names), "--out", str(out), *extra]


def _one_line(err: str, *fragments: str) -> str:
    """The one line a refused or interrupted command prints (a progress bar's lines aside)."""
    lines = [ln for ln in re.split(r"[\r\n]+", err) if ln.strip() and not re.search(r"\d+%\|", ln)]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("tinyops: "), err
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"
    return lines[0]


def _staging(out: Path) -> list[Path]:
    return list(out.parent.glob(f".{out.name}.staging-*"))


def _leftovers(parent: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


# ---------------------------------------------------------------------------- the claim


def test_a_second_run_into_the_same_out_is_refused(names: Path, tmp_path: Path) -> None:
    """While a run trains into --out, another run into it is refused at once, naming the first (pid and
    start time); the first is then stopped by Ctrl-C and saves its steps, untouched by the second."""
    out = tmp_path / "results" / "run"
    first = Child(_train(names, out, "--steps", "1000000", "--no-progress", "--no-plots"), tmp_path)
    first.wait_for(lambda: out.parent.is_dir() and bool(_staging(out)), "the first run's staging directory")
    rc, _, err = Child(_train(names, out, "--steps", "10", "--no-progress", "--no-plots"), tmp_path).finish()
    assert rc == 2
    line = _one_line(err, f"{str(out)!r} is being written by another run", f"pid {first.proc.pid} on ", "started 20")
    assert "UTC" in line
    first.proc.send_signal(signal.SIGINT)
    rc, _, err = first.finish()
    assert rc == 130, err
    _one_line(err, "interrupted: saved", "as a partial run of")
    losses = json.loads((out / "losses.json").read_text())
    assert losses["steps_planned"] == 1_000_000 and losses["steps"] < 1_000_000
    assert T.load_model(out).meta["steps"] == losses["steps"]
    assert _leftovers(out.parent, {"run"}) == []  # the claim and the staging directory are gone


def test_two_runs_racing_for_a_new_out(names: Path, tmp_path: Path) -> None:
    """Two runs started together into the same new --out: exactly one saves; the other is refused (the
    directory is taken, or by then holds a run), and the saved run is the winner's, whole."""
    out = tmp_path / "run"
    children = [Child(_train(names, out, "--steps", "300", "--seed", str(s), "--no-progress"), tmp_path)
                for s in (1, 2)]
    results = [c.finish() for c in children]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 2], results
    loser_err = next(err for rc, _, err in results if rc == 2)
    line = _one_line(loser_err)
    assert "is being written by another run" in line or "already holds a run" in line
    winner = next(i for i, (rc, _, _) in enumerate(results) if rc == 0)
    losses = json.loads((out / "losses.json").read_text())
    assert losses["seed"] == winner + 1 and T.load_model(out).meta["seed"] == winner + 1
    assert sorted(p.name for p in out.iterdir()) == ["embedding.png", "loss.png", "losses.json", "model.npz"]
    assert _leftovers(tmp_path, {"run"}) == []


def test_the_claim_of_a_killed_run_is_taken_over(names: Path, tmp_path: Path) -> None:
    """SIGKILL leaves its claim file and staging directory behind; the next run into the same --out
    takes the claim over, removes them, and saves."""
    out = tmp_path / "run"
    killed = Child(_train(names, out, "--steps", "1000000", "--no-progress", "--no-plots"), tmp_path)
    killed.wait_for(lambda: bool(_staging(out)), "the staging directory")
    killed.proc.kill()
    killed.finish()
    assert not out.exists() and _staging(out) and (tmp_path / ".run.lock").exists()
    assert main(_train(names, out, "--steps", "10", "--no-progress", "--no-plots")) == 0
    assert _leftovers(tmp_path, {"run"}) == []


# ---------------------------------------------------------------------------- all or nothing

_KILL_AT = """
import os, signal, sys
from tinyops import cli, runs, train
when = sys.argv[1]
def kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if when == "before-plots":  # the model and losses are written, the plots not yet
    train.save_plots = kill
else:  # between the two renames of a system without an atomic exchange
    runs._exchange = lambda a, b: False
    rename = os.rename
    def rename_then_kill(src, dst):
        rename(src, dst)
        if ".old-" in os.fspath(dst):
            kill()
    runs.os.rename = rename_then_kill
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("when", ["before-plots", "between-renames"])
def test_a_kill_while_saving_leaves_the_old_run_whole(when: str, names: Path, tmp_path: Path) -> None:
    """SIGKILL in the middle of saving a --force run: --out still holds the complete old run, byte for
    byte (a kill between the two renames of the fallback swap is repaired by the next claim); the next
    run replaces it and nothing is left beside it."""
    out = tmp_path / "run"
    assert main(_train(names, out, "--steps", "20", "--no-progress")) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    argv = _train(names, out, "--steps", "30", "--seed", "1", "--no-progress", "--force")
    proc = subprocess.run([sys.executable, "-c", _KILL_AT, when, *argv], cwd=tmp_path, env=_env(),
                          capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    if when == "between-renames":
        assert not out.exists()  # the old run is aside, the new one not yet in place
    else:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(_train(names, out, "--steps", "0", "--no-progress", "--force", "--seed", "2")) == 0
    assert json.loads((out / "losses.json").read_text())["seed"] == 2
    assert _leftovers(tmp_path, {"run"}) == []


def test_an_interrupted_claim_brings_the_old_run_back(
    names: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The repair of the fallback swap alone: a run renamed aside by a dead run is restored by the next
    claim, before that claim decides whether --out holds a run (so it still needs --force)."""
    out = tmp_path / "run"
    assert main(_train(names, out, "--steps", "10", "--no-progress", "--no-plots")) == 0
    before = (out / "model.npz").read_bytes()
    out.rename(tmp_path / ".run.old-999999")
    assert main(_train(names, out, "--steps", "10", "--no-progress", "--no-plots")) == 2
    _one_line(capsys.readouterr().err, "already holds a run")
    assert (out / "model.npz").read_bytes() == before and _leftovers(tmp_path, {"run"}) == []


# ---------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_while_the_data_loads(tmp_path: Path) -> None:
    """A SIGINT while the names are read (from a FIFO that the test holds open): status 130, one line,
    no directory created."""
    fifo = tmp_path / "names.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "results" / "run"
    child = Child(_train(fifo, out, "--steps", "10", "--no-progress"), tmp_path)
    with open(fifo, "w") as writer:  # returns once the child has opened the FIFO: it now waits in read()
        writer.write("anna\n")
        writer.flush()
        time.sleep(0.2)  # let it take the line and block on the next read
        child.proc.send_signal(signal.SIGINT)
        rc, _, err = child.finish()
    assert rc == 130
    _one_line(err, "interrupted before training: nothing saved")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["names.fifo"]


def _steps_shown(err: bytearray) -> int:
    """The steps the progress bar shows last (it counts in thousands: 1.00k/...)."""
    found = re.findall(rb"(\d+(?:\.\d+)?)k/", bytes(err))
    return int(float(found[-1]) * 1000) if found else 0


def test_ctrl_c_during_training_keeps_every_finished_step(names: Path, tmp_path: Path) -> None:
    """A SIGINT once the progress bar shows 1,000 steps: status 130, one line, and a partial run with
    the steps done (at least those shown) that loads and samples."""
    out = tmp_path / "run"
    child = Child(_train(names, out, "--steps", "1000000"), tmp_path)
    child.wait_for(lambda: _steps_shown(child.err) >= 1000, "1,000 steps on the progress bar")
    shown = _steps_shown(child.err)
    child.proc.send_signal(signal.SIGINT)
    rc, _, err = child.finish()
    assert rc == 130, err
    line = _one_line(err, "as a partial run of", "of 1,000,000 steps (train, dev, test not evaluated)")
    losses = json.loads((out / "losses.json").read_text())
    assert losses["interrupted"] is True and shown <= losses["steps"] < 1_000_000
    assert f"partial run of {losses['steps']:,} of" in line
    assert T.load_model(out).meta["steps"] == losses["steps"]
    assert (out / "loss.png").exists()
    assert main(["sample", "--model", str(out), "-n", "3"]) == 0
    assert _leftovers(tmp_path, {"run"}) == []


def test_ctrl_c_during_the_evaluation_after_the_last_step(tmp_path: Path) -> None:
    """A SIGINT once the progress bar shows the last step (the splits of 20,000 names are being
    evaluated): status 130, one line, the run saved with all its steps."""
    data = _names_file(tmp_path / "many.txt", 20_000)
    out = tmp_path / "run"
    child = Child(_train(data, out, "--steps", "1000", "--no-plots"), tmp_path)
    child.wait_for(lambda: b"1.00k/1.00k" in child.err, "the last step on the progress bar")
    child.proc.send_signal(signal.SIGINT)
    rc, _, err = child.finish()
    assert rc == 130, err
    _one_line(err, "tinyops: interrupted: saved")
    losses = json.loads((out / "losses.json").read_text())
    assert losses["steps"] == losses["steps_planned"] == 1000
    model = T.load_model(out)
    assert model.meta["steps"] == 1000


# ---------------------------------------------------------------------------- file system


def _read_only_prefix(directory: Path) -> list[str] | None:
    """A command prefix that runs the child with ``directory`` read-only for it (a read-only bind mount
    in a mount namespace of its own), or None where the system cannot."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    d = str(directory)
    probe = subprocess.run([unshare, "-rm", "sh", "-c", f'mount -o bind,ro "{d}" "{d}" && ! touch "{d}/probe"'],
                           capture_output=True)
    if probe.returncode != 0 or (directory / "probe").exists():
        return None
    return [unshare, "-rm", "sh", "-c", f'mount -o bind,ro "{d}" "{d}" && exec "$@"', "sh"]


def test_a_read_only_directory_is_refused_before_training(names: Path, tmp_path: Path) -> None:
    """--out in a read-only directory: refused in one line before training, nothing created. The
    directory is made read-only by a read-only bind mount (which holds for root too), or by its mode
    where the user is not root."""
    ro = tmp_path / "ro"
    ro.mkdir()
    prefix = _read_only_prefix(ro)
    if prefix is None:
        ro.chmod(0o555)
        if os.access(ro, os.W_OK):
            ro.chmod(0o755)
            pytest.skip("no read-only directory here: running as root, and unshare cannot mount one")
    try:
        child = Child(_train(names, ro / "results" / "run", "--steps", "10", "--no-progress"), tmp_path, prefix)
        rc, out, err = child.finish()
    finally:
        ro.chmod(0o755)
    assert rc == 2
    _one_line(err, "cannot be created", "is not writable")
    assert "steps in" not in out and list(ro.iterdir()) == []


def test_files_follow_the_umask(names: Path, tmp_path: Path) -> None:
    """The run directory and its files get the mode an ordinary mkdir and open(..., 'w') give under the
    user's umask (0o027 here: rwxr-x--- and rw-r-----)."""
    umask = 0o027
    out = tmp_path / "run"
    child = Child(_train(names, out, "--steps", "20", "--no-progress"), tmp_path,
                  preexec_fn=lambda: os.umask(umask))
    rc, _, err = child.finish()
    assert rc == 0, err
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f.name


# ---------------------------------------------------------------------------- the command as installed


def test_python_m_tinyops_is_the_tinyops_command(names: Path, tmp_path: Path) -> None:
    rc, out, err = Child(["--help"], tmp_path).finish()
    assert rc == 0 and out.startswith("usage: tinyops "), err
    rc, _, err = Child(["sample", "--model", str(tmp_path / "none")], tmp_path).finish()
    assert rc == 2
    _one_line(err, "cannot read model file")


def test_bench_from_a_regular_install_says_how_to_get_the_benchmarks(tmp_path: Path) -> None:
    """An installed package (the package folder alone, as a wheel installs it; no benchmarks/ beside
    it): tinyops bench says in one line where the benchmarks are and how to get them."""
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "tinyops", site / "tinyops", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-m", "tinyops", "bench", "loss", "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and proc.stdout == ""
    _one_line(proc.stderr, "bench_loss.py not found", "source checkout", "pip install -e")
