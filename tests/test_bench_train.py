"""bench_train checks before it times: tinyops and the torch model agree from the same parameters on the
same batches, and a wrong tinyops step stops the benchmark instead of being timed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinyops import mlp

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_train.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_train"] = module
    spec.loader.exec_module(module)
    return module


def data(config: mlp.Config) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 27, (500, config.block_size)), rng.integers(0, 27, 500)


@pytest.mark.parametrize("name", ["pt2", "pt4"])
def test_tinyops_and_torch_agree(bench: Any, name: str) -> None:
    config = mlp.CONFIGS[name]
    agree = bench.check_agreement(config, *data(config))
    assert agree["loss_rel_diff"] < 1e-4 and agree["param_rel_diff"] < 1e-4


def test_a_wrong_step_is_not_timed(bench: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    update = mlp.Trainer.update
    monkeypatch.setattr(mlp.Trainer, "update", lambda self, lr: update(self, 1.01 * lr))
    config = mlp.CONFIGS["pt4"]
    with pytest.raises(SystemExit, match="disagree"):
        bench.check_agreement(config, *data(config))


def test_timing_and_profile_run(bench: Any) -> None:
    config = mlp.CONFIGS["pt4"]
    X, Y = data(config)
    timing = bench.time_steps(config, X, Y, block=5, repeats=2)
    # one step of the 32 x 27 batch: tens to hundreds of microseconds on any machine, never 0 or a second
    assert 1 < timing["tinyops_us"] < 1e5 and 1 < timing["torch_us"] < 1e5, timing
    names = [op for op, _, _ in bench.profile_ops(config, X, Y, number=2)]
    assert "batchnorm fwd" in names and "embedding bwd" in names and len(names) == 14
