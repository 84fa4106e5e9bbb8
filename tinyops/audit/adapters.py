"""Adapters: how ``tinyops audit`` calls an implementation of logsumexp, softmax, log_softmax or cross_entropy.

The protocol (x: (N, C) C-contiguous float32 or float64 NumPy array; target: (N,) int64 in [0, C)):

- ``forward(x) -> out``: logsumexp ``out`` (N,) over the last axis; softmax and log_softmax ``out`` (N, C);
  ``forward(x, target) -> loss`` for cross_entropy: the per-sample losses (N,) (``reduction='none'``).
- ``backward(x, dout) -> dx`` (``backward(x, target, dout)`` for cross_entropy), optional: the gradient of
  ``sum(forward(x) * dout)`` with respect to x, shape (N, C); ``dout`` has out's shape and dtype.
- Both return arrays (anything ``np.asarray`` takes) of x's dtype; neither may write into its arguments.

A plain callable is a forward; wrap it with its backward in an :class:`Adapter` for ``--grad``. For torch,
for example, a user's own softmax needs only::

    def my_softmax_numpy(x):  # (N, C) numpy -> (N, C) numpy
        return my_softmax(torch.from_numpy(x), dim=-1).numpy()

and ``tinyops audit mymodule:my_softmax_numpy --op softmax`` (or ``tinyops.audit.audit(my_softmax_numpy,
"softmax")``). The built-in adapters below are written the same way, a few lines each.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BUILTINS", "OPS", "Adapter", "AuditError", "Unavailable", "builtin", "load_target"]

Array = npt.NDArray[Any]
OPS = ("logsumexp", "softmax", "log_softmax", "cross_entropy")


class AuditError(Exception):
    """A target that cannot be audited: it does not import, is not callable, or returns the wrong thing."""


class Unavailable(Exception):
    """A built-in adapter whose library is not installed, or which does not offer the op."""


@dataclass(frozen=True)
class Adapter:
    """An implementation under audit: ``forward`` and optionally ``backward`` (see the module docstring)."""

    name: str
    forward: Callable[..., Any]
    backward: Callable[..., Any] | None = None


# ----------------------------------------------------------------------------- the built-ins


def _tinyops(op: str, precision: str) -> Adapter:
    import tinyops

    if precision == "fast" and op != "cross_entropy":
        raise Unavailable("precision='fast' is a cross_entropy option")
    name = "tinyops" if precision == "accurate" else "tinyops-fast"
    if op == "cross_entropy":
        kind: Any = precision

        def ce_fwd(x: Array, t: Array) -> Array:
            return np.asarray(tinyops.cross_entropy(x, t, reduction="none", precision=kind))

        def ce_bwd(x: Array, t: Array, dout: Array) -> Array:
            _, cache = tinyops.cross_entropy_forward(x, t, reduction="none", precision=kind)
            return np.asarray(tinyops.cross_entropy_backward(dout, cache))

        return Adapter(name, ce_fwd, ce_bwd)
    fwd: Any
    bwd: Any
    fwd, bwd = {
        "logsumexp": (tinyops.logsumexp_forward, tinyops.logsumexp_backward),
        "softmax": (tinyops.softmax_forward, tinyops.softmax_backward),
        "log_softmax": (tinyops.log_softmax_forward, tinyops.log_softmax_backward),
    }[op]

    def forward(x: Array) -> Array:
        return np.asarray(fwd(x, -1)[0])

    def backward(x: Array, dout: Array) -> Array:
        return np.asarray(bwd(dout, fwd(x, -1)[1]))

    return Adapter(name, forward, backward)


def _torch(op: str, compiled: bool) -> Adapter:
    # torch is a contender here, never a dependency: loaded by name only when it is the target, as scipy and jax
    try:
        torch: Any = importlib.import_module("torch")
    except ImportError as exc:
        raise Unavailable("torch is not installed") from exc
    F = torch.nn.functional
    fn: Any = {
        "logsumexp": lambda x: torch.logsumexp(x, dim=-1),
        "softmax": lambda x: F.softmax(x, dim=-1),
        "log_softmax": lambda x: F.log_softmax(x, dim=-1),
        "cross_entropy": lambda x, t: F.cross_entropy(x, t, reduction="none"),
    }[op]
    if compiled:
        fn = torch.compile(fn, dynamic=True)

    def call(x: Array, *rest: Array, dout: Array | None = None) -> Array:
        # one thread: the same bits on every run (restored after the call)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            xt = torch.from_numpy(np.array(x)).requires_grad_(dout is not None)
            out = fn(xt, *(torch.from_numpy(np.asarray(a)) for a in rest))
            if dout is None:
                return np.asarray(out.detach().numpy())
            out.backward(torch.from_numpy(np.array(dout)))
            assert xt.grad is not None
            return np.asarray(xt.grad.numpy())
        finally:
            torch.set_num_threads(threads)

    def backward(x: Array, *rest: Array) -> Array:
        return call(x, *rest[:-1], dout=rest[-1])

    return Adapter("torch-compile" if compiled else "torch", call, backward)


def _torch_compile(op: str) -> Adapter:
    adapter = _torch(op, compiled=True)
    x = np.array([[0.5, -1.0, 2.0]], dtype=np.float32)
    try:  # compile now, so that a machine without a working compiler is reported in one line
        adapter.forward(x, *([np.array([1])] if op == "cross_entropy" else []))
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise Unavailable(f"torch.compile does not run here ({type(exc).__name__}: {first})") from exc
    return adapter


def _softmax_grads(op: str, p: Array, dout: Array, t: Array | None) -> Array:
    """The gradient of ``sum(out * dout)`` from the probabilities p (N, C), as a user of a library without
    a backward writes it (the chain rule through softmax: ``dx = p * (g - sum(g * p))``)."""
    if op == "logsumexp":
        return np.asarray(dout[:, None] * p)
    if op == "softmax":
        return np.asarray(p * (dout - (dout * p).sum(axis=-1, keepdims=True)))
    if op == "log_softmax":
        return np.asarray(dout - p * dout.sum(axis=-1, keepdims=True))
    assert t is not None
    g = p.copy()
    g[np.arange(p.shape[0]), t] -= 1
    return np.asarray(dout[:, None] * g)


def _scipy(op: str) -> Adapter:
    try:
        sp: Any = importlib.import_module("scipy.special")
    except ImportError as exc:
        raise Unavailable("scipy is not installed") from exc

    def forward(x: Array, t: Array | None = None) -> Array:
        if op == "cross_entropy":  # scipy has no cross-entropy: logsumexp minus the target logit
            assert t is not None
            return np.asarray(sp.logsumexp(x, axis=-1) - x[np.arange(x.shape[0]), t])
        f = {"logsumexp": sp.logsumexp, "softmax": sp.softmax, "log_softmax": sp.log_softmax}[op]
        return np.asarray(f(x, axis=-1))

    def backward(x: Array, *rest: Array) -> Array:
        return _softmax_grads(op, np.asarray(sp.softmax(x, axis=-1)), rest[-1], rest[0] if len(rest) == 2 else None)

    return Adapter("scipy", forward, backward)


def _jax(op: str) -> Adapter:
    try:
        jax: Any = importlib.import_module("jax")
        jnp: Any = importlib.import_module("jax.numpy")
    except ImportError as exc:
        raise Unavailable("jax is not installed") from exc
    jax.config.update("jax_enable_x64", True)  # float64 input stays float64
    fn: Any = {
        "logsumexp": lambda x: jax.scipy.special.logsumexp(x, axis=-1),
        "softmax": lambda x: jax.nn.softmax(x, axis=-1),
        "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1),
        "cross_entropy": lambda x, t: -jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), t[:, None], axis=-1)[:, 0],
    }[op]

    def forward(x: Array, *rest: Array) -> Array:
        return np.asarray(fn(jnp.asarray(x), *(jnp.asarray(a) for a in rest)))

    def backward(x: Array, *rest: Array) -> Array:
        out, vjp = jax.vjp(lambda xx: fn(xx, *(jnp.asarray(a) for a in rest[:-1])), jnp.asarray(x))
        return np.asarray(vjp(jnp.asarray(rest[-1], dtype=out.dtype))[0])

    return Adapter("jax", forward, backward)


def _naive(op: str) -> Adapter:
    """The textbook chain with no max subtraction: ``counts = exp(x)``, ``p = counts / counts.sum()``,
    ``log(...)`` (the seed's code; it overflows past x = 88.7 in float32)."""

    def probs(x: Array) -> Array:
        counts = np.exp(x)
        return np.asarray(counts / counts.sum(axis=-1, keepdims=True))

    def forward(x: Array, t: Array | None = None) -> Array:
        with np.errstate(all="ignore"):
            if op == "logsumexp":
                return np.asarray(np.log(np.exp(x).sum(axis=-1)))
            if op == "softmax":
                return probs(x)
            if op == "log_softmax":
                return np.asarray(np.log(probs(x)))
            assert t is not None
            return np.asarray(-np.log(probs(x)[np.arange(x.shape[0]), t]))

    def backward(x: Array, *rest: Array) -> Array:
        with np.errstate(all="ignore"):
            return _softmax_grads(op, probs(x), rest[-1], rest[0] if len(rest) == 2 else None)

    return Adapter("numpy-naive", forward, backward)


BUILTINS: dict[str, Callable[[str], Adapter]] = {
    "tinyops": lambda op: _tinyops(op, "accurate"),
    "tinyops-fast": lambda op: _tinyops(op, "fast"),
    "torch": lambda op: _torch(op, compiled=False),
    "torch-compile": _torch_compile,
    "scipy": _scipy,
    "jax": _jax,
    "numpy-naive": _naive,
}
"""Built-in adapters by name. ``torch-compile`` compiles on first use (tens of seconds): opt-in."""


def builtin(name: str, op: str) -> Adapter:
    """The built-in adapter ``name`` for ``op``; raises :class:`Unavailable` (with the reason in one line)."""
    if op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    if name not in BUILTINS:
        raise ValueError(f"name must be one of {', '.join(BUILTINS)}, got {name!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BUILTINS[name](op)


def load_target(target: str | Callable[..., Any] | Adapter, op: str) -> Adapter:
    """A built-in name, ``package.module:function`` (an :class:`Adapter` or a plain forward callable), a
    callable or an :class:`Adapter`, as an :class:`Adapter` for ``op``.

    Raises:
        AuditError: a module that does not import, an attribute that is not there or not callable.
        Unavailable: a built-in whose library is missing.
    """
    if isinstance(target, Adapter):
        return target
    if callable(target):
        return Adapter(getattr(target, "__name__", repr(target)), target)
    if target in BUILTINS:
        return builtin(target, op)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise AuditError(
            f"TARGET must be a built-in ({', '.join(BUILTINS)}) or package.module:function, got {target!r}"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise AuditError(
            f"TARGET {target!r}: module {module_name!r} does not import ({type(exc).__name__}: {exc})"
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AuditError(f"TARGET {target!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, Adapter):
        return obj
    if not callable(obj):
        raise AuditError(f"TARGET {target!r} is not callable (it is a {type(obj).__name__})")
    return Adapter(target, obj)
