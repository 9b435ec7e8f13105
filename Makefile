# Two set-up commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench dist docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/piiguard demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Lint and type gates first: a finding fails the run like a failing test.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	$(BIN)/python -m benchmarks --quick
	$(MAKE) docs

# The documentation site with its API reference from the docstrings, built offline; any
# warning (a broken link, a reference that does not resolve) fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Build the sdist and wheel, check them, install the wheel in a fresh venv, smoke-test.
dist: $(STAMP)
	$(BIN)/python tools/dist/check.py

clean:
	rm -rf $(VENV) .piiguard demo.db dist build
