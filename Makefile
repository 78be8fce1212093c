# Two entry points for a fresh machine; both create .venv (the project's environment) first.
#   make demo   serve SmolLM2-135M-Instruct on CPU with and without EDSD, compare
#   make test   the test suite (real SGLang servers on CPU; about 20-22 minutes on 2 cores)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sglang-edsd-installed

.PHONY: demo test test-all

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sglang-edsd demo

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ''
