# The two commands: `make test` and `make bench`. Each creates/refreshes .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test test-random test-thorough mutation bench bench-full results train check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when pyproject.toml changes (the stamp is older than it).
$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,bench,dev]'
	touch $@

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

$(VENV)/.train-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[train]'
	touch $@

# The test suite with the CI hypothesis profile (>= 200 examples per property, derandomized),
# then the linters.
test: $(VENV)/.test-installed
	TINYOPS_HYPOTHESIS_PROFILE=$${TINYOPS_HYPOTHESIS_PROFILE:-ci} $(BIN)/python -m pytest
	$(BIN)/ruff check .
	$(BIN)/mypy --strict tinyops

# The same suite with fresh random examples on every run (200 per property; TINYOPS_HYPOTHESIS_EXAMPLES=n
# for more) and a database in .hypothesis/ that replays any failure found until it is fixed.
test-random: $(VENV)/.test-installed
	TINYOPS_HYPOTHESIS_PROFILE=random $(BIN)/python -m pytest

# The same suite with 2,000 random examples per property (TINYOPS_HYPOTHESIS_EXAMPLES=n for more) and the
# database of make test-random (slow: see README for its run time).
test-thorough: $(VENV)/.test-installed
	TINYOPS_HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest

# Plants realistic bugs one at a time in a copy of the package and reports which the tests catch
# (tests/mutation.py; about 15 minutes; MUTANTS="name ..." runs a few).
mutation: $(VENV)/.test-installed
	$(BIN)/python tests/mutation.py $(MUTANTS)

# The main job: the op self-check and the quick fused-vs-naive loss benchmark (synthetic data, about
# 2 minutes): prints the table, writes results/bench_loss.{md,json} and the plots results/bench_loss_*.png.
bench: $(VENV)/.bench-installed
	$(BIN)/tinyops check
	$(BIN)/tinyops bench loss --quick

# The whole suite (tens of minutes; results/): loss, embedding, linear + cross-entropy, accuracy in ULPs.
bench-full: $(VENV)/.bench-installed
	$(BIN)/tinyops bench loss
	$(BIN)/tinyops bench embedding
	$(BIN)/tinyops bench linear-ce
	$(BIN)/tinyops bench accuracy

# Every number, table and picture README.md and docs/ show: the training seeds, the benchmarks, the accuracy
# atlas (about 25 minutes; best on an otherwise idle machine). RESULTS_ARGS="--only loss" reruns a part,
# RESULTS_ARGS=--render rewrites the docs from results/ alone (benchmarks/results.py --help).
results: $(VENV)/.bench-installed
	@test -n "$(DATA)" || { echo "usage: make results DATA=path/to/names.txt [RESULTS_ARGS=...]" >&2; exit 2; }
	$(BIN)/python benchmarks/results.py --data "$(DATA)" $(RESULTS_ARGS)

# Train the makemore MLP (pt2: 200,000 steps) on a names file: make train DATA=path/to/names.txt
# Extra options go in TRAIN_ARGS, e.g. TRAIN_ARGS="--seed 1 --out results/pt2-seed1" or "--config pt4".
train: $(VENV)/.train-installed
	@test -n "$(DATA)" || { echo "usage: make train DATA=path/to/names.txt [TRAIN_ARGS=...]" >&2; exit 2; }
	$(BIN)/tinyops train --data "$(DATA)" --config pt2 $(TRAIN_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis results
