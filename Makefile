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

# tests/test_metrics.py runs a real Prometheus server: Debian's package, installed
# when missing and run as root (on a host with systemd it also starts one on :9090).
prometheus:
	@command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Prometheus (Debian's prometheus package) for the metrics tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; \
	  else \
	    echo "The tests need a Prometheus server (the prometheus command, none on PATH):" \
	      "install it with 'sudo apt-get install prometheus' (Debian, Ubuntu) or from" \
	      "https://prometheus.io/download/ and put it on PATH, then run make again." >&2; \
	    exit 1; \
	  fi; }

# tests/test_registry.py starts its own redis-server (on a loopback address, in a
# private directory, with TLS too): Debian's package, installed when missing and
# run as root (on a host with systemd it also starts one on 127.0.0.1:6379).
redis:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Redis (Debian's redis-server package) for the registry tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server; \
	  else \
	    echo "The tests need a Redis server (the redis-server command, none on PATH):" \
	      "install it with 'sudo apt-get install redis-server' (Debian, Ubuntu) or from" \
	      "https://redis.io/downloads/ (built with TLS) and put it on PATH, then run make again." >&2; \
	    exit 1; \
	  fi; }
	@command -v openssl >/dev/null || { \
	  echo "The registry's TLS tests need the openssl command: install it (apt-get install openssl)." >&2; \
	  exit 1; }

docs-build: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet --site-dir $(CURDIR)/.site

docs: $(STAMP)
	$(BIN)/mkdocs serve

bench: $(STAMP)
	$(BIN)/trizmq bench

clean:
	rm -rf $(VENV) .site .pytest_cache .mypy_cache .ruff_cache
