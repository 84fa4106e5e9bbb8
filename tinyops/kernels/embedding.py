"""The embedding's gather (forward) and scatter-add (backward), compiled.

Shapes: V = rows of the table, D = embedding size; the indices as an (R, T) intp array (the public op
flattens any index shape to R rows of its last axis T; the training step's contexts are (N, T) as they
come). Every array is C-contiguous; an (R, >= T*D) array of rows is read or written in its first T*D
columns, so it may carry extra trailing columns (the training step's ``[embcat, 1]`` buffer).

    out[r, t*D + j]  = weight[idx[r, t], j]                                 gather
    dweight[v, j]    = sum over (r, t) with idx[r, t] == v of dout[r, t*D + j]  scatter-add

The scatter-add walks the indices in order, row after row, and adds each upstream row into the row of
``dweight`` it names: a row looked up k times receives its k upstream rows, summed in index order. The
parallel driver gives each thread its own block of columns j of dweight (and walks all the indices in
the same order), so no two threads ever write one element and every element's sum has the
same terms in the same order whatever the thread count: bit-identical results. The gather is rows of
idx in parallel.
"""

from __future__ import annotations

from typing import Any

from numba import prange

from ._numba import jit, launch, threads_available, use_threads


@jit()
def gather_row(weight: Any, idx: Any, out: Any, r: int) -> None:
    D = weight.shape[1]
    for t in range(idx.shape[1]):
        v = idx[r, t]
        for j in range(D):
            out[r, t * D + j] = weight[v, j]


@jit()
def gather_serial(weight: Any, idx: Any, out: Any) -> None:
    """``out[r, t*D:(t+1)*D] = weight[idx[r, t]]``: weight (V, D), idx (R, T), out (R, >= T*D)."""
    for r in range(idx.shape[0]):
        gather_row(weight, idx, out, r)


@jit(parallel=True)
def gather_parallel(weight: Any, idx: Any, out: Any) -> None:
    for r in prange(idx.shape[0]):
        gather_row(weight, idx, out, r)


@jit()
def scatter_columns(idx: Any, dout: Any, dweight: Any, j0: int, j1: int, zero: bool) -> None:
    """Columns [j0, j1) of the scatter-add: every index in order, ``dweight[idx, j] += dout[.., t*D + j]``."""
    D = dweight.shape[1]
    if zero:
        for v in range(dweight.shape[0]):
            for j in range(j0, j1):
                dweight[v, j] = 0
    for r in range(idx.shape[0]):
        for t in range(idx.shape[1]):
            v = idx[r, t]
            for j in range(j0, j1):
                dweight[v, j] += dout[r, t * D + j]


@jit()
def scatter_serial(idx: Any, dout: Any, dweight: Any, zero: bool) -> None:
    """``dweight[v] = sum_{(r, t): idx[r, t] == v} dout[r, t*D:(t+1)*D]``: idx (R, T), dout (R, >= T*D),
    dweight (V, D), zeroed first when ``zero`` (else it must arrive zeroed)."""
    scatter_columns(idx, dout, dweight, 0, dweight.shape[1], zero)


@jit(parallel=True)
def scatter_parallel(idx: Any, dout: Any, dweight: Any, zero: bool, blocks: int) -> None:
    """The columns of dweight split into ``blocks`` blocks (one per thread); each walks every index, in order."""
    D = dweight.shape[1]
    width = (D + blocks - 1) // blocks
    for b in prange(blocks):
        scatter_columns(idx, dout, dweight, min(D, b * width), min(D, (b + 1) * width), zero)


# ----------------------------------------------------------------------------- drivers (tinyops.ops.embedding)


def gather(weight: Any, idx: Any, out: Any, threads: int) -> None:
    """``out[r, :T*D] = weight[idx[r]].reshape(-1)``, on ``threads`` threads (1: the serial twin)."""
    launch(gather_serial, gather_parallel, threads, weight, idx, out)


def scatter_add(idx: Any, dout: Any, dweight: Any, threads: int, zero: bool) -> None:
    """The scatter-add into ``dweight`` (zeroed first when ``zero``), on ``threads`` threads."""
    if threads == 1:
        scatter_serial(idx, dout, dweight, zero)
    else:
        use_threads(threads)
        scatter_parallel(idx, dout, dweight, zero, min(threads, threads_available()))
