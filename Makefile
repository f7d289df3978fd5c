# ldpk developer tasks. Only PyPI is used.
#
#   make demo    create .venv (if needed) and run `ldpk demo --out ldpk-demo`
#   make test    create .venv (if needed) and run the test suite (2 workers)
#   make test-latest
#                the test suite against the newest releases that pyproject.toml allows, in
#                a separate venv (.venv/latest, upgraded on every run, no constraints)
#   make lint    ruff check + ruff format --check
#   make bench   install the bench extras and run every benchmarks/*.py
#   make notebooks
#                install the notebooks extra, run every examples/*.ipynb at full size
#                (LDPK_NOTEBOOK_SIZE=full: about 16 min in all on 2 CPU cores) in the venv's own
#                kernel and write HTML copies to examples/output/ (gitignored); the test
#                suite runs the same notebooks at small size (tests/test_notebooks.py)
#   make clean   remove build outputs, caches and examples/output (keeps .venv)
#
# The interpreter used to create .venv can be given explicitly: make test PYTHON=/path/to/python3.12
#
# .venv holds exactly the tested set: it is installed with `pip install -c constraints.txt`
# (every package pinned; CI runs `make test` on a clean clone, so it tests that set too) and
# re-installed whenever pyproject.toml or constraints.txt changes. pyproject.toml itself only
# bounds the JAX stack to the tested minor series; `make test-latest` checks the newest
# releases inside those bounds before constraints.txt is refreshed (see its header).

SHELL := /bin/bash
VENV := .venv
VENV_LATEST := $(VENV)/latest
CONSTRAINTS := constraints.txt
VPY := $(VENV)/bin/python
LINT_PATHS := $(wildcard src tests benchmarks examples)
PYTEST_ARGS ?=
NOTEBOOKS_OUT := examples/output
# Seconds one notebook cell may run under `make notebooks`.
NOTEBOOK_TIMEOUT ?= 3600

# Find a Python >= 3.12 that actually runs (a pyenv shim such as `python3.12` may exist
# and still fail when pyenv's selected version is older): python3.12, python3.13, then
# pyenv's installed 3.12.*, 3.13.* (newest patch first). Prints sys.executable, or nothing.
FIND_PYTHON := \
	check='import sys; assert sys.version_info >= (3, 12)'; \
	for cmd in python3.12 python3.13; do \
	  if command -v "$$cmd" >/dev/null 2>&1 && "$$cmd" -c "$$check" >/dev/null 2>&1; then \
	    "$$cmd" -c 'import sys; print(sys.executable)'; exit 0; \
	  fi; \
	done; \
	if command -v pyenv >/dev/null 2>&1; then \
	  root=$$(pyenv root 2>/dev/null); \
	  for minor in 3.12 3.13; do \
	    for p in $$(ls -d "$$root"/versions/$$minor.*/bin/python3 2>/dev/null | sort -rV); do \
	      if "$$p" -c "$$check" >/dev/null 2>&1; then echo "$$p"; exit 0; fi; \
	    done; \
	  done; \
	fi

# Evaluated lazily, once, and only by targets that need it (`make clean` never searches).
PYTHON ?= $(eval PYTHON := $(shell $(FIND_PYTHON)))$(PYTHON)

.PHONY: venv .venv demo test test-latest lint bench notebooks clean print-python

venv .venv: $(VENV)/.installed

NO_PYTHON := echo "ldpk needs Python >= 3.12: install python3.12 or pyenv (then: pyenv install 3.12)," \
	       "or run make with PYTHON=/path/to/python3.12" >&2; exit 1

$(VPY):
	@if [ -z "$(PYTHON)" ]; then $(NO_PYTHON); fi
	"$(PYTHON)" -m venv $(VENV)

# Re-installs whenever pyproject.toml or constraints.txt changes.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(VPY)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install -c $(CONSTRAINTS) -e ".[test]"
	@touch $@

$(VENV)/.installed-bench: pyproject.toml $(CONSTRAINTS) $(VENV)/.installed
	$(VPY) -m pip install -c $(CONSTRAINTS) -e ".[test,bench]"
	@touch $@

$(VENV)/.installed-notebooks: pyproject.toml $(CONSTRAINTS) $(VENV)/.installed
	$(VPY) -m pip install -c $(CONSTRAINTS) -e ".[test,notebooks]"
	@touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/ldpk demo --out ldpk-demo

test: $(VENV)/.installed
	@$(VPY) -m pytest -n 2 -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): treated as a failure" >&2; fi; \
	exit $$rc

# The newest releases pyproject.toml allows (upgraded on every run): what `pip install ldpk`
# would give a user today. Not part of CI, which tests the pinned set.
test-latest:
	@if [ ! -x $(VENV_LATEST)/bin/python ]; then \
	  if [ -z "$(PYTHON)" ]; then $(NO_PYTHON); fi; \
	  "$(PYTHON)" -m venv $(VENV_LATEST); \
	fi
	$(VENV_LATEST)/bin/python -m pip install --upgrade pip
	$(VENV_LATEST)/bin/python -m pip install --upgrade --upgrade-strategy eager -e ".[test]"
	@$(VENV_LATEST)/bin/python -m pip freeze --exclude-editable > $(VENV_LATEST)/freeze.txt; \
	echo "tested set: $(VENV_LATEST)/freeze.txt (diff it against $(CONSTRAINTS))"
	@$(VENV_LATEST)/bin/python -m pytest -n 2 -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): treated as a failure" >&2; fi; \
	exit $$rc

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

bench: $(VENV)/.installed-bench
	@set -e; found=0; \
	for f in benchmarks/*.py; do \
	  [ -e "$$f" ] || continue; found=1; \
	  echo "== $$f"; $(VPY) "$$f"; \
	done; \
	if [ $$found -eq 0 ]; then echo "no benchmarks/*.py found" >&2; fi

# Full size, one notebook after another, each in a fresh kernel of the venv's python
# (JUPYTER_PATH puts the venv's python3 kernel spec before any user or system one).
notebooks: $(VENV)/.installed-notebooks
	@mkdir -p $(NOTEBOOKS_OUT)
	@set -e; found=0; \
	for nb in examples/*.ipynb; do \
	  [ -e "$$nb" ] || continue; found=1; start=$$SECONDS; \
	  echo "== $$nb"; \
	  JUPYTER_PATH="$(abspath $(VENV))/share/jupyter" LDPK_NOTEBOOK_SIZE=full \
	    $(VPY) -m nbconvert --to html --execute --ExecutePreprocessor.kernel_name=python3 \
	    --ExecutePreprocessor.timeout=$(NOTEBOOK_TIMEOUT) --output-dir $(NOTEBOOKS_OUT) "$$nb"; \
	  echo "   $$((SECONDS - start)) s"; \
	done; \
	if [ $$found -eq 0 ]; then echo "no examples/*.ipynb found" >&2; exit 1; fi

clean:
	rm -rf dist build ldpk-demo .pytest_cache .ruff_cache src/*.egg-info $(NOTEBOOKS_OUT)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

print-python:
	@echo "$(PYTHON)"
