# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test lint typecheck pytest prometheus redis docs docs-build bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trizmq demo --monitor

test: lint typecheck pytest docs-build

lint: $(STAMP)
	$(BIN)/ruff check trizmq monitor tests bench docs/hooks.py docs/examples
	$(BIN)/ruff format --check trizmq monitor tests bench docs/hooks.py docs/examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict trizmq monitor

pytest: $(STAMP) prometheus redis
	$(BIN)/pytest

# $(call need,COMMAND,DEBIAN PACKAGE,WHAT FOR,WHERE ELSE TO GET IT): install the
# package when COMMAND is missing and we run as root with apt-get; else say what
# to install and stop.
define need
	@command -v $(1) >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's $(2) package for $(3)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $(2); \
	  else \
	    echo "$(3) need the $(1) command, none on PATH: install it with" \
	      "'sudo apt-get install $(2)' (Debian, Ubuntu) or from $(4)," \
	      "put it on PATH, then run make again." >&2; \
	    exit 1; \
	  fi; }
endef

# tests/test_metrics.py runs a real Prometheus server (on a host with systemd,
# Debian's package also starts one on :9090).
prometheus:
	$(call need,prometheus,prometheus,the metrics tests,https://prometheus.io/download/)

# tests/test_registry.py starts its own redis-server (on a loopback address, in a
# private directory, with TLS too, its certificates made with openssl; on a host
# with systemd, Debian's package also starts one on 127.0.0.1:6379).
redis:
	$(call need,redis-server,redis-server,the registry tests,https://redis.io/downloads/ (built with TLS))
	$(call need,openssl,openssl,the registry's TLS tests,https://www.openssl.org/)

docs-build: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet --site-dir $(CURDIR)/.site

docs: $(STAMP)
	$(BIN)/mkdocs serve

bench: $(STAMP)
	$(BIN)/trizmq bench

clean:
	rm -rf $(VENV) .site .pytest_cache .mypy_cache .ruff_cache
