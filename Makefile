# dfkd: set-up, the main job, tests. Every target builds the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch by default (a local file on the project's machines, seconds to install).
# GPU users: install the torch build for your CUDA into $(VENV) first; an existing torch is kept.
TORCH ?= torch==2.13.0

.PHONY: install run test clean

$(BIN)/dfkd: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(BIN)/dfkd  ## create .venv and install dfkd with its test tools

run: install  ## train the teacher on the built-in dataset, distil it with strategy=bounded
	$(BIN)/dfkd train-teacher
	$(BIN)/dfkd distill strategy=bounded

test: install  ## the full test suite (CPU)
	$(BIN)/python -m pytest -q

clean:  ## remove the environment and every run's outputs
	rm -rf $(VENV) outputs/*/ build *.egg-info
