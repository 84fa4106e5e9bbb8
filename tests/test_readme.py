"""README's commands run as written.

Every command line in README's ``sh`` code blocks is either run here, in a fresh folder holding a names
file, or listed in ``NOT_RUN`` with the reason (the long ones: the two commands themselves, 200,000-step
training, the hour of ``make results``). A command added to README and in neither fails this test, so the
README cannot gain a command nobody checks. Every ``tinyops.<name>`` README mentions resolves after
``import tinyops``.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import tinyops
from tinyops.exercises._train import synthetic_names

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent  # the environment's bin/: `tinyops` as README's activated shell finds it

# Commands too long or too global for a unit test, each with where it is checked instead.
NOT_RUN = {
    "make bench": "the main job itself (minutes)",
    "make test": "CI runs it; this test is part of it",
    "TINYOPS_NAMES=path/to/names.txt make test": "CI runs it",
    "make results DATA=path/to/names.txt": "about 25 minutes",
    "make train DATA=path/to/names.txt": "200,000 steps; `tinyops train` runs below with --steps",
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 --index-url "
    "https://download.pytorch.org/whl/cpu": "a download from PyTorch's index",
    ". .venv/bin/activate": "this test runs inside the environment",
    "python examples/seed_walkthrough.py --data names.txt": "tests/test_examples.py",
    "python examples/overflow.py": "tests/test_examples.py",
    "python examples/backprop_ninja.py --data names.txt": "tests/test_examples.py",
    "python examples/train_makemore.py --data names.txt": "tests/test_examples.py",
    "python examples/fused_vs_naive.py": "tests/test_examples.py",
    "pytest examples/test_my_softmax.py": "tests/test_audit.py",
}
# Training commands run as written plus these options (200,000 steps would take minutes).
SHORT = ["--steps", "300", "--no-progress"]


def readme_commands() -> list[str]:
    """The command lines of README's sh blocks, comments stripped."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in block.splitlines():
            cmd = line.split("  #")[0].split(" # ")[0].strip()
            if cmd and not cmd.startswith("#"):
                out.append(cmd)
    return out


COMMANDS = readme_commands()
RUN = [c for c in COMMANDS if c not in NOT_RUN]


def test_every_command_is_run_or_has_a_reason() -> None:
    assert COMMANDS, "README has no sh blocks"
    for cmd in RUN:
        assert cmd.startswith("tinyops "), f"README command {cmd!r} is neither run here nor listed in NOT_RUN"
    stale = [c for c in NOT_RUN if c not in COMMANDS]
    assert not stale, f"NOT_RUN lists commands README no longer has: {stale}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh folder with names.txt (the real file when TINYOPS_NAMES is set) and path/to/names.txt."""
    d = tmp_path_factory.mktemp("readme")
    names = os.environ.get("TINYOPS_NAMES")
    text = Path(names).read_text() if names else "\n".join(synthetic_names(4000)) + "\n"
    (d / "names.txt").write_text(text)
    (d / "path" / "to").mkdir(parents=True)
    (d / "path" / "to" / "names.txt").write_text(text)
    return d


def run(cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = shlex.split(cmd)
    args[0] = str(BIN / args[0])
    if args[1] == "train":
        args += SHORT
    env = {**os.environ, "TINYOPS_STATE_DIR": str(cwd / "state")}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_readme_commands_run_as_written(workdir: Path) -> None:
    """In README's order, as a newcomer types them; the model the sample and eval lines read comes from
    `make train`'s default run (results/pt2-seed0), trained here by `tinyops train` with the same defaults."""
    assert (BIN / "tinyops").exists(), f"no tinyops command in {BIN}"
    proc = run("tinyops train --data names.txt", workdir)  # what `make train` runs, in short
    assert proc.returncode == 0, proc.stderr
    for cmd in RUN:
        proc = run(cmd, workdir)
        out = proc.stdout + proc.stderr
        assert "Traceback" not in out, f"{cmd}:\n{out}"
        if cmd.startswith("tinyops exercise check"):
            # the fresh exercise file has every gradient blank: the check fails, and says which is first
            assert proc.returncode == 1, f"{cmd}: status {proc.returncode}\n{out}"
            assert "TODO" in out or "blank" in out, out
            continue
        assert proc.returncode == 0, f"{cmd}: status {proc.returncode}\n{out}"
        if cmd.startswith("tinyops sample"):
            names = proc.stdout.split()
            assert len(names) == 10 and all(re.fullmatch(r"[a-z]+", n) for n in names), proc.stdout
        if cmd.startswith("tinyops eval"):
            assert re.search(r"train \d\.\d{4} dev \d\.\d{4} test \d\.\d{4}", proc.stdout), proc.stdout


def test_every_tinyops_name_in_readme_resolves() -> None:
    """`tinyops.mlp`, `tinyops.testing.exact`, `tinyops.gradcheck`, ...: reachable from ``import tinyops``
    (a submodule of a submodule by importing it)."""
    names = sorted(set(re.findall(r"`(tinyops(?:\.\w+)+)", README)))
    assert "tinyops.mlp" in names and "tinyops.data" in names
    for name in names:
        parts = name.split(".")
        obj = getattr(tinyops, parts[1])  # AttributeError: README names what `import tinyops` does not give
        for i, part in enumerate(parts[2:], start=2):
            if not hasattr(obj, part):
                obj = importlib.import_module(".".join(parts[: i + 1]))
            else:
                obj = getattr(obj, part)


def test_the_docs_hold_every_block_make_results_writes(tmp_path: Path) -> None:
    """Each block benchmarks/results.py (and bench_accuracy.py, the atlas) writes is in its file once, no
    other block is, and rewriting one keeps the text around it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import common
    import results

    for path, names in ((ROOT / "README.md", (*results.README_BLOCKS, "atlas")),
                        (ROOT / "docs" / "benchmarks.md", results.DOC_BLOCKS),
                        (ROOT / "docs" / "accuracy.md", ("atlas",))):
        text = path.read_text(encoding="utf-8")
        found = re.findall(r"<!-- results:([\w-]+) begin", text)
        assert sorted(found) == sorted(names), f"{path.name}: blocks {found}, the scripts write {names}"
        for name in names:
            assert text.count(f"<!-- results:{name} end -->") == 1, f"{path.name}: {name} has no single end"
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- results:a begin (x) -->\nold\n<!-- results:a end -->\nafter\n")
    common.replace_blocks(doc, {"a": "new | 1"})
    assert doc.read_text() == "before\n<!-- results:a begin (x) -->\n\nnew | 1\n\n<!-- results:a end -->\nafter\n"
    with pytest.raises(SystemExit, match="must hold one"):
        common.replace_blocks(doc, {"b": "x"})
    assert list(tmp_path.iterdir()) == [doc]  # no temporary file left beside it
