# patchdino developer entry points. Everything installs into .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install test test-all lint fashion-mnist demo bench gpu-data gpu-evidence gpu-evidence-quick gpu-evidence-dry clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch torchvision
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

# The default suite: everything except tests marked `slow`.
test: lint
	$(VENV)/bin/pytest -q -m "not slow"

test-all: lint
	$(VENV)/bin/pytest -q

# Fashion-MNIST for the demo, where patchdino looks for it by default: Debian's package
# dataset-fashion-mnist, installed with apt-get only when the files are missing and apt-get can
# run (as root, or with sudo that asks no password).
FMNIST_DIR := /usr/share/datasets/fashion-mnist
FMNIST_FILES := train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte
fashion-mnist:
	@missing=0; for f in $(FMNIST_FILES); do \
		[ -f $(FMNIST_DIR)/$$f.gz ] || [ -f $(FMNIST_DIR)/$$f ] || missing=1; \
	done; \
	if [ $$missing = 0 ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then sudo=none; \
	elif [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=sudo; \
	else sudo=none; fi; \
	if [ "$$sudo" = none ]; then \
		echo "no Fashion-MNIST in $(FMNIST_DIR): install Debian's dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist), or run 'patchdino demo --data DIR' on a folder of its four IDX files"; \
		exit 2; \
	fi; \
	echo "installing Fashion-MNIST: $$sudo apt-get update && $$sudo apt-get install -y dataset-fashion-mnist"; \
	$$sudo apt-get update -qq && $$sudo apt-get install -y dataset-fashion-mnist

demo: $(STAMP) fashion-mnist
	$(PY) -m patchdino demo --output runs/demo

bench: $(STAMP)
	$(PY) -m patchdino bench --device cpu --arch vit_small_patch16_224 --batch-size 4 --steps 3 --warmup 1 --threads 1

# Fashion-MNIST (Debian's dataset-fashion-mnist) copied into the git-ignored .data/, so that it
# travels with the source tree to a machine without network access.
FMNIST_SRC ?= /usr/share/datasets/fashion-mnist
gpu-data:
	test -f $(FMNIST_SRC)/train-images-idx3-ubyte.gz || { echo "no Fashion-MNIST in $(FMNIST_SRC): apt-get install dataset-fashion-mnist, or FMNIST_SRC=DIR"; exit 2; }
	mkdir -p .data/fashion-mnist
	cp $(FMNIST_SRC)/*-ubyte.gz .data/fashion-mnist/

# On a GPU machine, from the source tree (no install needed): correctness, throughput, quality.
gpu-evidence:
	PYTHONPATH=src $(PYTHON) benchmarks/gpu_evidence.py --output runs/gpu_evidence

# For a session lent less time: the out_dim 65,536 table first (the rows that decide the
# defaults: loss.kernel torch/triton/chunked, fused AdamW, the pipeline), then the CUDA tests,
# within 150 + 60 s of stage budgets (3.5 minutes, plus the machine's start).
gpu-evidence-quick:
	PYTHONPATH=src $(PYTHON) benchmarks/gpu_evidence.py --output runs/gpu_evidence_quick \
		--stages throughput,correctness --tables k65536 \
		--budget throughput=150 --budget correctness=60

# The same kit on the CPU with tiny sizes (CI runs it through tests/benchmarks).
gpu-evidence-dry: $(STAMP)
	PYTHONPATH=src $(PY) benchmarks/gpu_evidence.py --dry-run --output runs/gpu_evidence_dry

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
