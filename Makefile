# Everything a fresh machine needs: `make demo` and `make test` create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/batchfuse run jobs/demo.yaml
	$(BIN)/batchfuse status jobs/demo.yaml

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf jobs/out jobs/*.db jobs/*.db-wal jobs/*.db-shm
