"""The DAG files in dags/, parsed by Airflow's own DagBag: every DAG imports, and a broken spec is
one import error that leaves the other pipelines' DAGs in place."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from shardflow.spec.examples import write_example_specs

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "dags" / "pipelines" / "demo.yaml"

PARSE = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={folder!r})
print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                  "dags": {{d: [t.task_id for t in bag.dags[d].topological_sort()] for d in bag.dags}},
                  "pools": {{d: {{t.task_id: [t.pool, t.pool_slots] for t in bag.dags[d].tasks}} for d in bag.dags}}}}))
"""


def airflow_env(folder: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        **extra,
    }


def parse_dags(folder: Path, tmp_path: Path, **extra: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PARSE.format(folder=str(folder))],
        env=airflow_env(folder, tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def dags_folder(tmp_path: Path, specs: dict[str, str]) -> Path:
    """A copy of dags/'s DAG files with the given specs (file stem -> YAML) in pipelines/."""
    dags = tmp_path / "dags"
    (dags / "pipelines").mkdir(parents=True)
    for path in (REPO / "dags").glob("*.py"):
        shutil.copy(path, dags / path.name)
    for name, text in specs.items():
        (dags / "pipelines" / f"{name}.yaml").write_text(text)
    return dags


def spec_named(name: str, text: str | None = None) -> str:
    return (text or DEMO.read_text()).replace("name: demo", f"name: {name}")


def test_every_dag_imports_without_errors(tmp_path):
    parsed = parse_dags(REPO / "dags", tmp_path)
    assert parsed["errors"] == {}
    # The demo's input.wait adds the task that waits for its day's input.
    assert parsed["dags"]["shardflow_demo"] == ["wait_for_input", "prepare", "submit", "wait", "publish"]
    assert parsed["dags"]["shardflow_adhoc"] == ["prepare", "submit", "wait", "publish"]


def test_broken_specs_are_one_import_error_and_the_other_dags_stay(tmp_path):
    specs = {
        "demo": DEMO.read_text(),
        "second": spec_named("second"),
        "broken": spec_named("broken").replace("instance_count: 2", "instance_count: -1"),
        "big": spec_named("big").replace("instance_count: 2", "instance_count: 9"),
    }
    parsed = parse_dags(dags_folder(tmp_path, specs), tmp_path, SHARDFLOW_INSTANCE_QUOTAS="ml.m5.xlarge=8")
    assert {"shardflow_demo", "shardflow_second", "shardflow_adhoc"} <= parsed["dags"].keys()
    assert not {"shardflow_broken", "shardflow_big"} & parsed["dags"].keys()
    (where, error), *_ = parsed["errors"].items()
    assert list(parsed["errors"]) == [where] and where.endswith("shardflow_pipeline_errors.py")
    assert "2 pipeline spec(s) cannot become a DAG" in error and "the other 2 are" in error
    assert (
        "broken.yaml: invalid pipeline spec\n  compute.instance_count: Input should be greater than or equal to 1"
        in error
    )
    assert (
        "big.yaml: invalid pipeline spec\n  compute.instance_count: 9 instances of ml.m5.xlarge exceed its quota of 8"
        in error
    )

    # With quotas declared, a job holds one slot per instance from its submit to its end.
    pools = parsed["pools"]["shardflow_demo"]
    assert pools["submit"] == pools["wait"] == ["shardflow-ml.m5.xlarge", 2]
    assert pools["prepare"][0] == pools["publish"][0] == "default_pool"


def test_the_dag_processor_keeps_the_good_dags_active_beside_a_broken_spec(tmp_path):
    """What the UI and the scheduler see: Airflow marks every DAG of a file with an import error
    stale, so the error must come from a file that defines no DAG."""
    broken = spec_named("broken").replace("sha256: ", "sha256: 0")
    dags = dags_folder(tmp_path, {"demo": DEMO.read_text(), "second": spec_named("second"), "broken": broken})
    database = tmp_path / "airflow.db"
    env = airflow_env(dags, tmp_path, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{database}")
    airflow = str(Path(sys.executable).with_name("airflow"))
    for args in (["db", "migrate"], ["dag-processor", "--num-runs", "1"]):
        result = subprocess.run([airflow, *args], env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with sqlite3.connect(database) as db:
        dag_rows = dict(db.execute("select dag_id, is_stale or has_import_errors from dag").fetchall())
        errors = dict(db.execute("select filename, stacktrace from import_error").fetchall())
    assert dag_rows == {"shardflow_demo": 0, "shardflow_second": 0, "shardflow_adhoc": 0}
    assert list(errors) == ["shardflow_pipeline_errors.py"]
    assert (
        "broken.yaml: invalid pipeline spec\n  model.sha256: must be 64 hexadecimal characters"
        in errors["shardflow_pipeline_errors.py"]
    )


def test_two_hundred_generated_specs_import_as_two_hundred_dags(tmp_path):
    dags = dags_folder(tmp_path, {})
    write_example_specs(dags / "pipelines", 200)
    parsed = parse_dags(dags, tmp_path, SHARDFLOW_INSTANCE_QUOTAS="ml.m5.xlarge=16")
    assert parsed["errors"] == {}
    pipelines = [d for d in parsed["dags"] if d.startswith("shardflow_pipeline-")]
    assert len(pipelines) == 200
    assert all(parsed["dags"][d] == ["prepare", "submit", "wait", "publish"] for d in pipelines)


def test_a_hostile_template_in_one_spec_leaves_every_good_pipeline_loaded(tmp_path):
    """Expressions that hung Jinja's sandbox are refused by the template parser at once: the DagBag
    loads the good pipelines and reports the hostile spec, naming its field."""
    hostile = spec_named("hostile").replace("dt={{ ds }}/", "dt={{ 9**(9**9) }}/{{ lipsum(10**6) }}/", 1)
    assert hostile != spec_named("hostile")
    dags = dags_folder(tmp_path, {"demo": DEMO.read_text(), "second": spec_named("second"), "hostile": hostile})

    started = time.monotonic()
    parsed = parse_dags(dags, tmp_path, AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="20")
    assert time.monotonic() - started < 60

    assert {"shardflow_demo", "shardflow_second", "shardflow_adhoc"} <= parsed["dags"].keys()
    assert "shardflow_hostile" not in parsed["dags"]
    (where, error), *_ = parsed["errors"].items()
    assert list(parsed["errors"]) == [where] and where.endswith("shardflow_pipeline_errors.py")
    assert "hostile.yaml: invalid pipeline spec\n  input.prefix: is not a valid template: {{ 9**(9**9) }}" in error
