# Two commands a user needs: `make demo` and `make test`. Everything else supports them.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install dev demo test test-unit lint docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first and pinned: the CPU wheel is on these machines; an unpinned torch pulls CUDA.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/sentirefine --log-format text demo

test: install
	$(BIN)/ruff check sentirefine tests bench tools
	$(BIN)/python -m pytest -q

test-unit: install
	$(BIN)/python -m pytest -q -m "not integration"

lint: install
	$(BIN)/ruff check sentirefine tests bench tools

# Regenerate the README's configuration table after changing a config field.
docs: install
	$(BIN)/python tools/update_readme_config.py

clean:
	rm -rf $(VENV) demo-workspace .pytest_cache
