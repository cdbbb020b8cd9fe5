# make setup | make test | make reproduce PROFILE=smoke|mini|paper | make bench
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= smoke
STAMP   := $(VENV)/.installed

.PHONY: setup test reproduce bench clean-outputs

# First use creates the venv. On a machine without CUDA, torch==2.13.0 (a CPU wheel) goes in
# first, so `torch>=2.4` in pyproject.toml is already satisfied and pip pulls no CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q "torch>=2.4"; \
	else $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The notebooks run at smoke scale into a throw-away outputs folder, so tests never rewrite the
# committed outputs/<profile>/ figures and results. They read the sample in dwt_lib/sample_data; tests that
# check a mirror itself skip, with the reason printed (-rs), when DWT_DATA_DIR holds none.
test: $(STAMP)
	tmp=$$(mktemp -d) && DWT_OUTPUTS_DIR=$$tmp $(PY) -m pytest -q -rs -p no:cacheprovider tests --nbval-lax notebooks; \
	rc=$$?; rm -rf $$tmp; exit $$rc

reproduce: $(STAMP)
	$(VENV)/bin/dwt reproduce --profile $(PROFILE)

bench: $(STAMP)
	$(PY) bench/bench_all.py
