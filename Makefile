# Everything a fresh clone needs: `make demo` and `make test` create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch first, so the project's torch range is already satisfied and pip does
# not pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
SAMPLE ?= sample_traces/gpt3-350m-sim.parquet
DEMO_OUT ?= demo-report

.PHONY: venv demo test bench clean

$(BIN)/moetrace: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[lstm,dev]"
	# DeepSpeed (recorder adapter tests) is an sdist that builds against the installed torch.
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet --no-build-isolation "deepspeed>=0.14"
	touch $(BIN)/moetrace

venv: $(BIN)/moetrace

demo: venv
	$(BIN)/moetrace info $(SAMPLE)
	$(BIN)/moetrace report $(SAMPLE) -o $(DEMO_OUT) --force
	@echo "Report written to $(DEMO_OUT)/report.html (also report.md, report.json, figures/)"

test: venv
	$(BIN)/python -m pytest -n 2 -q

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
