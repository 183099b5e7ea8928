# The two commands of the README:  `make demo`  and  `make test`.
# Both create the virtual environment (.venv) on first use; `make test` also installs the
# Debian packages whose real binaries the integration tests start (prometheus, promtool,
# alertmanager, amtool, victoria-metrics) when they are missing and this runs as root.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest system-packages venv clean

$(BIN)/.installed: pyproject.toml
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
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
