"""Input checks shared by every op.

Each check names the argument and the offending value, so that bad input stops at the
public function with a one-line reason instead of a NumPy traceback from deep inside
(or, worse, a silent wrong answer: NumPy wraps negative indices and casts bools).
"""

from __future__ import annotations

from typing import Any, Literal, TypeGuard

import numpy as np
import numpy.typing as npt

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
REDUCTIONS = ("mean", "sum", "none")
Reduction = Literal["mean", "sum", "none"]

Axis = int | tuple[int, ...] | None
Array = npt.NDArray[Any]  # the one alias of the package: an ndarray of any dtype

Backend = Literal["compiled", "reference"]
BACKENDS: tuple[Backend, ...] = ("compiled", "reference")
"""Which layer computes an op: ``'compiled'`` (numba kernels, :mod:`tinyops.kernels`; the default) or
``'reference'`` (the plain NumPy of :mod:`tinyops.ops`, the formulas the derivations quote)."""


MAX_NDIM = 64
"""The most dimensions a NumPy 2 array can have: an op whose output has one axis more than its input
(the embedding lookup) refuses an input of this many."""


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    return f"{type(value).__name__} {value!r}"


def is_number(value: object) -> TypeGuard[int | float | np.integer[Any] | np.floating[Any]]:
    """True for a real Python or NumPy number (``3``, ``0.1``, ``np.float32(0.1)``, ``np.int64(3)``), never a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    """True for a Python or NumPy integer, never a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_bool(name: str, value: object) -> bool:
    """``value`` as a bool (True/False or a NumPy bool), or raise: a truthy string or number is not an option."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def as_plain_array(name: str, value: Any) -> npt.NDArray[Any]:
    """``value`` as a plain ndarray in native byte order, or raise naming ``name``.

    - a masked array is refused: the ops compute with every entry, so a mask would be silently ignored
      (neither the masked nor the unmasked result); the caller says which by passing ``.filled(...)``
      or ``.data``;
    - other ndarray subclasses (``np.matrix``, ``np.memmap``, ...) are viewed as the plain array of the
      same values and shape (``np.asarray``, no copy): the ops use only plain-array arithmetic;
    - a big-endian (non-native) array is converted to native byte order, and a read-only array is
      copied (to a writeable one: it is still never written), which the compiled kernels need;
    - anything else goes through ``np.asarray``; a ragged list is refused naming ``name``.
    """
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array; tinyops does not skip masked entries: pass {name}.filled(value) "
            f"to give them a value, or {name}.data to use the entries underneath"
        )
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:  # a ragged list: "inhomogeneous shape"
        raise ValueError(f"{name} must be array-like with one shape, got {type(value).__name__}: {exc}") from None
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    elif not arr.flags.writeable:  # no op writes into it, but the compiled kernels are typed for writeable arrays
        arr = arr.copy()
    return arr


def as_float_array(name: str, value: Any, *, ndim: int | tuple[int, ...] | None = None) -> npt.NDArray[Any]:
    """Return ``value`` as a plain floating ndarray (no copy when it already is one), or raise.

    Python lists of floats are accepted (they become float64); integer, bool, complex and object
    data are rejected with a TypeError, since an op on them would silently cast. NumPy subclasses
    and byte orders are handled as :func:`as_plain_array` says (a masked array is refused).
    """
    if not isinstance(value, (np.ndarray, list, tuple, float, np.floating)):
        raise TypeError(f"{name} must be a floating numpy array, got {_describe(value)}")
    arr = as_plain_array(name, value)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16, float32 or float64), got dtype {arr.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name} must be {want}-D, got {arr.ndim}-D array of shape {arr.shape}")
    return arr


def as_index_array(
    name: str, value: Any, size: int, *, size_name: str, max_ndim: int = MAX_NDIM
) -> npt.NDArray[np.integer[Any]]:
    """Return integer indices in ``[0, size)`` as a plain ndarray of at most ``max_ndim`` dimensions, or raise.

    Negative indices are rejected rather than wrapped (NumPy would read ``x[-1]`` as the last
    row; torch raises). Bools are rejected (NumPy would treat them as a mask); so are masked arrays.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (np.ndarray, list, tuple, int, np.integer)):
        raise TypeError(f"{name} must be an integer numpy array, got {_describe(value)}")
    arr = as_plain_array(name, value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got dtype {arr.dtype}")
    if arr.ndim > max_ndim:
        raise ValueError(f"{name} must have at most {max_ndim} dimensions, got {arr.ndim}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise IndexError(f"{name} must be in [0, {size}) ({size_name} = {size}), got {lo}")
        if hi >= size:
            raise IndexError(f"{name} must be in [0, {size}) ({size_name} = {size}), got {hi}")
    return arr


def check_same_dtype(name: str, arr: npt.NDArray[Any], ref_name: str, ref: npt.NDArray[Any]) -> None:
    if arr.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but {ref_name} has dtype {ref.dtype}; they must match")


Precision = Literal["accurate", "fast"]
PRECISIONS: tuple[Precision, ...] = ("accurate", "fast")
"""The fused cross-entropy's arithmetic: ``'accurate'`` (float64 inside, within a few ulp of the exact value)
or ``'fast'`` (the input's dtype inside, torch's formula and errors)."""


def check_precision(precision: object) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")


def check_backend(backend: object) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")


def check_threads(threads: object) -> int:
    """``threads`` as an int >= 1 (None means 1), or raise naming the value."""
    if threads is None:
        return 1
    if not is_int(threads) or threads < 1:
        raise ValueError(f"threads must be None or an int >= 1, got {threads!r}")
    return int(threads)


def check_reduction(reduction: object) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}")


def normalize_axis(axis: Axis, ndim: int) -> tuple[int, ...]:
    """Return the reduced axes as a sorted tuple of non-negative ints (None means all)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else axis
    if not isinstance(axes, tuple) or not all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes
    ):
        raise TypeError(f"axis must be an int, a tuple of ints or None, got {axis!r}")
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an input with {ndim} dimension(s)")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis!r} repeats an axis")
    return tuple(sorted(out))


def check_cache(cache: object, cls: type | tuple[type, ...], forward: str) -> None:
    """Raise a TypeError naming ``cache`` unless it is a ``cls`` (the cache type ``forward`` returns).

    Each op's cache is its own NamedTuple class, so the cache of another op (even one with the same
    fields, as softmax's and log_softmax's) is told apart by its type."""
    if not isinstance(cache, cls):
        names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        raise TypeError(f"cache must be the {names} returned by {forward}, got {type(cache).__name__}")


def check_dout(dout: Any, shape: tuple[int, ...], dtype: np.dtype[Any], *, name: str = "dout") -> npt.NDArray[Any]:
    """Check the upstream gradient of a backward: same shape and dtype as the output of the forward
    that made the cache (a mismatch names both: either may be the wrong one).

    A Python number is accepted for a 0-D output (``loss_backward(1.0, cache)``) and cast to the output's
    dtype; a NumPy scalar has a dtype and is checked as a 0-D array of it (np.float64 is also a Python float).
    """
    if shape == () and isinstance(dout, (int, float)) and not isinstance(dout, bool):
        return np.asarray(dout, dtype=dtype)
    arr = as_float_array(name, dout)
    if arr.shape != shape:
        raise ValueError(
            f"{name} must have the forward output's shape {shape}, got shape {arr.shape} "
            f"(a {name} or a cache from another forward)"
        )
    if arr.dtype != dtype:
        raise TypeError(
            f"{name} must have the forward output's dtype {dtype}, got dtype {arr.dtype} "
            f"(a {name} or a cache from another forward)"
        )
    return arr
