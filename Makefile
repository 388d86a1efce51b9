# kafka-cdp — the two commands: `make demo` (main job) and `make test` (lint + whole suite).
# Both set up everything on a fresh Debian machine: the system tools (apt-get, as root or
# through sudo) and a virtualenv with the project and its extras.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

# Debian packages of the real parts the demo and the tests drive (nbdkit's Python plugin
# without recommends: they pull in a large media stack; prometheus for promtool, which
# checks and unit-tests infra/prometheus/kcdp-rules.yml; stunnel4 terminates the TLS of
# kcdp broker --tls-cert).
DEB_PACKAGES := nbdkit nbdkit-plugin-python qemu-utils libnbd-bin nbdfuse fuse3 \
                e2fsprogs util-linux sqlite3 restic zstd prometheus stunnel4
DEB_TOOLS    := nbdkit qemu-io qemu-img nbdcopy nbdfuse fusermount3 mkfs.ext4 e2fsck \
                losetup fsfreeze sqlite3 restic promtool stunnel4

.PHONY: demo test lint unit bench system-deps clean

system-deps:
	@missing=""; for t in $(DEB_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	nbdkit python --version >/dev/null 2>&1 || missing="$$missing nbdkit-python-plugin"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "need root or sudo to install: $(DEB_PACKAGES)" >&2; exit 1; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(DEB_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,embedded]'
	touch $(STAMP)

demo: system-deps $(STAMP)
	$(BIN)/kcdp demo

lint: $(STAMP)
	$(BIN)/ruff check schemas connectors streams infra tests
	$(BIN)/ruff format --check schemas connectors streams infra tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: system-deps lint
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit tests/property

bench: system-deps $(STAMP)
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
