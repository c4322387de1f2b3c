# subwatch: the two README commands, `make run` and `make test`, on a fresh Debian/Ubuntu machine.
# Everything they need is installed here: the venv, pip packages, and apt packages when missing.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
CONFIG ?= config.toml
# torch must come from this exact pin: it is the CPU build; any other spelling pulls CUDA wheels.
TORCH  := torch==2.13.0
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_TEST_PACKAGES := espeak-ng sox chromium

.PHONY: run test test-soak bench clean apt-test-deps

$(VENV)/bin/activate:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { echo "installing python3-venv"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(VENV)/bin/activate
	$(PIP) install --quiet -e '.[tiny-model]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(VENV)/bin/activate
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[all]'
	touch $@ $(VENV)/.run-installed

apt-test-deps:
	@missing=""; for p in $(APT_TEST_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

run: $(VENV)/.run-installed
	$(VENV)/bin/subwatch run --config $(CONFIG)

test: $(VENV)/.test-installed apt-test-deps
	$(PY) -m pytest -p no:cacheprovider

test-soak: $(VENV)/.test-installed apt-test-deps
	$(PY) -m pytest -p no:cacheprovider -m soak

bench: $(VENV)/.test-installed apt-test-deps
	$(PY) bench/overhead.py

clean:
	rm -rf $(VENV) state .pytest_cache
