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
# redis-server: the cluster tests start their own Redis (never one that runs already)
APT_TEST_PACKAGES := espeak-ng sox chromium systemd redis-server
# install-service: where things go; DESTDIR stages everything under another root (packaging).
PREFIX     ?= /opt/subwatch
SYSCONFDIR ?= /etc
UNITDIR    ?= /etc/systemd/system
DATADIR    ?= /srv/subwatch
# The journal's folder: the unit's StateDirectory= (move it only to stage or to test).
STATEDIR   ?= /var/lib/subwatch
# The account the unit runs as (User=, Group=), created when missing (not when staging).
SERVICE_USER ?= subwatch

.PHONY: run test lint test-soak bench clean apt-test-deps install-service install-service-files

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

test: $(VENV)/.test-installed apt-test-deps lint
	$(PY) -m pytest -p no:cacheprovider

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check daemon tests bench testkit
	$(VENV)/bin/mypy daemon

test-soak: $(VENV)/.test-installed apt-test-deps
	$(PY) -m pytest -p no:cacheprovider -m soak

bench: $(VENV)/.test-installed apt-test-deps
	$(PY) -P bench/overhead.py
	$(PY) -P bench/scaling.py
	$(PY) -P bench/batch.py
	$(PY) -P bench/many_files.py --workers 2
	$(PY) -P bench/queue_depth.py
	$(PY) -P bench/responsiveness.py
	$(PY) -P bench/scanning.py

install-service:
	install -d $(DESTDIR)$(PREFIX)
	$(PYTHON) -m venv $(DESTDIR)$(PREFIX)/.venv
	$(DESTDIR)$(PREFIX)/.venv/bin/python -m pip install --quiet --upgrade pip
	$(DESTDIR)$(PREFIX)/.venv/bin/python -m pip install --quiet '.[tiny-model]'
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/README.md
	@if [ -n "$(DESTDIR)" ]; then \
	  grep -rlI -- "$(DESTDIR)" $(DESTDIR)$(PREFIX)/.venv/bin $(DESTDIR)$(PREFIX)/.venv/pyvenv.cfg \
	    | xargs -r sed -i "s|$(DESTDIR)||g"; fi
	@$(MAKE) --no-print-directory install-service-files

# The unit, the config and the folders, without the venv. The config may hold the HTTP token and
# the journal lists the whole library: config 0640 root:SERVICE_USER, its folder, the state and
# data folders 0750 (owned by SERVICE_USER). With DESTDIR (packaging) the modes only: owners and
# the account are the package's to make.
install-service-files:
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PREFIX)/systemd
	install -d -m 0750 $(DESTDIR)$(SYSCONFDIR)/subwatch $(DESTDIR)$(STATEDIR) \
	  $(DESTDIR)$(DATADIR) $(DESTDIR)$(DATADIR)/inbox $(DESTDIR)$(DATADIR)/outbox
	sed -e 's|/opt/subwatch|$(PREFIX)|g' -e 's|/srv/subwatch|$(DATADIR)|g' \
	  -e 's|/etc/subwatch|$(SYSCONFDIR)/subwatch|g' -e 's|^User=subwatch$$|User=$(SERVICE_USER)|' \
	  -e 's|^Group=subwatch$$|Group=$(SERVICE_USER)|' systemd/subwatch.service \
	  > $(DESTDIR)$(UNITDIR)/subwatch.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/subwatch.service
	install -m 0644 systemd/README.md systemd/*.example $(DESTDIR)$(PREFIX)/systemd/
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/subwatch/config.toml ]; then \
	  sed 's|/srv/subwatch|$(DATADIR)|g' systemd/config.toml > $(DESTDIR)$(SYSCONFDIR)/subwatch/config.toml; \
	else echo "keeping the existing $(SYSCONFDIR)/subwatch/config.toml"; fi
	chmod 0640 $(DESTDIR)$(SYSCONFDIR)/subwatch/config.toml
	@if [ -z "$(DESTDIR)" ]; then \
	  getent group $(SERVICE_USER) >/dev/null || $(SUDO) groupadd --system $(SERVICE_USER); \
	  id -u $(SERVICE_USER) >/dev/null 2>&1 || $(SUDO) useradd --system --gid $(SERVICE_USER) \
	    --home-dir $(STATEDIR) --no-create-home --shell /usr/sbin/nologin $(SERVICE_USER); \
	  $(SUDO) chown root:$(SERVICE_USER) $(SYSCONFDIR)/subwatch $(SYSCONFDIR)/subwatch/config.toml; \
	  $(SUDO) chown $(SERVICE_USER):$(SERVICE_USER) $(STATEDIR) $(DATADIR) $(DATADIR)/inbox \
	    $(DATADIR)/outbox; \
	  $(SUDO) systemctl daemon-reload 2>/dev/null || true; \
	  echo "installed; start with: sudo systemctl enable --now subwatch"; \
	else echo "staged under $(DESTDIR)"; fi

clean:
	rm -rf $(VENV) bench/.venv-cli state .pytest_cache
