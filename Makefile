# llama-harness: the common paths.  `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HARNESS := $(VENV)/bin/harness
RECIPE ?= recipes/demo.yaml
BACKEND ?= cpu
OFFLINE_CACHE ?= $(HOME)/.cache/llama-harness-offline
PYTEST_ARGS ?=
TORCH_VERSION ?= 2.13.0
MODEL ?=
QUANT ?=
OUT ?=
MODEL_ARGS = $(if $(MODEL),--model $(MODEL)) $(if $(OUT),--out $(OUT)) --backend $(BACKEND)

.PHONY: help install install-convert install-test ccache demo test lint build doctor convert imatrix quantize clean-venv

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	@touch $@

# Converting checkpoints needs torch and transformers. torch is pinned first (TORCH_VERSION=...
# to change it): 2.13.0 is the CPU build these machines keep on disk; an open range would pull
# a multi-GB CUDA build.
$(VENV)/.installed-convert: $(VENV)/.installed
	$(PY) -m pip install --quiet 'torch==$(TORCH_VERSION)'
	$(PY) -m pip install --quiet -e '.[convert]'
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed-convert
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed  ## create .venv and install the harness
install-convert: $(VENV)/.installed-convert  ## ... plus what convert_hf_to_gguf.py needs (torch, transformers)
install-test: $(VENV)/.installed-test  ## ... plus the test tools

ccache:
	@command -v ccache >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -qq ccache >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq ccache >/dev/null)) || echo "ccache not installed (optional)"; }

DEMO_PROMPT ?= The three primary colors are

demo: install ccache  ## fresh machine, no GitHub: build recipes/demo.yaml (CPU, proven by a decode), then serve and bench SmolLM2-135M
	eval "$$($(PY) -m harness.offline $(OFFLINE_CACHE))" && $(HARNESS) build recipes/demo.yaml
	@builds/demo/cpu/bin/llama-server --version
	@model="$$($(PY) -m harness.smoke.smollm2)" && \
	  $(HARNESS) serve recipes/demo.yaml --model "$$model" --prompt "$(DEMO_PROMPT)" --n-predict 32 && \
	  $(HARNESS) bench recipes/demo.yaml --model "$$model" --spec none,ngram-mod --categories code,quote \
	    --n-predict 64 --out reports/bench/demo

build: install  ## harness build RECIPE=... [BACKEND=cpu]
	$(HARNESS) build $(RECIPE) --backend $(BACKEND)

doctor: install  ## which backends this machine can build
	$(HARNESS) doctor

convert: install-convert  ## MODEL=<repo-or-dir> [RECIPE=recipes/demo.yaml]: download and convert to GGUF with the recipe's build
	$(HARNESS) convert $(RECIPE) $(MODEL_ARGS)

imatrix: install-convert  ## MODEL=<repo-or-dir>: convert, then the importance matrix over data/calibration.txt
	$(HARNESS) imatrix $(RECIPE) $(MODEL_ARGS)

quantize: install-convert  ## MODEL=<repo-or-dir> [QUANT=Q4_K_M] [RECIPE=recipes/demo.yaml] [OUT=models/<name>]: the whole pipeline, cached
	$(HARNESS) quantize $(RECIPE) $(MODEL_ARGS) $(if $(QUANT),--type $(QUANT))

test: install-test ccache  ## install and run the whole test suite (builds llama.cpp once, cached outside the checkout)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install-test  ## ruff and mypy --strict
	$(VENV)/bin/ruff check harness tests
	$(VENV)/bin/mypy harness

clean-venv:
	rm -rf $(VENV)
