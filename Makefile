# Annotator: `make run` starts the platform, `make test` runs every test. Both set up first.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: run test setup setup-dev test-sqlite test-postgres clean help

help:
	@echo "make run    set up and start the platform (web, Celery worker and beat) on port $(PORT)"
	@echo "make test   set up and run the whole test suite (SQLite, then PostgreSQL)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Annotator needs Python 3.11, found " + sys.version' \
	  || { echo "Set PYTHON=/path/to/python3.11"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { echo "Could not make a virtualenv: on Debian, apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	@touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	@touch $@ $(VENV)/.runtime

setup: $(VENV)/.runtime
setup-dev: $(VENV)/.dev

run: setup
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py runplatform --port $(PORT)

test: setup-dev test-sqlite test-postgres

test-sqlite: setup-dev
	$(BIN)/python -m pytest -m "not postgres_only" $(PYTEST_ARGS)

test-postgres: setup-dev
	$(BIN)/python -m tests.services postgres -- $(BIN)/python -m pytest -m "postgres_matrix or postgres_only" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var
