"""Write an exercise file, and check one: run the learner's backward, print the ``cmp`` table, diagnose.

The check runs the learner's ``backward`` on the forward's intermediates of two cases, a fixed one (the
lecture's sizes and a fixed seed) and a random one (other sizes, a fresh seed, printed), each in float64
(the verdict: right up to float64 rounding, or wrong) and the fixed one in float32 too (the lecture's
table: exact / approximate / maxdiff against the float32 reference). The reference is tinyops' ops where
an op computes the gradient, and the exercise's model solution for the intermediates no op returns.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import re
import sys
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .._checks import Array
from ..gradcheck import Comparison, compare
from . import _diagnose as D
from ._packs import EXERCISES, Exercise, Namespace

FIXED_SEED = 2147483647  # the lecture's generator seed

# ============================================================================ the exercise file

_HEADER = '''"""{title}

{intro}

Shapes: {legend}.

Fill in every blank, a line `dX = TODO("dX")`, with the gradient of the loss with respect to X (the same
shape as X). After each one, run

    tinyops exercise check {filename}

(or `python {filename}`): it compares every gradient filled in so far with tinyops' and, at the first
wrong one, says what kind of mistake it looks like and which section of docs/derivations.md derives the
step. Edit only the blanks (add lines if you like): the check runs its own copy of forward().
"""

import numpy as np

EXERCISE = "{name}"


class Blank(NotImplementedError):
    """A gradient that is not filled in yet."""


def TODO(name):
    raise Blank(name)


'''

_FOOTER = '''

if __name__ == "__main__":
    from tinyops.exercises import main

    raise SystemExit(main(["check", __file__]))
'''

BLANK = re.compile(r'^(?P<indent>[ \t]*)(?P<var>d\w+) = TODO\("(?P=var)"\)(?P<comment>.*)$', re.M)


def render(exercise: Exercise, *, solved: bool = False, fill: dict[str, str] | None = None) -> str:
    """The text of an exercise file: blanks as they are, or filled with the model solution (``solved``),
    or with the given lines for some blanks (``fill``: gradient variable -> lines)."""
    lines = dict(exercise.solutions) if solved else {}
    lines.update(fill or {})

    def replace(m: re.Match[str]) -> str:
        code = lines.get(m["var"])
        if code is None:
            return m[0]
        first, *rest = code.split("\n")
        return "\n".join([m["indent"] + first + m["comment"], *(m["indent"] + r for r in rest)])

    header = _HEADER.format(title=exercise.title, intro=exercise.intro, legend=exercise.legend,
                            filename=exercise.filename, name=exercise.name)
    return header + BLANK.sub(replace, exercise.body.strip("\n")) + "\n" + _FOOTER


def _module_from_source(source: str, filename: str) -> types.ModuleType:
    module = types.ModuleType(Path(filename).stem)
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


_SOLUTIONS: dict[str, types.ModuleType] = {}


def solution_module(exercise: Exercise) -> types.ModuleType:
    """The exercise file with the model solution, as a module (its forward is the one every check runs)."""
    if exercise.name not in _SOLUTIONS:
        _SOLUTIONS[exercise.name] = _module_from_source(render(exercise, solved=True),
                                                        f"<model solution of {exercise.name}>")
    return _SOLUTIONS[exercise.name]


# ============================================================================ running a backward


class CheckError(Exception):
    """The learner's file cannot be checked (a syntax error, no backward, not an exercise): the message says why."""


@dataclass
class Run:
    """One call of a backward: the gradients it made (until a blank or an error), and why it stopped."""

    grads: dict[str, Array]
    blank: str | None = None  # the first blank reached
    error: str | None = None  # an exception of the learner's code, described
    blank_line: int | None = None
    mutated: list[str] = field(default_factory=list)  # inputs the backward wrote into


def _cast(ns: Namespace, dtype: type[np.floating[Any]]) -> Namespace:
    return {k: v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v for k, v in ns.items()}


