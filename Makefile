# Quorum's entry points; CI and the README use these targets.
# `make run` and `make test` work on a fresh machine with Python 3.11+ and nothing else running.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/quorum_bench

.PHONY: run worker test lint format bench backup restore clean

$(VENV)/.runtime: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Quorum needs Python 3.11 or newer: set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

## run: set up, migrate the embedded database, load the demo once and serve on $(HOST):$(PORT)
run: $(VENV)/.runtime
	@export DEBUG=$${DEBUG:-1}; \
	$(BIN)/python manage.py migrate --noinput -v0 && \
	$(BIN)/python manage.py load_demo && \
	echo "" && \
	echo "Quorum:      http://$(HOST):$(PORT)/  (log in with a demo login above)" && \
	echo "Dashboard:   http://$(HOST):$(PORT)/projects/digits/" && \
	echo "API docs:    http://$(HOST):$(PORT)/api/docs/" && \
	echo "Admin:       http://$(HOST):$(PORT)/admin/" && \
	if [ -z "$$REDIS_URL" ]; then echo "Background jobs run in-process: REDIS_URL is not set."; \
	else echo "Background jobs go to Redis at $$REDIS_URL: start workers with 'make worker'."; fi && \
	echo "" && \
	exec $(BIN)/python manage.py runserver $(HOST):$(PORT)

## worker: a Celery worker with the periodic scheduler (needs REDIS_URL), started again if it exits
worker: $(VENV)/.runtime
	@test -n "$$REDIS_URL" || { echo "set REDIS_URL=redis://… first: without it, jobs run in-process"; exit 1; }
	CELERY=$(BIN)/celery scripts/worker.sh --beat --loglevel=info

# Backups need no secret key of their own: without SECRET_KEY (a local checkout), DEBUG is on as
# for `make run`; in production the server's environment applies.
MANAGE = if [ -z "$$SECRET_KEY" ]; then export DEBUG=$${DEBUG:-1}; fi; $(BIN)/python manage.py

## backup: a consistent copy of the database into QUORUM_BACKUP_DIR (default var/backups)
backup: $(VENV)/.runtime
	@$(MANAGE) backup

## restore: BACKUP=path restores a backup into the (empty) database; REPLACE=1 overwrites one
restore: $(VENV)/.runtime
	@test -n "$(BACKUP)" || { echo "usage: make restore BACKUP=var/backups/quorum-<time>.dump [REPLACE=1]"; exit 1; }
	@$(MANAGE) restore "$(BACKUP)" $(if $(filter 1 yes true,$(REPLACE)),--replace)

## test: the whole suite (SQLite and in-process jobs, or DATABASE_URL / REDIS_URL when set)
test: $(VENV)/.dev
	$(BIN)/pytest $(PYTEST_ARGS)

## lint: ruff (lint and format check) and mypy
lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	SECRET_KEY=$${SECRET_KEY:-type-checking-only} $(BIN)/mypy

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: the benchmarks in benchmarks/ (ingest needs PostgreSQL at BENCH_DATABASE_URL)
bench: $(VENV)/.dev
	@psql "$(dir $(BENCH_DATABASE_URL))postgres" -qtc "SELECT 1" >/dev/null 2>&1 || { echo "PostgreSQL is not reachable at $(BENCH_DATABASE_URL)"; exit 1; }
	@psql "$(dir $(BENCH_DATABASE_URL))postgres" -qtc "SELECT 1 FROM pg_database WHERE datname = '$(notdir $(BENCH_DATABASE_URL))'" | grep -q 1 || \
		psql "$(dir $(BENCH_DATABASE_URL))postgres" -qc "CREATE DATABASE $(notdir $(BENCH_DATABASE_URL))"
	DATABASE_URL=$(BENCH_DATABASE_URL) $(BIN)/python benchmarks/ingest.py --rows $${BENCH_ROWS:-1000000} --runs $${BENCH_RUNS:-3}
	DATABASE_URL=$(BENCH_DATABASE_URL) $(BIN)/python benchmarks/queue.py --rows $${BENCH_ROWS:-1000000} --runs $${BENCH_RUNS:-3}
	DATABASE_URL=$(BENCH_DATABASE_URL) $(BIN)/python benchmarks/review.py
	DATABASE_URL=$(BENCH_DATABASE_URL) $(BIN)/python benchmarks/aggregate.py --runs $${BENCH_RUNS:-3}
	DATABASE_URL=$(BENCH_DATABASE_URL) $(BIN)/python benchmarks/labelling.py --runs $${BENCH_RUNS:-3}
	DATABASE_URL=$(BENCH_DATABASE_URL) $(BIN)/python benchmarks/load.py --seconds $${BENCH_LOAD_SECONDS:-300}
	DATABASE_URL=$(BENCH_DATABASE_URL) $(BIN)/python benchmarks/problems.py
	DATABASE_URL=$(BENCH_DATABASE_URL) $(BIN)/python benchmarks/release.py --items $${BENCH_RELEASE_ITEMS:-1000000} --runs $${BENCH_RUNS:-3}
	PYTHONPATH=. $(BIN)/python benchmarks/select_numerics.py
	PYTHONPATH=. $(BIN)/python benchmarks/aggregate_numerics.py
	DATABASE_URL=$(BENCH_DATABASE_URL) PYTHONPATH=. $(BIN)/python benchmarks/crowd_sync.py --items $${BENCH_CROWD_ITEMS:-1000} --runs $${BENCH_RUNS:-3}

clean:
	rm -rf var/test .pytest_cache .mypy_cache .ruff_cache
