"""Which kind of mistake a wrong gradient looks like, found by testing hypotheses against the learner's array.

Each hypothesis is a transformation that would turn the right gradient into the learner's (or back): a
transpose, a sum over an axis, a constant factor, a change confined to a mask or to the rows a scatter
hits more than once, float32 rounding. The first that fits the array is the diagnosis; the tests plant
each kind of bug in each exercise where it can occur and require this module to name it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._checks import Array

DERIVATIONS = "docs/derivations.md"
_DOCS_FILE = Path(__file__).resolve().parent.parent.parent / DERIVATIONS


def slug(heading: str) -> str:
    """The anchor of a markdown heading, as GitHub makes it: lower case, punctuation other than '-' and '_'
    dropped, spaces to '-'."""
    text = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def link(section: str) -> str:
    """The relative link to a section of docs/derivations.md, e.g. ``docs/derivations.md#batchnorm``."""
    return f"{DERIVATIONS}#{slug(section)}"


@dataclass(frozen=True)
class Diagnosis:
    """What a wrong (or only approximately right) gradient looks like.

    ``kind`` is one of 'transposed', 'sum-axis', 'factor', 'scatter', 'mask', 'rounding', 'shape',
    'nonfinite', 'wrong' (no simple pattern), 'blank', 'error'; ``detail`` refines it ('not-summed',
    'wrong-axis', 'keepdims'; '1/n', 'bessel', 'sign', 'constant'; 'inside', 'outside').
    """

    name: str  # the gradient, e.g. "dlogits"
    kind: str
    detail: str
    message: str
    link: str

    def __str__(self) -> str:
        local = _DOCS_FILE if _DOCS_FILE.is_file() else None  # a source checkout has the file beside the package
        where = f" (in {local})" if local is not None else ""
        return f"{self.message}\nDerivation: {self.link}{where}"


def _amax(a: Array) -> float:
    return float(np.max(np.abs(a), initial=0.0))


def close(ours: Array, ref: Array, rtol: float = 1e-6, scale_tol: float = 1e-8, atol: float = 1e-12) -> Array:
    """Elementwise: equal up to float64 rounding of a few reordered operations (relative to each entry and to
    the array's largest entry, so that a gradient whose true value is 0, as db1's, compares with its noise)."""
    return np.asarray(np.abs(ours - ref) <= rtol * np.abs(ref) + scale_tol * _amax(ref) + atol)


def allclose(ours: Array, ref: Array, **tol: float) -> bool:
    return ours.shape == ref.shape and bool(np.all(close(ours, ref, **tol)))


def correct64(ours: Array, ref: Array) -> bool:
    """The verdict of a float64 run: right up to float64 rounding."""
    return allclose(ours, ref, rtol=1e-10, scale_tol=1e-10, atol=1e-13)


def _float32_close(ours: Array, ref: Array) -> bool:
    """Right up to float32 rounding (of a float64 reference)."""
    return allclose(ours, ref, rtol=3e-5, scale_tol=1e-5, atol=1e-10)


def _named_factor(c: float, n: int) -> tuple[str, str] | None:
    """(detail, words) for a factor that has a name; None for any other constant."""
    def near(x: float, y: float) -> bool:
        return abs(x - y) <= 1e-6 * abs(y)

    sign = "" if c > 0 else "the sign is flipped and "
    a = abs(c)
    if near(c, -1.0):
        return "sign", "the sign is flipped (a missing or extra minus)"
    if n > 1 and near(a, float(n)):
        return "1/n", f"{sign}it is n = {n} times too large (a missing 1/n of the mean)"
    if n > 1 and near(a, 1.0 / n):
        return "1/n", f"{sign}it is n = {n} times too small (1/n applied twice)"
    if n > 2 and near(a, n / (n - 1)):
        return "bessel", (f"{sign}it is n/(n-1) = {n}/{n - 1} times too large: it divides by n - 1 where the "
                          "forward divides by n (the mean), or the other way round")
    if n > 2 and near(a, (n - 1) / n):
        return "bessel", (f"{sign}it is (n-1)/n = {n - 1}/{n} times the right value: it divides by n where the "
                          "forward divides by n - 1 (Bessel's correction of the variance)")
    if near(c, 1.0):
        return None
    return None


