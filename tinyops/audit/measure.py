"""What the audit measures: errors per region against the exact reference, their condition numbers, the
worst-case search, the metamorphic checks and the special values.

Quantities, per op (``.grad``: the gradient of ``sum(out * dout)`` for a random ``dout``, entries of
magnitude 0.5 to 2 and random sign):

    logsumexp      lse, lse.grad              softmax        softmax, softmax.grad
    log_softmax    log_softmax, log_softmax.grad   cross_entropy  loss, grad

Error: ``tinyops.testing.exact.ulp_error`` (the distance to the exact value in ULPs of the exact value
rounded to the dtype). Gradients, and every float64 quantity, are scored only where the exact value is a
normal number (or an infinity), as the library's bounds are stated (tinyops.testing.bounds).

Conditioning. For an entry ``f(x)`` the componentwise relative condition number is
``kappa = sum_j |df/dx_j| |x_j| / |f|``: how much a relative change of u in every input moves the result,
relative to it. With ``p = softmax(x)`` and ``S = sum_j p_j |x_j|``:

- logsumexp: ``kappa = S / |lse|`` (Blanchard, Higham & Higham, "Accurately computing the log-sum-exp
  and softmax functions", IMA J. Numer. Anal. 41, 2021);
- softmax entry i: ``kappa_i = |x_i| (1 - p_i) + S - p_i |x_i|``  (``dp_i/dx_j = p_i (delta_ij - p_j)``);
- log_softmax entry i: the same sum over ``|log_softmax_i|``; the loss is ``-log_softmax_t``;
- cross-entropy gradient: ``kappa_j`` of softmax off the target; at the target, ``p_t - 1``,
  ``kappa_t p_t / (1 - p_t)``; the gradient of logsumexp, ``dout * p``: softmax's;
- softmax.grad and log_softmax.grad: not computed (nan).

The report gives the worst ``error / ((kappa + 1) u)`` per region, the error relative to the exact
value over what a backward-stable algorithm can be held to (u = eps / 2 of the dtype; the ``+ 1`` is the
rounding of the result itself): values near 1 (up to the row length) are all the problem allows, large
values are an unstable algorithm on a well-conditioned input.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import mpmath  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt

from ..testing import bounds, exact, regions
from .adapters import Adapter, AuditError
from .report import CheckResult, RegionStats, SearchResult, SpecialResult

__all__ = [
    "QUANTITIES",
    "Case",
    "corpus",
    "exact_gradient",
    "make_case",
    "metamorphic",
    "run_regions",
    "search",
    "special_values",
]

Array = npt.NDArray[Any]
QUANTITIES = {
    "logsumexp": ("lse", "lse.grad"),
    "softmax": ("softmax", "softmax.grad"),
    "log_softmax": ("log_softmax", "log_softmax.grad"),
    "cross_entropy": ("loss", "grad"),
}


def quantities(op: str, grad: bool) -> tuple[str, ...]:
    return QUANTITIES[op] if grad else QUANTITIES[op][:1]


def _out_shape(op: str, x: Array) -> tuple[int, ...]:
    return x.shape[:1] if op in ("logsumexp", "cross_entropy") else x.shape


# ----------------------------------------------------------------------------- calling a target


def _checked(adapter: Adapter, what: str, out: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array:
    try:
        arr = np.asarray(out)
    except Exception as exc:
        raise AuditError(f"{adapter.name} returned {type(out).__name__}, not an array, for its {what}") from exc
    if arr.shape != shape:
        raise AuditError(f"{adapter.name} returned shape {arr.shape} for its {what}, expected shape {shape}")
    if arr.dtype != dtype:
        raise AuditError(f"{adapter.name} returned dtype {arr.dtype} for its {what}, expected {dtype} (the input's)")
    return arr


def call(adapter: Adapter, op: str, x: Array, t: Array, dout: Array | None = None) -> Array:
    """The adapter's forward (``dout`` None) or backward, on copies, its result checked for shape and dtype."""
    args = [x.copy(), t.copy()] if op == "cross_entropy" else [x.copy()]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if dout is None:
            return _checked(adapter, f"{op} of a {x.shape} input", adapter.forward(*args), _out_shape(op, x), x.dtype)
        if adapter.backward is None:
            raise AuditError(
                f"{adapter.name} has no gradient: wrap it as tinyops.audit.Adapter(name, forward, backward)"
            )
        out = adapter.backward(*args, dout.copy())
        return _checked(adapter, f"{op} gradient of a {x.shape} input", out, x.shape, x.dtype)


