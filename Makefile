# patchdino developer entry points. Everything installs into .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install test test-all lint demo bench gpu-data gpu-evidence gpu-evidence-dry clean

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

demo: $(STAMP)
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

# The same kit on the CPU with tiny sizes (CI runs it through tests/benchmarks).
gpu-evidence-dry: $(STAMP)
	PYTHONPATH=src $(PY) benchmarks/gpu_evidence.py --dry-run --output runs/gpu_evidence_dry

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
