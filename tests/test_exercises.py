"""The exercise packs: model solutions pass, planted bugs are named, blanks fail cleanly, the CLI loop works."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyops import cli
from tinyops.exercises import EXERCISES, CheckResult, check, list_exercises, render, start
from tinyops.exercises._check import BLANK, solution_module
from tinyops.exercises._diagnose import slug

ROOT = Path(__file__).resolve().parent.parent
SEED = 12345  # the random case's seed: fixed, so that a failure here reruns as it was


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test keeps its progress file in its own temporary directory."""
    folder = tmp_path / "state"
    monkeypatch.setenv("TINYOPS_STATE_DIR", str(folder))
    return folder


def run_check(tmp_path: Path, name: str, fill: dict[str, str] | None = None, *, solved: bool = True,
              seed: int = SEED) -> tuple[CheckResult, str]:
    exercise = EXERCISES[name]
    path = tmp_path / exercise.filename
    path.write_text(render(exercise, solved=solved, fill=fill), encoding="utf-8")
    out = io.StringIO()
    result = check(path, seed=seed, out=out, record=False)
    return result, out.getvalue()


FAST = [name for name, ex in EXERCISES.items() if not ex.train]


# ============================================================================ the model solutions pass


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("seed", [SEED, 7])
def test_model_solution_passes(tmp_path: Path, name: str, seed: int) -> None:
    result, text = run_check(tmp_path, name, seed=seed)
    assert result.passed, text
    assert [r.name for r in result.rows] == [f"d{s.name}" for s in EXERCISES[name].steps]
    assert all(r.status in ("exact", "approximate") for r in result.rows), text
    assert result.seconds < 2.0, f"{name}: check took {result.seconds:.2f} s"
    if any(r.status == "approximate" for r in result.rows):  # right, not bit-exact: told as rounding, in ULPs
        first = next(r for r in result.rows if r.status == "approximate")
        assert result.diagnosis is not None and result.diagnosis.name == first.name
        assert result.diagnosis.kind == "rounding" and "ULP" in result.diagnosis.message


def test_filling_the_blanks_one_by_one_walks_the_chain(tmp_path: Path) -> None:
    """The learner's loop: each check names the next blank, with its rule, until the whole chain passes."""
    exercise = EXERCISES["backprop-chain"]
    path = tmp_path / exercise.filename
    text = render(exercise)
    for step in exercise.steps:
        var = f"d{step.name}"
        path.write_text(text)
        out = io.StringIO()
        result = check(path, seed=SEED, out=out, record=False)
        assert not result.passed and result.diagnosis is not None, out.getvalue()
        assert (result.diagnosis.kind, result.diagnosis.name) == ("blank", var), out.getvalue()
        assert "The step: " + exercise.hints[var] in out.getvalue()
        text = BLANK.sub(lambda m, v=var: (m["indent"] + exercise.solutions[v].replace("\n", "\n" + m["indent"])
                                           + m["comment"]) if m["var"] == v else m[0], text)
    path.write_text(text)
    assert check(path, seed=SEED, out=io.StringIO(), record=False).passed


def test_the_chain_reports_every_intermediate_in_the_lecture_order(tmp_path: Path) -> None:
    result, text = run_check(tmp_path, "backprop-chain")
    assert [r.name[1:] for r in result.rows] == [
        "logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits", "logit_maxes", "logits",
        "h", "W2", "b2", "hpreact", "bngain", "bnbias", "bnraw", "bnvar_inv", "bnvar", "bndiff2", "bndiff",
        "bnmeani", "hprebn", "embcat", "W1", "b1", "emb", "C"]
    # the model solution is the reference of the chain's intermediates: bit-exact in float32
    assert all(r.status == "exact" for r in result.rows), text
    assert "exact: True" in text and "maxdiff" in text


