# The two commands of the README:  `make demo`  and  `make test`.
# Both create the virtual environment (.venv) on first use, and before that install the Debian
# packages whose real binaries the integration tests (and the demo) start (prometheus,
# promtool, alertmanager, amtool, victoria-metrics; python3-venv if missing) when they are
# missing and this runs as root (scripts/ensure-system-packages). `make test` ends with the
# 15 slowest tests.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest system-packages venv clean

# system-packages first (order only: it does not make the venv out of date): on a bare Debian
# it brings python3-venv along with the binaries
$(BIN)/.installed: pyproject.toml | system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/wattledger demo

system-packages:
	@scripts/ensure-system-packages

lint: $(BIN)/.installed
	$(BIN)/ruff check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

pytest: $(BIN)/.installed system-packages
	$(BIN)/python -m pytest --durations=15 $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
