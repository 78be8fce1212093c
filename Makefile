# Two entry points for a fresh machine; both create .venv (the project's environment) first.
#   make demo       serve SmolLM2-135M-Instruct on CPU with and without EDSD, compare
#   make test       lint, then the default test suite (real SGLang servers on CPU; about 20 minutes on 2 cores)
# Inner loop: make test-fast (no SGLang servers, no long or slow tests). Everything: make test-all.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast test-all lint

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[cpu-demo]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[test]'
	touch $@

demo: $(VENV)/.demo-installed
	$(VENV)/bin/sglang-edsd demo

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

test-fast: $(VENV)/.test-installed
	$(PY) -m pytest -m 'not slow and not server and not long'

test-all: $(VENV)/.test-installed
	$(PY) -m pytest -m ''
