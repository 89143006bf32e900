# Kenning: two set-up commands for a fresh Debian/Ubuntu machine with Python 3.11.
#   make demo   install, start `kenning serve` on 127.0.0.1:8000, ingest the demo corpus
#   make test   install, run the whole test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= .kenning
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench serve system-deps clean

$(STAMP): pyproject.toml
	@bash scripts/system-deps.sh
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

demo: $(STAMP)
	$(BIN)/kenning demo --data-dir $(DATA)

serve: $(STAMP)
	$(BIN)/kenning serve --data-dir $(DATA)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/bench_broker.py
	$(BIN)/python bench/bench_ingest.py

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
