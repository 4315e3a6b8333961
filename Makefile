# Quick start: `make demo` (full chain on the shapes world), `make test-fast` and `make test` (what CI runs).
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
# Offline-friendly settings: no hub retries, no update checks.
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export TOKENIZERS_PARALLELISM := false
DEMO_OUT ?= runs/demo

# Two install sets, one stamp each, so neither target takes the other's stamp for its own packages:
#   install      torch + torchvision (pinned) + the project: all `make demo` needs (a 6.4 GiB venv)
#   install-dev  install + what the tests use (7.2 GiB in all): the dev extra (pytest, ruff, tensorboard, ...),
#                spark and ray (pyspark 0.5 GiB, ray 0.25 GiB: the cluster-distributor tests), OpenAI's dall-e 0.1
#                and taming-transformers (the image-tokenizer cross-checks; --no-deps: no pytorch-lightning)
# Every pip step passes -c constraints.txt: torch 2.14.1 is the CUDA build (3.2 GiB of NVIDIA libraries, 0.9 GiB
# triton, 1.2 GiB torch), and without the pin pip swaps torch when another package asks for torchvision.
STAMP_DEMO := $(VENV)/.installed-demo
STAMP_DEV  := $(VENV)/.installed-dev
# Free space checked before pip starts, not met as pip's ENOSPC: $(call disk_check,GiB,what)
disk_check = python3 -c "import shutil, sys; free = shutil.disk_usage('.').free / 2**30; \
	free >= $(1) or sys.exit(f'make: only {free:.1f} GiB free on this disk; $(2) needs ~$(1) GiB. Remove old clones/venvs and re-run.')"

PEER    ?= .venv-peer
PEER_PIP := $(PEER)/bin/python -m pip

.PHONY: install install-dev demo demo-long test test-fast bench bench-peers lint clean

$(STAMP_DEMO): pyproject.toml constraints.txt
	test -x $(PY) || { $(call disk_check,7,the demo venv) && python3 -m venv $(VENV); }
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(STAMP_DEV): $(STAMP_DEMO)
	$(call disk_check,1,installing the test extras)
	$(PIP) install -q -c constraints.txt -e '.[dev,spark,ray]'
	$(PIP) install -q --no-deps dall-e==0.1 taming-transformers-rom1504==0.0.6
	touch $@

install: $(STAMP_DEMO)

install-dev: $(STAMP_DEV)

demo: install
	$(VENV)/bin/dalle-eval demo --out $(DEMO_OUT)

# The capability recipe (dalle_eval/configs/shapes-long.toml): a 16x16 grid, 20,000 scenes, ~35-40 min on 2 cores.
demo-long: install
	$(VENV)/bin/dalle-eval demo --config shapes-long --n 20000 --out $(DEMO_OUT)-long

# Everything, as CI runs it (.ci/run): torchrun, SIGKILL/SIGTERM runs, pyspark and ray, the full demo twice.
# Verbose: each test is named as it starts, so a run killed from outside shows which one was running.
test: install-dev
	$(PY) -m pytest -v --durations=20 tests

# The unit tests of every module without the tests marked slow (no subprocess launches, clusters or demo).
test-fast: install-dev
	$(PY) -m pytest -q -m "not slow" tests

bench: install
	$(PY) benchmarks/run_all.py

# lucidrains' dalle-pytorch only imports with an old stack (pkg_resources, pytorch-lightning<2, youtokentome):
# its own venv, never the main one.
$(PEER)/.installed: constraints.txt pyproject.toml
	test -x $(PEER)/bin/python || python3 -m venv $(PEER)
	$(PEER_PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PEER_PIP) install -q -c constraints.txt --no-deps dall-e dalle-pytorch taming-transformers-rom1504
	$(PEER_PIP) install -q -c constraints.txt axial-positional-embedding einops rotary-embedding-torch omegaconf \
		transformers Cython "setuptools<81" "pytorch-lightning<2" attrs ftfy regex requests tqdm pillow
	$(PEER_PIP) install -q -c constraints.txt --no-build-isolation youtokentome
	# our torch-only model modules (dalle_eval.model), without the project's other dependencies
	$(PEER_PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

bench-peers: $(PEER)/.installed
	$(PEER)/bin/python benchmarks/peer_dalle_pytorch.py
	$(PEER)/bin/python benchmarks/peer_dalle_pytorch.py train tiny

lint: install-dev
	$(VENV)/bin/ruff check dalle_eval pipelines model tests benchmarks

clean:
	rm -rf $(VENV) $(PEER) runs
