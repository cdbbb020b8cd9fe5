# make setup | make test | make reproduce PROFILE=smoke|mini|paper | make nbval-readonly PROFILE=laptop|mini | make lab [PORT=8888] | make bench
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= smoke
PORT    ?= 8888
NB      ?= *
STAMP   := $(VENV)/.installed

.PHONY: setup test reproduce nbval-readonly lab bench clean-outputs

# First use creates the venv. On a machine without CUDA, torch==2.13.0 (a CPU wheel) goes in
# first, so `torch>=2.4` in pyproject.toml is already satisfied and pip pulls no CUDA build.
$(STAMP): pyproject.toml
	@command -v python3 >/dev/null || { echo "make: python3 (>= 3.10) not found: install Python, or use" \
	  "the conda environment (conda env create -f environment.yml; python -m dwt_lib.lab)" >&2; exit 1; }
	test -x $(PY) || python3 -m venv $(VENV) || { echo "make: could not create $(VENV): install the venv" \
	  "module (Debian: apt-get install python3-venv)" >&2; exit 1; }
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

# nbval over the committed executed notebooks of PROFILE (each carries its profile in papermill's parameters
# cell), read-only from the committed export: a copy of outputs/$(PROFILE)/registry in a throw-away outputs
# folder, so the committed results and figures are not rewritten. No mirror or network needed. NB='0[1-5]'
# picks notebooks by number.
nbval-readonly: $(STAMP)
	tmp=$$(mktemp -d) && mkdir -p $$tmp/$(PROFILE) && cp -r outputs/$(PROFILE)/registry $$tmp/$(PROFILE)/ && \
	DWT_OUTPUTS_DIR=$$tmp DWT_READ_ONLY=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider \
	  --nbval-lax outputs/$(PROFILE)/notebooks/$(NB)_*.ipynb; rc=$$?; rm -rf $$tmp; exit $$rc

# Registers the venv as the notebooks' kernel "dwt" (inside the venv, --sys-prefix), then JupyterLab on
# notebooks/ at 127.0.0.1:$(PORT); the URL with its token is printed.
lab: $(STAMP)
	@$(PY) -m dwt_lib.lab --port $(PORT)

bench: $(STAMP)
	$(PY) bench/bench_all.py
