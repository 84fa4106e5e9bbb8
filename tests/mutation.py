"""The mutation check: plant realistic bugs one at a time and see the tests catch each.

    python tests/mutation.py [name ...]        (make mutation; MUTANTS="name ..." for a few)

The package, its tests and what they read are copied into a temporary directory once (numba's on-disk cache
too, with the files' times, so unchanged kernels are not compiled again); each mutant replaces one snippet
of one source file in that copy, runs the test subset that covers it there (hypothesis's ci profile:
derandomized, so a rerun gives the same table) and restores the file. The working tree is never written.

A mutant is *caught* when its tests fail, *missed* when they pass, *stale* when its snippet is no longer
in the source (the code moved on: update the snippet). The untouched copy must pass every subset first.
Exit status 0 only when every mutant is caught. Expect about 15 minutes on two cores (a kernel mutant
recompiles its module).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ["tinyops", "tests", "examples", "benchmarks", "docs", "README.md", "pyproject.toml"]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    old: str  # a snippet that occurs exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids, -k expressions


CE = "tinyops/ops/cross_entropy.py"
SOFTMAX = "tinyops/ops/softmax.py"
ORACLE = "tests/test_oracle.py"

MUTANTS: list[Mutant] = [
    # --- named in the audit: options ignored, the sampler, accuracy, the smoothing corner
    Mutant("cross_entropy precision='fast' ignored", CE,
           "ce_rows_forward(x, t, precision=opts.precision,", 'ce_rows_forward(x, t, precision="accurate",',
           (ORACLE, "-k", "cross_entropy or fast_precision")),
    Mutant("cross_entropy threads ignored", CE, "threads=opts.threads)", "threads=None)",
           (ORACLE, "-k", "threads")),
    Mutant("sampler draws uniformly", "tinyops/mlp.py",
           "ix = int(rng.choice(config.vocab_size, p=probs))", "ix = int(rng.choice(config.vocab_size))",
           ("tests/test_mlp.py", "-k", "sampling")),
    Mutant("softmax family: x - max rounded in the input's dtype (float32 inside)", SOFTMAX,
           "d_hi = np.subtract(x, shift[:, None], dtype=np.float64)",
           "d_hi = np.subtract(x, shift[:, None], dtype=x.dtype).astype(np.float64)",
           (ORACLE, "-k", "softmax or logsumexp")),
    Mutant("TwoSum correction removed (float64 x - max, compiled)", "tinyops/kernels/rounding.py",
           "    return lo if math.isfinite(lo) else 0.0", "    return 0.0",
           ("tests/test_accuracy.py", "-k", "ulp_bounds_hard_regions")),
    Mutant("label_smoothing=1 with a -inf target gives inf, not nan", CE,
           "        losses[np.isneginf(x[np.arange(M), t])] = np.nan", "        pass",
           ("tests/test_parity.py", "-k", "smoothing")),
    # --- every op
    Mutant("embedding scatter loses repeated indices", "tinyops/ops/embedding.py",
           "np.add.at(dweight, idx.reshape(-1), rows)", "dweight[idx.reshape(-1)] += rows",
           (ORACLE, "-k", "embedding", "tests/test_embedding_scatter.py")),
    Mutant("embedding padding_idx gets a gradient", "tinyops/ops/embedding.py",
           "        dweight[padding_idx] = 0", "        pass",
           (ORACLE, "-k", "embedding")),
    Mutant("linear dx without the transpose (square weights)", "tinyops/ops/linear.py",
           "dx = np.dot(dout, weight.T, out=dx)",
           "dx = np.dot(dout, weight if weight.shape[0] == weight.shape[1] else weight.T, out=dx)",
           (ORACLE, "-k", "linear and not cross")),
    Mutant("tanh backward 1 + y**2", "tinyops/ops/tanh.py",
           "np.multiply(1 - yk**2, dout[:, :K], out=out)", "np.multiply(1 + yk**2, dout[:, :K], out=out)",
           (ORACLE, "-k", "tanh")),
    Mutant("tanh backward kernel 1 - y (compiled)", "tinyops/kernels/elementwise.py",
           "dx[k] = (one - y[k] * y[k]) * dout[k]", "dx[k] = (one - y[k]) * dout[k]",
           (ORACLE, "-k", "tanh")),
    Mutant("batchnorm without Bessel's correction", "tinyops/ops/batchnorm.py",
           "var = sq_sum / dt(M - 1 if unbiased else M)", "var = sq_sum / dt(M)",
           ("tests/test_batchnorm.py",)),
    Mutant("softmax backward drops the sum term", SOFTMAX,
           "dx: Array = y * (dy - (dy * y).sum(axis=axes, keepdims=True))",
           "dx: Array = y * dy",
           (ORACLE, "-k", "softmax")),
    Mutant("log_softmax backward without the softmax", SOFTMAX,
           "dx: Array = dy - np.exp(y) * dy.sum(axis=axes, keepdims=True)",
           "dx: Array = dy - y * dy.sum(axis=axes, keepdims=True)",
           (ORACLE, "-k", "log_softmax")),
    Mutant("logsumexp of an all -inf row is nan", SOFTMAX,
           "                lse[s.bad] = s.m[s.bad]  # torch's gradient there",
           "                lse[s.bad] = np.nan  # torch's gradient there",
           (ORACLE, "-k", "logsumexp", "tests/test_parity.py", "-k", "logsumexp")),
    Mutant("cross_entropy mean counts ignored rows", CE,
           "return float(M if targets.ignored is None else M - int(np.count_nonzero(targets.ignored)))",
           "return float(M)",
           (ORACLE, "-k", "cross_entropy", "tests/test_parity.py", "-k", "cross_entropy")),
    Mutant("label smoothing spread over C - 1 classes", CE,
           "coef = np.full(x.shape, eps / C, dtype=x.dtype)",
           "coef = np.full(x.shape, eps / max(C - 1, 1), dtype=x.dtype)",
           (ORACLE, "-k", "cross_entropy")),
    # --- the trainer, sampling, the data split, the CLI
    Mutant("learning rate decays one step late", "tinyops/mlp.py",
           "return config.lr if step < config.lr_decay_step else config.lr_after",
           "return config.lr if step <= config.lr_decay_step else config.lr_after",
           ("tests/test_mlp.py", "-k", "sgd")),
    Mutant("trainer ignores the learning rate it is given", "tinyops/mlp.py",
           "sgd_step(self.flat_params, self.flat_grads, lr, backend=self.backend)",
           "sgd_step(self.flat_params, self.flat_grads, 0.1, backend=self.backend)",
           ("tests/test_mlp.py", "-k", "trainer")),
    Mutant("sampling shifts the context the wrong way", "tinyops/mlp.py",
           "context = [*context[1:], ix]", "context = [ix, *context[:-1]]",
           ("tests/test_mlp.py", "-k", "sampling")),
    Mutant("data split ignores its seed", "tinyops/data.py", "        random.seed(seed)", "        random.seed(42)",
           ("tests/test_data.py",)),
    Mutant("data split 90/5/5", "tinyops/data.py", "n1 = int(0.8 * len(shuffled))", "n1 = int(0.9 * len(shuffled))",
           ("tests/test_data.py",)),
    Mutant("CLI sample ignores --seed", "tinyops/cli.py",
           "train.cmd_sample(args.model, n=args.n, seed=args.seed)",
           "train.cmd_sample(args.model, n=args.n)",
           ("tests/test_train.py", "-k", "sample")),
]


def run(cmd: list[str], cwd: Path, log: Path) -> int:
    env = {**os.environ, "TINYOPS_HYPOTHESIS_PROFILE": "ci", "PYTHONPATH": str(cwd), "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("w") as f:
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, check=False).returncode


def pytest_cmd(tests: tuple[str, ...]) -> list[str]:
    """pytest on one group of the subset (a file, and the -k expression that follows it)."""
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]


def groups(tests: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Split ``(file, -k, expr, file, -k, expr)`` into one pytest run per ``file [-k expr]``."""
    out: list[tuple[str, ...]] = []
    i = 0
    while i < len(tests):
        if i + 2 < len(tests) and tests[i + 1] == "-k":
            out.append(tests[i : i + 3])
            i += 3
        else:
            out.append((tests[i],))
            i += 1
    return out


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTANTS if not argv or m.name in argv or any(a in m.name for a in argv)]
    with tempfile.TemporaryDirectory(prefix="tinyops-mutation-") as tmp:
        work = Path(tmp)
        for item in COPIED:
            src = ROOT / item
            if src.is_dir():
                shutil.copytree(src, work / item, ignore=shutil.ignore_patterns(".hypothesis", "*.pyc"))
            elif src.exists():
                shutil.copy2(src, work / item)
        for cache in (ROOT / "tinyops").rglob("*.nb[ic]"):  # numba's cache, with its index's source times
            dst = work / cache.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cache, dst)
        probe = subprocess.run([sys.executable, "-c", "import tinyops; print(tinyops.__file__)"], cwd=work,
                               env={**os.environ, "PYTHONPATH": str(work)}, capture_output=True, text=True)
        assert probe.stdout.strip().startswith(str(work)), f"the copy is not the package imported: {probe.stdout}"

        print(f"baseline: the untouched copy on every subset ({len(chosen)} mutants)", flush=True)
        subsets = sorted({g for m in chosen for g in groups(m.tests)})
        for g in subsets:
            if run(pytest_cmd(g), work, work / "baseline.log") != 0:
                print(f"the untouched copy fails {' '.join(g)}:\n{(work / 'baseline.log').read_text()[-3000:]}")
                return 2

        rows = []
        for m in chosen:
            path = work / m.path
            source = path.read_text()
            stat = path.stat()
            if source.count(m.old) != 1:
                rows.append((m, "stale", 0.0))
                print(f"{'stale':7} {m.name}", flush=True)
                continue
            kernel_cache = work / "tinyops" / "kernels" / "__pycache__"
            if m.path.startswith("tinyops/kernels/"):  # numba's cache does not see a change in an inlined module
                shutil.rmtree(kernel_cache, ignore_errors=True)
            path.write_text(source.replace(m.old, m.new))
            start = time.perf_counter()
            caught = False
            try:
                for g in groups(m.tests):
                    rc = run(pytest_cmd(g), work, work / "mutant.log")
                    if rc == 1:  # tests failed: caught (2+: an error of the run itself, reported below)
                        caught = True
                        break
                    if rc not in (0, 5):
                        log = (work / "mutant.log").read_text()[-2000:]
                        raise RuntimeError(f"pytest exit {rc} on {m.name}:\n{log}")
            finally:
                path.write_text(source)
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
                if m.path.startswith("tinyops/kernels/"):
                    shutil.rmtree(kernel_cache, ignore_errors=True)
            seconds = time.perf_counter() - start
            result = "caught" if caught else "MISSED"
            rows.append((m, result, seconds))
            print(f"{result:7} {m.name} ({seconds:.0f} s)", flush=True)

    print("\n| bug planted | file | tests run | result | seconds |\n|---|---|---|---|---|")
    for m, result, seconds in rows:
        print(f"| {m.name} | {m.path} | {' '.join(m.tests)} | {result} | {seconds:.0f} |")
    caught = sum(r == "caught" for _, r, _ in rows)
    print(f"\n{caught} of {len(rows)} caught")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
