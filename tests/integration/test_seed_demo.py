"""`shardflow seed-demo`: the demo's model and inputs in a bucket, for running the demo on real AWS."""

import hashlib
from pathlib import Path

from shardflow.cli import main
from shardflow.spec import load_spec

REPO = Path(__file__).resolve().parents[2]


def test_seed_demo_writes_the_model_the_demo_spec_pins_and_a_day_of_inputs(s3, bucket, capsys):
    assert main(["seed-demo", f"s3://{bucket}/", "--date", "2026-02-03"]) == 0

    model = s3.get_object(Bucket=bucket, Key="models/demo/model.joblib")["Body"].read()
    assert hashlib.sha256(model).hexdigest() == load_spec(REPO / "dags" / "pipelines" / "demo.yaml").model.sha256
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="events/dt=2026-02-03/")["Contents"]]
    parquet = [key for key in listed if key.endswith(".parquet")]
    # The demo spec's input.wait waits for the marker a producer writes last.
    assert len(parquet) == 6 and sorted(set(listed) - set(parquet)) == ["events/dt=2026-02-03/_SUCCESS"]
    printed = capsys.readouterr().out
    assert f"s3://{bucket}/events/dt=2026-02-03/" in printed and "66,800 rows" in printed
