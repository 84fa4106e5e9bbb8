"""Tools for testing numerical accuracy; each submodule needs an optional package, imported only on use.

- :mod:`tinyops.testing.exact` (needs mpmath): exact references for logsumexp, softmax, log_softmax and
  the cross-entropy (value and gradient) on the exact binary values of float inputs, and :func:`ulp_error`.
- :mod:`tinyops.testing.regions` (NumPy only): builders of logits in the numerically hard regions.
- :mod:`tinyops.testing.strategies` (needs hypothesis): hypothesis strategies for those regions.

Importing ``tinyops.testing`` itself imports none of mpmath or hypothesis.
"""

__all__ = ["exact", "regions", "strategies"]
