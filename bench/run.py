"""The benchmark (``make bench``): every method on the same data in one run, each in a fresh process,
printed as a table of rows/s and ratios and written to ``bench/RESULTS.md``."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.datasets import FEATURES, MIXED_FEATURES, Sizes, ensure_dataset, ensure_mixed, ensure_models
from bench.measure import Run, run_measured
from bench.report import Row, render, targets

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "bench" / "data"
PEERS_PYTHON = REPO / "bench" / ".peers" / "bin" / "python"
SCRIPT = REPO / "processing_scripts" / "batch_predict.py"
QUICK = Sizes(rows=200_000, files=8, low=10_000, high=40_000, memory_mb=(60, 240))

_DONE = re.compile(r"files \((\d+) failed\), (\d+) rows in ([0-9.]+) s")
_CPU = re.compile(r"CPU over the files: ([0-9.]+) s")


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "project" (bench.methods), "script" (the processing script), "peer" (bench/peers.py)
    entry: str = ""


def _command(method: Method, model: tuple[Path, str], inputs: Path, output: Path, workers: int) -> list[str]:
    path, sha = model
    if method.kind == "script":
        return [
            *(sys.executable, str(SCRIPT), "--input-dir", str(inputs), "--output-dir", str(output)),
            *("--model-path", str(path), "--model-sha256", sha, "--workers", str(workers)),
        ]
    arguments = {"inputs": str(inputs), "workers": workers}
    if not method.entry.startswith("ceiling"):
        arguments["output"] = str(output)
    if method.entry != "io_floor":
        arguments |= {"model": str(path), "features": MIXED_FEATURES if method.entry == "ceiling_frame" else FEATURES}
    if method.kind == "peer":
        return [str(PEERS_PYTHON), str(REPO / "bench" / "peers.py"), method.entry, json.dumps(arguments)]
    return [sys.executable, "-m", "bench.methods", method.entry, json.dumps(arguments)]


def _once(method: Method, model: tuple[Path, str], inputs: Path, scratch: Path, workers: int) -> Run:
    output = scratch / "out"
    shutil.rmtree(output, ignore_errors=True)
    # As the container runs: bytecode compiled at install, none written at run time.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO)}
    log = scratch / f"{method.entry or method.kind}.log"
    run = run_measured(_command(method, model, inputs, output, workers), env, log)
    if method.kind == "script":
        found = _DONE.search(run.log)
        if not found or found.group(1) != "0":
            raise RuntimeError(f"the processing script did not finish cleanly; see {log}")
        run.rows, run.work_seconds = int(found.group(2)), float(found.group(3))
        cpu = _CPU.search(run.log)
        run.work_cpu_seconds = float(cpu.group(1)) if cpu else None
    shutil.rmtree(output, ignore_errors=True)
    return run


def _median(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.work_seconds)
    middle = ordered[len(ordered) // 2]
    middle.wall_seconds = statistics.median(r.wall_seconds for r in runs)
    middle.cpu_seconds = statistics.median(r.cpu_seconds for r in runs)
    cpus = [r.work_cpu_seconds for r in runs if r.work_cpu_seconds is not None]
    middle.work_cpu_seconds = statistics.median(cpus) if cpus else None
    return middle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200k rows in 8 files, one repeat: a first look")
    parser.add_argument("--repeats", type=int, default=None, help="runs per method (median); default 5, quick 1")
    parser.add_argument("--peers", action="store_true", help="add Ray Data and Spark (needs `make bench-peers`)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    repeats = args.repeats or (1 if args.quick else 5)
    if args.peers and not PEERS_PYTHON.exists():
        parser.error("the peers' environment is missing: run `make bench-peers` first")
    root = DATA / ("quick" if args.quick else "full")
    print(f"data and models under {root} (made once) ...", flush=True)
    folders, models = ensure_dataset(root, sizes), ensure_models(root, sizes)
    folders["mixed"], models["pipeline"] = ensure_mixed(root, sizes)
    scratch = root / "scratch"
    scratch.mkdir(exist_ok=True)

    ceiling, floor, blog = (
        Method("ceiling", "project", "ceiling"),
        Method("I/O floor", "project", "io_floor"),
        Method("blog pattern", "project", "blog"),
    )
    script = Method("processing script", "script")
    peers = [Method("Ray Data", "peer", "ray"), Method("Spark", "peer", "spark")] if args.peers else []
    plan = [
        ("xgboost", "files", [ceiling, floor, blog, script, *peers]),
        ("xgboost", "big", [floor, script]),
        ("logreg", "files", [ceiling, floor, blog, script]),
        # Its own ceiling: model.predict(df), the DataFrame in memory, split over every core.
        ("pipeline", "mixed", [Method("ceiling", "project", "ceiling_frame"), script]),
    ]
    results: dict[tuple[str, str, str], list[Run]] = {}
    failures: dict[str, str] = {}
    for repeat in range(repeats):  # round by round, so a busy spell on the machine hits every method
        for model, scenario, methods in plan:
            for method in methods:
                key = (model, scenario, method.name)
                print(f"[{repeat + 1}/{repeats}] {model} {scenario}: {method.name}", flush=True)
                try:
                    run = _once(method, models[model], folders[scenario], scratch, args.workers)
                except RuntimeError as error:
                    if method.kind != "peer":
                        raise
                    print(f"  {method.name} failed, left out of the table: {error}", flush=True)
                    failures[method.name] = str(error)
                    continue
                results.setdefault(key, []).append(run)
    memory = []
    for mb in sizes.memory_mb:
        folder = folders[f"mem-{mb}"]
        print(f"memory: processing script (logreg) on one file of {mb} MB of rows", flush=True)
        run = _once(script, models["logreg"], folder, scratch, args.workers)
        memory.append((sum(p.stat().st_size for p in folder.glob("*.parquet")), run))

    rows = [Row(model, scenario, name, _median(runs)) for (model, scenario, name), runs in results.items()]
    loadavg = os.getloadavg()
    context = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "load": f"{loadavg[0]:.2f}, {loadavg[1]:.2f}, {loadavg[2]:.2f} (1, 5, 15 min) at the end",
        "sizes": sizes,
        "repeats": repeats,
        "workers": args.workers,
        "quick": args.quick,
        "failures": failures,
    }
    text = render(rows, memory, context)
    print("\n" + text)
    for line in targets(rows):
        print(line)
    args.results.write_text(text)
    print(f"\nwritten to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
