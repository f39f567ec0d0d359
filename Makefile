# dfkd: set-up, the main job, tests. Every target builds the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch by default (a local file on the project's machines, seconds to install).
# GPU users: install the torch build for your CUDA into $(VENV) first; an existing torch is kept.
TORCH ?= torch==2.13.0
# The extras `make install` adds: test tools, the launchers, report, ONNX, scikit-learn, tracker
# and search extras the tests use.
EXTRAS ?= test,joblib,slurm,stats,plots,onnx,sklearn,tensorboard,mlflow,optuna

.PHONY: install run test test-ray mutate reproduce reproduce-quick protein protein-mlp mnist bench bench-de search clean

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

# Sweeps through Ray on a real Ray (docs/testing.md; about 2.5 min on 2 cores): a cluster started
# with `ray start --head` on 127.0.0.1 with a token, swept by its address, then `ray stop`; and a
# local instance. Installs the [ray] extra (about 280 MB on top of `make install`, 400 MB
# alone; docs/testing.md), so not in EXTRAS. Ray's servers listen
# on every interface whatever --node-ip-address says: where an unprivileged network namespace can
# be made (unshare -rn), the test runs in one that holds only loopback.
RAY_NETNS = $(shell unshare -rn sh -c 'ip link set lo up' >/dev/null 2>&1 && echo yes)
test-ray: install  ## the Ray launchers on a real local cluster (installs the [ray] extra)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS),ray]"
	$(if $(RAY_NETNS),unshare -rn sh -c 'ip link set lo up && exec "$$@"' sh) \
		env DFKD_TEST_RAY=1 $(BIN)/python -m pytest -q tests/test_ray.py

# Mutation testing with mutmut (docs/testing.md): the modules [tool.mutmut] in pyproject.toml
# names (the loop, selection, networks, random streams, strategies, domains, priors, the paired
# report statistics and the trackers), against the in-process tests it names; not part of
# `make test` (every mutant of them takes hours on 2 cores). MUTANTS picks mutants by name, e.g.
#   make mutate MUTANTS='dfkd_cli.loop.student_loop.xǁStudentLoopǁfinish*'
#   make mutate MUTANTS='dfkd_cli.report.paired.*'
MUTANTS ?=
mutate: install  ## mutation testing of the promise-carrying modules; prints a table per module
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS),mutate]"
	rm -rf mutants
	OMP_NUM_THREADS=1 $(BIN)/mutmut run $(MUTANTS) || true
	$(BIN)/python benchmarks/mutation_table.py

# The paper's table (Zhou & Chiam 2023): train the missing teachers (train-teacher keeps a teacher
# already in the store), run the experiment preset as one multirun, then `dfkd report` against the
# published numbers. The paper's 5 arms took 24 min on a 2-core CPU with 2 joblib workers
# (docs/results.md); the 2 real-data reference arms add 20 jobs. `reproduce-quick` is one
# dataset, three seeds.
# HYDRA_ARGS picks a launcher for both sweeps, e.g.
#   make reproduce HYDRA_ARGS="hydra/launcher=joblib hydra.launcher.n_jobs=4"
# DISTILL_ARGS adds overrides to the distill sweep (e.g. epochs=200 for a smoke run).
# Where the datasets are read from; every target fetches what it needs there first (`dfkd data
# fetch`: a dataset already there, checked, is kept). Offline, point DATA_DIR at a folder of copies.
DATA_DIR ?= data
# the published per-seed results the report sets beside ours (`paper`: shipped with dfkd)
REFERENCE ?= paper
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
comma := ,
FETCH = $(BIN)/dfkd data fetch --data-dir $(DATA_DIR)

reproduce: install  ## the paper's protocol and the real-data references: teachers, 70 distill jobs, report
	$(FETCH) $(subst $(comma), ,$(PAPER_DATASETS))
	$(BIN)/dfkd train-teacher -m \
		dataset=$(PAPER_DATASETS) "seeds=$(PAPER_SEEDS)" \
		data_dir=$(DATA_DIR) progress=false $(HYDRA_ARGS)
	$(BIN)/dfkd distill -m experiment=paper \
		dataset=$(PAPER_DATASETS) "seeds=$(PAPER_SEEDS)" \
		data_dir=$(DATA_DIR) hydra.sweep.dir=outputs/reproduce/paper_$(STAMP) \
		hydra.callbacks.sweep_summary.reference=$(REFERENCE) $(HYDRA_ARGS) $(DISTILL_ARGS)
	$(BIN)/dfkd report outputs/reproduce/paper_$(STAMP) --reference $(REFERENCE)

reproduce-quick: install  ## a first look: cpusmall, seeds 1-3, every arm, both students
	$(FETCH) $(subst $(comma), ,$(QUICK_DATASETS))
	$(BIN)/dfkd train-teacher -m \
		dataset=$(QUICK_DATASETS) "seeds=[$(QUICK_SEEDS)]" \
		data_dir=$(DATA_DIR) progress=false $(HYDRA_ARGS)
	$(BIN)/dfkd distill -m experiment=paper_quick \
		dataset=$(QUICK_DATASETS) "seeds=[$(QUICK_SEEDS)]" \
		data_dir=$(DATA_DIR) hydra.sweep.dir=outputs/reproduce/paper_quick_$(STAMP) \
		hydra.callbacks.sweep_summary.reference=$(REFERENCE) $(HYDRA_ARGS) $(DISTILL_ARGS)
	$(BIN)/dfkd report outputs/reproduce/paper_quick_$(STAMP) --reference $(REFERENCE)

