"""``make mwaa-bundle``'s output, installed the way Amazon MWAA installs it: a fresh virtual
environment holding only what MWAA's image brings (Airflow and its Amazon provider), then the
bundle's requirements.txt with plugins.zip unpacked where it points, then startup.sh; every DAG
file must import with no error. Twice: on the Airflow of uv.lock, and on Airflow 3.0.6, MWAA's
first Airflow 3 (installed from the package index, the provider resolved by uv)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from infra.mwaa_bundle import MWAA_PLUGINS, split_requirements, write_bundle

REPO = Path(__file__).resolve().parents[2]
UV = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")

PARSE = """
import json, os, sys
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0
    from airflow.models.dagbag import DagBag
import shardflow, shardflow_plugin
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({
    "errors": {path: str(error) for path, error in bag.import_errors.items()},
    "dags": sorted(bag.dag_ids),
    "package": shardflow.__file__,
    "plugin": shardflow_plugin.ShardflowPlugin.name,
    "table": os.environ.get("SHARDFLOW_JOB_TABLE"),
    "airflow": __import__("airflow").__version__,
}))
"""


def uv(*args: str, cwd: Path) -> None:
    subprocess.run([UV, *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("airflow", ["locked", "3.0.6"])
def test_mwaa_bundle_imports_every_dag_in_a_fresh_environment_with_only_its_requirements(tmp_path, airflow):
    bundle = write_bundle(tmp_path / "bundle", UV, ["SHARDFLOW_JOB_TABLE=jobs-on-mwaa"])
    assert sorted(p.name for p in bundle.iterdir()) == ["dags", "plugins.zip", "requirements.txt", "startup.sh"]
    requirements = (bundle / "requirements.txt").read_text()
    assert "apache-airflow" not in requirements and "moto" not in requirements

    # What MWAA does with the bundle: plugins.zip unpacked into the plugins folder, then
    # requirements.txt installed over its Airflow, then startup.sh before each component.
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(bundle / "plugins.zip") as archive:
        archive.extractall(plugins)
    (tmp_path / "requirements.txt").write_text(requirements.replace(MWAA_PLUGINS, str(plugins)))
    provided, _ = split_requirements(UV)
    if airflow != "locked":
        provided = [f"apache-airflow=={airflow}", "apache-airflow-providers-amazon"]
    (tmp_path / "mwaa-image.txt").write_text("\n".join(provided) + "\n")
    venv = tmp_path / "venv"
    uv("venv", "--quiet", "--python", sys.executable, str(venv), cwd=tmp_path)
    uv("pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r", "mwaa-image.txt", cwd=tmp_path)
    uv("pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r", "requirements.txt", cwd=tmp_path)

    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(bundle / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "PYTHONPATH": str(plugins),  # as MWAA puts its plugins folder on the path; nothing of the repo's
    }
    (tmp_path / "parse.py").write_text(PARSE)
    command = f". {bundle / 'startup.sh'} && python {tmp_path / 'parse.py'} {bundle / 'dags'}"
    result = subprocess.run(["sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])

    assert parsed["errors"] == {}
    assert airflow == "locked" or parsed["airflow"] == airflow
    specs = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "dags" / "pipelines").glob("*.yaml"))]
    assert parsed["dags"] == sorted(["shardflow_adhoc", *(f"shardflow_{spec['name']}" for spec in specs)])
    assert parsed["package"].startswith(str(venv))  # the wheel from plugins.zip, not this checkout
    assert parsed["plugin"] == "shardflow"
    assert parsed["table"] == "jobs-on-mwaa"  # from startup.sh: the environment above has no SHARDFLOW_*
