# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test lint typecheck pytest docs docs-build bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trizmq demo --monitor

test: lint typecheck pytest docs-build

lint: $(STAMP)
	$(BIN)/ruff check trizmq monitor tests bench docs/hooks.py docs/examples
	$(BIN)/ruff format --check trizmq monitor tests bench docs/hooks.py docs/examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict trizmq monitor

pytest: $(STAMP)
	$(BIN)/pytest

docs-build: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet --site-dir $(CURDIR)/.site

docs: $(STAMP)
	$(BIN)/mkdocs serve

bench: $(STAMP)
	$(BIN)/trizmq bench

clean:
	rm -rf $(VENV) .site .pytest_cache .mypy_cache .ruff_cache
