# ModeBench: `make setup` once, then `make test`, `make bench SUITE=toy`, ...
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUITE ?= toy
SEEDS ?= 3
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
GRID ?= ci_toy
ADDRESS ?=

.PHONY: docs datasets generate setup test test-slow mutants bench claims lint speed perf-seeds d3rlpy-venv jax-venv parity tables plots profile report sweep clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

setup: $(PY)  ## install the package and its pinned dependencies (CPU torch)
	$(PY) -m pip install --quiet -e ".[test]"

test: setup  ## the fast test suite (what CI runs)
	$(PY) -m pytest -q

test-slow: setup  ## the full mechanism runs and real-environment tests (minutes)
	$(PY) -m pytest -q -m slow

mutants: setup  ## one-line mutants of algorithms/ against the fast tests, in a temp copy: killed / survived per mutant
	$(PY) tools/mutants.py

bench: setup  ## train + evaluate every method on every task of SUITE, print the table
	$(VENV)/bin/modebench bench --suite $(SUITE) --num-seeds $(SEEDS) --jobs $(JOBS)

docs: setup  ## regenerate docs/run-settings.md (every method x suite, both protocols, each value's source)
	$(PY) -m modebench.benchmarks.run.protocols --write-docs

claims: setup  ## each paper's mechanism claims measured on the toy suite -> results/claims.md, results/claims.csv
	$(VENV)/bin/modebench claims --num-seeds $(SEEDS) --jobs $(JOBS)

lint: setup
	$(PY) -m ruff check algorithms benchmarks sweeps analysis modebench perf tools tests

d3rlpy-venv: .venv-d3rlpy/bin/python  ## d3rlpy 2.8.1 in its own venv (it pins gymnasium 1.0.0)
.venv-d3rlpy/bin/python:
	$(PYTHON) -m venv .venv-d3rlpy
	.venv-d3rlpy/bin/pip install --quiet torch==2.13.0 d3rlpy==2.8.1

# The authors' JAX code (seohongpark/fql, muzhancun/DROL) needs its own venv: jax 0.4.30 is the
# last line whose flax / distrax / tensorflow-probability releases still run their flax.linen code.
JAX_PINS := "jax[cpu]==0.4.30" flax==0.8.5 optax==0.2.3 distrax==0.1.5 chex==0.1.86 tensorflow-probability==0.24.0 ml_collections==0.1.1 jaxtyping==0.2.34 numpy==1.26.4 scipy==1.13.1
jax-venv: .venv-jax/bin/python  ## the authors' JAX references' environment (pinned jax[cpu], flax, optax, distrax, ml_collections, jaxtyping; the harness runs in .venv)
.venv-jax/bin/python:
	$(PYTHON) -m venv .venv-jax
	.venv-jax/bin/pip install --quiet $(JAX_PINS)

parity: setup jax-venv  ## ours vs the authors' code: one-update parity, 100-update drift, throughput (make parity FQL_REPO=dir DROL_REPO=dir IQL_REPO=dir LOM_REPO=dir)
	$(PY) -m parity $(if $(FQL_REPO),--fql-repo $(FQL_REPO)) $(if $(DROL_REPO),--drol-repo $(DROL_REPO)) $(if $(IQL_REPO),--iql-repo $(IQL_REPO)) $(if $(LOM_REPO),--lom-repo $(LOM_REPO)) --compile --verbose

speed: setup d3rlpy-venv  ## training updates/s of every method vs d3rlpy's IQL, same data, same run
	$(PY) -m perf.speed --d3rlpy-python .venv-d3rlpy/bin/python --compile

perf-seeds: setup  ## single-seed updates/s vs S seeds trained as one model (S = 1, 3, 8; 32 on CUDA), toy and paper sizes, one thread -> results/perf/seeds.{csv,json}
	$(PY) -m perf.seeds --out results/perf

datasets: setup  ## download a suite's datasets (needs network)
	$(VENV)/bin/modebench datasets download --suite $(SUITE)

generate: setup  ## build a local suite's datasets offline
	$(VENV)/bin/modebench datasets generate --suite $(SUITE)

sweep: setup  ## run a grid under Ray Tune: make sweep GRID=... [ADDRESS=auto] [SEEDS=0,1,2 (a list)] [RESUME=1] [OUT=dir]
	$(VENV)/bin/modebench sweep $(GRID) $(if $(ADDRESS),--address $(ADDRESS)) $(if $(filter command line environment,$(origin SEEDS)),--seeds $(SEEDS)) $(if $(RESUME),--resume) $(if $(OUT),--results $(OUT))

tables: setup  ## paper-layout tables from stored records only -> results/tables/<protocol>/ (+ profile/)
	$(VENV)/bin/modebench tables

plots: setup  ## paper figures from stored records only -> results/plots/<protocol>/
	$(VENV)/bin/modebench plots

profile: setup  ## time act of every method -> profile records (results/profiles/), rendered to results/tables/profile/
	$(VENV)/bin/modebench profile
	$(VENV)/bin/modebench tables

report: setup  ## tables + plots + results/report.md and one self-contained results/report.html, from stored records only
	$(VENV)/bin/modebench report --html

clean:
	rm -rf results/runs results/tables results/plots results/profiles results/report.md results/claims results/claims.md results/claims.csv
