# voxedge — the two commands a new user needs are `make demo` and `make test`;
# each sets everything up first (system packages, .venv, the package).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.voxedge-installed
# The CPU build of torch is installed before anything that depends on torch, so
# that the package's own `torch>=2.3` is already satisfied and pip pulls nothing
# bigger. Where plain PyPI would serve a CUDA build, point TORCH_PIP_ARGS at
# PyTorch's CPU wheel index (--index-url ...).
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
CHECKPOINT := reference_model/checkpoints/reference.pt
PYTEST_ARGS ?=

.PHONY: setup system-deps test demo reference-model evaluate clean

system-deps:
	@PYTHON=$(PYTHON) bash scripts/install_system_deps.sh

$(STAMP): setup.py pyproject.toml | system-deps
	@# (re)create the venv when it is missing or was left half-made
	$(BIN)/python -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[edge,convert,dev]'
	touch $@

setup: system-deps $(STAMP)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Until the live demo lands, the demo evaluates the committed reference model
# on the unseen-voice, unseen-scene test split (training it first if missing).
demo: setup
	@test -f $(CHECKPOINT) || $(MAKE) reference-model
	$(BIN)/voxedge evaluate --checkpoint $(CHECKPOINT)
	@echo
	@echo "Next: the converter (voxedge convert), the firmware bridge and the live demo on the simulated robot are on their way."

# Reproduce the committed reference checkpoint from scratch (about 20 minutes on 2 cores).
reference-model: setup
	$(BIN)/voxedge train --config reference_model/configs/reference.json --out $(CHECKPOINT)

evaluate: setup
	$(BIN)/voxedge evaluate --checkpoint $(CHECKPOINT)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
