# Two commands on a fresh machine: `make run` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bootstrapped
DATA   ?= data
PORT   ?= 8470
APP_PORT ?= 8471

.PHONY: run test lint typecheck pytest bench bench-quick clean bootstrap os-packages fuzz soak

bootstrap: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	@bash scripts/run.sh "$(DATA)" "$(PORT)" "$(APP_PORT)"

test: $(STAMP) os-packages lint typecheck pytest

os-packages:
	@bash scripts/os-packages.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q -m "not slow" -p no:cacheprovider

fuzz: $(STAMP)
	bash fuzz/run.sh

soak: $(STAMP)
	$(BIN)/pytest -q -m slow -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run_all.py --quick

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
