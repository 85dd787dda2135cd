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
MIN_PYTEST_ARGS ?=
TORCH_VERSION ?= 2.13.0
MODEL ?=
QUANT ?=
OUT ?=
MODEL_ARGS = $(if $(MODEL),--model $(MODEL)) $(if $(OUT),--out $(OUT)) --backend $(BACKEND)

.PHONY: help install install-convert install-test ccache registry demo test lint test-min-versions build doctor convert imatrix quantize clean-venv

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
	$(PY) -m pip install --quiet -e '.[test-convert]'
	@touch $@

install: $(VENV)/.installed  ## create .venv and install the harness
install-convert: $(VENV)/.installed-convert  ## ... plus what convert_hf_to_gguf.py needs (torch, transformers)
install-test: $(VENV)/.installed-test  ## ... plus the test tools

# ccache is optional (it caches compiles).  When it is missing: at a terminal, ask before running
# apt-get; otherwise only print the command, unless CCACHE_INSTALL=yes or CI=true (CI's clean
# machines rely on it to stay inside their time budget) say to install it.
CCACHE_INSTALL ?=
ccache:  ## install ccache if missing: asks first (CCACHE_INSTALL=yes: without asking)
	@command -v ccache >/dev/null && exit 0; \
	sudo=$$([ "$$(id -u)" = 0 ] || echo "sudo "); cmd="$${sudo}apt-get install -y ccache"; \
	if ! command -v apt-get >/dev/null; then echo "ccache not installed (optional): install it with your package manager"; exit 0; fi; \
	if [ "$(CCACHE_INSTALL)" != yes ] && [ "$${CI:-}" != true ]; then \
		if [ -t 0 ]; then read -r -p "ccache is not installed (optional: caches compiles). Run '$$cmd'? [y/N] " answer; \
			case "$$answer" in [yY]*) ;; *) echo "not installed; later: $$cmd"; exit 0;; esac; \
		else echo "ccache not installed (optional: caches compiles): $$cmd  (or make ccache CCACHE_INSTALL=yes)"; exit 0; fi; \
	fi; \
	echo "+ $$cmd"; $$cmd -qq >/dev/null 2>&1 || { $${sudo}apt-get update -qq && $$cmd -qq >/dev/null; } || echo "ccache install failed (optional)"

# The binary cache's tests run a real OCI registry on loopback: Debian's docker-registry
# (distribution 2.8) and htpasswd (apache2-utils) for its basic auth.  Installed like ccache:
# asks at a terminal, else only says the command unless REGISTRY_INSTALL=yes or CI=true.
REGISTRY_INSTALL ?=
registry:  ## install docker-registry and htpasswd for the cache tests, if missing (REGISTRY_INSTALL=yes: without asking)
	@command -v docker-registry >/dev/null && command -v htpasswd >/dev/null && exit 0; \
	sudo=$$([ "$$(id -u)" = 0 ] || echo "sudo "); cmd="$${sudo}apt-get install -y docker-registry apache2-utils"; \
	if ! command -v apt-get >/dev/null; then echo "docker-registry not installed (the cache tests skip): install distribution's registry and htpasswd"; exit 0; fi; \
	if [ "$(REGISTRY_INSTALL)" != yes ] && [ "$${CI:-}" != true ]; then \
		if [ -t 0 ]; then read -r -p "docker-registry is not installed (the cache tests need it). Run '$$cmd'? [y/N] " answer; \
			case "$$answer" in [yY]*) ;; *) echo "not installed; later: $$cmd"; exit 0;; esac; \
		else echo "docker-registry not installed (the cache tests skip): $$cmd  (or make registry REGISTRY_INSTALL=yes)"; exit 0; fi; \
	fi; \
	echo "+ $$cmd"; $$cmd -qq >/dev/null 2>&1 || { $${sudo}apt-get update -qq && $$cmd -qq >/dev/null; } || echo "docker-registry install failed (the cache tests skip)"

DEMO_PROMPT ?= The three primary colors are

demo: install ccache  ## fresh machine, no GitHub: build recipes/demo.yaml (CPU, proven by a decode), then serve and bench SmolLM2-135M
	eval "$$($(PY) -m harness.source.sdist_upstream $(OFFLINE_CACHE))" && $(HARNESS) build recipes/demo.yaml
	@builds/demo/cpu/bin/llama-server --version
	@model="$$($(PY) -m harness.smoke.smollm2)" && \
	  $(HARNESS) serve recipes/demo.yaml --model "$$model" --prompt "$(DEMO_PROMPT)" --n-predict 32 && \
	  $(HARNESS) bench recipes/demo.yaml --model "$$model" --spec none,ngram-mod --categories code,quote \
	    --n-predict 64 --repeat 3 --out reports/bench/demo

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

