# Two commands on a fresh machine: `make run` and `make test`. Both bootstrap .venv first:
# `make run` only what running needs (the base dependencies), `make test` the dev extras.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bootstrapped
RUN_STAMP := $(VENV)/.bootstrapped-run
DATA   ?= data
PORT   ?= 8470
APP_PORT ?= 8471

.PHONY: cluster cluster-stop run test lint typecheck pytest bench bench-quick clean bootstrap os-packages fuzz soak test-bounds

bootstrap: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip >/dev/null
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP) $(RUN_STAMP)

# No pip self-upgrade and no dev tools: the URL is printed within seconds of a fresh clone.
$(RUN_STAMP): pyproject.toml
	@bash scripts/bootstrap-run.sh "$(PYTHON)" "$(VENV)"
	@touch $(RUN_STAMP)

run: $(RUN_STAMP)
	@bash scripts/run.sh "$(DATA)" "$(PORT)" "$(APP_PORT)"

# Scale-out on one machine (issue #16): PostgreSQL, Redis, 3 relay nodes, HAProxy on CLUSTER_PORT.
CLUSTER_PORT ?= 8480
cluster: $(RUN_STAMP)
	@bash scripts/cluster.sh start "$(DATA)/cluster" "$(CLUSTER_PORT)"

cluster-stop:
	@bash scripts/cluster.sh stop "$(DATA)/cluster"

test: $(STAMP) os-packages lint typecheck pytest test-bounds

os-packages:
	@bash scripts/os-packages.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz

typecheck: $(STAMP)
	$(BIN)/mypy

# Under coverage, subprocesses included (relay, realms, app; pyproject [tool.coverage.run]);
# the per-package table is printed after the tests. Two pytest-xdist workers (the 2 cores CI
# has: most tests wait on subprocesses, sockets or a browser), whole files per worker so a
# module's `server` relay is started once; each worker is a subprocess, so it measures itself.
PYTEST_WORKERS ?= 2
pytest: $(STAMP)
	@rm -rf test-artifacts/coverage && mkdir -p test-artifacts/coverage
	$(BIN)/coverage run -m pytest -q -m "not slow" -p no:cacheprovider --durations=20 \
		-n $(PYTEST_WORKERS) --dist loadfile
	@$(BIN)/coverage combine -q
	@$(BIN)/python scripts/coverage_report.py

fuzz: $(STAMP)
	bash fuzz/run.sh

soak: $(STAMP) test-bounds
	$(BIN)/pytest -q -m slow -p no:cacheprovider

# The fast-path tests at the lower bounds of the uvicorn/websockets ranges (own venv).
test-bounds:
	@bash scripts/test-bounds.sh

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run_all.py --quick

clean:
	rm -rf $(VENV) .venv-bounds build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
