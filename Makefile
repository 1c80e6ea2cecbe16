# vlmft: `make demo` sets everything up and runs the curriculum on synthetic data; `make test` runs the suite.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
VLMFT := $(VENV)/bin/vlmft
# The CPU build that lies on this kind of machine's disk; used only where no NVIDIA GPU is present.
TORCH_CPU ?= torch==2.13.0
DEMO_DIR ?= demo-run
PYTEST_ARGS ?=

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# Without a GPU, put a CPU build of torch in first: a bare torch requirement would pull a multi-GB CUDA build.
	if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" 2>/dev/null; then \
		$(PIP) install -q "$(TORCH_CPU)" || $(PIP) install -q torch --index-url https://download.pytorch.org/whl/cpu; \
	fi
	@# Pin whatever torch is there so nothing below upgrades it.
	$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/torch-pin.txt 2>/dev/null || : > $(VENV)/torch-pin.txt
	$(PIP) install -q -c $(VENV)/torch-pin.txt -e '.[dev]'
	touch $@

# The whole curriculum on synthetic RoboVQA-format data and the tiny offline InternVL3, on the CPU.
# The tiny model learns fast only with a larger learning rate than the 8B recipe's.
DEMO_ENV := VLMFT_HOME=$(CURDIR)/$(DEMO_DIR)/home VLMFT_OUT=$(CURDIR)/$(DEMO_DIR)/experiments
DEMO_TRAIN := --data $(DEMO_DIR)/data --profile cpu --global-batch-size 8 --lr 1e-3 --save-steps 10

demo: setup
	rm -rf $(DEMO_DIR)/source $(DEMO_DIR)/data $(DEMO_DIR)/experiments
	$(DEMO_ENV) $(VLMFT) plugins list
	$(DEMO_ENV) $(VLMFT) data synth --out $(DEMO_DIR)/source --videos 48 --val 8 --seed 0
	$(DEMO_ENV) $(VLMFT) data inspect $(DEMO_DIR)/source/tfrecord --records 8
	$(DEMO_ENV) $(VLMFT) data extract --source $(DEMO_DIR)/source --out $(DEMO_DIR)/data --size 112
	$(DEMO_ENV) $(VLMFT) data verify $(DEMO_DIR)/data --full
	$(DEMO_ENV) $(VLMFT) train --stage 1 $(DEMO_TRAIN)
	$(DEMO_ENV) $(VLMFT) train --stage 2 $(DEMO_TRAIN)
	$(DEMO_ENV) $(VLMFT) ckpt list
	$(DEMO_ENV) $(VLMFT) eval --checkpoint stage1 --stage 1 --data $(DEMO_DIR)/data --generate --max-new-tokens 16
	$(DEMO_ENV) $(VLMFT) eval --checkpoint stage2 --stage 2 --data $(DEMO_DIR)/data --generate --max-new-tokens 16
	$(DEMO_ENV) $(VLMFT) chat --checkpoint stage2 --video $$(ls -d $(DEMO_DIR)/data/images/val-*/* | head -n 1) --question "what is the robot doing?" --max-new-tokens 16
	$(DEMO_ENV) $(VLMFT) report stage1 stage2 --out $(DEMO_DIR)/report

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

# Wheels, the vlmft wheel and a small extracted data set for scripts/gpu_check.sh on an offline GPU machine.
.PHONY: gpu-bundle
gpu-bundle: setup
	PY=$(PY) VLMFT=$(VLMFT) scripts/gpu_bundle.sh gpu-bundle

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build *.egg-info
