"""The compiled layer: numba kernels of the ops, each checked against the NumPy reference in :mod:`tinyops.ops`.

Each kernel is one loop nest written the way llm.c writes C: a shape legend on top, the algorithm in the
order one would explain it, rows in parallel with ``prange``. A row is always computed by one thread, in
the same order, so the results are bit-for-bit identical for every thread count.

The public ops reach these kernels through their ``backend`` argument (``'compiled'``, the default, or
``'reference'``); nothing here checks its inputs, the public ops do. Importing :mod:`tinyops` does not
import numba: the first op called with ``backend='compiled'`` imports this package, and each kernel is
compiled on its first call and cached on disk (next to this file, or in numba's per-user cache directory
when this folder is read-only), so later processes load it in milliseconds.

- :mod:`tinyops.kernels.exp` -- ``exp`` in float32 and float64, written so that loops over it vectorize;
- :mod:`tinyops.kernels.cross_entropy` -- the fused cross-entropy's row kernels, 'fast' and 'accurate';
- :mod:`tinyops.kernels.softmax` -- logsumexp, softmax and log_softmax over rows, and their backwards;
- :mod:`tinyops.kernels.rows_matmul` -- the logits of linear + cross-entropy row by row in a fixed order
  (``batch_invariant=True``: a row's bits do not depend on its batch);
- :mod:`tinyops.kernels.embedding` -- the gather and the scatter-add (indices in order, a block of columns per
  thread);
- :mod:`tinyops.kernels.elementwise` -- tanh and its backward, batchnorm's passes and running statistics, SGD.
"""
