# dfkd: set-up, the main job, tests. Every target builds the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch by default (a local file on the project's machines, seconds to install).
# GPU users: install the torch build for your CUDA into $(VENV) first; an existing torch is kept.
TORCH ?= torch==2.13.0
# The extras `make install` adds: test tools, the launchers, report, ONNX and scikit-learn extras
# the tests use.
EXTRAS ?= test,joblib,slurm,stats,plots,onnx,sklearn

.PHONY: install run test reproduce reproduce-quick bench clean

$(BIN)/dfkd: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(BIN)/dfkd  ## create .venv and install dfkd with its test tools

run: install  ## train the teacher on the built-in dataset, distil it with strategy=bounded
	$(BIN)/dfkd train-teacher
	$(BIN)/dfkd distill strategy=bounded

test: install  ## the full test suite (CPU)
	$(BIN)/python -m pytest -q

# The paper's table (Zhou & Chiam 2023): train the missing teachers (train-teacher keeps a teacher
# already in the store), run the experiment preset as one multirun, then `dfkd report` against the
# published numbers. `reproduce` takes 24 min on a 2-core CPU with 2 joblib workers
# (docs/results.md); `reproduce-quick` is one dataset, three seeds.
# HYDRA_ARGS picks a launcher for both sweeps, e.g.
#   make reproduce HYDRA_ARGS="hydra/launcher=joblib hydra.launcher.n_jobs=4"
# DISTILL_ARGS adds overrides to the distill sweep (e.g. epochs=200 for a smoke run).
DATA_DIR ?= ../shared/datasets
REFERENCE ?= ../shared/reference/paper_results_per_seed.csv
# mv first: its teachers train longest (133 s for 10, against 19-41 s for each other dataset),
# so parallel workers run the others beside it instead of waiting for it at the end
PAPER_DATASETS ?= mv,compactiv,cpusmall,pole,puma32h
# The seeds, one population per dataset (teachers) and per cell (students): a member's step
# costs less the more members share it, up to 10 on a CPU (docs/performance.md). Groups such as
# "[1,2,3,4,5],[6,7,8,9,10]" (two jobs per cell) also work.
PAPER_SEEDS ?= [1,2,3,4,5,6,7,8,9,10]
QUICK_DATASETS ?= cpusmall
QUICK_SEEDS ?= 1,2,3
HYDRA_ARGS ?=
DISTILL_ARGS ?=
STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
REPORT_REFERENCE = $(if $(wildcard $(REFERENCE)),--reference $(REFERENCE))
SWEEP_REFERENCE = $(if $(wildcard $(REFERENCE)),\
	hydra.callbacks.sweep_summary.reference=$(REFERENCE))

reproduce: install  ## the paper's protocol (24 min on 2 CPU cores): teachers, 50 distill jobs, report
	$(BIN)/dfkd train-teacher -m \
		dataset=$(PAPER_DATASETS) "seeds=$(PAPER_SEEDS)" \
		data_dir=$(DATA_DIR) progress=false $(HYDRA_ARGS)
	$(BIN)/dfkd distill -m experiment=paper \
		dataset=$(PAPER_DATASETS) "seeds=$(PAPER_SEEDS)" \
		data_dir=$(DATA_DIR) hydra.sweep.dir=outputs/reproduce/paper_$(STAMP) \
		$(SWEEP_REFERENCE) $(HYDRA_ARGS) $(DISTILL_ARGS)
	$(BIN)/dfkd report outputs/reproduce/paper_$(STAMP) $(REPORT_REFERENCE)

reproduce-quick: install  ## a first look: cpusmall, seeds 1-3, every arm, both students
	$(BIN)/dfkd train-teacher -m \
		dataset=$(QUICK_DATASETS) "seeds=[$(QUICK_SEEDS)]" \
		data_dir=$(DATA_DIR) progress=false $(HYDRA_ARGS)
	$(BIN)/dfkd distill -m experiment=paper_quick \
		dataset=$(QUICK_DATASETS) "seeds=[$(QUICK_SEEDS)]" \
		data_dir=$(DATA_DIR) hydra.sweep.dir=outputs/reproduce/paper_quick_$(STAMP) \
		$(SWEEP_REFERENCE) $(HYDRA_ARGS) $(DISTILL_ARGS)
	$(BIN)/dfkd report outputs/reproduce/paper_quick_$(STAMP) $(REPORT_REFERENCE)

bench: install  ## distillation speed and memory (docs/performance.md); BENCH_ARGS="--help" lists options
	DFKD_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

clean:  ## remove the environment and every run's outputs
	rm -rf $(VENV) outputs/*/ build *.egg-info
