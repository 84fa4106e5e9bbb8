"""Input checks shared by every op.

Each check names the argument and the offending value, so that bad input stops at the
public function with a one-line reason instead of a NumPy traceback from deep inside
(or, worse, a silent wrong answer: NumPy wraps negative indices and casts bools).
"""

from __future__ import annotations

from typing import Any, Literal

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


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    return f"{type(value).__name__} {value!r}"


def as_float_array(name: str, value: Any, *, ndim: int | tuple[int, ...] | None = None) -> npt.NDArray[Any]:
    """Return ``value`` as a floating ndarray (no copy when it already is one), or raise.

    Python lists of floats are accepted (they become float64); integer, bool and complex
    data are rejected with a TypeError, since an op on them would silently cast.
    """
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (list, tuple, float, np.floating)):
        arr = np.asarray(value)
    else:
        raise TypeError(f"{name} must be a floating numpy array, got {_describe(value)}")
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16, float32 or float64), got dtype {arr.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name} must be {want}-D, got {arr.ndim}-D array of shape {arr.shape}")
    return arr


def as_index_array(name: str, value: Any, size: int, *, size_name: str) -> npt.NDArray[np.integer[Any]]:
    """Return integer indices in ``[0, size)`` as an ndarray, or raise.

    Negative indices are rejected rather than wrapped (NumPy would read ``x[-1]`` as the last
    row; torch raises). Bools are rejected (NumPy would treat them as a mask).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (np.ndarray, list, tuple, int, np.integer)):
        raise TypeError(f"{name} must be an integer numpy array, got {_describe(value)}")
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got dtype {arr.dtype}")
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
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
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


def check_dout(dout: Any, shape: tuple[int, ...], dtype: np.dtype[Any], *, name: str = "dout") -> npt.NDArray[Any]:
    """Check the upstream gradient of a backward: same shape and dtype as the forward's output.

    A Python number is accepted for a 0-D output (``loss_backward(1.0, cache)``).
    """
    if shape == () and isinstance(dout, (int, float)) and not isinstance(dout, bool):
        return np.asarray(dout, dtype=dtype)
    arr = as_float_array(name, dout)
    if arr.shape != shape:
        raise ValueError(f"{name} must have the forward output's shape {shape}, got shape {arr.shape}")
    if arr.dtype != dtype:
        raise TypeError(f"{name} must have the forward output's dtype {dtype}, got dtype {arr.dtype}")
    return arr
