# Everything a fresh clone needs: `make demo` and `make test` create .venv and install into it.
#
# torch comes first, from TORCH_SPEC (and TORCH_INDEX if set), so that the project's torch range
# is already satisfied when moetrace is installed and pip never picks a build by itself:
#   make demo                                                    # torch==2.13.0 from PyPI
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu  # the CPU-only build (~200 MB)
#   make demo TORCH_SPEC=torch==2.5.1                            # another version
# From PyPI, Linux x86-64 gets the CUDA build of torch (several GB of CUDA libraries); the
# CPU index above avoids that. A machine with a local CPU wheel already at hand resolves
# TORCH_SPEC to it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
SAMPLE ?= sample_traces/gpt3-350m-sim.parquet
DEMO_OUT ?= demo-report
PIP := $(BIN)/python -m pip install --progress-bar off --disable-pip-version-check

.PHONY: venv dev demo test bench docs clean

# The demo's environment: moetrace with the lstm extra (torch), nothing else.
$(VENV)/.base: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "[1/2] torch ($(TORCH_SPEC)$(if $(TORCH_INDEX), from $(TORCH_INDEX)))"
	@$(PIP) --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	@echo "[2/2] moetrace and its lstm extra"
	@$(PIP) --quiet -e ".[lstm]"
	@touch $@

# The test environment adds the frameworks the recorder is tested against.
$(VENV)/.dev: $(VENV)/.base
	@echo "[dev] pytest, transformers, megatron-core"
	@$(PIP) --quiet -e ".[lstm,dev]"
	@echo "[dev] DeepSpeed, built against the installed torch"
	@DS_BUILD_OPS=0 $(PIP) --quiet --no-build-isolation "deepspeed>=0.14"
	@touch $@

venv: $(VENV)/.base
dev: $(VENV)/.dev

demo: venv
	$(BIN)/moetrace info $(SAMPLE)
	$(BIN)/moetrace report $(SAMPLE) -o $(DEMO_OUT) --force

test: dev
	$(BIN)/python -m pytest -n 2 -q

bench: dev
	$(BIN)/python -m benchmarks

docs: dev
	$(BIN)/python scripts/build_api_docs.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