def _lecture_grads_torch(ns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The part-4 chain in torch (float64), autograd's gradient of every intermediate: an independent oracle."""
    torch = pytest.importorskip("torch")
    P = {k: torch.tensor(ns[k], requires_grad=True) for k in ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")}
    Xb, Yb = torch.from_numpy(ns["Xb"]), torch.from_numpy(ns["Yb"])
    n = Xb.shape[0]
    t = {"emb": P["C"][Xb]}
    t["embcat"] = t["emb"].view(n, -1)
    t["hprebn"] = t["embcat"] @ P["W1"] + P["b1"]
    t["bnmeani"] = t["hprebn"].sum(0, keepdim=True) / n
    t["bndiff"] = t["hprebn"] - t["bnmeani"]
    t["bndiff2"] = t["bndiff"] ** 2
    t["bnvar"] = t["bndiff2"].sum(0, keepdim=True) / (n - 1)
    t["bnvar_inv"] = (t["bnvar"] + 1e-5) ** -0.5
    t["bnraw"] = t["bndiff"] * t["bnvar_inv"]
    t["hpreact"] = P["bngain"] * t["bnraw"] + P["bnbias"]
    t["h"] = torch.tanh(t["hpreact"])
    t["logits"] = t["h"] @ P["W2"] + P["b2"]
    t["logit_maxes"] = t["logits"].max(1, keepdim=True).values
    t["norm_logits"] = t["logits"] - t["logit_maxes"]
    t["counts"] = t["norm_logits"].exp()
    t["counts_sum"] = t["counts"].sum(1, keepdim=True)
    t["counts_sum_inv"] = t["counts_sum"] ** -1
    t["probs"] = t["counts"] * t["counts_sum_inv"]
    t["logprobs"] = t["probs"].log()
    loss = -t["logprobs"][torch.arange(n), Yb].mean()
    for v in t.values():
        v.retain_grad()
    loss.backward()
    return {**{f"d{k}": v.grad.numpy() for k, v in t.items()}, **{f"d{k}": p.grad.numpy() for k, p in P.items()}}


@pytest.mark.parametrize("fixed", [True, False])
def test_chain_model_solution_matches_torch_autograd(fixed: bool) -> None:
    from tinyops.exercises._check import run_backward

    exercise = EXERCISES["backprop-chain"]
    module = solution_module(exercise)
    inputs = exercise.make_case(np.random.default_rng(3), fixed)
    ns = {**inputs, **module.forward(**inputs)}
    ours = run_backward(module.backward, ns, "solution").grads
    theirs = _lecture_grads_torch(inputs)
    for k in [f"d{s.name}" for s in exercise.steps]:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-9, atol=1e-15, err_msg=k)


def test_batchnorm_chain_model_solution_matches_tinyops_batchnorm() -> None:
    """The chain's dhprebn, dbngain, dbnbias equal tinyops' fused batchnorm backward (a different algorithm)."""
    from tinyops.exercises._check import run_backward
    from tinyops.exercises._packs import _bn_reference

    exercise = EXERCISES["batchnorm-chain"]
    module = solution_module(exercise)
    inputs = exercise.make_case(np.random.default_rng(5), False)
    ns = {**inputs, **module.forward(**{k: inputs[k] for k in ("hprebn", "bngain", "bnbias")})}
    ours = run_backward(module.backward, ns, "solution").grads
    for k, v in _bn_reference(ns).items():
        np.testing.assert_allclose(ours[f"d{k}"], v, rtol=1e-9, atol=1e-15, err_msg=k)


# ============================================================================ planted bugs, diagnosed

# (exercise, gradient, the learner's wrong line(s), the kind of bug, its detail)
PLANTED = [
    # transposed
    ("backprop-chain", "dW2", "dW2 = dlogits.T @ h", "transposed", ""),
    ("linear-tanh", "dW", "dW = dhpre.T @ x", "transposed", ""),
    ("mlp-train", "dW1", "dW1 = dhprebn.T @ embcat", "transposed", ""),
    # not summed over a broadcast axis
    ("backprop-chain", "dbnbias", "dbnbias = dhpreact", "sum-axis", "not-summed"),
    ("backprop-chain", "db2", "db2 = dlogits", "sum-axis", "not-summed"),
    ("batchnorm-chain", "dbngain", "dbngain = bnraw * dhpreact", "sum-axis", "not-summed"),
    ("batchnorm-fused", "dbnbias", "dbnbias = dhpreact", "sum-axis", "not-summed"),
    ("linear-tanh", "db", "db = dhpre", "sum-axis", "not-summed"),
    ("mlp-train", "db2", "db2 = dlogits", "sum-axis", "not-summed"),
    # summed over the wrong axis
    ("backprop-chain", "dcounts_sum_inv", "dcounts_sum_inv = (counts * dprobs).sum(0, keepdims=True)",
     "sum-axis", "wrong-axis"),
    ("batchnorm-chain", "dbnmeani", "dbnmeani = -dbndiff.sum(1, keepdims=True)", "sum-axis", "wrong-axis"),
    ("batchnorm-fused", "dhprebn", "dhprebn = bngain * bnvar_inv / n * (n * dhpreact - dhpreact.sum(1, keepdims="
     "True) - n / (n - 1) * bnraw * (dhpreact * bnraw).sum(1, keepdims=True))", "sum-axis", "wrong-axis"),
    ("cross-entropy-fused", "dlogits", "p = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)\n"
     "dlogits = (p - np.eye(logits.shape[1])[Yb]) / n", "sum-axis", "wrong-axis"),
    ("softmax-vjp", "dx_softmax", "dx_softmax = y * dy - y * (y * dy).sum(0, keepdims=True)", "sum-axis",
     "wrong-axis"),
    ("softmax-vjp", "dx_log_softmax", "dx_log_softmax = dlogy - np.exp(logy) * dlogy.sum(axis=0)", "sum-axis",
     "wrong-axis"),
    # keepdims lost
    ("backprop-chain", "dbnmeani", "dbnmeani = -dbndiff.sum(0)", "sum-axis", "keepdims"),
    ("batchnorm-fused", "dbngain", "dbngain = (bnraw * dhpreact).sum(0)", "sum-axis", "keepdims"),
    ("mlp-train", "dbnbias", "dbnbias = dhpreact.sum(0)", "sum-axis", "keepdims"),
    # the 1/n of the mean
    ("backprop-chain", "dlogprobs", "dlogprobs = np.zeros_like(logprobs)\ndlogprobs[np.arange(n), Yb] = -1.0",
     "factor", "1/n"),
    ("cross-entropy-fused", "dlogits", "p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)\n"
     "dlogits = p - np.eye(logits.shape[1])[Yb]", "factor", "1/n"),
    ("batchnorm-chain", "dbnmeani", "dbnmeani = -dbndiff.sum(0, keepdims=True) / n", "factor", "1/n"),
    ("mlp-train", "dlogits", "dlogits = probs.copy()\ndlogits[np.arange(n), Yb] -= 1\ndlogits /= n * n",
     "factor", "1/n"),
    # n against n - 1 (Bessel's correction)
    ("backprop-chain", "dbndiff2", "dbndiff2 = np.ones_like(bndiff2) / n * dbnvar", "factor", "bessel"),
    ("batchnorm-chain", "dbndiff2", "dbndiff2 = np.ones_like(bndiff2) / n * dbnvar", "factor", "bessel"),
    ("batchnorm-fused", "dhprebn", "dhprebn = bngain * bnvar_inv / n * (n * dhpreact - dhpreact.sum(0) "
     "- bnraw * (dhpreact * bnraw).sum(0))", "factor", "bessel"),
    ("mlp-train", "dhprebn", "dhprebn = (bngain * bnvar_inv / n) * (n * dhpreact - dhpreact.sum(0) "
     "- bnraw * (dhpreact * bnraw).sum(0))", "factor", "bessel"),
    # a sign
    ("backprop-chain", "dbnmeani", "dbnmeani = dbndiff.sum(0, keepdims=True)", "factor", "sign"),
    ("batchnorm-chain", "dbnvar", "dbnvar = 0.5 * (bnvar + 1e-5) ** -1.5 * dbnvar_inv", "factor", "sign"),
    ("cross-entropy-fused", "dlogits", "p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)\n"
     "dlogits = (np.eye(logits.shape[1])[Yb] - p) / n", "factor", "sign"),
    ("embedding", "dC", "dC = np.zeros_like(C)\nnp.add.at(dC, Xb, -demb)", "factor", "sign"),
    ("linear-tanh", "dhpre", "dhpre = (h**2 - 1.0) * dh", "factor", "sign"),
    ("softmax-vjp", "dx_log_softmax", "dx_log_softmax = np.exp(logy) * dlogy.sum(1, keepdims=True) - dlogy",
     "factor", "sign"),
    ("softmax-vjp", "dx_lse", "dx_lse = -y * dlse[:, None]", "factor", "sign"),
    ("mlp-train", "dh", "dh = -dlogits @ W2.T", "factor", "sign"),
    # another constant
    ("backprop-chain", "dbnvar", "dbnvar = -(bnvar + 1e-5) ** -1.5 * dbnvar_inv", "factor", "constant"),
    ("batchnorm-chain", "dbnvar", "dbnvar = -1.5 * (bnvar + 1e-5) ** -1.5 * dbnvar_inv", "factor", "constant"),
    ("linear-tanh", "dx", "dx = 2 * dhpre @ W.T", "factor", "constant"),
    # a broadcast multiplier missing: one factor per column
    ("backprop-chain", "dbnraw", "dbnraw = dhpreact", "factor", "per-column"),
    ("batchnorm-chain", "dbndiff", "dbndiff = dbnraw + 2 * bndiff * dbndiff2", "wrong", ""),  # no one pattern
    # an elementwise factor missing
    ("backprop-chain", "dprobs", "dprobs = dlogprobs", "factor", "elementwise"),
    ("backprop-chain", "dnorm_logits", "dnorm_logits = dcounts", "factor", "elementwise"),
    ("linear-tanh", "dhpre", "dhpre = (1.0 - h**2)", "factor", "elementwise"),
    ("batchnorm-chain", "dbnraw", "dbnraw = bnvar_inv * dhpreact", "factor", "per-column"),
    ("mlp-train", "dhprebn", "dhprebn = bngain / n * (n * dhpreact - dhpreact.sum(0) "
     "- n / (n - 1) * bnraw * (dhpreact * bnraw).sum(0))", "factor", "per-column"),
    # repeated indices dropped in a scatter
    ("backprop-chain", "dC", "dC = np.zeros_like(C)\ndC[Xb] += demb", "scatter", ""),
    ("embedding", "dC", "dC = np.zeros_like(C)\ndC[Xb] += demb", "scatter", ""),
    ("embedding", "dC", "dC = np.zeros_like(C)\ndC[Xb.reshape(-1)] = demb.reshape(-1, C.shape[1])", "scatter", ""),
    ("mlp-train", "dC", "dC = np.zeros_like(C)\ndC[Xb] += demb", "scatter", ""),
    # wrong only where the targets select
    ("cross-entropy-fused", "dlogits", "p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)\ndlogits = p / n",
     "mask", "inside"),
    ("cross-entropy-fused", "dlogits", "p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)\n"
     "dlogits = p / n\ndlogits[np.arange(n), Yb] -= 1", "mask", "inside"),
    ("backprop-chain", "dlogprobs", "dlogprobs = -np.ones_like(logprobs) / n", "mask", "outside"),
    ("backprop-chain", "dlogits", "dlogits = dnorm_logits.copy()\n"
     "dlogits[np.arange(n), logits.argmax(1)] += 1.0", "mask", "inside"),
    ("mlp-train", "dlogits", "dlogits = probs / n", "mask", "inside"),
]


@pytest.mark.parametrize(("name", "var", "code", "kind", "detail"), PLANTED,
                         ids=[f"{p[0]}-{p[1]}-{p[3]}-{p[4] or 'x'}-{i}" for i, p in enumerate(PLANTED)])
def test_planted_bug_is_diagnosed(tmp_path: Path, name: str, var: str, code: str, kind: str, detail: str) -> None:
    result, text = run_check(tmp_path, name, {var: code})
    assert not result.passed, text
    d = result.diagnosis
    assert d is not None, text
    assert (d.name, d.kind, d.detail) == (var, kind, detail), text
    first_wrong = next(r for r in result.rows if r.status == "wrong")
    assert first_wrong.name == var, text
    assert "First wrong gradient:" in text and d.link in text


def test_every_bug_class_is_planted_in_every_exercise_where_it_can_occur() -> None:
    """The table above covers each kind of mistake in each exercise that has a step it can happen in."""
    planted = {(p[0], p[3], p[4]) for p in PLANTED}
    can_occur = {
        ("transposed", ""): ["backprop-chain", "linear-tanh", "mlp-train"],  # the matrix products' weights
        ("sum-axis", "not-summed"): ["backprop-chain", "batchnorm-chain", "batchnorm-fused", "linear-tanh",
                                     "mlp-train"],  # a bias or gain broadcast down the batch
        ("sum-axis", "wrong-axis"): ["backprop-chain", "batchnorm-chain", "batchnorm-fused", "cross-entropy-fused",
                                     "softmax-vjp"],
        ("sum-axis", "keepdims"): ["backprop-chain", "batchnorm-fused", "mlp-train"],
        ("factor", "1/n"): ["backprop-chain", "cross-entropy-fused", "mlp-train"],  # the mean of the loss
        ("factor", "bessel"): ["backprop-chain", "batchnorm-chain", "batchnorm-fused", "mlp-train"],
        ("factor", "sign"): ["backprop-chain", "batchnorm-chain", "cross-entropy-fused", "embedding", "linear-tanh",
                             "softmax-vjp", "mlp-train"],
        ("scatter", ""): ["backprop-chain", "embedding", "mlp-train"],
        ("mask", "inside"): ["backprop-chain", "cross-entropy-fused", "mlp-train"],
    }
    missing = [(ex, kind, detail) for (kind, detail), exs in can_occur.items() for ex in exs
               if (ex, kind, detail) not in planted]
    assert not missing


# rounding: right, but not bit-exact in float32
ROUNDING = [
    ("backprop-chain", "dcounts_sum", "dcounts_sum = -dcounts_sum_inv / counts_sum**2"),
    ("backprop-chain", "dhpreact", "dhpreact = dh - h**2 * dh"),
    ("batchnorm-chain", "dbnvar", "dbnvar = -0.5 * dbnvar_inv / (bnvar + 1e-5) ** 1.5"),
    ("linear-tanh", "dhpre", "dhpre = dh - h**2 * dh"),
]


@pytest.mark.parametrize(("name", "var", "code"), ROUNDING)
def test_float32_rounding_is_told_apart_from_a_bug(tmp_path: Path, name: str, var: str, code: str) -> None:
    result, text = run_check(tmp_path, name, {var: code})
    assert result.passed, text
    row = next(r for r in result.rows if r.name == var)
    assert row.status == "approximate" and row.comparison is not None and not row.comparison.exact, text
    d = result.diagnosis
    assert d is not None and (d.name, d.kind, d.detail) == (var, "rounding", "float32"), text
    assert re.search(r"\d ULP of its largest entry", d.message), text
    # what would make it bit-exact: the reference's own line, whose operations and order give the same bits,
    # or the op whose order to follow
    if EXERCISES[name].reference is None:
        assert EXERCISES[name].solutions[var] in d.message.replace("; ", "\n"), text
    else:
        assert "tanh_backward (tinyops/ops/tanh.py)" in d.message, text
    fixed, _ = run_check(tmp_path, name)
    assert next(r for r in fixed.rows if r.name == var).status == "exact"


def test_the_readme_example_is_what_check_prints(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"With `dC\[Xb\] \+= demb` as the last step of `backprop-chain`, for instance:\n\n```\n(.*?)```",
                  readme, re.S)
    assert m is not None, "README's exercise example is gone"
    _, text = run_check(tmp_path, "backprop-chain", {"dC": "dC = np.zeros_like(C)\ndC[Xb] += demb"})
    flat = " ".join(re.sub(r" \(in [^)]*derivations\.md\)", "", text).split())
    for paragraph in m[1].split("\n\n"):
        assert " ".join(paragraph.split()) in flat, paragraph


def test_a_float32_array_in_a_float64_run_is_diagnosed_as_rounding(tmp_path: Path) -> None:
    result, _ = run_check(tmp_path, "backprop-chain", {"dW2": "dW2 = (h.T @ dlogits).astype(np.float32)"})
    assert not result.passed
    assert result.diagnosis is not None and (result.diagnosis.kind, result.diagnosis.detail) == ("rounding", "dtype")


def test_a_size_written_as_a_number_fails_on_the_random_case(tmp_path: Path) -> None:
    bad = "dlogprobs = np.zeros_like(logprobs)\ndlogprobs[np.arange(32), Yb] = -1.0 / 32"
    result, text = run_check(tmp_path, "backprop-chain", {"dlogprobs": bad})
    assert not result.passed
    assert "random case" in text, text


def test_a_backward_that_writes_into_its_input_is_told(tmp_path: Path) -> None:
    aliased = "dhpre = dh\ndhpre *= 1.0 - h**2"  # right values, but dh is the caller's array
    result, text = run_check(tmp_path, "linear-tanh", {"dhpre": aliased})
    assert "wrote into the forward's dh" in text, text
    assert result.passed  # each call got its own copy, so the gradients themselves are right


# ============================================================================ blanks, errors, links


@pytest.mark.parametrize("name", list(EXERCISES))
def test_a_blank_exercise_fails_with_a_clear_message(tmp_path: Path, name: str) -> None:
    result, text = run_check(tmp_path, name, solved=False)
    first = f"d{EXERCISES[name].steps[0].name}"
    assert not result.passed
    assert result.diagnosis is not None and result.diagnosis.kind == "blank" and result.diagnosis.name == first
    assert f'{first} = TODO("{first}")' in text and "docs/derivations.md#" in text
    assert "Traceback" not in text
    assert all(r.status == "blank" for r in result.rows)


def test_a_partly_filled_exercise_checks_what_is_there(tmp_path: Path) -> None:
    exercise = EXERCISES["backprop-chain"]
    text = render(exercise)
    for var in ("dlogprobs", "dprobs"):
        text = text.replace(f'{var} = TODO("{var}")', exercise.solutions[var].replace("\n", "\n    "))
    path = tmp_path / "partial.py"
    path.write_text(text)
    out = io.StringIO()
    result = check(path, seed=SEED, out=out, record=False)
    assert [r.status for r in result.rows[:3]] == ["exact", "exact", "blank"]
    assert result.diagnosis is not None and result.diagnosis.name == "dcounts_sum_inv"


def test_an_error_in_the_learners_code_is_reported_without_a_traceback(tmp_path: Path) -> None:
    result, text = run_check(tmp_path, "backprop-chain", {"dprobs": "dprobs = dlogprobs @ probs"})
    assert not result.passed
    assert "backward() raised an error" in text and "ValueError" in text and "dlogprobs @ probs" in text
    assert "Traceback" not in text


def test_a_backward_without_its_return_is_told(tmp_path: Path) -> None:
    path = tmp_path / "no_return.py"
    path.write_text(render(EXERCISES["embedding"], solved=True).replace("    return locals()\n", "", 2))
    out = io.StringIO()
    result = check(path, seed=SEED, out=out, record=False)
    assert not result.passed and "return locals()" in out.getvalue()


def test_every_diagnosis_links_to_an_existing_heading() -> None:
    md = (ROOT / "docs" / "derivations.md").read_text(encoding="utf-8")
    anchors = {slug(m[1]) for m in re.finditer(r"^#+ (.+)$", md, re.M)}
    for exercise in EXERCISES.values():
        for step in exercise.steps:
            assert slug(step.section) in anchors, (exercise.name, step.name, step.section)


def test_the_exercise_file_is_self_contained_and_shows_shapes() -> None:
    for exercise in EXERCISES.values():
        text = render(exercise)
        blanks = BLANK.findall(text)
        assert [b[1] for b in blanks] == [f"d{s.name}" for s in exercise.steps]
        assert all(re.search(r"# \(", b[2]) for b in blanks), exercise.name  # every blank has its shape
        assert "import torch" not in text and "tinyops" not in text.split('if __name__ == "__main__":')[0].split(
            '"""', 2)[2]
        compile(text, exercise.filename, "exec")


# ============================================================================ exercise 4: training


def test_mlp_model_solution_trains_to_the_mark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYOPS_NAMES", raising=False)
    result, text = run_check(tmp_path, "mlp-train")
    assert result.passed, text
    from tinyops.exercises._train import TARGETS

    assert result.train_loss is not None and result.train_loss <= TARGETS["synthetic"][0]
    assert "reached the mark" in text
    assert result.seconds < 20.0


def test_the_packs_run_without_torch_or_numba(tmp_path: Path) -> None:
    """A check imports only the runtime dependencies, and of tinyops only the NumPy reference layer."""
    script = (
        "import io, sys\n"
        "from pathlib import Path\n"
        "from tinyops.exercises import EXERCISES, check, render\n"
        f"folder = Path({str(tmp_path)!r})\n"
        "for name, ex in EXERCISES.items():\n"
        "    if not ex.train:\n"
        "        p = folder / ex.filename\n"
        "        p.write_text(render(ex, solved=True))\n"
        "        assert check(p, seed=1, out=io.StringIO(), record=False).passed, name\n"
        "print(sorted(m for m in ('torch', 'numba', 'scipy', 'mpmath') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TINYOPS_STATE_DIR": str(tmp_path / "state")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_synthetic_names_are_fixed_and_varied() -> None:
    from tinyops.exercises._train import synthetic_names

    a, b = synthetic_names(), synthetic_names()
    assert a == b and len(set(a)) > 1000 and all(w and w.isalpha() and w.islower() for w in a)


# ============================================================================ the command line and progress


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str], state_dir: Path) -> None:
    work = tmp_path / "work"
    assert cli.main(["exercise", "start", "linear-tanh", str(work)]) == 0
    path = work / "linear_tanh.py"
    assert path.is_file() and str(path) in capsys.readouterr().out
    assert cli.main(["exercise", "start", "linear-tanh", str(work)]) == 2  # never overwritten
    assert "exists already" in capsys.readouterr().err
    assert cli.main(["exercise", "list"]) == 0
    assert re.search(r"^linear-tanh\s+started", capsys.readouterr().out, re.M)

    assert cli.main(["exercise", "check", str(path), "--seed", "3"]) == 1
    out = capsys.readouterr().out
    assert "dhpre is still a blank" in out and "Traceback" not in out
    progress = json.loads((state_dir / "progress.json").read_text())
    assert progress["exercises"]["linear-tanh"]["passed"] is False

    # fill in the blanks, in the learner's file
    solutions = EXERCISES["linear-tanh"].solutions
    text = BLANK.sub(lambda m: m["indent"] + solutions[m["var"]] + m["comment"], path.read_text())
    path.write_text(text)
    assert cli.main(["exercise", "check", str(path), "--seed", "3"]) == 0
    assert "linear-tanh: PASSED" in capsys.readouterr().out
    assert cli.main(["exercise", "list"]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"^linear-tanh\s+passed", listed, re.M) and "1 of 8 passed" in listed
    assert [s.status for s in list_exercises() if s.name == "linear-tanh"] == ["passed"]
    assert not list(state_dir.glob(".progress-*"))  # the atomic write left no temporary file


def test_check_refuses_a_file_that_is_not_an_exercise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.py"
    other.write_text("x = 1\n")
    assert cli.main(["exercise", "check", str(other)]) == 2
    assert "not an exercise file" in capsys.readouterr().err
    broken = tmp_path / "broken.py"
    broken.write_text(render(EXERCISES["embedding"]).replace("def backward(", "def backward(("))
    assert cli.main(["exercise", "check", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "line" in err and "Traceback" not in err
    assert cli.main(["exercise", "start", "no-such-exercise", str(tmp_path)]) == 2
    assert "the exercises are" in capsys.readouterr().err


def test_start_refuses_to_overwrite(tmp_path: Path) -> None:
    path = start("embedding", tmp_path)
    path.write_text("my work")
    with pytest.raises(FileExistsError):
        start("embedding", tmp_path)
    assert path.read_text() == "my work"


def test_a_corrupt_progress_file_reads_as_no_progress(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    (state_dir / "progress.json").write_text("{not json")
    assert all(s.status == "new" for s in list_exercises())
