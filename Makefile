# One target per stage; each is a rule on its output file, so finished stages are skipped.
#   make all DATA=../shared/data/mnist     everything, then the FID table
#   make test                              the test suite (make test-fast: without the slow tests)
#   make bench DATA=../shared/data/mnist   sampler / guidance / training study (after `make all`: ~43 min on 2 CPU cores)
#   make samplers DATA=../shared/data/mnist FID against model evaluations for DDIM and DPM-Solver++ (after `make all`)
#   make guidance DATA=../shared/data/mnist FID and recognition of digits 0-9 by guidance scale, interval and
#                                          autoguidance weight, and of "no label" by autoguidance weight
#                                          (after `make all`)
#   make lengths DATA=../shared/data/mnist  FID against UNet training steps (after `make all`)
#   make recipes DATA=../shared/data/mnist  UNet training recipes at equal wall-clock (after `make all`;
#                                          ~20 min a recipe on 2 CPU cores; RECIPES="a b" picks some,
#                                          BUDGET=minutes of training each; finished recipes are reused)
#   make editing DATA=../shared/data/mnist  image-to-image and inpainting of test digits measured, and the
#                                          pictures of every edit (after `make all`)
#   make demo DATA=../shared/data/mnist     the web demo on http://127.0.0.1:7860 (after `make all`; needs the demo
#                                          extra: pip install -e '.[demo]', which `make install` includes)
#   make toy                               the same diffusion code on 1-D and 2-D toy data (no MNIST needed)
# Variables: DATA (MNIST folder), PRESET (auto|cpu|gpu|smoke), DEVICE (auto|cpu|cuda), SEED,
# N (images per FID row), DOWNLOAD=1 (fetch missing MNIST files into DATA; the default when DATA is
# data/), TORCH (torch requirement),
# COMPILE=1 (torch.compile the UNet in training and sampling), PRECISION (auto|fp32|bf16: the UNet's
# forward passes; auto is bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere), NPROC (processes per stage: 1 runs
# each stage as one plain process; N > 1 launches classifier, vae, diffusion, sample and evaluate
# with torchrun on N processes of this machine, one GPU each on CUDA; see README, "Several processes"),
# TENSORBOARD=DIR (the training stages also write TensorBoard events into DIR/<stage>; needs the
# tensorboard package: pip install -e '.[tensorboard]').

PYTHON ?= python3
VENV ?= .venv
DATA ?= $(or $(LDM_DATA_DIR),data)
PRESET ?= auto
DEVICE ?= auto
SEED ?= 0
N ?= 10000
# the default folder is filled from the MNIST mirrors when files are missing; a DATA given is only read
DOWNLOAD ?= $(if $(filter data,$(DATA)),1)
# The torch release this project is tested with; pyproject.toml accepts any torch>=2.1.
TORCH ?= torch==2.13.0

PY := $(VENV)/bin/python
CKPT := checkpoints
REPORTS := reports
RUN := $(PY) -m
COMMON := --device $(DEVICE) --seed $(SEED)
COMPILE ?=
COMPILE_FLAG := $(if $(COMPILE),--compile)
PRECISION ?= auto
DENOISER := $(COMPILE_FLAG) --precision $(PRECISION)
NPROC ?= 1
TENSORBOARD ?=
# Every training stage logs its metrics beside its checkpoint (*.log.jsonl) and draws its curves here.
CURVES = --curves $(REPORTS)/$(1)_curves.png $(if $(TENSORBOARD),--tensorboard $(TENSORBOARD)/$(1))
# OMP_NUM_THREADS=1 is torchrun's own default, stated so that it does not warn; ldm then gives
# each process its share of the cores.
LAUNCH := $(if $(filter-out 1,$(NPROC)),OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m,$(RUN))

.PHONY: all install data classifier vae latents diffusion guide sample evaluate bench samplers guidance editing demo lengths recipes toy test test-fast clean FORCE

all: $(REPORTS)/fid.json
	@cat $(REPORTS)/fid.md

install: $(VENV)/.installed
data: $(CKPT)/data.json
classifier: $(CKPT)/classifier.safetensors
vae: $(CKPT)/vae.safetensors
latents: $(CKPT)/latents.safetensors
diffusion: $(CKPT)/unet.safetensors
guide: $(CKPT)/guide.safetensors
SAMPLES := $(CKPT)/samples_default.safetensors $(CKPT)/samples_nolabel.safetensors $(CKPT)/samples_digits.safetensors
sample: $(SAMPLES)
evaluate: $(REPORTS)/fid.json
bench: $(REPORTS)/bench.json
samplers: $(REPORTS)/samplers.json
guidance: $(REPORTS)/guidance.json
editing: $(REPORTS)/editing.json
# Serves until stopped (Ctrl-C); the page says what to run when checkpoints are missing.
demo: $(VENV)/.installed
	$(RUN) scripts.demo --checkpoints $(CKPT) --data-dir $(DATA) --device $(DEVICE)
lengths: $(REPORTS)/training_length.json
recipes: $(REPORTS)/recipes.json
toy: $(REPORTS)/toy/toy.json
	@cat $(REPORTS)/toy/toy.md

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# Stamps that change only when the settings do, so that changing DATA, PRESET, DEVICE, SEED or PRECISION
# redoes every stage, and changing N redoes sampling and evaluation.
$(CKPT)/settings.txt: FORCE
	@mkdir -p $(CKPT)
	@echo "data=$(DATA) preset=$(PRESET) device=$(DEVICE) seed=$(SEED) precision=$(PRECISION)" | cmp -s - $@ || \
		echo "data=$(DATA) preset=$(PRESET) device=$(DEVICE) seed=$(SEED) precision=$(PRECISION)" > $@
