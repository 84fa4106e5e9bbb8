"""Hypothesis profiles, chosen by TINYOPS_HYPOTHESIS_PROFILE: dev (default), ci (make test), random
(make test-random), thorough (make test-thorough).

- dev: 50 examples per property, for iterating.
- ci: 200 examples, derandomized (the same examples on every run: CI is reproducible), no database.
- random: fresh random examples on every run (TINYOPS_HYPOTHESIS_EXAMPLES of them, 200 by default), and
  a database in .hypothesis/ that replays every failure found until it passes: CI explores.
- thorough: 2,000 examples (or TINYOPS_HYPOTHESIS_EXAMPLES), random, with the database: ten times ci's
  search, in about half an hour on 2 cores.

A property with a cap of its own (its examples are slow: long rows against mpmath) takes a fixed share of
the profile's budget through :func:`tests.oracle.budget`, never a fixed number.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "random",
    max_examples=int(os.environ.get("TINYOPS_HYPOTHESIS_EXAMPLES", "200")),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=int(os.environ.get("TINYOPS_HYPOTHESIS_EXAMPLES", "2000")),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("TINYOPS_HYPOTHESIS_PROFILE", "dev"))
