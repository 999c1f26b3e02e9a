# Two commands set everything up on a fresh machine: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEVSTAMP:= $(VENV)/.installed-dev
# Test processes (pytest-xdist), a whole test file to each: most tests wait on a
# gateway process of their own, so two keep a 2-core machine busy.  0 runs in one.
TEST_WORKERS ?= 2

.PHONY: run test lint docs lock bench bench-best bench-quick bench-codecs bench-memory bench-workers clean proto

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# requirements.lock pins every runtime dependency (the Docker image installs
# exactly it); `make lock` resolves it anew from pyproject.toml.
LOCK    := requirements.lock

$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e '.[all]'
	touch $@

$(DEVSTAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e '.[all,dev]'
	touch $@ $(STAMP)

lock: $(DEVSTAMP)
	$(BIN)/uv pip compile pyproject.toml --extra all --universal --python-version 3.11 --upgrade \
		--custom-compile-command "make lock" --annotation-style line -o $(LOCK)

run: $(STAMP)
	$(BIN)/vdm server start

test: $(DEVSTAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python -m mypy
	$(BIN)/lint-imports  # the layers and no import cycles (pyproject.toml [tool.importlinter])
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(DEVSTAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python -m mypy
	$(BIN)/lint-imports  # the layers and no import cycles (pyproject.toml [tool.importlinter])

# The documentation site (docs/, mkdocs.yml) into build/site; a broken link fails it.
docs: $(DEVSTAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Regenerate the committed gRPC stubs from src/vdm/grpc/llm_proxy.proto.
proto: $(DEVSTAMP)
	$(BIN)/python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src \
		--grpc_python_out=src src/vdm/grpc/llm_proxy.proto

# Benchmarks (not part of `make test`; see docs/performance.md).
bench: $(STAMP)
	$(BIN)/python bench/run.py

# Three full runs and their min-of-3 summary (the figures docs/performance.md quotes).
bench-best: $(STAMP)
	for i in 1 2 3; do $(BIN)/python bench/run.py --out bench/results/best-$$i.json || exit 1; done
	$(BIN)/python bench/best_of.py bench/results/best-1.json bench/results/best-2.json bench/results/best-3.json

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

bench-codecs: $(STAMP)
	$(BIN)/python bench/codecs_bench.py

bench-memory: $(STAMP)
	$(BIN)/python bench/memory.py

bench-workers: $(STAMP)
	$(BIN)/python bench/workers.py

clean:
	rm -rf $(VENV) .pytest_cache .cache build src/*.egg-info