def _factor_words(c: float) -> str:
    for name, value in (("2", 2.0), ("1/2", 0.5), ("-2", -2.0), ("-1/2", -0.5), ("3", 3.0), ("1/3", 1 / 3),
                        ("3/2", 1.5), ("2/3", 2 / 3)):
        if abs(c - value) <= 1e-6 * abs(value):
            return name
    return f"{c:.6g}"


def diagnose_shape(name: str, ours: Array, ref: Array, section: str) -> Diagnosis:
    """A gradient of the wrong shape: transposed, a sum over a broadcast axis missing or on the wrong axis,
    keepdims lost; otherwise just the shapes."""
    here = link(section)
    want, got = ref.shape, ours.shape
    if ours.ndim == 2 and got == want[::-1]:
        values = "and its transpose is right" if allclose(ours.T, ref) else "(and the values differ too)"
        return Diagnosis(name, "transposed", "", (
            f"{name} is transposed: shape {got}, expected {want}, {values}. A matrix product's gradient "
            f"keeps the operand's shape: for out = a @ b, da = dout @ b.T and db = a.T @ dout."), here)
    if ours.ndim == ref.ndim:
        extra = [a for a in range(ref.ndim) if want[a] == 1 and got[a] != 1]
        other_equal = all(got[a] == want[a] for a in range(ref.ndim) if a not in extra)
        if extra and other_equal:
            summed = ours.sum(axis=tuple(extra), keepdims=True)
            if allclose(summed, ref):
                return Diagnosis(name, "sum-axis", "not-summed", (
                    f"{name} is not summed over axis {extra[0]}: shape {got}, expected {want}. Summing it over "
                    f"that axis (keepdims=True) gives the right answer. The forward broadcast this (1-sized) "
                    f"axis across the batch, so every copy's gradient adds up into the one value."), here)
        ones_got = {a for a in range(ours.ndim) if got[a] == 1}
        ones_want = {a for a in range(ref.ndim) if want[a] == 1}
        if ones_want and ones_got and ones_got != ones_want:
            return Diagnosis(name, "sum-axis", "wrong-axis", (
                f"{name} is summed over the wrong axis: shape {got}, expected {want}. The forward broadcast "
                f"along axis {min(ones_want)}, so the gradient sums over axis {min(ones_want)} "
                f"(keepdims=True), not axis {min(ones_got)}."), here)
    if ours.ndim > ref.ndim and got[ours.ndim - ref.ndim:] == want:
        lead = tuple(range(ours.ndim - ref.ndim))
        if allclose(ours.sum(axis=lead), ref):
            return Diagnosis(name, "sum-axis", "not-summed", (
                f"{name} is not summed over the batch: shape {got}, expected {want}. Summing it over axis "
                f"{lead[0]} gives the right answer: the forward added the same {want} vector to every row, so "
                f"the rows' gradients add up."), here)
    if ours.size == ref.size:
        if allclose(ours.reshape(want), ref):
            return Diagnosis(name, "sum-axis", "keepdims", (
                f"{name} has the right values but shape {got}, expected {want}: keepdims=True keeps the summed "
                f"axis, so the result broadcasts the way the forward's did."), here)
    return Diagnosis(name, "shape", "", f"{name} has shape {got}, expected {want} (the shape of the forward's "
                                        f"{name[1:]}: a gradient always has its variable's shape).", here)


