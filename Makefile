# Developer and CI entry points. `make test` is what .ci/run calls.

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# Touched after a successful install; newer requirement files or pyproject.toml make it stale.
INSTALLED := $(VENV)/.installed

.PHONY: setup test demo clean rsync test-tools

setup: rsync $(INSTALLED)

rsync:
	scripts/ensure-command rsync rsync

# Wanted by some tests only, which skip with the reason when it cannot be had.
test-tools:
	scripts/ensure-command btrfs btrfs-progs optional

$(VENV_PYTHON):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): requirements.txt requirements-dev.txt pyproject.toml | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	$(VENV_PYTHON) -m pip install --disable-pip-version-check --no-deps -q -e .
	touch $@

test: setup test-tools
	$(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV_PYTHON) examples/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache demo-data
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
