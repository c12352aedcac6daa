# stampd — the two commands that matter are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.toml
PYTEST_ARGS ?=

.PHONY: run test lint fmt bench clean

# The venv is created on first use and refreshed whenever pyproject.toml changes.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

## run: start `stampd run` in the foreground on the example configuration (demo/inbox is watched)
run: $(VENV)/.installed
	mkdir -p demo/inbox
	$(BIN)/stampd --config $(CONFIG) run

## test: lint, type-check and run the whole test suite
test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

# mypy resolves modules by folder name; the tree keeps `daemon/` and `store/` at the top
# (DESIGN §2), so a folder of symlinks gives mypy the installed names stampd.daemon/stampd.store.
.typecheck/stampd:
	mkdir -p .typecheck/stampd
	ln -sfn ../../daemon .typecheck/stampd/daemon
	ln -sfn ../../store .typecheck/stampd/store

## lint: ruff check, ruff format --check, mypy --strict
lint: $(VENV)/.installed .typecheck/stampd
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	MYPYPATH=.typecheck $(BIN)/mypy -p stampd.store -p stampd.daemon

## fmt: apply ruff's formatting and safe fixes
fmt: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: measure the performance targets of DESIGN §11 (ratios against references in the same run)
bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf .typecheck .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