.PHONY: verify serve bench nightly
GGUF ?=
SPEC ?=
SWEEP ?=
ARGS ?=
RECIPES ?= $(RECIPE)
REPORT ?= reports/nightly
# serve and bench use the recipe's first build unless BACKEND is given on the command line
BACKEND_ARG = $(if $(filter file,$(origin BACKEND)),,--backend $(BACKEND))
NEED_GGUF = @test -n "$(GGUF)" || { echo "usage: make $@ GGUF=path/to/model.gguf [RECIPE=$(RECIPE)]"; exit 2; }

verify: install  ## [RECIPE=...] [BACKEND=cpu]: rebuild from scratch elsewhere, compare every file with the manifest
	$(HARNESS) verify $(RECIPE) --backend $(BACKEND)

serve: install  ## GGUF=<file> [RECIPE=...] [ARGS='--mtp']: the recipe's llama-server on that model; Ctrl-C stops it
	$(NEED_GGUF)
	$(HARNESS) serve $(RECIPE) --model $(GGUF) $(BACKEND_ARG) $(ARGS)

bench: install  ## GGUF=<file> [SPEC=none,ngram-mod,mtp] [SWEEP=draft-n-max=1..6]: tok/s and acceptance per task category
	$(NEED_GGUF)
	$(HARNESS) bench $(RECIPE) --model $(GGUF) $(BACKEND_ARG) $(if $(SPEC),--spec $(SPEC)) $(if $(SWEEP),--sweep $(SWEEP)) $(ARGS)

nightly: install  ## [RECIPES='recipes/a.yaml ...'] [REPORT=reports/nightly]: re-lock, rebuild, smoke-test, adopt what passes
	$(HARNESS) nightly $(RECIPES) --report $(REPORT)

# lint and the minimum-versions run go beside the suite (whose llama.cpp build sets the pace), so
# they add no time; their output goes to CHECKS_LOG, and its end is shown when they fail.
CHECKS_LOG ?= .test-checks.log
test: install-test  ## the whole test suite (builds llama.cpp once, cached outside the checkout), and beside it lint and the unit tests at the minimum versions
	@$(MAKE) --no-print-directory ccache CCACHE_INSTALL=yes
	@$(MAKE) --no-print-directory registry REGISTRY_INSTALL=yes
	@echo "+ make lint test-min-versions > $(CHECKS_LOG)  (beside the suite)"
	@$(MAKE) --no-print-directory -k lint test-min-versions > $(CHECKS_LOG) 2>&1 & checks=$$!; \
	echo "+ $(PY) -m pytest -q $(PYTEST_ARGS)"; $(PY) -m pytest -q $(PYTEST_ARGS); suite=$$?; \
	wait $$checks; rc=$$?; \
	if [ $$rc -ne 0 ]; then echo "make lint test-min-versions failed (exit $$rc); the end of $(CHECKS_LOG):"; \
		tail -n 40 $(CHECKS_LOG); else echo "lint and the unit tests at the minimum versions passed ($(CHECKS_LOG))"; fi; \
	[ $$suite -eq 0 ] && [ $$rc -eq 0 ]

lint: install-test  ## ruff and mypy --strict (the import layering is a test: tests/test_layering.py)
	$(VENV)/bin/ruff check harness tests
	$(VENV)/bin/mypy harness

# The declared floors, tested: a venv of its own with every dependency at its `>=` version
# (tests/min_versions.py writes the pins for pip's --constraint), running the unit tests only.
MIN_VENV ?= .venv-min
$(MIN_VENV)/.installed: pyproject.toml tests/min_versions.py
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(PYTHON) tests/min_versions.py > $(MIN_VENV)/constraints.txt
	$(MIN_VENV)/bin/python -m pip install --quiet --constraint $(MIN_VENV)/constraints.txt -e . 'pytest>=8' 'pytest-timeout>=2.2'
	@touch $@

test-min-versions: $(MIN_VENV)/.installed  ## the unit tests with every dependency at its declared minimum version (in .venv-min)
	$(MIN_VENV)/bin/python -m pytest -q -m "unit and not convert" -p no:cacheprovider $(MIN_PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV) $(MIN_VENV)
