# Everything a newcomer needs: `make run` serves the API locally, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
TOOLS := .venv-tools
PY := $(VENV)/bin/python
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_EC2_METADATA_DISABLED := true
export SAM_CLI_TELEMETRY := 0

.PHONY: run events test test-fast test-docs test-browser browser-deps lint format typecheck cfn-lint build bench chaos docs clean venv tools

venv: $(VENV)/.installed
tools: $(TOOLS)/.installed

# pip's own lines, one per package, show progress on a first install (a few minutes).
# (grep finds nothing when all is installed already: that is not a failure.)
PIP_PROGRESS := { grep --line-buffered -E '^(Collecting|Successfully installed)' || true; } | sed -u 's/^/    /'

$(VENV)/.installed: requirements-dev.txt layers/shared/requirements.txt cli/pyproject.toml
	@echo "==> Installing the service's dependencies into $(VENV) (first run only: a few minutes)"
	$(PYTHON) -m venv $(VENV)
	set -o pipefail; $(VENV)/bin/pip install --disable-pip-version-check --progress-bar off \
		-r requirements-dev.txt | $(PIP_PROGRESS)
	touch $@

$(TOOLS)/.installed: requirements-tools.txt
	@echo "==> Installing cfn-lint and the SAM CLI into $(TOOLS) (first run only: a few minutes)"
	$(PYTHON) -m venv $(TOOLS)
	set -o pipefail; $(TOOLS)/bin/pip install --disable-pip-version-check --progress-bar off \
		-r requirements-tools.txt | $(PIP_PROGRESS)
	touch $@

## run: the local stack (moto server + API on 127.0.0.1:8000 + dispatcher + DLQ worker);
## DEVSTACK_WORKERS=off leaves the work to functions you invoke with `sam local invoke`
run: venv
	$(PY) -m devstack

## events: sample events bound to live objects of the running stack, in events/local/<Function>/
events: venv
	$(PY) -m devstack.events

## test: lint, type checks, template checks and the whole test suite
## (three workers: the local-stack tests wait on their stack while the others compute; the
## local-stack module keeps to one worker and one stack)
test: lint
	$(PY) -m pytest -n 3 --dist loadgroup

## test-fast: the edit-test loop, under a minute: everything on the in-memory fakes, no lint
test-fast: venv
	$(PY) -m pytest -q -n auto --maxprocesses 4 -m "not moto and not e2e"

## test-docs: every runnable example of README.md and docs/*.md against the local stack, waiting as
## a reader does (about a minute); `make test` runs the README's walk-through and docs/*.md only
test-docs: venv
	WORKFLOWS_DOC_EXAMPLES=all $(PY) -m pytest -p no:xdist -q -m docs tests/e2e/test_doc_examples.py

## browser-deps: what the console's browser tests need: Debian's chromium (apt-get, as root) and
## Playwright's Python package in $(VENV), which drives that chromium (it downloads no browser)
browser-deps: $(VENV)/.browser-installed
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "make browser-deps: chromium is missing; as root: apt-get install -y --no-install-recommends chromium" >&2; \
			exit 1; \
		fi; \
		echo "==> Installing Debian's chromium (first run only)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	fi

$(VENV)/.browser-installed: requirements-browser.txt $(VENV)/.installed
	set -o pipefail; $(VENV)/bin/pip install --disable-pip-version-check --progress-bar off \
		-r requirements-browser.txt | $(PIP_PROGRESS)
	touch $@

## test-browser: the console in headless Chromium against the local stack (not part of `make test`)
test-browser: browser-deps
	WORKFLOWS_BROWSER_TESTS=1 $(PY) -m pytest -p no:xdist -q tests/browser

lint: venv tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	PYTHONPATH=layers/shared $(VENV)/bin/lint-imports --no-logo
	$(TOOLS)/bin/cfn-lint template.yaml
	$(TOOLS)/bin/sam validate --lint --template template.yaml

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## build: sam build (layer with pinned dependencies + the five functions, all with their bytecode)
## into .aws-sam/<ARCH>/build, then a check that every module has bytecode the runtime loads;
## ARCH=x86_64 to build for x86_64 (the template's Architecture parameter, arm64 by default)
ARCH ?= arm64
# Each instruction set has its own build folder, cache and build.toml, so the x86_64 build that
# `sam local invoke` uses never overwrites the arm64 one that samconfig.toml deploys.
build: tools
	@case "$(ARCH)" in arm64 | x86_64) ;; *) echo "make build: ARCH must be arm64 or x86_64, not '$(ARCH)'" >&2; exit 2 ;; esac
	PATH="$$(dirname $$(command -v $(PYTHON))):$$PATH" $(TOOLS)/bin/sam build --template template.yaml \
		--build-dir .aws-sam/$(ARCH)/build --cache-dir .aws-sam/$(ARCH)/cache \
		--parameter-overrides Architecture=$(ARCH)
	$(PYTHON) layers/shared/sam/check_bytecode.py .aws-sam/$(ARCH)/build/*/

## docs: rewrite the step reference in docs/steps.md from the step models (a test fails until it is)
docs: venv
	PYTHONPATH=layers/shared $(PY) -m docsgen

## chaos: the local stack (emulator, API, workers: three processes) under kill -9 and SIGSTOP
## while clients submit, retry, approve and cancel; then every promise checked (docs/chaos.md).
## About 4 minutes; CHAOS=full (or CHAOS_ARGS=--full) for the 12-minute run
CHAOS_ARGS ?= $(if $(filter full,$(CHAOS)),--full)
chaos: venv
	$(PY) -m chaos $(CHAOS_ARGS)

## bench: the performance budget (docs/benchmarks.md); BENCH_ARGS=--quick for a shorter run
## (the SAM CLI too: the cold-start section measures the sam build output)
bench: venv tools
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .aws-sam .pytest_cache .mypy_cache .ruff_cache