# The paper's case studies (docs/case_studies.md): the teachers, then the preset multirun.
# protein: SVR teachers, rbf student, Gaussian and DE arms, 5 seeds, 1000 x 100 steps;
# protein-mlp: the same arms and bounded / generator on an MLP teacher; mnist: cnn teachers,
# the paper's three data-free arms (N(0, I)), the product's recipe (datafree) and the real-data
# references, a four-layer cnn and an MLP student, 3 seeds, 2000 x 10 steps. DISTILL_ARGS shortens a run
# (e.g. DISTILL_ARGS=epochs=200).
CASE_SEEDS ?= [1,2,3,4,5]

protein: install  ## the protein case study: SVR teachers, Gaussian and DE arms, 5 seeds (docs/case_studies.md)
	$(BIN)/dfkd train-teacher dataset=protein teacher=svr "seeds=$(CASE_SEEDS)" \
		data_dir=$(DATA_DIR) progress=false
	$(BIN)/dfkd distill -m experiment=protein "seeds=$(CASE_SEEDS)" data_dir=$(DATA_DIR) \
		hydra.sweep.dir=outputs/case_studies/protein_$(STAMP) $(HYDRA_ARGS) $(DISTILL_ARGS)

protein-mlp: install  ## the protein case study's arms on an MLP teacher, bounded and generator too
	$(BIN)/dfkd train-teacher dataset=protein "seeds=$(CASE_SEEDS)" data_dir=$(DATA_DIR) \
		progress=false
	$(BIN)/dfkd distill -m experiment=protein_mlp "seeds=$(CASE_SEEDS)" data_dir=$(DATA_DIR) \
		hydra.sweep.dir=outputs/case_studies/protein_mlp_$(STAMP) $(HYDRA_ARGS) $(DISTILL_ARGS)

mnist: install  ## MNIST as regression: cnn teachers, the paper's arms, datafree, real_kd / real_data, cnn4 and MLP students
	$(FETCH) mnist
	$(BIN)/dfkd train-teacher dataset=mnist teacher=cnn "teacher.net.channels=[16,32,64,64]" \
		optimizer=adam epochs=25 patience=8 batch_size=64 "seeds=[1,2,3]" \
		data_dir=$(DATA_DIR) progress=false
	$(BIN)/dfkd distill -m experiment=mnist data_dir=$(DATA_DIR) \
		hydra.sweep.dir=outputs/case_studies/mnist_$(STAMP) $(HYDRA_ARGS) $(DISTILL_ARGS)

# WIDE_ARGS="--before <git revision>" adds that code's rows beside this tree's (docs/performance.md)
WIDE_ARGS ?=
bench: install  ## speed and memory (docs/performance.md), wide inputs too; BENCH_ARGS / WIDE_ARGS="--help"
	$(FETCH) cpusmall
	DFKD_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/wide_inputs.py $(WIDE_ARGS)

bench-de: install  ## the protein case study's DE arm, before / after (docs/performance.md); BENCH_ARGS="--help"
	DFKD_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/de_speed.py $(BENCH_ARGS)

# docs/search.md: per dataset, an Optuna search of bounded's settings on the data-free objective
# (configs/hparams_search/bounded_optuna.yaml, 12 trials), the default settings beside it, and the
# table of objective against test RMSE. About 15 min per dataset on a loaded 2-core CPU.
SEARCH_DATASETS ?= cpusmall puma32h
SEARCH_SEEDS ?= [1,2,3]
SEARCH_ARGS ?= epochs=500
SEARCH_DIR ?= outputs/search/$(STAMP)

search: install  ## does the data-free objective pick settings that lower the test RMSE? (docs/search.md)
	$(FETCH) $(SEARCH_DATASETS)
	for ds in $(SEARCH_DATASETS); do \
		$(BIN)/dfkd train-teacher dataset=$$ds "seeds=$(SEARCH_SEEDS)" data_dir=$(DATA_DIR) \
			progress=false && \
		$(BIN)/dfkd distill hparams_search=bounded_optuna dataset=$$ds "seeds=$(SEARCH_SEEDS)" \
			data_dir=$(DATA_DIR) progress=false hydra.sweep.dir=$(SEARCH_DIR)/$$ds $(SEARCH_ARGS) && \
		$(BIN)/dfkd distill dataset=$$ds "seeds=$(SEARCH_SEEDS)" data_dir=$(DATA_DIR) \
			progress=false hydra.run.dir=$(SEARCH_DIR)/$${ds}_default $(SEARCH_ARGS) || exit 1; \
	done
	$(BIN)/python benchmarks/search_table.py $(SEARCH_DIR)

clean:  ## remove the environment and every run's outputs
	rm -rf $(VENV) outputs/*/ build *.egg-info mutants
