# edgeweave — one entry point for set-up, running and testing.
SHELL := /bin/bash
PY ?= .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: lock setup run test test-unit test-integration test-e2e lint crds chart-lint bench clean stop

## setup: Debian packages, Python venv, Go-built Kubernetes binaries (cached outside the clone)
setup:
	@bash hack/setup.sh

## run: local control plane + simulated edge fleet + CRDs + operator (Ctrl-C stops all of it)
run: setup
	@bash hack/run.sh

## test: everything CI runs (installs and starts what it needs)
test: setup
	@bash hack/test.sh

test-unit:
	$(PY) -m pytest -q tests/unit

test-integration:
	$(PY) -m pytest -q tests/integration

test-e2e:
	$(PY) -m pytest -q tests/e2e

lint:
	$(PY) -m ruff check operator tests bench
	.venv/bin/lint-imports

## lock: pin every installed package (constraints.txt) to what the venv has now; run after changing pyproject.toml
lock:
	{ echo "# Exact versions CI tested: hack/setup.sh installs with -c constraints.txt. Regenerate with \`make lock\` after changing pyproject.toml."; \
	  .venv/bin/pip freeze --exclude-editable | grep -v '^-e\|^edgeweave'; } > constraints.txt

crds:
	$(PY) -m edgeweave.cli crds --out crds --chart charts/edgeweave/crds

stop:
	@python3 hack/devcluster.py stop

clean: stop
	rm -rf .run build

# Each capability adds its own targets (bench-<name>, build steps) in mk/<name>.mk.
-include mk/*.mk
