# Two commands for a new user: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-quick clean

$(STAMP): pyproject.toml jupyter-config/00-lamin-magic.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "lamin_magic needs Python 3.11 or newer; try: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,corpus]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf build/demo
	$(BIN)/python scripts/run_notebook.py notebooks/track-in-memory-data.ipynb --out build/demo
	$(BIN)/python scripts/run_notebook.py notebooks/magics.ipynb --out build/demo
	$(BIN)/lamin-magic --root build/demo/mydata ls

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check lamin_magic tests scripts
	$(BIN)/ruff format --check lamin_magic tests scripts
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf build $(VENV)
