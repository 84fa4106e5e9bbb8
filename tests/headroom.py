"""How much of each oracle tolerance the ops use: ``python -m tests.headroom [examples [op ...]]``.

For every op of the oracle table (and batchnorm), every layer and both dtypes, draws ``examples`` cases
(default 300, hypothesis with a fixed seed) and prints the largest ``|ours - torch| / unit`` seen for the
forward and each gradient, where ``unit`` is the op's tolerance with ``k = 1``: the measured value is the
smallest ``k`` these cases need. The table's ``k`` must stay above it (tests/ERROR_ANALYSIS.md). The values
vary from run to run only with the drawn cases (the seed is fixed; threads change no bit).
"""

from __future__ import annotations

import dataclasses
import sys
from collections import defaultdict
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from .oracle import Case, OpSpec, check_op
from .test_batchnorm import BATCHNORM_SPEC
from .test_oracle import SPECS, layers, options

HUGE = 1e12  # k for measuring: nothing fails, the used fraction times HUGE is the k needed


def measure(spec: OpSpec, examples: int) -> dict[tuple[str, str, str], float]:
    loose = dataclasses.replace(
        spec, fwd_k={"float32": HUGE, "float64": HUGE}, bwd_k={"float32": HUGE, "float64": HUGE}
    )
    worst: dict[tuple[str, str, str], float] = defaultdict(float)
    for layer in layers(spec.forward):

        @seed(20260)
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=spec.cases, opts=options(spec.forward), layer=st.just(layer))
        def run(case: Case, opts: dict[str, Any], layer: dict[str, Any]) -> None:
            with np.errstate(all="ignore"):
                used = check_op(loose, case, {**layer, **opts})
            name = "-".join(str(v) for v in layer.values()) or "numpy"
            if opts.get("precision") == "fast":
                name += "-fast"
            for what, u in used.items():
                key = (name, case.dtype.name, what)
                worst[key] = max(worst[key], u * HUGE)

        run()
    return worst


def main(argv: list[str]) -> int:
    examples = int(argv[0]) if argv else 300
    specs = {s.name: s for s in (*SPECS, BATCHNORM_SPEC) if len(argv) < 2 or s.name in argv[1:]}
    print(f"{'op':22} {'layer':18} {'dtype':8} {'result':11} {'k needed':>9} {'k':>4}")
    for name, spec in specs.items():
        for (layer, dtype, what), need in sorted(measure(spec, examples).items()):
            k = (spec.fwd_k if what == "forward" else spec.bwd_k)[dtype]
            print(f"{name:22} {layer:18} {dtype:8} {what:11} {need:9.3g} {k:4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
