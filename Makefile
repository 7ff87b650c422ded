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

EXTRAS := dev,jax,bayes,distributed,control
UV_VERSION := 0.13.9
# constraints.txt pins the CPU torch on this machine's disk: no install may pull another torch.
# uv resolves and links the same packages as pip (checked: identical `pip freeze`) in about 13 s instead of
# 48 s here; it is given pip's own configuration (find-links, extra indexes, global constraints) and, like pip,
# takes the best version across all indexes. Where uv cannot be installed or fails, pip does the install.
# --no-compile (pip): byte-compiling every installed file took half of pip's install (47 of 96 s here); Python
# compiles the modules a run imports on first import instead (about 1 s).
$(STAMP): pyproject.toml constraints.txt | $(PY)
	@set -u; pipcfg() { $(PY) -m pip config get "global.$$1" 2>/dev/null || true; }; \
	args=(); \
	for l in $${PIP_FIND_LINKS:-$$(pipcfg find-links)}; do args+=(--find-links "$$l"); done; \
	for u in $${PIP_EXTRA_INDEX_URL:-$$(pipcfg extra-index-url)}; do args+=(--extra-index-url "$$u"); done; \
	index="$${PIP_INDEX_URL:-$$(pipcfg index-url)}"; [ -z "$$index" ] || args+=(--index-url "$$index"); \
	for c in $${PIP_CONSTRAINT:-$$(pipcfg constraint)}; do args+=(--constraint "$$c"); done; \
	if $(PY) -m pip install --quiet --disable-pip-version-check --no-compile uv==$(UV_VERSION) 2>/dev/null \
	   && $(VENV)/bin/uv pip install --python $(PY) --quiet --index-strategy unsafe-best-match "$${args[@]}" \
	      -c constraints.txt -e '.[$(EXTRAS)]'; then :; else \
	  echo "uv unavailable or failed: installing with pip" >&2; \
	  $(PY) -m pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt -e '.[$(EXTRAS)]'; \
	fi
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
