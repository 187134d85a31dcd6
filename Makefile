# Herald: every target sets itself up (a .venv with the project, and the dev tools where needed).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.13: the pyenv shim (.python-version) or a python3.13 on PATH.
PYTHON ?= $(shell command -v python3.13 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The layer's pinned dependencies (`make lock`): the layer installs them, and the virtualenv is held to them
# (pip -c, hashes stripped: pip takes no hashes in a constraints file). A change to any of these files
# changes HASH, so the next target re-installs.
LOCK := layers/herald/requirements.lock
CONSTRAINTS := $(VENV)/constraints.txt
# The development environment's exact versions (`make lock`: moto, sam, uvicorn, pytest and the rest, resolved
# with the layer's pins), so that a fresh clone installs the tools the suite ran with: the local stack patches
# moto's internals (herald.local.moto_fixes), and a newer moto within pyproject.toml's range may move them.
DEV_LOCK := requirements-dev.lock
HASH := $(shell cat pyproject.toml layers/herald/requirements.txt $(LOCK) $(DEV_LOCK) 2>/dev/null | sha1sum | cut -c1-12)
# `make run` needs the local stack only; the tools for tests, lint and build come with `make test`.
LOCAL_STAMP := $(VENV)/.installed-local-$(HASH)
DEV_STAMP := $(VENV)/.installed-dev-$(HASH)
# sam rejects pyenv shims: put the virtualenv's real 3.13 interpreter first on PATH.
SAM_ENV := PATH="$(CURDIR)/$(BIN):$$PATH" SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1}

.PHONY: help venv run test lint build bench receiver clean lock

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 13) else "Herald needs Python 3.13+: found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(CONSTRAINTS): $(LOCK) | $(BIN)/python
	sed -e '/^ *--hash=/d' -e 's/ *\\$$//' $(LOCK) > $@

$(LOCAL_STAMP): $(CONSTRAINTS) $(DEV_LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -c $(DEV_LOCK) -e '.[local]'
	@rm -f $(VENV)/.installed-local-* && touch $@

$(DEV_STAMP): $(CONSTRAINTS) $(DEV_LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -c $(DEV_LOCK) -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@ $(LOCAL_STAMP)

venv: $(DEV_STAMP) ## Create .venv and install Herald with its dev tools

run: $(LOCAL_STAMP) ## Run the whole stack locally (API + delivery worker + embedded AWS)
	$(BIN)/python -m herald.local

receiver: $(LOCAL_STAMP) ## Run the sample subscriber that verifies signatures (SECRET=whsec_... PORT=9000 FAIL_FIRST=0)
	$(BIN)/python -m herald.local.receiver --port $${PORT:-9000} --fail-first $${FAIL_FIRST:-0} $${SECRET:+--secret "$$SECRET"}

test: $(DEV_STAMP) lint build ## Lint, build (sam build: the cold-start tests run the build output), then the whole test suite
	$(BIN)/python -m pytest

lint: $(DEV_STAMP) ## ruff, mypy, sam validate --lint, cfn-lint with the serverless rules
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(SAM_ENV) $(BIN)/sam validate --lint
	$(BIN)/cfn-lint template.yaml -a cfn_lint_serverless.rules

build: $(DEV_STAMP) ## sam build (no Docker needed)
	$(SAM_ENV) $(BIN)/sam build

bench: $(DEV_STAMP) build ## Figures from the sam build output: benchmarks/results/ (results.json, chart) and the README's table
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.readme

# uv resolves for the layer's target (any platform, Python 3.13) without that interpreter, and records the
# hashes of every wheel of each pinned version. It first resolves the whole development environment
# ($(DEV_LOCK), for this interpreter), so the layer's pins also fit the tools installed beside them (sam,
# moto...). Both steps keep what is pinned now wherever it still fits (uv prefers the versions already in its
# output file; a missing $(DEV_LOCK) starts from what is installed), unless UPGRADE=1.
lock: | $(BIN)/python ## Pin the dependencies (requirements.txt -> requirements.lock, and requirements-dev.lock; UPGRADE=1 to move pins)
	$(BIN)/python -m pip install --quiet 'uv>=0.9,<1'
	test -f $(DEV_LOCK) || $(BIN)/python -m pip freeze --quiet --exclude-editable > $(DEV_LOCK)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python $(BIN)/python --quiet --no-annotate \
		--custom-compile-command 'make lock' --output-file $(DEV_LOCK) $(if $(UPGRADE),--upgrade)
	cd layers/herald && $(CURDIR)/$(BIN)/uv pip compile requirements.txt --constraint $(CURDIR)/$(DEV_LOCK) \
		--quiet --universal --python-version 3.13 --generate-hashes --custom-compile-command 'make lock' \
		--output-file requirements.lock $(if $(UPGRADE),--upgrade)

clean: ## Remove build output and caches
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
