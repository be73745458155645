# Osprey: `make run` starts everything, `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test bootstrap bootstrap-test bench status clean-data

run: bootstrap
	$(VENV)/bin/osprey run

test: bootstrap-test
	$(PY) -m pytest $(PYTEST_ARGS)

bootstrap:
	@scripts/bootstrap.sh run

bootstrap-test:
	@scripts/bootstrap.sh test

bench: bootstrap
	$(PY) bench/ingest.py
	$(PY) bench/gateway.py

status:
	$(VENV)/bin/osprey status

# removes every ticket, mail and the broker's state (asks first)
clean-data:
	@read -p "Delete ./var (all Osprey data)? [y/N] " a && [ "$$a" = y ] && rm -rf var