def _describe_error(exc: BaseException, filename: str) -> tuple[str, int | None]:
    """The learner's line that raised, the error, and the shapes of the arrays named on that line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    where = frames[-1] if frames else None
    if where is None:
        return f"{type(exc).__name__}: {exc}", None
    local: dict[str, Any] = {}
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename and tb.tb_lineno == where.lineno:
            local = tb.tb_frame.f_locals
        tb = tb.tb_next
    code = (where.line or "").split("#")[0]
    names = dict.fromkeys(re.findall(r"[A-Za-z_]\w*", code))
    shapes = [f"{k} {np.shape(local[k])}" for k in names if isinstance(local.get(k), np.ndarray)]
    arrays = f"\n  the arrays on that line: {', '.join(shapes)}" if shapes else ""
    return f"line {where.lineno}: {where.line}\n{type(exc).__name__}: {exc}{arrays}", where.lineno


def run_backward(backward: Callable[..., Any], ns: Namespace, filename: str) -> Run:
    """Call ``backward`` with the arguments it names, taken from ``ns`` (copies: the caller's arrays stay as they
    are), and collect every ``d<name>`` it made, also when it stops at a blank or an error."""
    params = inspect.signature(backward).parameters
    missing = [k for k, p in params.items() if k not in ns and p.default is p.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if missing:
        raise CheckError(f"backward() asks for {', '.join(missing)}, which the forward does not make; "
                         f"its arguments can be any of: {', '.join(sorted(ns))}")
    args = {k: (ns[k].copy() if isinstance(ns[k], np.ndarray) else ns[k]) for k in params if k in ns}
    local: dict[str, Any] = {}
    run = Run({})
    try:
        out = backward(**args)
        local = out if isinstance(out, dict) else {}
        if not isinstance(out, dict):
            run.error = (f"backward() returned {type(out).__name__}, not its local variables: keep its last line, "
                         "`return locals()` (the check reads every d<name> from there)")
    except Exception as exc:
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code is backward.__code__:
                local = dict(tb.tb_frame.f_locals)
            tb = tb.tb_next
        if type(exc).__name__ == "Blank" or isinstance(exc, NotImplementedError):
            run.blank = str(exc.args[0]) if exc.args else "?"
            run.blank_line = _describe_error(exc, filename)[1]
        else:
            run.error = _describe_error(exc, filename)[0]
    run.grads = {k: v for k, v in local.items() if k.startswith("d") and k not in args}
    run.mutated = [k for k in args if isinstance(ns[k], np.ndarray) and not np.array_equal(args[k], ns[k])]
    return run


# ============================================================================ one check


@dataclass
class Row:
    """One gradient of the table."""

    name: str  # "dlogits"
    status: str  # 'exact', 'approximate' (right up to rounding), 'wrong', 'blank', 'missing'
    comparison: Comparison | None  # the float32 run against the float32 reference (the lecture's cmp)
    note: str = ""  # why there is no comparison (a shape that differs)

    def line(self, width: int) -> str:
        verdict = {"exact": "ok, bit-exact", "approximate": "ok, up to rounding", "wrong": "WRONG",
                   "blank": "blank", "missing": "not computed"}[self.status]
        if self.comparison is None:
            note = f"{self.note} | " if self.note else ""
            return f"{self.name:{width}s} | {note}{verdict}"
        return f"{self.comparison.row(width)} | {verdict}"


@dataclass
class CheckResult:
    """What ``check`` found. ``passed``: every gradient right (and, for the training exercise, the loss reached)."""

    exercise: str
    passed: bool
    rows: list[Row]
    diagnosis: D.Diagnosis | None  # the first wrong gradient's, else the first blank's, else a rounding note
    report: str
    seconds: float
    train_loss: float | None = None


def _rows_of(exercise: Exercise, ns: Namespace) -> int:
    if "n" in ns:
        return int(ns["n"])
    first = next(v for v in ns.values() if isinstance(v, np.ndarray))
    return int(first.shape[0])


@dataclass
class _Case:
    label: str
    ns64: Namespace  # inputs and intermediates, float64
    ref64: dict[str, Array]
    run64: Run
    ns32: Namespace | None = None
    ref32: dict[str, Array] | None = None
    run32: Run | None = None


def _reference(exercise: Exercise, ns: Namespace) -> dict[str, Array]:
    if exercise.reference is not None:
        return {f"d{k}": np.asarray(v) for k, v in exercise.reference(ns).items()}
    sol = solution_module(exercise)
    run = run_backward(sol.backward, ns, "<model solution>")
    assert run.blank is None and run.error is None, (run.blank, run.error)
    return run.grads


def _make_case(exercise: Exercise, seed: int, fixed: bool, backward: Callable[..., Any], filename: str,
               label: str, float32: bool) -> _Case:
    forward = solution_module(exercise).forward
    inputs = exercise.make_case(np.random.default_rng(seed), fixed)

    def namespace(dtype: type[np.floating[Any]]) -> Namespace:
        x = _cast(inputs, dtype)
        names = inspect.signature(forward).parameters
        return {**x, **forward(**{k: x[k] for k in names})}

    ns64 = namespace(np.float64)
    case = _Case(label, ns64, _reference(exercise, ns64), run_backward(backward, ns64, filename))
    if float32:
        case.ns32 = namespace(np.float32)
        case.ref32 = _reference(exercise, case.ns32)
        case.run32 = run_backward(backward, case.ns32, filename)
    return case


def _status(g: Any, r: Array) -> tuple[bool, Array | None]:
    """(right in float64, the learner's array or None when it is not an array of r's shape)."""
    try:
        a = np.asarray(g, dtype=np.float64)
    except (TypeError, ValueError):
        return False, None
    if a.shape != r.shape:
        return False, a
    return D.correct64(a, r), a


def _hint(exercise: Exercise, name: str) -> str:
    hint = exercise.hints.get(name)
    return f"\nThe step: {hint}" if hint else ""


def _diagnose_wrong(exercise: Exercise, case: _Case, name: str) -> D.Diagnosis:
    diagnosis = _diagnose_wrong_array(exercise, case, name)
    if diagnosis.kind in ("wrong", "shape", "nonfinite"):  # no named mistake: the step's rule helps most
        return dataclasses.replace(diagnosis, message=diagnosis.message + _hint(exercise, name))
    return diagnosis


def _diagnose_wrong_array(exercise: Exercise, case: _Case, name: str) -> D.Diagnosis:
    step = next(s for s in exercise.steps if f"d{s.name}" == name)
    g, r = case.run64.grads[name], case.ref64[name]
    try:
        a = np.asarray(g, dtype=np.float64)
    except (TypeError, ValueError):
        return D.Diagnosis(name, "shape", "", f"{name} is not an array of numbers (it is a {type(g).__name__}).",
                           D.link(step.section))
    if a.shape != r.shape:
        return D.diagnose_shape(name, a, r, step.section)
    for variant in step.variants:
        made = _variant_value(exercise, name, variant.code, case.ns64)
        if made is not None and D.allclose(a, made):
            return D.Diagnosis(name, variant.kind, variant.detail, variant.message, D.link(step.section))
    masks = {k: v for k, v in exercise.masks(case.ns64).items() if k in step.masks}
    counts = None
    if step.scatter is not None:
        counts = np.bincount(case.ns64[step.scatter].reshape(-1), minlength=r.shape[0])
    factors = {k: v for k, v in case.ns64.items()  # the forward's arrays: candidates for a missing factor
               if isinstance(v, np.ndarray) and v.dtype.kind == "f"}
    return D.diagnose_values(name, a, r, step.section, n=_rows_of(exercise, case.ns64), masks=masks,
                             scatter_counts=counts, factors=factors)


def _variant_value(exercise: Exercise, name: str, code: str, ns: Namespace) -> Array | None:
    """The gradient ``name`` that the model solution makes with ``code`` in that gradient's blank."""
    key = f"{exercise.name}:{name}:{code}"
    if key not in _SOLUTIONS:
        _SOLUTIONS[key] = _module_from_source(render(exercise, solved=True, fill={name: code}), f"<{key}>")
    run = run_backward(_SOLUTIONS[key].backward, ns, "<variant>")
    made = run.grads.get(name)
    return None if made is None else np.asarray(made, dtype=np.float64)


