# Two commands for a fresh machine:
#   make demo   create .venv, install dimdiff, train on the embedded digits and sample a grid
#   make test   create .venv if needed, install, run the test suite
# On a CUDA machine, install your own torch build first, or pass TORCH_SPEC (e.g. TORCH_SPEC=torch).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo

.PHONY: demo test install lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks

demo: $(VENV)/.installed
	$(VENV)/bin/dimdiff train --config configs/digits16_demo.toml train.out_dir=$(DEMO_DIR) --resume auto
	$(VENV)/bin/dimdiff sample --checkpoint $(DEMO_DIR) --n 64 --steps 50 --sampler ddim --eta 0 --seed 0 --out $(DEMO_DIR)/final
	@echo
	@echo "checkpoint:   $$(ls -d $(DEMO_DIR)/checkpoints/step_* | tail -1)"
	@echo "sample grid:  $(DEMO_DIR)/final/grid.png"
	@echo "loss curve:   $(DEMO_DIR)/loss.png"

bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[bench]"
	OMP_NUM_THREADS=2 $(PY) benchmarks/unet_speed.py
	OMP_NUM_THREADS=2 $(VENV)/bin/dimdiff bench sampling
	OMP_NUM_THREADS=2 $(VENV)/bin/dimdiff bench training
	OMP_NUM_THREADS=2 $(VENV)/bin/dimdiff bench quality

clean:
	rm -rf $(VENV) runs