def probe(adapter: Adapter, op: str, dtype: np.dtype[Any], grad: bool) -> None:
    """Call the target once on a small benign batch: AuditError for a raise or a wrong shape or dtype."""
    x = np.array([[0.5, -1.25, 2.0], [1.0, 0.25, -0.75]], dtype=dtype)
    t = np.array([2, 0], dtype=np.int64)
    for dout in [None, *([np.ones(_out_shape(op, x), dtype=dtype)] if grad else [])]:
        try:
            call(adapter, op, x, t, dout)
        except AuditError:
            raise
        except Exception as exc:
            what = "gradient" if dout is not None else op
            raise AuditError(f"{adapter.name} raised {type(exc).__name__} on a benign 2 x 3 {what}: {exc}") from exc


# ----------------------------------------------------------------------------- the exact side of a batch


@dataclass
class Case:
    """One batch of rows and everything exact about it, per quantity: the split exact values, where they
    are scored, the bound per entry (None: no documented bound), kappa, and the unit roundoff."""

    region: str
    x: Array
    target: Array
    dout: Array | None
    exact: dict[str, exact.Split]
    scored: dict[str, Array]
    bound: dict[str, Array | None]
    kappa: dict[str, Array]
    magnitude: Array  # (N,) |lse| or the loss: the plot's x axis


def _random_dout(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array:
    return np.asarray(rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape), dtype=dtype)


def _mpf_array(a: Array) -> Array:
    out = np.empty(a.shape, dtype=object)
    out.ravel()[:] = [mpmath.mpf(float(v)) for v in a.ravel()]
    return out


def _exact_grad(op: str, ref: exact.Reference, dout: Array) -> Array:
    g = _mpf_array(dout.astype(np.float64))
    with mpmath.workprec(exact.PREC):
        if op == "logsumexp":
            return np.asarray(ref.softmax * g[:, None])
        if op == "softmax":
            y = ref.softmax
            return np.asarray(y * (g - (g * y).sum(axis=-1, keepdims=True)))
        if op == "log_softmax":
            return np.asarray(g - ref.softmax * g.sum(axis=-1, keepdims=True))
        assert ref.grad is not None
        return np.asarray(ref.grad * g[:, None])


def exact_gradient(op: str, x: Array, dout: Array, target: Array | None = None) -> Array:
    """The exact gradient of ``sum(op(x) * dout)`` with respect to x (N, V), an object array of mpf;
    ``target`` (N,) for cross_entropy."""
    if op not in QUANTITIES:
        raise ValueError(f"op must be one of {', '.join(QUANTITIES)}, got {op!r}")
    ref = exact.reference(x, target if op == "cross_entropy" else None)
    return _exact_grad(op, ref, np.asarray(dout))


def _kappas(op: str, x: Array, t: Array, ref: exact.Reference) -> dict[str, Array]:
    with np.errstate(all="ignore"):
        p = ref.softmax.astype(np.float64)  # (N, V)
        ax = np.abs(x.astype(np.float64))
        px = np.where(p > 0, p * ax, 0.0)
        S = px.sum(axis=-1, keepdims=True)  # (N, 1)
        k_sm = np.where(p > 0, ax * (1 - p) + S - px, np.nan)  # softmax, entry by entry
        lsm = ref.log_softmax.astype(np.float64)
        lse = ref.lse.astype(np.float64)
        out = {
            "lse": S[:, 0] / np.abs(lse),
            "lse.grad": k_sm,
            "softmax": k_sm,
            "softmax.grad": np.full(x.shape, np.nan),
            "log_softmax": k_sm / np.abs(lsm),
            "log_softmax.grad": np.full(x.shape, np.nan),
        }
        if op == "cross_entropy":
            assert ref.loss is not None and ref.grad is not None
            rows = np.arange(x.shape[0])
            out["loss"] = (k_sm / np.abs(lsm))[rows, t]
            k_grad = k_sm.copy()
            one_minus_p = -ref.grad.astype(np.float64)[rows, t]
            k_grad[rows, t] = k_sm[rows, t] * p[rows, t] / one_minus_p
            out["grad"] = k_grad
    return out


