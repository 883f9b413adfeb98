# ModeBench: `make setup` once, then `make test`, `make bench SUITE=toy`, ...
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUITE ?= toy
SEEDS ?= 3
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
GRID ?= ci_toy
ADDRESS ?=

.PHONY: docs datasets generate setup test test-slow mutants bench claims lint speed perf-seeds d3rlpy-venv tables plots profile report sweep clean

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
	$(VENV)/bin/modebench bench --suite $(SUITE) --seeds $(SEEDS) --jobs $(JOBS)

docs: setup  ## regenerate docs/run-settings.md (every method x suite, both protocols, each value's source)
	$(PY) -m modebench.benchmarks.run.protocols --write-docs

claims: setup  ## each paper's mechanism claims measured on the toy suite -> results/claims.md, results/claims.csv
	$(VENV)/bin/modebench claims --seeds $(SEEDS) --jobs $(JOBS)

lint: setup
	$(PY) -m ruff check algorithms benchmarks sweeps analysis modebench perf tools tests

d3rlpy-venv: .venv-d3rlpy/bin/python  ## d3rlpy 2.8.1 in its own venv (it pins gymnasium 1.0.0)
.venv-d3rlpy/bin/python:
	$(PYTHON) -m venv .venv-d3rlpy
	.venv-d3rlpy/bin/pip install --quiet torch==2.13.0 d3rlpy==2.8.1

speed: setup d3rlpy-venv  ## training updates/s of every method vs d3rlpy's IQL, same data, same run
	$(PY) -m perf.speed --d3rlpy-python .venv-d3rlpy/bin/python --compile

perf-seeds: setup  ## single-seed updates/s vs S seeds trained as one model (S = 1, 3, 8; 32 on CUDA), toy and paper sizes, one thread -> results/perf/seeds.{csv,json}
	$(PY) -m perf.seeds --out results/perf

datasets: setup  ## download a suite's datasets (needs network)
	$(VENV)/bin/modebench datasets download --suite $(SUITE)

generate: setup  ## build a local suite's datasets offline
	$(VENV)/bin/modebench datasets generate --suite $(SUITE)

sweep: setup  ## run a grid under Ray Tune: make sweep GRID=... [ADDRESS=auto] [SEEDS=0,1,2] [RESUME=1] [OUT=dir]
	$(VENV)/bin/modebench sweep $(GRID) $(if $(ADDRESS),--address $(ADDRESS)) $(if $(filter command line environment,$(origin SEEDS)),--seeds $(SEEDS)) $(if $(RESUME),--resume) $(if $(OUT),--out $(OUT))

tables: setup  ## paper-layout tables from stored records only -> results/tables/<protocol>/ (+ profile/)
	$(VENV)/bin/modebench tables

plots: setup  ## paper figures from stored records only -> results/plots/<protocol>/
	$(VENV)/bin/modebench plots

profile: setup  ## time act of every method -> profile records (results/profiles/), rendered to results/tables/profile/
	$(VENV)/bin/modebench profile
	$(VENV)/bin/modebench tables

report: setup  ## tables + plots + results/report.md, from stored records only
	$(VENV)/bin/modebench report

clean:
	rm -rf results/runs results/tables results/plots results/profiles results/report.md results/claims results/claims.md results/claims.csv
