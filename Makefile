# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Development defaults; production sets its own environment (README: "Production").
export DEBUG ?= 1
# The browser tests drive Debian's chromium (never a downloaded browser build).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install browser run db db-stop migrate test bench bench-webhooks bench-latency lint format lock clean

help:
	@echo "make run      install, start the embedded database, migrate, start web + workers"
	@echo "make test     install and run the whole test suite"
	@echo "make lint     ruff check and ruff format --check"
	@echo "make test-<id>-live  one provider's live tests against its real sandbox (keys in env)"
	@echo "make bench    the ingestion benchmark (prints one JSON line last)"
	@echo "make bench-webhooks  the webhook load benchmark (prints one JSON line last)"
	@echo "make bench-latency   syncs with 100 ms round trips and quotas (prints one JSON line last)"
	@echo "make db       start the embedded database (127.0.0.1:27117, data in var/mongo)"
	@echo "make db-stop  stop it cleanly"
	@echo "make lock     re-resolve requirements.lock from pyproject.toml"

$(STAMP): requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	touch $(STAMP)

install: $(STAMP)

browser:
	@test -x $(CHROMIUM) || { echo "Installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: install
	$(PY) -m sibling.devrun

db: install
	$(PY) -m sibling.embedded start

db-stop: install
	$(PY) -m sibling.embedded stop

migrate: install
	$(PY) manage.py migrate --noinput

test: install browser
	$(PY) -m pytest -m "not live" $(PYTEST_ARGS)

# One provider's tests against its real API (e.g. `make test-<id>-live`, with that provider's
# keys in the environment; each test skips without them). Never part of `make test`.
test-%-live: install
	$(PY) -m pytest -m live tests/sources/providers/$*/ -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(PY) -m ingestion.benchmarks.ingest

bench-webhooks: install
	$(PY) -m ingestion.benchmarks.webhooks

bench-latency: install
	$(PY) -m ingestion.benchmarks.latency

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock: install
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--generate-hashes --quiet -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
