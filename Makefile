# Two commands on a fresh clone: `make pipeline` and `make test`.
# GPU users: `make install TORCH="torch --index-url https://download.pytorch.org/whl/cu128"` (or any pip spec).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
PIPELINE_DIR ?= outputs/pipeline

.PHONY: install system-deps test test-fast lint pipeline benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch goes in first and alone, so the project's `torch>=2.4` is already met and no CUDA build is pulled.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet -e ".[deepspeed]" || echo "deepspeed did not install: the DeepSpeed ZeRO tests will be skipped"
	touch $@

install: $(VENV)/.installed

# `make pipeline` needs only the package itself (no test, serving, UI or DeepSpeed extras): a faster first run.
$(VENV)/.installed-core: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

# OpenMPI lets `accelerate launch` start several CPU processes (accelerate_configs/multi_cpu.yaml); Debian's
# Chromium lets the feedback tests open the ranking page in a real headless browser.
SYSTEM_PACKAGES := $(if $(shell command -v mpirun),,openmpi-bin) $(if $(shell command -v chromium),,chromium)
system-deps:
	@if [ -n "$(strip $(SYSTEM_PACKAGES))" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "missing $(SYSTEM_PACKAGES): install them with apt-get to run the multi-process and browser tests"; fi; fi

test: install system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

pipeline: $(VENV)/.installed-core
	$(BIN)/hf-llm pipeline --output_dir $(PIPELINE_DIR)

# Every script in benchmarks/ with its defaults: each prints ratios measured in one run and writes JSON under
# outputs/benchmarks/ (minutes each on 2 CPU cores; see each script's docstring for GPU settings).
benchmark: install
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf $(VENV) outputs build *.egg-info