def diagnose_values(
    name: str,
    ours: Array,
    ref: Array,
    section: str,
    *,
    n: int,
    masks: dict[str, tuple[Array, str]],
    scatter_counts: Array | None = None,
    factors: dict[str, Array] | None = None,
) -> Diagnosis:
    """A gradient of the right shape and wrong values, from a float64 run; ``ref`` is the right float64 one."""
    here = link(section)
    if not np.all(np.isfinite(ours)) and np.all(np.isfinite(ref)):
        where = np.argwhere(~np.isfinite(ours))[0]
        return Diagnosis(name, "nonfinite", "", (
            f"{name} holds inf or nan (first at index {tuple(int(i) for i in where)}) where the right gradient is "
            f"finite: a division by zero, a log of 0, or an overflow."), here)
    if _float32_close(ours, ref):
        worst = float(np.max(np.abs(ours - ref)))
        return Diagnosis(name, "rounding", "dtype", (
            f"{name} is right only up to float32 rounding (maxdiff {worst:.3g}) even though every input was "
            f"float64: somewhere the computation goes through float32 (an explicit dtype=np.float32, or "
            f"np.float32 constants). Let the arrays keep their inputs' dtype (np.zeros_like, no dtype=)."), here)
    bad = ~close(ours, ref)
    if ours.ndim == 2 and ours.shape[0] == ours.shape[1] and allclose(ours.T, ref):
        return Diagnosis(name, "transposed", "", f"{name} is the transpose of the right gradient.", here)
    rr = float(np.sum(ref * ref))
    if rr > 0:
        c = float(np.sum(ours * ref)) / rr
        if c != 0 and allclose(ours, c * ref):
            named = _named_factor(c, n)
            if named is not None:
                detail, words = named
                return Diagnosis(name, "factor", detail, (
                    f"{name} is off by a constant factor of {c:.6g}: {words}. Every entry has this ratio to "
                    f"the right value, so the formula's shape is right and one constant is not."), here)
            return Diagnosis(name, "factor", "constant", (
                f"{name} is off by a constant factor of {_factor_words(c)} (ours / right = {c:.6g} in every "
                f"entry). Look for a constant of the derivative: the power rule's exponent (d x**k = k "
                f"x**(k-1)), a 2 of a square, a 1/2 of a square root, a 1/n or 1/(n-1)."), here)
    if ours.ndim == 2 and min(ours.shape) > 1:
        found = _broadcast_factor(name, ours, ref, factors or {})
        if found is not None:
            return Diagnosis(name, "factor", found[0], found[1], here)
    if scatter_counts is not None and ours.ndim >= 1:
        bad_rows = bad.reshape(bad.shape[0], -1).any(axis=1)
        if bad_rows.any() and np.all(scatter_counts[bad_rows] > 1):
            repeated = int(np.sum(scatter_counts > 1))
            return Diagnosis(name, "scatter", "", (
                f"{name} is wrong only in rows whose index appears more than once ({int(bad_rows.sum())} wrong "
                f"of the {repeated} rows looked up several times; every row looked up once is right): repeated "
                f"indices are dropped. `d[idx] += g` (fancy-index assignment) keeps one gradient per row; "
                f"np.add.at(d, idx, g) adds them all."), here)
    for mask, description in masks.values():
        if mask.shape != ours.shape:
            continue
        if bad.any() and not np.any(bad & ~mask):
            k = int(np.sum(bad))
            return Diagnosis(name, "mask", "inside", (
                f"{name} is wrong only at {description}: {k} of them, and right everywhere else. The term that "
                f"only those entries receive is missing or wrong."), here)
        if bad.any() and not np.any(bad & mask) and np.sum(bad) >= 0.5 * np.sum(~mask):
            return Diagnosis(name, "mask", "outside", (
                f"{name} is right at {description} and wrong everywhere else: the term every entry receives "
                f"(not only the selected ones) is missing or wrong."), here)
    flat = int(np.argmax(np.where(bad, np.abs(ours - ref), -1.0)))
    at = tuple(int(i) for i in np.unravel_index(flat, ours.shape))
    return Diagnosis(name, "wrong", "", (
        f"{name} is wrong in {int(bad.sum())} of {bad.size} entries, with no simple pattern (not a transpose, a "
        f"constant factor, or a mask); the largest error is at {at}: ours {float(ours[at]):.6g}, right "
        f"{float(ref[at]):.6g}. Go back to the forward line of {name[1:]} and apply the chain rule to it alone: "
        f"local derivative times the gradient arriving from above, summed over every use."), here)


