# patchdino developer entry points. Everything installs into .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install test test-all lint demo bench clean

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

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
