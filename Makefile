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

demo: setup
	VLMFT_HOME=$(CURDIR)/$(DEMO_DIR)/home $(VLMFT) plugins list
	VLMFT_HOME=$(CURDIR)/$(DEMO_DIR)/home $(VLMFT) profiles show gb10 --stage 2

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build *.egg-info
