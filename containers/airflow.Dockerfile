# syntax=docker/dockerfile:1
# Airflow for the local stack (docker-compose.yml): the same pinned versions as
# Shardflow's own uv.lock, not the upstream Airflow image and its constraints.
# Build from the repository root: docker build -f containers/airflow.Dockerfile .

FROM python:3.11.11-slim-bookworm

RUN pip install --no-cache-dir uv==0.13.8

ENV UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/airflow-venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    AIRFLOW_HOME=/opt/airflow

WORKDIR /opt/shardflow

COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra airflow --no-install-project

COPY README.md ./
COPY plugins/ plugins/
# Editable on purpose: compose mounts ./plugins over /opt/shardflow/plugins, so
# the installed package follows the working tree without a rebuild.
# PostgreSQL drivers: psycopg2 for the metadata DB URL, and asyncpg, from which
# Airflow 3 derives its async engine. The `airflow` extra brings neither (the
# lock has no PostgreSQL driver), so they are pinned here until it does.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra airflow \
    && uv pip install --python /opt/airflow-venv/bin/python \
        psycopg2-binary==2.9.13 asyncpg==0.32.0

# Airflow runs as a non-root user; logs/ exists in the image so that a named
# volume mounted there starts out owned by this user.
RUN useradd --uid 50000 --user-group --create-home --shell /usr/sbin/nologin airflow \
    && mkdir -p /opt/airflow/logs /opt/shardflow/dags \
    && chown -R airflow:airflow /opt/airflow

ENV PATH=/opt/airflow-venv/bin:$PATH \
    VIRTUAL_ENV=/opt/airflow-venv \
    PYTHONUNBUFFERED=1

USER 50000:50000
WORKDIR /opt/airflow

ENTRYPOINT ["airflow"]
CMD ["version"]