def make_case(
    region: str,
    x: Array,
    target: Array,
    op: str,
    grad: bool,
    seed: int,
    max_ulp: float | None = None,
    ref: exact.Reference | None = None,
) -> Case:
    """Compute the exact side of one batch (N, V) for ``op``; ``max_ulp`` replaces the documented bounds;
    ``ref``: ``exact.reference(x, target)`` when already computed (one serves every op)."""
    dt = x.dtype
    if ref is None:
        ref = exact.reference(x, target if op == "cross_entropy" else None)
    qs = quantities(op, grad)
    values = {"lse": ref.lse, "softmax": ref.softmax, "log_softmax": ref.log_softmax, "loss": ref.loss}
    dout = _random_dout(np.random.default_rng(seed), _out_shape(op, x), dt) if grad else None
    if grad:
        assert dout is not None
        values[qs[1]] = _exact_grad(op, ref, dout)
    kappa = _kappas(op, x, target, ref)
    ex: dict[str, exact.Split] = {}
    scored: dict[str, Array] = {}
    bnd: dict[str, Array | None] = {}
    for q in qs:
        v = values[q]
        assert v is not None
        ex[q] = exact.split(v, dt)
        hi = np.abs(ex[q].hi)
        normal = np.isnan(hi) | np.isinf(hi) | (hi >= float(np.finfo(dt).tiny))
        scored[q] = normal if (dt == np.float64 or q.endswith("grad")) else np.ones(hi.shape, dtype=bool)
        documented = bounds.ulp_bound(q, dt, x.shape[-1])
        b = max_ulp if max_ulp is not None else documented
        if b is None:
            bnd[q] = None
        else:
            slack = bounds.lse_slack(x, ref.lse, dt) if q == "lse" and max_ulp is None else 0.0
            bnd[q] = np.broadcast_to(b + slack, hi.shape).astype(np.float64)
    with np.errstate(all="ignore"):
        main = ref.loss if op == "cross_entropy" else ref.lse
        assert main is not None
        mag = np.abs(main.astype(np.float64))
    return Case(region, x, target, dout, ex, scored, bnd, {q: kappa[q] for q in qs}, mag)


def errors(adapter: Adapter, op: str, case: Case) -> dict[str, Array]:
    """ULP error of every quantity (nan where not scored); all inf when the target raised."""
    out = {}
    for q in case.exact:
        dout = case.dout if q.endswith("grad") else None
        got = call(adapter, op, case.x, case.target, dout)
        err = exact.ulp_error(got, case.exact[q], case.x.dtype)
        out[q] = np.where(case.scored[q], err, np.nan)
    return out


def _kappa_ratio(err: Array, case: Case, q: str) -> Array:
    dt = case.x.dtype
    with np.errstate(all="ignore"):
        y = np.abs(case.exact[q].hi.astype(dt)).astype(np.float64)
        rel = err * np.spacing(y.astype(dt)).astype(np.float64) / y
        u = float(np.finfo(dt).eps) / 2
        ratio = rel / ((case.kappa[q] + 1) * u)
    return np.where(np.isfinite(y) & (y > 0), ratio, np.nan)


def _stats(region: str, q: str, err: Array, case: Case, raised: str | None) -> RegionStats:
    e = err[~np.isnan(err)]
    b = case.bound[q]
    over = int(np.sum(err > b)) if b is not None else 0
    kr = _kappa_ratio(err, case, q)
    kr = kr[~np.isnan(kr)]

    def pct(k: float) -> float:
        return float(np.percentile(e, k, method="higher")) if e.size else math.nan

    return RegionStats(
        region=region,
        quantity=q,
        count=int(e.size),
        worst=float(e.max()) if e.size else math.nan,
        p99=pct(99),
        median=pct(50),
        worst_kappa_u=float(kr.max()) if kr.size else math.nan,
        bound=None if b is None else float(np.min(b)),
        over_bound=over,
        error=raised,
    )


# ----------------------------------------------------------------------------- the regions


def corpus(
    dtype: npt.DTypeLike,
    rows: int = 16,
    classes: int = 32,
    long_rows: int = 1,
    long_classes: int = 50_257,
    seed: int = 20240229,
    names: tuple[str, ...] = regions.REGIONS,
) -> list[tuple[str, Array, Array]]:
    """(region, logits (N, V), target (N,)) for every region, from a fixed seed: ``rows`` x ``classes``
    each, ``long_row`` ``long_rows`` x ``long_classes`` (half of them confident); no long rows for 0."""
    dt = np.dtype(dtype)
    out = []
    for i, name in enumerate(regions.REGIONS):
        if name not in names:
            continue
        rng = np.random.default_rng([seed, i, dt.itemsize])
        if name == "long_row":
            if long_rows:
                out.append((name, *regions.long_row(rng, dt, long_rows, long_classes, confident_fraction=0.5)))
        else:
            out.append((name, *regions.BUILDERS[name](rng, dt, rows, classes)))
    return out


