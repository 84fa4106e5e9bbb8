"""Tools for testing numerical accuracy; each submodule needs an optional package, imported only on use.

The stable API (documented here and in docs/accuracy.md, "Auditing your own function"):

- :mod:`tinyops.testing.exact` (needs mpmath): exact references for logsumexp, softmax, log_softmax and
  the cross-entropy (value and gradient) on the exact binary values of float inputs (``reference``,
  ``logsumexp``, ``softmax``, ``log_softmax``, ``cross_entropy``, ``cross_entropy_grad``), the error of a
  result in ULPs (``ulp_error``) and the pytest-friendly ``assert_ulp_close(got, exact, max_ulp)``, also
  importable from here.
- :mod:`tinyops.testing.regions` (NumPy only): builders of logits in the numerically hard regions, and
  ``PARAMS``, the one table of their parameter ranges.
- :mod:`tinyops.testing.strategies` (needs hypothesis): hypothesis strategies for those regions.
- :mod:`tinyops.testing.bounds` (NumPy only): tinyops' documented ULP bounds, in one table.

Importing ``tinyops.testing`` itself imports none of mpmath or hypothesis.
"""

from typing import Any

__all__ = ["assert_ulp_close", "bounds", "exact", "regions", "strategies"]


def __getattr__(name: str) -> Any:
    if name == "assert_ulp_close":
        from .exact import assert_ulp_close

        return assert_ulp_close
    if name in ("bounds", "exact", "regions", "strategies"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
