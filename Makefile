# Two commands on a fresh machine:
#   make demo   - create .venv, install, run the walk-through end to end (no etcd, no Docker)
#   make test   - create .venv with every extra and the dev one, install what the tests need, run
#                 ruff, mypy and the whole pytest suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench system-deps docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" bash examples/demo.sh

system-deps:
	bash scripts/install-system-deps.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev
	$(BIN)/pytest

test: system-deps lint typecheck unit

docs: $(VENV)/.installed
	$(BIN)/python scripts/spec_reference.py

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
