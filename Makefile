# Quick start: `make demo` (full chain on the shapes world) and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
# Offline-friendly settings: no hub retries, no update checks.
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export TOKENIZERS_PARALLELISM := false
DEMO_OUT ?= runs/demo

# A new venv takes ~7 GiB (torch 2.14.1 is the CUDA build, ~5.5 GB): say so up front, not as pip's ENOSPC.
DISK_CHECK := python3 -c "import shutil, sys; free = shutil.disk_usage('.').free / 2**30; \
	free >= 7.5 or sys.exit(f'make install: only {free:.1f} GiB free on this disk; the venv needs ~7 GiB. Remove old clones/venvs and re-run.')"

PEER    ?= .venv-peer
PEER_PIP := $(PEER)/bin/python -m pip

.PHONY: install demo test bench bench-peers lint clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || { $(DISK_CHECK) && python3 -m venv $(VENV); }
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c constraints.txt -e '.[dev,spark,ray]'
	$(PIP) install -q --no-deps dall-e==0.1
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/dalle-eval demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/run_all.py

# lucidrains' dalle-pytorch only imports with an old stack (pkg_resources, pytorch-lightning<2, youtokentome):
# its own venv, never the main one.
$(PEER)/.installed: constraints.txt
	test -x $(PEER)/bin/python || python3 -m venv $(PEER)
	$(PEER_PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PEER_PIP) install -q -c constraints.txt --no-deps dall-e dalle-pytorch taming-transformers-rom1504
	$(PEER_PIP) install -q -c constraints.txt axial-positional-embedding einops rotary-embedding-torch omegaconf \
		transformers Cython "setuptools<81" "pytorch-lightning<2" attrs ftfy regex requests tqdm pillow
	$(PEER_PIP) install -q -c constraints.txt --no-build-isolation youtokentome
	touch $@

bench-peers: $(PEER)/.installed
	$(PEER)/bin/python benchmarks/peer_dalle_pytorch.py
	$(PEER)/bin/python benchmarks/peer_dalle_pytorch.py train tiny

lint: install
	$(VENV)/bin/ruff check dalle_eval pipelines model tests benchmarks

clean:
	rm -rf $(VENV) $(PEER) runs
