"""What the local platform's moto server holds, kept on disk across `make down` / `make up`: every
S3 object and every DynamoDB table (its schema and items), since moto itself keeps nothing.

Object keys never become file names: each object is stored under a numbered file and listed in
an index, so a hostile key such as ``../../x`` cannot write outside the snapshot.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

__all__ = ["restore_snapshot", "save_snapshot"]

_INDEX = "index.json"


def save_snapshot(s3: Any, dynamodb: Any, folder: Path) -> dict[str, int]:
    """Write everything the server holds to ``folder`` (replacing what was there, atomically);
    returns how many buckets, objects, tables and items were saved."""
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "objects").mkdir(parents=True)
    counts = {"buckets": 0, "objects": 0, "tables": 0, "items": 0}
    index: dict[str, Any] = {"buckets": {}, "tables": {}}
    for bucket in (b["Name"] for b in s3.list_buckets().get("Buckets", [])):
        entries = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                name = f"{counts['objects']:08d}"
                s3.download_file(bucket, item["Key"], str(staging / "objects" / name))
                entries.append({"key": item["Key"], "file": name})
                counts["objects"] += 1
        index["buckets"][bucket] = entries
        counts["buckets"] += 1
    for table in dynamodb.list_tables().get("TableNames", []):
        items = [item for page in dynamodb.get_paginator("scan").paginate(TableName=table) for item in page["Items"]]
        index["tables"][table] = {"schema": _schema(dynamodb.describe_table(TableName=table)["Table"]), "items": items}
        counts["tables"] += 1
        counts["items"] += len(items)
    (staging / _INDEX).write_text(json.dumps(index))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return counts


def restore_snapshot(s3: Any, dynamodb: Any, folder: Path) -> dict[str, int]:
    """Put a snapshot of :func:`save_snapshot` back into an empty server; returns the counts.
    A folder with no snapshot restores nothing."""
    counts = {"buckets": 0, "objects": 0, "tables": 0, "items": 0}
    if not (folder / _INDEX).is_file():
        return counts
    index = json.loads((folder / _INDEX).read_text())
    for bucket, entries in index["buckets"].items():
        _create_bucket(s3, bucket)
        counts["buckets"] += 1
        for entry in entries:
            s3.upload_file(str(folder / "objects" / entry["file"]), bucket, entry["key"])
            counts["objects"] += 1
    for table, saved in index["tables"].items():
        try:
            dynamodb.create_table(TableName=table, **saved["schema"])
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceInUseException":
                raise
        dynamodb.get_waiter("table_exists").wait(TableName=table)
        for start in range(0, len(saved["items"]), 25):
            batch = [{"PutRequest": {"Item": item}} for item in saved["items"][start : start + 25]]
            dynamodb.batch_write_item(RequestItems={table: batch})
        counts["tables"] += 1
        counts["items"] += len(saved["items"])
    return counts


def _schema(table: dict[str, Any]) -> dict[str, Any]:
    """The parts of a DescribeTable answer that CreateTable takes back (on demand: capacity means
    nothing to a local server)."""
    schema: dict[str, Any] = {
        "KeySchema": table["KeySchema"],
        "AttributeDefinitions": table["AttributeDefinitions"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    indexes = [
        {"IndexName": i["IndexName"], "KeySchema": i["KeySchema"], "Projection": i["Projection"]}
        for i in table.get("GlobalSecondaryIndexes", [])
    ]
    if indexes:
        schema["GlobalSecondaryIndexes"] = indexes
    return schema


def _create_bucket(s3: Any, bucket: str) -> None:
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
