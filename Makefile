# Two commands for a fresh machine:
#   make demo   create .venv, install dimdiff, train on the embedded digits and sample a grid
#   make test   create .venv if needed, install, run the test suite
# On a CUDA machine, install your own torch build first, or pass TORCH_SPEC (e.g. TORCH_SPEC=torch).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo

.PHONY: demo test install lint bench bench-dvdp clean

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
	OMP_NUM_THREADS=1 $(VENV)/bin/dimdiff bench oracle

# DVDP against DDPM (and subspace diffusion) at equal training steps on 32 px data: the README's quality tables
DVDP_QUALITY := data.resolution=32 'model.attention_resolutions=[8]' process.parameterization=v --steps 20,50,100 --threads 1
bench-dvdp: $(VENV)/.installed
	OMP_NUM_THREADS=2 $(VENV)/bin/dimdiff bench sampling --steps 100 --repeats 5 --methods dvdp-ddim,subspace-ddim
	OMP_NUM_THREADS=2 $(VENV)/bin/dimdiff bench training --methods dvdp-ddim,subspace-ddim
	OMP_NUM_THREADS=1 $(VENV)/bin/dimdiff bench oracle
	for w in "late 0.6,0.8 0.2,0.2" "narrow 0.3,0.6 0.05,0.05"; do set -- $$w; \
		OMP_NUM_THREADS=1 $(VENV)/bin/dimdiff bench oracle --methods dvdp-ddim,dvdp-ddpm process.kind=dvdp \
			"process.turning_points=[$$2]" "process.window_widths=[$$3]" --out benchmarks/results/oracle_windows/$$1; done
	OMP_NUM_THREADS=1 $(VENV)/bin/dimdiff bench quality $(DVDP_QUALITY) --train-steps 2500 --datasets digits \
		--methods ddpm,dvdp-ddim,dvdp-ddpm,dvdp-perstage-ddim,dvdp-perstage-ddpm,subspace-ddim,subspace-ddpm \
		--out benchmarks/results/quality_digits32
	OMP_NUM_THREADS=1 $(VENV)/bin/dimdiff bench quality $(DVDP_QUALITY) --train-steps 1500 --datasets patches \
		--methods ddpm,dvdp-ddim,dvdp-ddpm,dvdp-perstage-ddim,dvdp-perstage-ddpm --out benchmarks/results/quality_patches32

clean:
	rm -rf $(VENV) runs
