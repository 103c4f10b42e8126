# jetdeploy: every target does its own set-up (the venv is built on first use).
# `make help` lists the targets.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
JD          := $(BIN)/jetdeploy
STAMP       := $(VENV)/.installed
# pinned: a local CPU build of torch (an unpinned torch pulls gigabytes of CUDA), and the
# pythia8mc release that has a wheel (8.318.0 compiles from source for half an hour)
TORCH       ?= torch==2.13.0
PYTHIA      ?= pythia8mc==8.317.2

DATA_PRESET ?= default
SEED        ?=
WORKERS     ?= $(shell nproc 2>/dev/null || echo 2)
DATA_FILE   := data/$(DATA_PRESET).h5

.PHONY: help install data demo test clean clean-data
# generated samples are never deleted as 'intermediate' files
.PRECIOUS: data/%.h5

help:
	@echo "make demo     run the pipeline on the embedded default sample (grows stage by stage)"
	@echo "make test     run the test suite"
	@echo "make install  create $(VENV) and install jetdeploy with pinned torch / pythia8mc"
	@echo "make data     generate data/\$$(DATA_PRESET).h5 (tiny|default|full; cached) + histograms"
	@echo "              variables: DATA_PRESET=$(DATA_PRESET) SEED=<preset's> WORKERS=$(WORKERS)"
	@echo "make clean    remove the venv; make clean-data removes data/"

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q "$(PYTHIA)" -e ".[test,root]"
	touch $@

# Regenerated only when the preset changes (and jetdeploy itself skips a file made from the same config).
data/%.h5: configs/data/%.yaml | $(STAMP)
	$(JD) data generate --preset $* --workers $(WORKERS) --out $@ $(if $(SEED),--seed $(SEED))

# The physics checks (W/Z/top mass peaks, gluon vs quark multiplicity) need more than the tiny preset's jets.
data/%.inspect.json: data/%.h5
	$(JD) data inspect $< --plot data/$*.png --json $@ $(if $(filter tiny,$*),,--check)

data: data/$(DATA_PRESET).inspect.json

demo: $(STAMP)
	$(MAKE) data DATA_PRESET=default

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache

clean-data:
	rm -rf data
