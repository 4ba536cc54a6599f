"""How long Airflow takes to parse the pipeline DAG files as specs pile up, against its 30 s
per-file import timeout. Each file is parsed and serialized the way the DAG processor does it.

    python bench/dagbag_parse.py [--specs 1 50 200] [--repeats 3] [--output bench/RESULTS-dagbag.md]

Each file, count and repeat runs in a fresh interpreter with Airflow imported first, as a DAG
processor child does, over generated specs varied like a real repo (schedules, formats, Assets).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run in the child: parse one DAG file, as a DAG processor child does, and serialize its DAGs.
_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from airflow.configuration import conf
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
ready = time.perf_counter() - t0
files = {}
for path in sys.argv[1:]:
    start = time.perf_counter()
    bag = DagBag(dag_folder=path)
    parsed = time.perf_counter() - start
    for dag in bag.dags.values():
        DagSerialization.to_dict(dag)
    files[path] = {"parse": parsed, "total": time.perf_counter() - start, "dags": len(bag.dags),
                   "errors": len(bag.import_errors)}
print(json.dumps({"airflow_import": ready, "files": files,
                  "timeout": conf.getfloat("core", "dagbag_import_timeout")}))
"""


def measure(specs: int, repeats: int, work: Path) -> dict:
    from shardflow.spec.examples import write_example_specs

    dags = work / f"dags-{specs}"
    shutil.rmtree(dags, ignore_errors=True)
    (dags / "pipelines").mkdir(parents=True)
    for path in (REPO / "dags").glob("*.py"):
        shutil.copy(path, dags / path.name)
    write_example_specs(dags / "pipelines", specs)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "SHARDFLOW_INSTANCE_QUOTAS": "ml.m5.xlarge=16",
    }
    files = [str(dags / name) for name in ("shardflow_pipelines.py", "shardflow_pipeline_errors.py")]
    per_file = {}
    for file in files:
        runs = []
        for _ in range(repeats):
            result = subprocess.run(
                [sys.executable, "-c", _CHILD, file], env=env, capture_output=True, text=True, timeout=600, check=True
            )
            runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        per_file[Path(file).name] = {
            "seconds": statistics.median(r["files"][file]["total"] for r in runs),
            "dags": runs[0]["files"][file]["dags"],
            "errors": runs[0]["files"][file]["errors"],
        }
    return {"specs": specs, "files": per_file, "timeout": runs[0]["timeout"]}


def report(results: list[dict], repeats: int) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = [
        "# DagBag parse time of the pipeline DAG files",
        "",
        f"`python bench/dagbag_parse.py --specs {' '.join(str(r['specs']) for r in results)} --repeats {repeats}`, "
        f"{when}, {os.cpu_count()} cores. Median of {repeats} fresh interpreters; each file parsed and its DAGs "
        "serialized as the DAG processor does, after Airflow itself is imported.",
        "",
        "| specs | file | DAGs | import errors | seconds | ms per spec | share of the 30 s timeout |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for name, row in result["files"].items():
            share = row["seconds"] / result["timeout"]
            per_spec = 1000 * row["seconds"] / max(result["specs"], 1)
            lines.append(
                f"| {result['specs']:,} | {name} | {row['dags']} | {row['errors']} | {row['seconds']:.2f} "
                f"| {per_spec:.1f} | {share:.3f}x |"
            )
    first, largest = results[0], results[-1]
    worst = max(row["seconds"] for row in largest["files"].values())
    lines += [
        "",
        f"At {largest['specs']:,} specs the slower file takes {worst:.2f} s: {worst / largest['timeout']:.3f}x of "
        f"Airflow's {largest['timeout']:.0f} s import timeout.",
    ]
    if largest["specs"] > first["specs"]:
        base = max(row["seconds"] for row in first["files"].values())
        marginal = (worst - base) / (largest["specs"] - first["specs"])
        if marginal > 0:
            lines.append(
                f"Each further spec adds {1000 * marginal:.1f} ms: the timeout would be reached near "
                f"{int(first['specs'] + (largest['timeout'] - base) / marginal):,} specs."
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, help="also write the report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shardflow-dagbag-") as work:
        results = []
        for count in args.specs:
            results.append(measure(count, args.repeats, Path(work)))
            print(f"{count} specs: {json.dumps(results[-1]['files'])}", file=sys.stderr, flush=True)
    text = report(results, args.repeats)
    print(text)
    if args.output:
        args.output.write_text(text)
    failed = [r for r in results if any(row["errors"] for row in r["files"].values())]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