def _how_exact(exercise: Exercise, step_name: str) -> str:
    note = exercise.rounding_note.get(step_name)
    if exercise.reference is None:
        line = exercise.solutions[f"d{step_name}"].replace("\n", "; ")
        how = f"the reference computes `{line}`; the same operations in the same order give the same bits"
        return f"{how} ({note})" if note else how
    return note or "compute it with the same operations, in the same order, as the reference op"


def _check_gradients(exercise: Exercise, backward: Callable[..., Any], filename: str,
                     seed: int) -> tuple[list[Row], D.Diagnosis | None, list[str], list[_Case]]:
    cases = [
        _make_case(exercise, FIXED_SEED, True, backward, filename, "the fixed case", float32=True),
        _make_case(exercise, seed, False, backward, filename, f"the random case (--seed {seed})", float32=False),
    ]
    notes: list[str] = []
    for case in cases:
        if case.run64.error is not None:
            notes.append(f"backward() raised an error on {case.label}, at\n  {case.run64.error}")
            break
    mutated = sorted({m for c in cases for m in c.run64.mutated})
    if mutated:
        notes.append(f"backward() wrote into the forward's {', '.join(mutated)} (an assignment like `dx = x` "
                     "makes dx the same array as x, and `dx[...] -= 1` then changes x): take a copy, x.copy().")
    fixed = cases[0]
    assert fixed.run32 is not None and fixed.ref32 is not None
    rows: list[Row] = []
    diagnosis: D.Diagnosis | None = None
    rounding: D.Diagnosis | None = None
    for step in exercise.steps:
        name = f"d{step.name}"
        if any(name not in c.run64.grads for c in cases):
            blank = any(c.run64.blank is not None for c in cases)
            rows.append(Row(name, "blank" if blank else "missing", None))
            continue
        right = [_status(c.run64.grads[name], c.ref64[name])[0] for c in cases]
        g32 = fixed.run32.grads.get(name)
        comparison = None
        if g32 is not None:
            try:
                comparison = compare(name, g32, fixed.ref32[name])
            except (ValueError, TypeError):
                comparison = None
        if all(right):
            exact = comparison is not None and comparison.exact
            rows.append(Row(name, "exact" if exact else "approximate", comparison))
            if not exact and rounding is None and g32 is not None:
                rounding = D.diagnose_rounding(name, np.asarray(g32), fixed.ref32[name], step.section,
                                               _how_exact(exercise, step.name))
            continue
        note = ""
        if comparison is None and g32 is not None:
            note = f"shape {np.shape(g32)}, expected {fixed.ref32[name].shape}"
        rows.append(Row(name, "wrong", comparison, note))
        if diagnosis is None:
            case = cases[right.index(False)]
            diagnosis = _diagnose_wrong(exercise, case, name)
            if case is not fixed:
                notes.append(f"{name} is right on the fixed case (n = {_rows_of(exercise, fixed.ns64)}) and wrong on "
                             f"{case.label} (n = {_rows_of(exercise, case.ns64)}, other sizes too): a size written "
                             "as a number instead of read from the arrays?")
    if diagnosis is None:
        blank_run = next((c.run64 for c in cases if c.run64.blank is not None), None)
        if blank_run is not None:
            name = blank_run.blank or "?"
            step = next((s for s in exercise.steps if f"d{s.name}" == name), exercise.steps[0])
            line = f" (line {blank_run.blank_line} of {filename})" if blank_run.blank_line else ""
            shape = fixed.ref64[f"d{step.name}"].shape if f"d{step.name}" in fixed.ref64 else "?"
            diagnosis = D.Diagnosis(name, "blank", "", (
                f"{name} is still a blank{line}: replace `{name} = TODO(\"{name}\")` with the gradient of the loss "
                f"with respect to {step.name}, an array of shape {shape} in the fixed case. Find the forward line "
                f"that makes {step.name}, take the local derivative of each of its uses, and multiply it by the "
                f"gradient arriving from above (already computed above the blank).{_hint(exercise, name)}"),
                D.link(step.section))
        else:
            diagnosis = rounding
    return rows, diagnosis, notes, cases


