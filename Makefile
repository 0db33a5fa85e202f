# Thin targets over the Python API. `make demo` and `make test` set up .venv/ first when needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ADAFV  := $(VENV)/bin/adafv
STAMP  := $(VENV)/.adafv-setup
MODEL  ?= tiny-llava-next
keep   ?= 64
PRECISION ?= fp32
LLM_PRECISION ?= int4
FORCE ?=
PYTEST_ARGS ?=

.PHONY: setup test demo engine bench lint clean

setup: $(STAMP)

# Idempotent: reruns only when the dependency files change. CPU torch first (from local disk), then the rest pinned.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[export,cpu,dev]"
	touch $(STAMP)

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(ADAFV) demo

engine: setup
	$(ADAFV) engine $(MODEL) --keep $(keep) --precision $(PRECISION) --llm-precision $(LLM_PRECISION) $(if $(FORCE),--force)

bench: setup
	$(ADAFV) bench --model $(MODEL) --keep $(keep)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) engines .pytest_cache .ruff_cache .hypothesis
