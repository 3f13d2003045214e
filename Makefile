# The two commands of the README: `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin

.PHONY: demo test lint typecheck unit integration system-deps demo-deps clean

$(BIN)/python: | demo-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall when the project's metadata changes.
$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.stamp-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[demo]'
	touch $@

system-deps:
	./scripts/install-system-deps.sh

demo-deps:
	./scripts/install-system-deps.sh --minimal

## demo: a private IMAP server on loopback, seeded with sample mail, filtered by rules.d
demo: $(VENV)/.stamp-demo
	$(BIN)/python -m mailrules.demo

## test: installs what the suite needs (Dovecot, Cyrus, PostgreSQL, promtool) and runs ruff (lint, format), mypy --strict and pytest
test: system-deps $(VENV)/.stamp-test
	$(BIN)/ruff check mailrules tests bench
	$(BIN)/ruff format --check mailrules tests bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check mailrules tests bench
	$(BIN)/ruff format --check mailrules tests bench

typecheck: $(VENV)/.stamp-test
	$(BIN)/mypy

unit: $(VENV)/.stamp-test
	$(BIN)/pytest tests/unit

integration: system-deps $(VENV)/.stamp-test
	$(BIN)/pytest tests/integration

clean:
	rm -rf $(VENV) dist build .mypy_cache .ruff_cache .pytest_cache .hypothesis
