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

# fuzz ingest's parse-and-store path (fuzz/fuzz_ingest.py, atheris) for FUZZ_SECONDS in one
# process; works in var/fuzz: seeds rebuilt from /work/shared/corpora, the corpus kept
# between runs, crashes and hangs (> 10 s per input) written to var/fuzz/artifacts/
FUZZ_SECONDS ?= 600
FUZZ_ARGS ?=
.PHONY: fuzz
fuzz: bootstrap
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q --disable-pip-version-check -e '.[fuzz]'
	$(PY) fuzz/fuzz_ingest.py -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_ARGS)
