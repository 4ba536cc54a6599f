# The two front-door commands: `make demo` and `make test`. Both install what they need:
# uv (from the package index, into .tools/, when it is not on PATH), then the locked environment.
SHELL := /bin/bash
PYTHON ?= python3.11
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
# Compiled bytecode: otherwise every processing worker recompiles scikit-learn on import.
export UV_COMPILE_BYTECODE := 1
export UV_PYTHON := $(PYTHON)

.PHONY: demo up down status test test-unit lint docs sync clean bench bench-peers bench-triggers bench-dags bench-status-page bench-distribution mwaa-bundle

demo: .venv/.synced
	.venv/bin/shardflow demo

# The platform on this machine: moto and the four Airflow components on 127.0.0.1, in the
# background until `make down` (state under .shardflow/platform/, kept across restarts).
up: .venv/.synced
	.venv/bin/shardflow up

down: .venv/.synced
	.venv/bin/shardflow down

status: .venv/.synced
	.venv/bin/shardflow status

# Everything: tests/unit (in-memory, seconds), tests/integration (a moto server, the local
# backend, the processing script), tests/e2e (the demo, a live Airflow).
test: .venv/.synced
	.venv/bin/python -m pytest

test-unit: .venv/.synced
	.venv/bin/python -m pytest tests/unit

lint: .venv/.synced
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	.venv/bin/hadolint containers/Dockerfile containers/airflow.Dockerfile

# The documentation site (docs/, mkdocs.yml) into .shardflow/site/; a broken link fails the build.
docs: .venv/.synced
	.venv/bin/mkdocs build --strict --site-dir .shardflow/site

# What Amazon MWAA takes, in .shardflow/mwaa/: dags/, plugins.zip (the package as a wheel),
# requirements.txt pinned from uv.lock (Airflow is MWAA's) and startup.sh with the deployment's
# settings: make mwaa-bundle SETTINGS="SHARDFLOW_JOB_TABLE=jobs-prod SHARDFLOW_SAGEMAKER_ROLE_ARN=...".
SETTINGS ?=
mwaa-bundle: .venv/.synced | $(UV)
	.venv/bin/python infra/mwaa_bundle.py --output .shardflow/mwaa --uv $(UV) $(addprefix --setting ,$(SETTINGS))

# Trigger polling at scale: 10, 100 and 1,000 jobs waiting in one triggerer (about 4 minutes).
bench-triggers: .venv/.synced
	.venv/bin/python bench/trigger_polling.py

sync: .venv/.synced

# The jobs page at scale: 10,000 jobs in moto, the DynamoDB calls and server time of the first page.
bench-status-page: .venv/.synced
	.venv/bin/python bench/status_page.py

# Sharded against dynamic distribution on real local jobs against moto: uneven files, one split
# object, an instance killed mid-job, even files (bench/RESULTS-distribution.md; about 11 minutes).
bench-distribution: .venv/.synced
	.venv/bin/python bench/distribution.py

# DagBag parse time of the pipeline DAG files at 1, 50 and 200 specs, against the 30 s timeout.
bench-dags: .venv/.synced
	.venv/bin/python bench/dagbag_parse.py --output bench/RESULTS-dagbag.md

# The benchmark (bench/RESULTS.md): `make bench`, or `make bench BENCH=--quick` for a first look.
# `make bench-peers` adds Ray Data and Spark (Spark needs Java 17), installed on first use into
# bench/.peers, an environment of their own outside the project's lock, with the project's own
# versions of the libraries that unpickle the models.
BENCH ?=
PEERS := "ray[data]==2.60.0" "pyspark==4.3.0"
SHARED_LIBRARIES := xgboost-cpu scikit-learn numpy pyarrow pandas joblib

bench: .venv/.synced
	.venv/bin/python -m bench.run $(BENCH)

bench-peers: .venv/.synced bench/.peers/.installed
	.venv/bin/python -m bench.run --peers $(BENCH)

bench/.peers/.installed: .venv/.synced | $(UV)
	$(UV) venv --allow-existing bench/.peers
	$(UV) pip install --python bench/.peers/bin/python $(PEERS) $$(.venv/bin/python -c \
	  'import sys; from importlib.metadata import version; print(*(f"{p}=={version(p)}" for p in sys.argv[1:]))' \
	  $(SHARED_LIBRARIES))
	touch $@

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras
	touch $@

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==0.13.8

clean:
	rm -rf .venv .tools .shardflow
