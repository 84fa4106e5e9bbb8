# The two commands: `make test` and `make bench`. Each creates/refreshes .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test test-thorough bench check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when pyproject.toml changes (the stamp is older than it).
$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,bench,dev]'
	touch $@

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

# The test suite with the CI hypothesis profile (>= 200 examples per property, derandomized),
# then the linters.
test: $(VENV)/.test-installed
	TINYOPS_HYPOTHESIS_PROFILE=$${TINYOPS_HYPOTHESIS_PROFILE:-ci} $(BIN)/python -m pytest
	$(BIN)/ruff check .
	$(BIN)/mypy --strict tinyops

# The same suite with >= 10,000 examples per property (slow: tens of minutes).
test-thorough: $(VENV)/.test-installed
	TINYOPS_HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest

# The main job: the op self-check and the quick fused-vs-naive loss benchmark (synthetic data).
bench: $(VENV)/.bench-installed
	$(BIN)/tinyops check
	$(BIN)/python benchmarks/bench_loss.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis results
