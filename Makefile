# Prompt Sentinel — every target installs what it needs first (`make run` / `make test` on a fresh clone).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
OUTPUT ?= sentinel-output
IMAGE_REGISTRY ?= ghcr.io/prompt-sentinel
TAG ?= 0.1.0
PYTEST_ARGS ?=

.PHONY: install run test test-fast lint format compile default-config images benchmarks clean lock help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	# torch first, pinned: an unpinned torch would pull GBs of CUDA wheels.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the locked dependencies

run: install  ## run the whole pipeline locally (kfp.local) on the demo data, then serve the champion
	$(BIN)/sentinel run --output $(OUTPUT) --serve-smoke-test

test: install  ## the full test suite (slow end-to-end tests included)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install  ## tests without the slow end-to-end ones
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install  ## ruff
	$(BIN)/ruff check src components pipelines serving tests benchmarks
	$(BIN)/ruff format --check src components pipelines serving tests benchmarks

format: install
	$(BIN)/ruff format src components pipelines serving tests benchmarks
	$(BIN)/ruff check --fix src components pipelines serving tests benchmarks

compile: install  ## recompile the pipeline YAML (the committed golden file)
	$(BIN)/sentinel compile --out pipelines/compiled/training_pipeline.yaml
	$(BIN)/sentinel compile --pipeline monitoring --out pipelines/compiled/monitoring_pipeline.yaml

default-config: install  ## regenerate configs/default.yaml from the typed config
	$(BIN)/sentinel config --defaults > configs/default.yaml

benchmarks: install  ## benchmark tables (needs ../shared/data)
	$(BIN)/python benchmarks/classical_benchmark.py
	$(BIN)/python benchmarks/transformer_benchmark.py
	$(BIN)/python benchmarks/serving_benchmark.py

images:  ## build the container images (needs a Docker engine)
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "no Docker engine here: images are checked offline by tests/test_images.py"; exit 1; }
	docker build -f images/pipeline/Dockerfile -t $(IMAGE_REGISTRY)/pipeline:$(TAG) .
	docker build -f images/trainer-gpu/Dockerfile -t $(IMAGE_REGISTRY)/trainer-gpu:$(TAG) .
	docker build -f images/serving/Dockerfile -t $(IMAGE_REGISTRY)/serving:$(TAG) .
	docker build -f images/logger-sink/Dockerfile -t $(IMAGE_REGISTRY)/logger-sink:$(TAG) .

lock:  ## regenerate constraints.txt from the current venv
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -i -E '^(prompt-sentinel|pip|setuptools|wheel)=' | sed 's/+cpu//' > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(OUTPUT) .pytest_cache .ruff_cache
