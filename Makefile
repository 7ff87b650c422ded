# Two commands on a fresh clone: `make run` (the main job) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= runs/report
DATA ?= bookorder

# Real data sets live beside the repository; loaders read them through TPP_DATA_DIR.
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/INDEX.md),)
export TPP_DATA_DIR ?= $(SHARED_DATA)
endif
# One thread per pool: two pools fighting over two cores made runs ~10x slower.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
export MPLBACKEND ?= Agg

.PHONY: run test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# constraints.txt pins the CPU torch on this machine's disk: no install may pull another torch.
# --no-compile: byte-compiling every installed file (torch, jax, dask, ...) took half the install (about 47 of
# 96 s here); Python compiles the modules a run actually imports on first import instead (about 1 s).
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt -e '.[dev,jax,bayes,distributed,control]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tpp report --data $(DATA) --out $(OUT)

# Two pytest-xdist workers, one per core (TEST_WORKERS=0 runs in this process). --dist loadfile keeps a
# file's tests, and the fixtures they share, on one worker; every test writes only under its tmp_path.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) .cache runs
