# Two commands for a fresh machine: `make demo` and `make test` (and `make docs` for the API reference).
# Each sets up what it needs: a virtual environment in .venv with the pinned packages
# (requirements.lock), and the Debian packages of scripts/setup_system.sh (installed when run as root,
# else the command is printed).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mcutrain-installed
BACKBONE := mcutrain/assets/mbv2-w0.35-fmnist64.safetensors

.PHONY: demo test docs typecheck tutorial bench bench-threads setup system venv ort-venv backbone clean

demo: setup
	$(VENV)/bin/mcutrain demo

test: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

# Reference docs of the Python API (pdoc, from the docstrings) into build/docs; open build/docs/mcutrain.html.
docs: venv
	$(PY) scripts/build_docs.py build/docs

# The public surface (mcutrain/__init__.py, mcutrain/api/) under the pinned mypy ([tool.mypy] in pyproject.toml).
typecheck: venv
	$(PY) -m mypy

# The tutorial on CI's small settings (examples/tutorial.py; without --small: the full story).
tutorial: setup
	$(PY) examples/tutorial.py --small --out runs/tutorial

bench: setup ort-venv
	$(PY) bench/run_all.py

# The thread benchmark alone (about 10 minutes here; not part of `bench`: it loads the machine on purpose).
bench-threads: setup
	$(PY) -m bench.threads

setup: venv system

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

system:
	bash scripts/setup_system.sh

# The ONNX Runtime training peer of bench/host_training.py lives in its own environment: it pins
# onnx 1.16.2, which the project does not need (about 300 MB, installed only for `make bench`).
ORT_VENV := .venv-ort
ORT_STAMP := $(ORT_VENV)/.installed

ort-venv: $(ORT_STAMP)

$(ORT_STAMP): bench/requirements-ort.lock
	test -x $(ORT_VENV)/bin/python || $(PYTHON) -m venv $(ORT_VENV)
	$(ORT_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -r bench/requirements-ort.lock
	touch $(ORT_STAMP)

# Re-creates the bundled default backbone (about 30 minutes on one core); see mcutrain/assets/README.md.
backbone: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/mcutrain pretrain --model mbv2-w0.35 --data fashion-mnist --resolution 64 \
	    --epochs 12 --batch-size 128 --lr 0.1 --seed 0 --out runs/backbone/mbv2-w0.35-fmnist64.safetensors --force
	cp runs/backbone/mbv2-w0.35-fmnist64.safetensors $(BACKBONE)

clean:
	rm -rf $(VENV) $(ORT_VENV) .pytest_cache .hypothesis
