"""``make mwaa-bundle``: what an Amazon MWAA environment takes, in one folder.

- ``dags/``: this repository's DAG files and pipeline specs, to sync to the environment's DAG folder.
- ``plugins.zip``: the ``shardflow`` package as a wheel, the module that registers its Airflow
  plugin, and ``constraints.txt``. MWAA unpacks it into ``/usr/local/airflow/plugins``.
- ``requirements.txt``: the wheel, by its path in that folder, and every package it needs that
  Airflow and its Amazon provider do not bring, pinned to the versions of ``uv.lock``. Airflow
  itself is MWAA's. Its ``--constraint`` names ``constraints.txt`` (the same pins): without one,
  MWAA applies Airflow's constraint file, whose pins of numpy, pandas or pyarrow may not be ours.
- ``startup.sh``: exports the deployment's ``SHARDFLOW_*`` settings to every Airflow component.

    python infra/mwaa_bundle.py --output .shardflow/mwaa [--setting SHARDFLOW_JOB_TABLE=jobs-prod ...]
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Where MWAA unpacks plugins.zip.
MWAA_PLUGINS = "/usr/local/airflow/plugins"
#: What MWAA's image brings: Airflow and the Amazon provider, with everything they depend on.
PROVIDED = ("apache-airflow", "apache-airflow-providers-amazon")
#: The ``airflow`` extra's database drivers are for a self-managed Airflow on Postgres; MWAA runs
#: its own metadata database.
NOT_FOR_MWAA = frozenset({"psycopg2-binary", "asyncpg"})
#: The settings ``startup.sh`` may export (``docs/operations.md``, "Deployment settings").
SETTINGS = frozenset(
    {
        "SHARDFLOW_JOB_TABLE",
        "SHARDFLOW_AWS_CONN_ID",
        "SHARDFLOW_INSTANCE_QUOTAS",
        "SHARDFLOW_POLL_SECONDS",
        "SHARDFLOW_SAGEMAKER_IMAGE_URI",
        "SHARDFLOW_SAGEMAKER_ROLE_ARN",
        "SHARDFLOW_SAGEMAKER_VOLUME_SIZE_GB",
        "SHARDFLOW_SAGEMAKER_VOLUME_KMS_KEY_ID",
        "SHARDFLOW_SAGEMAKER_SUBNETS",
        "SHARDFLOW_SAGEMAKER_SECURITY_GROUP_IDS",
    }
)


class BundleError(Exception):
    """A bundle cannot be made from these inputs; the message says which and what to do."""


def _closure(dependencies: dict[str, set[str]], roots: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(dependencies.get(name, ()))
    return seen


def split_requirements(uv: str, lock_path: Path = REPO / "uv.lock") -> tuple[list[str], list[str]]:
    """The locked requirements of the project with its ``airflow`` extra, as ``uv export`` writes
    them (pins, and markers where a package is not for every platform), in two parts: what MWAA
    provides (Airflow, the Amazon provider and everything they need), and what the bundle adds."""
    lock = tomllib.loads(lock_path.read_text())
    dependencies: dict[str, set[str]] = {}
    for package in lock["package"]:  # a package locked at two versions (by marker) counts once
        dependencies.setdefault(package["name"], set()).update(d["name"] for d in package.get("dependencies", []))
    project = next((p for p in lock["package"] if p["name"] == "shardflow"), None)
    if project is None:
        raise BundleError(f"{lock_path} has no shardflow package: run this in the repository that holds it")
    wanted = [d["name"] for d in project.get("dependencies", [])]
    wanted += [
        d["name"]
        for d in project.get("optional-dependencies", {}).get("airflow", [])
        if d["name"] not in PROVIDED and d["name"] not in NOT_FOR_MWAA
    ]
    provided = _closure(dependencies, PROVIDED)
    needed = _closure(dependencies, wanted) - provided
    options = ["--frozen", "--no-dev", "--extra", "airflow", "--no-emit-project", "--no-hashes", "--no-header"]
    export = subprocess.run(
        [uv, "export", *options, "--no-annotate"],
        cwd=lock_path.parent,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    pins = [(line.split("==", 1)[0].strip(), line.strip()) for line in export if "==" in line]
    return [line for name, line in pins if name in provided], [line for name, line in pins if name in needed]


def startup_script(settings: Sequence[str]) -> str:
    """The lines of ``startup.sh`` for ``NAME=VALUE`` settings, each checked by Shardflow's own rules."""
    values: dict[str, str] = {}
    for setting in settings:
        name, equals, value = setting.partition("=")
        if not equals or name not in SETTINGS:
            raise BundleError(
                f"--setting {setting!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(SETTINGS))}"
            )
        values[name] = value
    sys.path.insert(0, str(REPO / "plugins"))
    from shardflow.errors import ConfigurationError
    from shardflow.spec.settings import Settings

    try:
        Settings.from_env(values)
    except ConfigurationError as error:
        raise BundleError(f"--setting: {error}") from None
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(values.items()))
    return (
        "#!/bin/sh\n"
        "# Run by MWAA before each Airflow component starts: Shardflow's deployment settings.\n"
        "# Generated by `make mwaa-bundle`; see docs/deploying.md.\n" + exports
    )


def build_wheel(uv: str, into: Path) -> Path:
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(into), str(REPO)], check=True, capture_output=True)
    (wheel,) = into.glob("shardflow-*.whl")
    return wheel


def write_bundle(output: Path, uv: str, settings: Sequence[str] = ()) -> Path:
    """Write the bundle into ``output`` (replacing what a previous run left there); returns it."""
    startup = startup_script(settings)
    pins = split_requirements(uv)[1]
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    shutil.copytree(REPO / "dags", output / "dags", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    with tempfile.TemporaryDirectory() as scratch:
        wheel = build_wheel(uv, Path(scratch))
        constraints = "".join(f"{pin}\n" for pin in pins)
        with zipfile.ZipFile(output / "plugins.zip", "w", zipfile.ZIP_DEFLATED) as plugins:
            plugins.write(wheel, wheel.name)
            plugins.write(REPO / "plugins" / "shardflow_plugin.py", "shardflow_plugin.py")
            plugins.writestr("constraints.txt", constraints)
    (output / "requirements.txt").write_text(
        "# Shardflow on Amazon MWAA: generated by `make mwaa-bundle` from uv.lock; Airflow is MWAA's.\n"
        f"--constraint {MWAA_PLUGINS}/constraints.txt\n"
        f"{MWAA_PLUGINS}/{wheel.name}\n" + constraints
    )
    (output / "startup.sh").write_text(startup)
    (output / "startup.sh").chmod(0o755)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPO / ".shardflow" / "mwaa", help="the bundle's folder")
    parser.add_argument("--uv", default=shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv"), help="uv")
    parser.add_argument("--setting", action="append", default=[], help="NAME=VALUE for startup.sh (repeatable)")
    args = parser.parse_args(argv)
    try:
        output = write_bundle(args.output, args.uv, args.setting)
    except BundleError as error:
        print(f"mwaa-bundle: {error}", file=sys.stderr)
        return 1
    print(f"MWAA bundle in {output}: dags/, plugins.zip, requirements.txt, startup.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
