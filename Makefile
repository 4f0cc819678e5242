# Two commands for a newcomer: `make run` (train MANGO on the embedded data) and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= runs/mfeat
CONFIG ?= experiments/mfeat.py
PYTEST_ARGS ?= -n 2

.PHONY: run test lint setup clean

setup: $(STAMP)

# Reinstalls only when the package metadata or the pinned versions change. `--no-compile`: pip
# would byte-compile every installed module (17 of the set-up's 47 s on 2 cores); Python
# compiles the ones a run imports when it first imports them.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m experiments.main --config=$(CONFIG) --workdir=$(WORKDIR)

lint: $(STAMP)
	$(BIN)/ruff check .

# The suite runs on 8 simulated CPU devices (tests/conftest.py sets them up before JAX starts).
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS) || { rc=$$?; \
	  [ $$rc -ne 5 ] || echo 'pytest collected no tests (exit 5): tests/ must not be empty' >&2; exit $$rc; }

clean:
	rm -rf $(VENV) runs
