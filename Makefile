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
BUNDLE := bundle
SERVE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup system-deps test demo demo-bundle demo-episodes reference-model evaluate clean

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

# The main job: the whole product on the simulated robot. Builds the reference bundle
# if it is missing (convert + INT8 calibration + accuracy gate, about a minute), then
# serves the panel and API at http://127.0.0.1:8080 with the firmware simulator, the
# sim camera and the sim microphone. Ctrl-C stops everything.
demo: setup $(BUNDLE)/manifest.json
	$(BIN)/voxedge serve $(BUNDLE) --sim $(SERVE_ARGS)

# The reference bundle, rebuilt when the checkpoint changes; written atomically.
$(BUNDLE)/manifest.json: $(CHECKPOINT) | setup
	@test -f $(CHECKPOINT) || $(MAKE) reference-model
	$(BIN)/voxedge make-set --out sets/calib --split val -n 512
	$(BIN)/voxedge make-set --out sets/eval --split test -n 512
	$(BIN)/voxedge convert --checkpoint $(CHECKPOINT) --out $(BUNDLE) --calibration sets/calib --eval sets/eval --fp16

demo-bundle: $(BUNDLE)/manifest.json

# The same system headless through scripted spoken commands (100 seeded go_to episodes).
demo-episodes: setup $(BUNDLE)/manifest.json
	$(BIN)/voxedge demo $(BUNDLE) --episodes 100 --seed 0 --out demo-results

# Reproduce the committed reference checkpoint from scratch (18 minutes on 2 cores of the earlier
# development machine; about 45 on a 2-core AMD EPYC with AVX2: see the README).
reference-model: setup
	$(BIN)/voxedge train --config reference_model/configs/reference.json --out $(CHECKPOINT)

evaluate: setup
	$(BIN)/voxedge evaluate --checkpoint $(CHECKPOINT) --out $(dir $(CHECKPOINT))

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info $(BUNDLE) sets demo-results
