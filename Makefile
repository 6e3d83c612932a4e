# calpipe: two commands on a fresh machine.
#   make demo   install into .venv, simulate a session, run the Snakemake workflow on it
#   make test   install into .venv and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2

.PHONY: all venv demo demo-inprocess test lint bench clean dysh-venv dysh-reference

all: test

$(BIN)/calpipe: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

venv: $(BIN)/calpipe

demo: venv
	$(BIN)/calpipe simulate demo/session.zarr --overwrite
	$(BIN)/calpipe run --cores $(CORES)

demo-inprocess: venv
	$(BIN)/calpipe simulate demo/session.zarr --overwrite
	$(BIN)/calpipe calibrate demo/session.zarr demo/l1-inprocess.zarr --quicklook

test: venv
	$(BIN)/python -m pytest -q -ra

lint: venv
	$(BIN)/ruff check calpipe tests benchmarks workflow/scripts
	$(BIN)/mypy calpipe
	$(BIN)/snakefmt --check workflow
	$(BIN)/snakemake --lint --snakefile workflow/Snakefile --configfile config/config.yaml

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf demo results .snakemake

# dysh (GBT reduction package), the independent reference of tests/test_gbt_argus.py; it needs
# pandas < 3, so it gets its own venv. With it, the test re-runs dysh live.
DYSH_VENV ?= .venv-dysh

dysh-venv:
	$(PYTHON) -m venv $(DYSH_VENV)
	$(DYSH_VENV)/bin/pip install --quiet "dysh==1.1.0" "pandas<3"

dysh-reference: dysh-venv
	$(DYSH_VENV)/bin/python tests/data/gbt-argus/make_dysh_reference.py
