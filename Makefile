# nerf_lab: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch, installed before the package so that `torch` is already satisfied
# (a bare `pip install torch` pulls a CUDA build of several GB).
TORCH ?= torch==2.13.0
ARGS ?=
STUDIES := ablation_encoding ablation_depth ablation_samples ablation_lr ablation_occupancy ablation_encoding_grid ablation_two_pass_occupied original_800_pe_only

.DEFAULT_GOAL := help
.PHONY: help install train sweep test test-unit test-full bench report tensorboard clean clean-cache $(STUDIES)

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-22s %s\n", $$1, $$2}'
	@echo "  make <study>                sweep a study of experiments/ over 3 seeds and report it; studies:"
	@echo "                              $(STUDIES)"

install: ## Create .venv with the CPU build of PyTorch and nerf_lab (editable) with its test tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"

train: ## Train Tiny NeRF on the built-in scene (ARGS="experiment=tiny_lego" for Lego)
	$(BIN)/python -m nerf_lab.train $(ARGS)

sweep: ## A sweep: depth 2 and 4 × 64 and 128 samples (ARGS adds overrides)
	$(BIN)/python -m nerf_lab.train -m model.depth=2,4 sampling.n_c=64,128 $(ARGS)

test: ## The test suite without the slow end-to-end runs (what CI runs first)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

test-unit: ## The quick suite's unit tests alone: no command run, no training fit
	$(BIN)/python -m pytest -m "not slow and not command" $(ARGS)

test-full: ## The whole test suite, slow runs included
	$(BIN)/python -m pytest $(ARGS)

bench: ## Benchmark the tiny config on this machine, and the paper's on a GPU if there is one
	$(BIN)/python -m nerf_lab.bench experiment=tiny_lego bench.json_path=benchmarks/results/tiny_lego_cpu.json $(ARGS)
	@if $(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
		$(BIN)/python -m nerf_lab.bench experiment=paper_lego bench.json_path=benchmarks/results/paper_lego_gpu.json $(ARGS); \
	else echo "no GPU here: skipped the paper config (see benchmarks/README.md)"; fi

# Each study: sweep its arms over 3 seeds, then report into experiments/results/<study>/.
$(STUDIES):
	$(BIN)/python -m nerf_lab.train -m experiment=$@ $(ARGS)
	$(BIN)/python -m nerf_lab.report "$$(ls -d outputs/multirun/$@/*/ | tail -n 1)" --out experiments/results/$@ --title "$@"

report: ## Report on a sweep: make report SWEEP=outputs/multirun/<date>/<time>
	$(BIN)/python -m nerf_lab.report $(SWEEP) $(ARGS)

tensorboard: ## Browse every run's curves, every validation image (not 10 sampled) and HPARAMS
	$(BIN)/tensorboard --logdir outputs --samples_per_plugin images=100000

clean: ## Remove run outputs (keeps outputs/.gitkeep) and Python caches
	find outputs -mindepth 1 -not -name .gitkeep -prune -exec rm -rf {} +
	find . -name __pycache__ -prune -exec rm -rf {} +
	rm -rf .pytest_cache

clean-cache: ## Remove decoded images and built-in scene renders (NERF_LAB_CACHE, else ~/.cache/nerf_lab)
	rm -rf "$${NERF_LAB_CACHE:-$$HOME/.cache/nerf_lab}"
