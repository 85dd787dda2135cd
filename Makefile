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

.PHONY: help install demo test lint build doctor clean-venv

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed  ## create .venv and install the harness with its test tools

ccache:
	@command -v ccache >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get install -y -qq ccache >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq ccache >/dev/null)) || echo "ccache not installed (optional)"; }

demo: install ccache  ## fresh machine, no GitHub: mirror llama.cpp from PyPI's llama-cpp-python sdist, build recipes/demo.yaml for CPU
	eval "$$($(PY) -m harness.offline $(OFFLINE_CACHE))" && $(HARNESS) build recipes/demo.yaml
	@builds/demo/cpu/bin/llama-server --version

build: install  ## harness build RECIPE=... [BACKEND=cpu]
	$(HARNESS) build $(RECIPE) --backend $(BACKEND)

doctor: install  ## which backends this machine can build
	$(HARNESS) doctor

test: install ccache  ## install and run the whole test suite (builds llama.cpp once, cached outside the checkout)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install  ## ruff and mypy --strict
	$(VENV)/bin/ruff check harness tests
	$(VENV)/bin/mypy harness

clean-venv:
	rm -rf $(VENV)
