"""The distribution benchmark reads each instance's figures from the script's own log lines: the
lines the script writes must be the lines the benchmark parses."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from bench.distribution import _instances
from shardflow.processing.claims import ClaimStats
from shardflow.processing.script import _log_claims


def test_the_benchmark_parses_the_claims_line_the_script_logs(tmp_path, caplog):
    stats = ClaimStats(claims=7, taken=2, lists=3, renewals=1, results=5, units=5, rows=12_345, busy_seconds=3.2)
    with caplog.at_level(logging.INFO, logger="batch_predict"):
        _log_claims("algo-2", SimpleNamespace(stats=stats))  # type: ignore[arg-type]
    log = tmp_path / "algo-2" / "script.log"
    log.parent.mkdir()
    files = "2026-11-30 12:00:00,000 INFO batch_predict: algo-2: 5 files (0 failed), 12345 rows in 4.500 s; manifest m"
    log.write_text(caplog.text + files + "\n")

    found = _instances(tmp_path)

    assert found == {
        "algo-2": {
            "units": 5,
            "rows": 12_345,
            "busy": 3.2,
            "span": 4.5,
            "requests": 16,
            "taken": 2,
        }
    }


def test_a_sharded_instance_is_read_from_its_files_line(tmp_path):
    log = tmp_path / "algo-1" / "script.log"
    log.parent.mkdir()
    log.write_text("INFO batch_predict: algo-1: 12 files (0 failed), 288000 rows in 11.000 s; manifest m\n")

    assert _instances(tmp_path)["algo-1"] == {
        "units": 12,
        "rows": 288_000,
        "busy": 11.0,
        "span": 11.0,
        "requests": 0,
        "taken": 0,
    }