def _name_factor(name: str, c: Array, support: Array, factors: dict[str, Array]) -> str | None:
    """Which array of the forward ``c`` (ours / right, on ``support``) is, or is one over."""
    for k, f in factors.items():
        if f.shape != c.shape or np.any(f[support] == 0):
            continue
        if allclose(c[support], f[support]):
            return (f"{name} is the right value times {k}: a division by {k} is missing (or a multiplication by it "
                    f"is extra)")
        if allclose(c[support], 1.0 / f[support]):
            why = ("the chain rule multiplies the local derivative by the gradient arriving from above"
                   if k.startswith("d") else "the local derivative of a product brings the other factor along")
            return f"{name} is the right value divided by {k}: a factor of {k} is missing ({why})"
    return None


def _broadcast_factor(name: str, ours: Array, ref: Array, factors: dict[str, Array]) -> tuple[str, str] | None:
    """(detail, message) when ours / right is a whole array of the forward (an elementwise factor), or one number
    per column or per row (a multiplier broadcast in the forward, such as a (1, H) gain), missing or extra."""
    nonzero = ref != 0
    if np.all(ours[~nonzero] == 0) and nonzero.any():
        c = np.divide(ours, ref, out=np.ones_like(ours), where=nonzero)
        named = _name_factor(name, c, nonzero, factors)
        if named is not None:
            return "elementwise", named + "."
    for axis, along, detail in ((0, "column", "per-column"), (1, "row", "per-row")):
        num, den = (ours * ref).sum(axis, keepdims=True), (ref * ref).sum(axis, keepdims=True)
        c = np.divide(num, den, out=np.ones_like(num), where=den > 0)
        if np.allclose(c, c.flat[0], rtol=1e-6) or not allclose(ours, c * ref):
            continue
        named = _name_factor(name, c, den > 0, factors)
        if named is not None:
            return detail, f"{named}. (A multiplier the forward broadcast along each {along}.)"
        return detail, (f"{name} is off by a factor that is one number per {along} (ours / right is the same all "
                        f"along each {along} and differs between them): a broadcast multiplier of shape {c.shape} "
                        f"is missing, extra, or on the wrong axis.")
    return None


def diagnose_rounding(name: str, ours32: Array, ref32: Array, section: str, how: str) -> Diagnosis:
    """A right gradient whose float32 bits differ from the reference's: the size of the difference in ULPs,
    and what would make it bit-exact (``how``: the order of operations the reference uses)."""
    a, b = ours32.astype(np.float64), ref32.astype(np.float64)
    diff = np.abs(a - b)
    top = _amax(b)
    ulp_top = float(np.spacing(np.float32(top))) if top > 0 else float(np.finfo(np.float32).tiny)
    spacing = np.spacing(np.abs(ref32).astype(np.float32)).astype(np.float64)
    per_entry = float(np.max(diff / spacing, initial=0.0))
    return Diagnosis(name, "rounding", "float32", (
        f"{name} is right, up to float32 rounding: maxdiff {float(np.max(diff, initial=0.0)):.3g}, that is "
        f"{float(np.max(diff, initial=0.0)) / ulp_top:.2g} ULP of its largest entry ({top:.3g}); entry by entry at "
        f"most {per_entry:.3g} ULP ({int(np.sum(diff > 0))} of {diff.size} entries differ). Different operations, "
        f"or the same ones in another order, round differently. For bit-exact agreement: {how}."), link(section))
