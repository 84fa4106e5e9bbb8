"""How every kernel is compiled, and how many threads it runs on.

- ``cache=True``: compiled code is kept on disk, so only the first process pays for compilation;
- ``nogil=True``: several Python threads may call kernels at once (each call is independent);
- ``error_model='numpy'``: ``x / 0`` gives inf or nan, as NumPy, instead of raising;
- the threading layer is numba's ``'threadsafe'`` choice (TBB or OpenMP): kernels launched from several
  Python threads at once do not share a work queue.

``fastmath`` is given per function, never ``True``: the kernels handle infinities and nan explicitly, so
they may only let the compiler reassociate sums (``reassoc``, which is what lets a row sum vectorize),
ignore the sign of zero (``nsz``) and fuse multiply-adds (``contract``). Code whose rounding matters
(the range reduction of exp, TwoSum, the per-row epilogue) lives in functions compiled without those flags;
numba sets the flags per instruction, so they stay exact when inlined into a loop that has them.

``reassoc`` lets the compiler choose a sum's order anew in each compilation, and the serial and the
parallel driver of a kernel are compiled apart (in a new process one may come from the cache while the
other is compiled, with the row function inlined or called). A sum whose bits reach a float64 or 'fast'
output is therefore either a loop of a fixed shape (the row sums' full blocks) or written with its order
spelled out (the backward's sums, :func:`tinyops.kernels.softmax.sum64`);
``tests/test_compiled.py::test_the_drivers_give_the_same_bits_whichever_compiles_first`` checks it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba

numba.config.THREADING_LAYER = "threadsafe"

SUM_FLAGS = frozenset({"reassoc", "nsz", "contract"})  # loops that reduce: the sum may be reordered
MAX_FLAGS = frozenset({"reassoc", "nsz", "nnan"})  # the row max; a nan is caught afterwards, by the sum


def jit(
    *, parallel: bool = False, fastmath: frozenset[str] | None = None, inline: bool = False
) -> Callable[[Any], Any]:
    """numba's ``njit`` with this package's options (see the module docstring).

    ``inline``: inlined into its callers by numba itself, before the compiler sees the loop around the call
    (some small helpers otherwise keep a loop from vectorizing)."""
    decorator: Callable[[Any], Any] = numba.njit(
        cache=True,
        nogil=True,
        error_model="numpy",
        parallel=parallel,
        fastmath=set(fastmath or ()),
        inline="always" if inline else "never",
    )
    return decorator


def threads_available() -> int:
    """The most threads a kernel can run on (numba's pool: one per core unless NUMBA_NUM_THREADS says)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def use_threads(threads: int) -> None:
    """Run this Python thread's next kernels on ``min(threads, threads_available())`` threads.

    numba keeps the count per calling thread, so concurrent callers do not change each other's. The
    results never depend on it: each row is computed by one thread, in one order.
    """
    numba.set_num_threads(max(1, min(threads, threads_available())))


def launch(serial: Callable[..., Any], parallel: Callable[..., Any], threads: int, *args: Any) -> None:
    """``serial(*args)`` for one thread (no thread-pool start-up), else ``parallel(*args)`` on ``threads``.

    The two drivers of a kernel call one row function, so which of them runs never changes a bit.
    """
    if threads == 1:
        serial(*args)
    else:
        use_threads(threads)
        parallel(*args)
