# TraceFlux: `make demo` serves the portal on the embedded SQLite database; `make test` runs lint and the suite.
#
# The virtualenv is .venv, created with the machine's python3. Stamp files inside it record which requirements
# were installed, so pip runs again only when a requirements file changes.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
RUNTIME_STAMP := $(VENV)/.installed-requirements
DEV_STAMP := $(VENV)/.installed-requirements-dev
PIP := $(PY) -m pip --disable-pip-version-check --quiet

DEMO_ADDR ?= 127.0.0.1:8000
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=
STRESS_SECONDS ?= 60
STRESS_ARGS ?=

# The services `CI=true make test` runs against unless the caller already chose others.
CI_DATABASE_URL := postgres://postgres@127.0.0.1:5432/traceflux
CI_REDIS_URL := redis://127.0.0.1:6379/15
CI_BROKER_URL := amqp://guest:guest@127.0.0.1:5672//

# The embedded mode: whatever the caller's shell says, the demo uses SQLite under var/, a local cache, eager tasks.
EMBEDDED := env -u TRACEFLUX_MODE -u DATABASE_URL -u REDIS_URL -u CELERY_BROKER_URL -u CELERY_RESULT_BACKEND

.DEFAULT_GOAL := help
.PHONY: help venv demo test lint bench stress clean distclean

help:
	@echo "make demo    serve the portal with demo data at http://$(DEMO_ADDR)/ (embedded SQLite, no services)"
	@echo "make test    ruff, then the whole suite with pytest -n $(PYTEST_WORKERS) (CI=true: PostgreSQL, Redis, RabbitMQ)"
	@echo "make bench   print audit, spec-hash and key-check figures, agent-API figures through gunicorn, replay-engine figures, replay-pipeline figures through Celery workers, then audit-explorer figures over 1M events (benchmarks/)"
	@echo "make stress  20 agents over their rate limits against gunicorn in production mode for STRESS_SECONDS=$(STRESS_SECONDS) s, invariants checked, then pytest -m faults; one summary table"
	@echo "make lint    ruff check ."
	@echo "make clean   remove caches and collected static files; make distclean also removes .venv and var/"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): requirements.txt | $(PY)
	$(PIP) install -r requirements.txt
	@touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PIP) install -r requirements-dev.txt
	@touch $@ $(RUNTIME_STAMP)

venv $(VENV): $(RUNTIME_STAMP)

demo: $(RUNTIME_STAMP)
	$(EMBEDDED) $(PY) manage.py migrate --noinput
	$(EMBEDDED) $(PY) manage.py seed_demo
	$(EMBEDDED) $(PY) manage.py collectstatic --noinput -v0
	@echo
	@echo "TraceFlux demo: http://$(DEMO_ADDR)/  (sign in with one of the logins printed above; Ctrl-C stops it)"
	@echo
	$(EMBEDDED) $(PY) manage.py runserver $(DEMO_ADDR)

# pytest's exit code 5 means it collected no tests: for `make test` that is a failure, never a pass.
test: $(DEV_STAMP)
	$(BIN)/ruff check .
	@if [ "$${CI:-}" = "true" ]; then \
	  export DATABASE_URL="$${DATABASE_URL:-$(CI_DATABASE_URL)}"; \
	  export REDIS_URL="$${REDIS_URL:-$(CI_REDIS_URL)}"; \
	  export TRACEFLUX_TEST_BROKER_URL="$${TRACEFLUX_TEST_BROKER_URL:-$(CI_BROKER_URL)}"; \
	  echo "CI=true: PostgreSQL database, Redis cache, RabbitMQ broker; a test whose service is missing fails"; \
	fi; \
	echo "$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)"; \
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests, which counts as a failure" >&2; exit 1; fi; \
	exit $$rc

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

# run.py in process; agent_api.py through a real gunicorn on loopback (and PostgreSQL for heartbeats when it answers);
# replay_engine.py: full replays of generated 100k and 1M-signal windows against orjson alone (about 2 minutes);
# replay_pipeline.py: 50 dry runs of the demo window through 2 Celery workers on RabbitMQ and PostgreSQL (a database of
# its own), or one "skipped: ..." line when either does not answer; audit_explorer.py: /audit/ pages over 1,000,000
# seeded audit events on PostgreSQL (a database of its own), or one "skipped: ..." line.
bench: $(RUNTIME_STAMP)
	$(EMBEDDED) $(PY) benchmarks/run.py
	$(EMBEDDED) $(PY) benchmarks/agent_api.py
	$(EMBEDDED) $(PY) benchmarks/replay_engine.py
	$(EMBEDDED) $(PY) benchmarks/replay_pipeline.py
	$(EMBEDDED) $(PY) benchmarks/audit_explorer.py

# benchmarks/stress.py: 20 agents over their rate limits for STRESS_SECONDS against gunicorn in production mode (a
# PostgreSQL database and a Redis key prefix of its own), checking that every answer is 2xx or 429 + Retry-After and
# that every bundle is stored once, reads back and lands; then the fault tests (pytest -m faults, one at a time) on
# the CI services. One summary table; non-zero exit when an invariant or a fault test fails. Extra options of
# stress.py go in STRESS_ARGS (e.g. STRESS_ARGS=--no-faults).
stress: $(DEV_STAMP)
	@export CI=true; \
	export DATABASE_URL="$${DATABASE_URL:-$(CI_DATABASE_URL)}"; \
	export REDIS_URL="$${REDIS_URL:-$(CI_REDIS_URL)}"; \
	export TRACEFLUX_TEST_BROKER_URL="$${TRACEFLUX_TEST_BROKER_URL:-$(CI_BROKER_URL)}"; \
	echo "$(PY) benchmarks/stress.py --seconds $(STRESS_SECONDS) $(STRESS_ARGS)"; \
	$(PY) benchmarks/stress.py --seconds $(STRESS_SECONDS) $(STRESS_ARGS)

clean:
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache var/static test-results

distclean: clean
	rm -rf $(VENV) var .hypothesis