def run_regions(
    adapters: list[Adapter],
    op: str,
    cases: list[Case],
) -> dict[str, tuple[list[RegionStats], dict[str, list[float]]]]:
    """Every adapter on every case: per adapter, the stats per region and quantity, and the plot's points
    (each row's magnitude and its worst forward error). The exact side is computed once for all."""
    out: dict[str, tuple[list[RegionStats], dict[str, list[float]]]] = {}
    for adapter in adapters:
        stats: list[RegionStats] = []
        points: dict[str, list[float]] = {"magnitude": [], "error": []}
        for case in cases:
            raised = None
            try:
                errs = errors(adapter, op, case)
            except AuditError:
                raise
            except Exception as exc:  # a target that raises on a hard region scores inf there
                raised = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:80]
                errs = {q: np.where(case.scored[q], np.inf, np.nan) for q in case.exact}
            for q, err in errs.items():
                stats.append(_stats(case.region, q, err, case, raised))
            fwd = errs[next(iter(case.exact))]
            row_err = fwd if fwd.ndim == 1 else np.where(np.isnan(fwd), -1.0, fwd).max(axis=-1, initial=-1.0)
            points["magnitude"] += case.magnitude.tolist()
            points["error"] += np.where(row_err < 0, np.nan, row_err).tolist()
        out[adapter.name] = (stats, points)
    return out


# ----------------------------------------------------------------------------- the worst-case search


def _literal(a: Array) -> str:
    """A NumPy literal that reproduces ``a`` bit for bit."""
    if a.dtype.kind == "f":
        def num(v: Any) -> str:
            f = float(v)
            if math.isnan(f):
                return "np.nan"
            if math.isinf(f):
                return "np.inf" if f > 0 else "-np.inf"
            return str(v)  # the shortest string that rounds back to the same float of a's dtype

        def nested(b: Array) -> str:
            if b.ndim == 1:
                return "[" + ", ".join(num(v) for v in b) + "]"
            return "[" + ", ".join(nested(r) for r in b) + "]"

        body = nested(a)
        return f"np.array({body}, dtype=np.{a.dtype.name})"
    return f"np.array({a.tolist()!r})"


def reproduction(target: str, op: str, case: Case, q: str, err: float) -> str:
    """Copy-pasteable Python: the input, the call, the error against the exact reference."""
    x, t = case.x, case.target
    lines = ["import numpy as np", "from tinyops.audit import load_target", "from tinyops.testing import exact", ""]
    lines.append(f"x = {_literal(x)}")
    args = "x, target" if op == "cross_entropy" else "x"
    if op == "cross_entropy":
        lines.append(f"target = {_literal(t)}")
    lines.append(f'f = load_target("{target}", "{op}")')
    fwd_exact = {
        "lse": "exact.logsumexp(x)",
        "softmax": "exact.softmax(x)",
        "log_softmax": "exact.log_softmax(x)",
        "loss": "exact.cross_entropy(x, target)",
    }
    if q.endswith("grad"):
        assert case.dout is not None
        lines.append(f"dout = {_literal(case.dout)}")
        lines.append(f"got = f.backward({args}, dout)  # the gradient of sum(out * dout)")
        lines.insert(2, "from tinyops.audit.measure import exact_gradient")
        lines.append(f'ref = exact_gradient("{op}", {args}, dout)' if op != "cross_entropy"
                     else 'ref = exact_gradient("cross_entropy", x, dout, target)')
    else:
        lines.append(f"got = f.forward({args})")
        lines.append(f"ref = {fwd_exact[q]}")
    lines.append(f"print(exact.ulp_error(got, ref, x.dtype).max())  # {err:.3g} ULP")
    return "\n".join(lines)


