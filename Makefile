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
TARGET ?= auto
FORCE ?=
PYTEST_ARGS ?=

.PHONY: setup setup-gpu test test-fast test-gpu test-wheel test-floor demo engine bench lint clean

setup: $(STAMP)

# The GPU environment: onnxruntime-gpu + onnxruntime-genai-cuda (they run on the CPU provider where there is no GPU)
VENV_GPU ?= .venv-gpu
STAMP_GPU := $(VENV_GPU)/.adafv-setup
setup-gpu: $(STAMP_GPU)

# Idempotent: reruns only when the dependency files change. CPU torch first (from local disk), then the rest pinned.
$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[export,cpu,dev,ros]"
	touch $(STAMP)

$(STAMP_GPU): pyproject.toml setup.py constraints.txt
	test -x $(VENV_GPU)/bin/python || $(PYTHON) -m venv $(VENV_GPU)
	$(VENV_GPU)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV_GPU)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(VENV_GPU)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[export-gpu,dev]"
	touch $(STAMP_GPU)

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

# everything but the tests marked slow (CI runs them all, through `make test`)
test-fast: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# the wheel is the product: build it, install it into a fresh venv, run the commands from outside the checkout
test-wheel: setup
	PY=$(PY) .ci/wheel

# the lowest versions pyproject admits, in a runtime-only install (Python 3.10 where available)
test-floor: setup
	PY=$(PY) .ci/floor

# the GPU-path tests in the GPU environment (onnxruntime-gpu; the CPU provider where there is no GPU)
test-gpu: setup-gpu
	$(VENV_GPU)/bin/python -m pytest -q -m gpu_env $(PYTEST_ARGS)

demo: setup
	$(ADAFV) demo

engine: setup
	$(ADAFV) engine $(MODEL) --keep $(keep) --precision $(PRECISION) --llm-precision $(LLM_PRECISION) --target $(TARGET) $(if $(RESOLUTION),--resolution $(RESOLUTION)) $(if $(FORCE),--force)

SHAPES ?= llava-next-1b
DEVICE ?= cpu
bench: setup
	$(ADAFV) bench --shapes $(SHAPES) --device $(DEVICE)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(VENV_GPU) engines .pytest_cache .ruff_cache .hypothesis