def _load(path: Path) -> types.ModuleType:
    if not path.is_file():
        raise CheckError(f"{path}: no such file. Write one with `tinyops exercise start NAME`.")
    spec = importlib.util.spec_from_file_location(f"tinyops_exercise_{abs(hash(str(path)))}", path)
    if spec is None or spec.loader is None:
        raise CheckError(f"{path}: cannot be imported as a Python module (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise CheckError(f"{path}, line {exc.lineno}: {exc.msg}\n    {(exc.text or '').strip()}") from None
    except Exception as exc:
        raise CheckError(f"{path} raised while being imported:\n  {_describe_error(exc, str(path))[0]}") from None
    name = getattr(module, "EXERCISE", None)
    if name not in EXERCISES:
        raise CheckError(f"{path} is not an exercise file: it should set EXERCISE to one of "
                         f"{', '.join(EXERCISES)} (got {name!r}). Write one with `tinyops exercise start NAME`.")
    if not callable(getattr(module, "backward", None)):
        raise CheckError(f"{path} has no backward() function: the check calls it.")
    return module


def _random_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


def check(
    path: str | os.PathLike[str],
    *,
    seed: int | None = None,
    data: str | None = None,
    out: TextIO | None = None,
    record: bool = True,
) -> CheckResult:
    """Check an exercise file: print the ``cmp`` table and, for the first wrong gradient, a diagnosis.

    Args:
        path: the learner's file (from :func:`start`).
        seed: the random case's seed (default: a fresh one, printed, so that a failure can be rerun).
        data: the training exercise's names file (default: $TINYOPS_NAMES, else a built-in synthetic list).
        out: where the report goes (default: standard output).
        record: save the result in the progress file (see :mod:`tinyops.exercises`).

    Returns:
        A :class:`CheckResult`.

    Raises:
        CheckError: the file cannot be checked (missing, a syntax error, not an exercise file).
    """
    from . import _progress, _train

    started = time.perf_counter()
    stream = out if out is not None else sys.stdout
    file = Path(path).resolve()
    module = _load(file)
    exercise = EXERCISES[module.EXERCISE]
    seed = _random_seed() if seed is None else int(seed)
    lines = [f"{exercise.name}: {exercise.title}", ""]
    rows, diagnosis, notes, cases = _check_gradients(exercise, module.backward, str(file), seed)
    width = max(len(r.name) for r in rows)
    lines.append("gradients against tinyops (the table: float32, the lecture's sizes; the verdict: float64, "
                 f"that case and a random one, seed {seed})")
    shown = rows
    for status, words in (("blank", "blanks"), ("missing", "not computed")):
        tail = [i for i, r in enumerate(rows) if r.status == status]
        if len(tail) > 1 and tail == list(range(tail[0], len(rows))):
            shown = rows[: tail[0] + 1]  # the first; the others are below it
            lines += [r.line(width) for r in shown] + [f"... and {len(rows) - len(shown)} more {words}"]
    if shown is rows:
        lines += [r.line(width) for r in rows]
    wrong_rows = [r.name for r in rows if r.status == "wrong"]
    if len(wrong_rows) > 1:
        first, later = wrong_rows[0], ", ".join(wrong_rows[1:])
        lines.append(f"({later} may be wrong only because {first} is: fix {first} first)")
    lines.append("")
    lines += notes
    wrong = any(r.status in ("wrong", "blank", "missing") for r in rows) or any(
        c.run64.error is not None for c in cases)
    if diagnosis is not None and diagnosis.kind != "rounding":
        lines += ["First wrong gradient:" if diagnosis.kind != "blank" else "Next:", str(diagnosis), ""]
    elif diagnosis is not None:
        lines += ["Every gradient is right. The first that is not bit-exact in float32:", str(diagnosis), ""]
    passed = not wrong
    train_loss = None
    if passed and exercise.train:
        for line in lines:
            print(line, file=stream)
        lines = []
        passed, train_loss = _train.train_to_target(module.backward, solution_module(exercise).forward, data=data,
                                                    out=stream)
    lines.append(f"{exercise.name}: {'PASSED' if passed else 'not yet'}")
    report = "\n".join(lines)
    print(report, file=stream)
    if record:
        _progress.record(exercise.name, file, passed)
    return CheckResult(exercise.name, passed, rows, diagnosis, report, time.perf_counter() - started, train_loss)