$(CKPT)/samples-settings.txt: FORCE
	@mkdir -p $(CKPT)
	@echo "n=$(N)" | cmp -s - $@ || echo "n=$(N)" > $@

$(CKPT)/data.json: $(VENV)/.installed $(CKPT)/settings.txt
	$(RUN) scripts.prepare_data --data-dir $(DATA) --out $@ $(if $(DOWNLOAD),--download)

$(CKPT)/classifier.safetensors: $(CKPT)/data.json
	$(LAUNCH) scripts.train_classifier --data-dir $(DATA) --preset $(PRESET) $(COMMON) --out $@ $(call CURVES,classifier)

$(CKPT)/vae.safetensors: $(CKPT)/data.json
	$(LAUNCH) scripts.train_vae --data-dir $(DATA) --preset $(PRESET) $(COMMON) --out $@ \
		--grid $(REPORTS)/vae_reconstructions.png $(call CURVES,vae)

$(CKPT)/latents.safetensors: $(CKPT)/vae.safetensors
	$(RUN) scripts.encode_latents --data-dir $(DATA) --vae $< $(COMMON) --out $@

# The UNet and its guide, which autoguides sampling (ldm/guidance.py): the same run's EMA weights
# after an eighth of its steps. FID of samples during training needs the classifier and the VAE.
$(CKPT)/unet.safetensors $(CKPT)/guide.safetensors &: $(CKPT)/latents.safetensors $(CKPT)/classifier.safetensors
	$(LAUNCH) scripts.train_diffusion --latents $< --preset $(PRESET) $(COMMON) $(DENOISER) \
		--out $(CKPT)/unet.safetensors --guide-out $(CKPT)/guide.safetensors \
		--data-dir $(DATA) --classifier $(CKPT)/classifier.safetensors --vae $(CKPT)/vae.safetensors $(call CURVES,unet)

# The default sampler of each branch (ldm/sampling.py: SamplerConfig.for_branch, chosen by `make
# samplers`) on the three prompts: random digits, the "no label" branch, and digits 0-9 in turn at
# the default guidance and autoguidance of a model with a guide (ldm/prompt.py), with a picture of
# the denoising chain.
SAMPLE := $(LAUNCH) scripts.sample --guide $(CKPT)/guide.safetensors --num-samples $(N) $(COMMON) $(DENOISER)
$(CKPT)/samples_default.safetensors: $(CKPT)/unet.safetensors $(CKPT)/guide.safetensors $(CKPT)/samples-settings.txt
	$(SAMPLE) --out $@

$(CKPT)/samples_nolabel.safetensors: $(CKPT)/unet.safetensors $(CKPT)/guide.safetensors $(CKPT)/samples-settings.txt
	$(SAMPLE) --digit none --out $@

$(CKPT)/samples_digits.safetensors: $(CKPT)/unet.safetensors $(CKPT)/guide.safetensors $(CKPT)/samples-settings.txt
	$(SAMPLE) --digit all --strip --out $@

$(REPORTS)/toy/toy.json: $(VENV)/.installed
	$(RUN) scripts.toy --seed $(SEED) --out-dir $(REPORTS)/toy

$(REPORTS)/fid.json: $(CKPT)/classifier.safetensors $(SAMPLES)
	$(LAUNCH) scripts.evaluate --data-dir $(DATA) --num-images $(N) $(COMMON) --out-dir $(REPORTS) --samples $(SAMPLES)

$(REPORTS)/bench.json: $(CKPT)/classifier.safetensors $(CKPT)/unet.safetensors
	$(RUN) scripts.bench --data-dir $(DATA) --preset $(PRESET) $(COMMON) $(DENOISER) --out-dir $(REPORTS) --work-dir $(CKPT)/bench

$(REPORTS)/samplers.json: $(CKPT)/classifier.safetensors $(CKPT)/unet.safetensors
	$(RUN) scripts.samplers --data-dir $(DATA) $(COMMON) $(DENOISER) --out-dir $(REPORTS)

$(REPORTS)/guidance.json: $(CKPT)/classifier.safetensors $(CKPT)/unet.safetensors $(CKPT)/guide.safetensors
	$(RUN) scripts.guidance --data-dir $(DATA) --guide $(CKPT)/guide.safetensors $(COMMON) $(DENOISER) --out-dir $(REPORTS)

$(REPORTS)/editing.json: $(CKPT)/classifier.safetensors $(CKPT)/unet.safetensors $(CKPT)/guide.safetensors
	$(RUN) scripts.editing --data-dir $(DATA) --guide $(CKPT)/guide.safetensors $(COMMON) $(DENOISER) --out-dir $(REPORTS)

$(REPORTS)/training_length.json: $(CKPT)/classifier.safetensors $(CKPT)/unet.safetensors
	$(RUN) scripts.training_length --data-dir $(DATA) --preset $(PRESET) $(COMMON) --precision $(PRECISION) --out-dir $(REPORTS) \
		--work-dir $(CKPT)/lengths

# Rerun whenever asked: the study reuses every recipe (and every seed's scores) it finished before.
$(REPORTS)/recipes.json: $(CKPT)/classifier.safetensors $(CKPT)/latents.safetensors FORCE
	$(RUN) scripts.recipes --data-dir $(DATA) --preset $(PRESET) $(COMMON) --out-dir $(REPORTS) \
		--work-dir $(CKPT)/recipes $(if $(RECIPES),--recipes $(RECIPES)) $(if $(BUDGET),--budget-minutes $(BUDGET))

test: $(VENV)/.installed
	$(PY) -m pytest -q

# The edit loop: every test not marked slow (pyproject.toml); `make test` and CI run them all.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

clean:
	find $(CKPT) $(REPORTS) -mindepth 1 ! -name .gitkeep -delete
