# Two commands on a fresh clone: `make pipeline` and `make test`.
# GPU users: `make install TORCH="torch --index-url https://download.pytorch.org/whl/cu128"` (or any pip spec).
#
# Both install the versions the suite passed with: requirements/cpu.txt (every package but torch, which TORCH picks)
# is a pip constraints file, so an install takes only what it needs, each at its locked version. pyproject.toml keeps
# ranges for `pip install hf_llm` into your own environment. `make test-newest` tests the newest versions those
# ranges allow in a separate venv; `make lock` then writes what it installed into the lock.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# 1: also build llama-cpp-python (best effort) so the export test runs a GGUF file in llama.cpp itself.
LLAMA_CPP ?= 0
BIN := $(VENV)/bin
LOCK := requirements/cpu.txt
PIPELINE_DIR ?= outputs/pipeline
NEWEST_VENV ?= .venv-newest
NEWEST_BIN := $(NEWEST_VENV)/bin

.PHONY: install system-deps test test-fast test-newest newest-venv lock lint pipeline benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch goes in first and alone, so the project's `torch>=2.4` is already met and no CUDA build is pulled.
$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c $(LOCK) -e ".[dev]"
	$(BIN)/pip install --quiet -c $(LOCK) -e ".[deepspeed]" || echo "deepspeed did not install: the DeepSpeed ZeRO tests will be skipped"
	@if [ "$(LLAMA_CPP)" = 1 ]; then \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 timeout 2400 $(BIN)/pip install --quiet -c $(LOCK) -e ".[llama-cpp]" \
	    || echo "llama-cpp-python did not build: the llama.cpp export test will be skipped"; \
	else echo "llama.cpp export test skipped: make install LLAMA_CPP=1 builds llama-cpp-python (C++, 37 min on 2 busy cores here)"; fi
	touch $@

install: $(VENV)/.installed

# `make pipeline` needs only the package itself (no test, serving, UI or DeepSpeed extras): a faster first run.
$(VENV)/.installed-core: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c $(LOCK) -e .
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

# A fresh venv with the newest versions pyproject.toml's ranges allow (no lock): the fast suite, then the whole
# lifecycle end to end on the very small preset of tests/test_pipeline.py. Run it before a release; when it fails, fix
# the code or narrow the range. torch (installed first, from TORCH) already meets its range, so pip resolves only the
# rest, each at the newest release the ranges allow (no eager upgrade: that would swap the CPU torch for a CUDA one).
newest-venv:
	rm -rf $(NEWEST_VENV)
	$(PYTHON) -m venv $(NEWEST_VENV)
	$(NEWEST_BIN)/pip install --quiet --upgrade pip
	$(NEWEST_BIN)/pip install --quiet $(TORCH)
	$(NEWEST_BIN)/pip install --quiet -e ".[dev]"
	$(NEWEST_BIN)/pip install --quiet -e ".[deepspeed]" || echo "deepspeed did not install: the DeepSpeed ZeRO tests will be skipped"

test-newest: newest-venv system-deps
	$(NEWEST_BIN)/hf-llm env
	$(NEWEST_BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"
	$(NEWEST_BIN)/python -m pytest -q -p no:cacheprovider tests/test_pipeline.py -k whole_lifecycle

# Write the lock from the newest venv (run `make test-newest` first, so the lock holds versions that passed).
lock:
	@test -x $(NEWEST_BIN)/python || { echo "no $(NEWEST_VENV): run make test-newest first"; exit 2; }
	@mkdir -p $(dir $(LOCK))
	{ echo "# Every package the suite passed with (make test-newest, then make lock), on CPython $$($(NEWEST_BIN)/python -c 'import platform; print(platform.python_version(), platform.machine())'),"; \
	  echo "# torch excluded (the Makefile's TORCH picks the build). Used as pip constraints: pip install -c $(LOCK) -e ."; \
	  $(NEWEST_BIN)/pip freeze --exclude-editable | grep -v -i -E '^(torch|nvidia-[a-z0-9-]+|triton)=='; } > $(LOCK)
	@echo "wrote $(LOCK)"

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
	rm -rf $(VENV) $(NEWEST_VENV) outputs build *.egg-info