def _score(errs: dict[str, Array], case: Case) -> tuple[float, str | None, float]:
    """(score, quantity, its worst error): the largest error over its bound among the bounded quantities
    (the largest error itself when none is bounded); nan entries are not scored."""
    best: tuple[float, str | None, float] = (-1.0, None, 0.0)
    bounded = any(case.bound[q] is not None for q in errs)
    for q, err in errs.items():
        e = np.where(np.isnan(err), 0.0, err)
        if not e.size:
            continue
        b = case.bound[q]
        if b is None and bounded:
            continue
        with np.errstate(all="ignore"):
            ratio = e / b if b is not None else e
        k = int(np.argmax(ratio))
        if float(ratio.ravel()[k]) > best[0]:
            best = (float(ratio.ravel()[k]), q, float(e.ravel()[k]))
    return best


def search(
    adapter: Adapter,
    target_name: str,
    op: str,
    dtype: npt.DTypeLike,
    grad: bool,
    *,
    max_examples: int = 200,
    max_ulp: float | None = None,
    rows: tuple[int, int] = (1, 4),
    classes: tuple[int, int] = (2, 16),
) -> SearchResult:
    """The worst-case search, in two hypothesis runs over every region but long_row (N and V drawn in
    ``rows`` and ``classes``), both derandomized (the same inputs on every run):

    1. explore: ``max_examples`` inputs, ``target()`` steering toward the largest error over its bound;
       nothing fails, the worst input is remembered;
    2. shrink, when that worst is above its bound: the same inputs again, now failing on an error of at
       least a tenth of the worst (and above the bound) in the same quantity, so that hypothesis shrinks
       the first such input to the smallest shape and simplest values that keep an error of that size.
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from hypothesis import target as hyp_target

    from ..testing import strategies as ts

    dt = np.dtype(dtype)
    names = [r for r in regions.REGIONS if r != "long_row"]
    n, v = st.integers(*rows), st.integers(*classes)
    cases = st.one_of(*(ts.region(r, dtype=dt, n=n, v=v) for r in names))
    state: dict[str, Any] = {"count": 0, "found_after": None, "worst": (-1.0, None, 0.0, None), "last": None}

    def evaluate(case: tuple[Array, Array], seed: int) -> tuple[Case, dict[str, Array]]:
        state["count"] += 1
        c = make_case("search", case[0], case[1], op, grad, seed, max_ulp)
        try:
            return c, errors(adapter, op, c)
        except AuditError:
            raise
        except Exception:  # a raise scores inf everywhere
            return c, {q: np.where(c.scored[q], np.inf, np.nan) for q in c.exact}

    def run(body: Any, examples: int, phases: list[Phase]) -> None:
        configured = settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=phases,
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
        )(given(case=cases, seed=st.integers(0, 2**16))(body))
        try:
            configured()
        except AuditError:
            raise
        except AssertionError:
            pass

    def explore(case: tuple[Array, Array], seed: int) -> None:
        c, errs = evaluate(case, seed)
        score, q, err = _score(errs, c)
        hyp_target(min(math.log2(1 + max(score, 0.0)), 2000.0), label="log2(1 + error / bound)")
        if score > 1 and c.bound.get(q or "") is not None and state["found_after"] is None:
            state["found_after"] = state["count"]
        if score > state["worst"][0]:
            state["worst"] = (score, q, err, c)

    t0 = time.perf_counter()
    run(explore, max_examples, [Phase.generate, Phase.target])
    explored = state["count"]
    score, q, err, c = state["worst"]
    b = None if c is None or q is None or c.bound[q] is None else float(np.min(c.bound[q]))
    found = b is not None and score > 1
    if found and q is not None:
        threshold = max(b or 0.0, err / 10)

        def shrink(case: tuple[Array, Array], seed: int) -> None:
            c2, errs = evaluate(case, seed)
            e = np.where(np.isnan(errs[q]), 0.0, errs[q])
            bound_q = c2.bound[q]
            if e.size and float(e.max()) >= threshold and bound_q is not None and (e > bound_q).any():
                state["last"] = (c2, float(e.max()))
                raise AssertionError(f"{q}: {float(e.max()):.3g} ULP")

        run(shrink, max_examples, [Phase.generate, Phase.target, Phase.shrink])
        if state["last"] is not None:
            c, err = state["last"]
    repro = reproduction(target_name, op, c, q, err) if c is not None and q is not None else ""
    return SearchResult(
        examples=state["count"],
        found=found,
        found_after=state["found_after"],
        quantity=q,
        ulp=err,
        bound=b,
        shape=None if c is None else c.x.shape,
        reproduction=repro,
        seconds=time.perf_counter() - t0,
        explored=explored,
        worst_ulp=state["worst"][2],
    )


# ----------------------------------------------------------------------------- metamorphic checks


def _grid_batch(dtype: np.dtype[Any], seed: int) -> tuple[Array, Array]:
    """(8, 12) logits on a grid of 2^-8 (benign rows and confident ones, up to ~150), so that adding 32 is
    exact in float32 and float64; target (8,)."""
    rng = np.random.default_rng(seed)
    x, t = regions.benign(rng, np.float64, 8, 12)
    x[4:, :] = regions.confident(rng, np.float64, 4, 12)[0]
    t[4:] = x[4:].argmax(axis=1)
    return (np.round(x * 256) / 256).astype(dtype), t


def _diff(a: Array, b: Array, dtype: np.dtype[Any]) -> float:
    with np.errstate(all="ignore"):
        e = exact.ulp_error(a, b.astype(np.float64), dtype)
    return float(np.max(e, initial=0.0))


def metamorphic(adapter: Adapter, op: str, dtype: npt.DTypeLike, seed: int = 0) -> list[CheckResult]:
    """Checks that need no oracle, on a batch of benign and confident rows (forward only)."""
    dt = np.dtype(dtype)
    x, t = _grid_batch(dt, seed)
    q = QUANTITIES[op][0]
    b = bounds.ulp_bound(q, dt, x.shape[1]) or 4.0
    base = call(adapter, op, x, t)
    res = []
    # shift invariance: x + 32 (exact on the grid); logsumexp moves by 32, the rest does not move
    shifted = call(adapter, op, x + dt.type(32), t)
    expect = base.astype(np.float64) + 32 if op == "logsumexp" else base
    res.append(CheckResult("shift invariance", _diff(shifted, expect, dt), 2 * b, False,
                           "f(x + 32) against f(x) (+ 32 for logsumexp)"))
    # permutation equivariance: permute the classes (and move the target with them)
    perm = np.random.default_rng(seed + 1).permutation(x.shape[1])
    inv = np.argsort(perm)
    permuted = call(adapter, op, np.ascontiguousarray(x[:, perm]), inv[t].astype(np.int64))
    expect = base[:, perm] if base.ndim == 2 else base
    res.append(CheckResult("permutation equivariance", _diff(permuted, expect, dt), 2 * b, False,
                           "f(x[:, perm]) against f(x)[:, perm]"))
    # batch of one: each row alone gives the same bits as in the batch
    ones = np.concatenate([call(adapter, op, x[i : i + 1], t[i : i + 1]) for i in range(x.shape[0])])
    res.append(CheckResult("batch of one", _diff(ones, base, dt), 0.0, False, "f(x[i:i+1]) against f(x)[i], same bits"))
    # chunk invariance: two chunks of unequal size
    k = 3
    chunks = np.concatenate([call(adapter, op, x[:k], t[:k]), call(adapter, op, x[k:], t[k:])])
    res.append(CheckResult("chunk invariance", _diff(chunks, base, dt), 0.0, False,
                           "concat(f(x[:3]), f(x[3:])) against f(x), same bits"))
    # dtype consistency: float32 result against the target's own float64 result on the same values
    if dt == np.float32:
        wide = call(adapter, op, x.astype(np.float64), t)
        res.append(CheckResult("dtype consistency", _diff(base, wide, dt), b + 0.5, False,
                               "f(x) in float32 against f(x in float64), in float32 ULPs"))
    for r in res:
        r.passed = bool(r.max_ulp <= r.tolerance)
    return res


# ----------------------------------------------------------------------------- special values

INF, NAN = math.inf, math.nan
SPECIAL_CASES: list[tuple[str, list[float] | None, int]] = [
    ("+0 and -0", [0.0, -0.0], 0),
    ("+inf entry", [1.0, INF], 0),
    ("-inf entry (a mask)", [1.0, -INF], 0),
    ("nan entry", [1.0, NAN], 0),
    ("all -inf", [-INF, -INF], 0),
    ("single class", [3.0], 0),
    ("empty row (C = 0)", None, 0),
    ("target at -inf", [1.0, -INF], 1),
]
"""(name, the row (None: no classes), the target): a 1 x C batch each. 'empty row' is not a cross-entropy
input (no class to target); 'target at -inf' is only one."""


def expected_torch(op: str, row: Array, target: int) -> tuple[Array, Array]:
    """(forward, gradient of sum(out) with dout = 1) under torch's semantics, for one row (C,):
    a nan entry makes everything nan; a +inf entry makes logsumexp +inf and everything else nan; an
    empty or all -inf row has logsumexp -inf and nan elsewhere; otherwise -inf entries are masked classes
    (probability 0, log-probability -inf) and a target at -inf has loss +inf. The gradient of logsumexp
    is ``exp(x - lse)`` entry by entry (0 on the finite entries of a row with +inf)."""
    C = row.size
    with np.errstate(all="ignore"):
        if np.isnan(row).any() or np.isposinf(row).any() or C == 0 or not np.isfinite(row).any():
            lse = NAN if np.isnan(row).any() else (INF if np.isposinf(row).any() else -INF)
            p = lsm = np.full(C, NAN)
        else:
            m = row.max()
            lse = m + math.log(np.exp(row - m).sum())
            p, lsm = np.exp(row - lse), row - lse
        onehot = np.arange(C) == target
        fwd = {
            "logsumexp": np.array([lse]),
            "softmax": p,
            "log_softmax": lsm,
            "cross_entropy": np.array([NAN if np.isnan(p).any() else lse - row[target]]) if C else np.array([NAN]),
        }[op]
        grad = {
            "logsumexp": np.exp(row - lse),  # torch's exp(x - lse): [0, nan] for a row (1, inf)
            "softmax": np.where(np.isnan(p), NAN, 0.0),
            "log_softmax": 1 - C * p,
            "cross_entropy": p - onehot,
        }[op]
    return fwd, grad


def expected_scipy(op: str, row: Array) -> Array | None:
    """SciPy's forward where it differs from torch's: log_softmax of a row with +inf (and no nan) is -inf
    on the other entries, nan on the +inf ones."""
    if op == "log_softmax" and np.isposinf(row).any() and not np.isnan(row).any():
        return np.where(np.isposinf(row), NAN, -INF)
    return None


def _agrees(got: Array, want: Array, dtype: np.dtype[Any]) -> bool:
    g = np.asarray(got, dtype=np.float64).ravel()
    w = np.asarray(want, dtype=np.float64).ravel()
    if g.shape != w.shape or not np.array_equal(np.isnan(g), np.isnan(w)):
        return False
    ok = np.isnan(w) | (g == w)
    with np.errstate(all="ignore"):
        close = np.abs(g - w) <= 4 * np.spacing(np.abs(w).astype(dtype)).astype(np.float64)
    return bool(np.all(ok | (np.isfinite(w) & close)))


def _show(a: Array) -> str:
    return np.array2string(np.asarray(a, dtype=np.float64).ravel(), precision=4, separator=", ")


def special_values(adapter: Adapter, op: str, dtype: npt.DTypeLike, grad: bool) -> list[SpecialResult]:
    """Every special-value case for ``op``: the expected result (and SciPy's where it differs) and the target's."""
    dt = np.dtype(dtype)
    out = []
    for name, row, target in SPECIAL_CASES:
        if (op == "cross_entropy" and row is None) or (op != "cross_entropy" and name == "target at -inf"):
            continue
        r = np.zeros(0) if row is None else np.array(row)
        x = r.astype(dt)[None, :]
        t = np.array([target], dtype=np.int64)
        fwd, dx = expected_torch(op, r, target)
        scipy_fwd = expected_scipy(op, r)
        label = _show(r) + (f", target {target}" if op == "cross_entropy" else "")
        for q, want, dout in [(QUANTITIES[op][0], fwd, None), *([(QUANTITIES[op][1], dx, 1)] if grad else [])]:
            alt = scipy_fwd if dout is None else None
            try:
                got = call(adapter, op, x, t, None if dout is None else np.ones(_out_shape(op, x), dtype=dt))
            except AuditError:
                raise
            except Exception as exc:
                out.append(SpecialResult(name, q, label, _show(want), None if alt is None else _show(alt), "-",
                                         f"raised {type(exc).__name__}"))
                continue
            verdict = (
                "as torch" if _agrees(got, want, dt) else "as scipy" if alt is not None and _agrees(got, alt, dt)
                else "differs"
            )
            out.append(SpecialResult(name, q, label, _show(want), None if alt is None else _show(alt), _show(got),
                                     verdict))
    return out
